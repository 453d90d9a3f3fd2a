//! What several test modules share: the small generated data set and model of the
//! training tests, and running a module's tests in a process of their own.

use aula::model::layers::{Conv2D, MaxPooling2D};
use aula::prelude::*;
use image::{Rgb, RgbImage};
use std::path::Path;
use std::process::Command;

/// `n` red-ish "cats" and `n` blue-ish "dogs", 32×32, each with its own
/// pattern so that augmented images differ.
pub fn images(dir: &Path, n: u32) {
    for (class, rgb) in [("cats", [200u8, 40, 40]), ("dogs", [40u8, 40, 200])] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..n {
            let img = RgbImage::from_fn(32, 32, |x, y| {
                let v = ((x * 7 + y * 3 + i * 11) % 50) as u8;
                Rgb([rgb[0].saturating_add(v), rgb[1] + v, rgb[2].saturating_add(v)])
            });
            img.save(dir.join(class).join(format!("{class}.{i}.png"))).unwrap();
        }
    }
}

/// A small conv base (frozen or not) + Flatten + Dense(16) + Dropout + Dense(1).
pub fn small_conv_model(frozen_base: bool) -> Sequential {
    let mut base = Sequential::new("base");
    base.add(Conv2D(8, 3).activation("relu").input_shape(&[32, 32, 3]).name("block1_conv1")).unwrap();
    base.add(MaxPooling2D(2).name("block1_pool")).unwrap();
    base.trainable = !frozen_base;
    let mut model = Sequential::new("sequential");
    model.add(base).unwrap();
    model.add(Flatten()).unwrap();
    model.add(Dense(16).activation("relu")).unwrap();
    model.add(Dropout(0.5)).unwrap();
    model.add(Dense(1).activation("sigmoid")).unwrap();
    model
}

/// Runs the tests of this binary whose names start with `prefix` (`features::`, or one
/// test's full name) in a child process: for tests that need
/// something process-wide (libtorch's random generator, `AULA_CACHE`, `KERAS_HOME`,
/// the interrupt flag), which the other modules' tests, running on other threads of
/// this process, must not see or disturb. Those tests are `#[ignore]`d here, so that
/// only the child runs them; the child's output is shown when one fails.
pub fn run_in_own_process(prefix: &str) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", prefix, "--nocapture"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !stdout.contains("running 0 tests"),
        "the tests {prefix}* in their own process: {}\n{stdout}\n{stderr}",
        output.status
    );
    // Shown with --nocapture: what ran there.
    for line in stdout.lines().filter(|l| l.starts_with("test ") || l.starts_with("test result")) {
        println!("  [own process] {line}");
    }
}
