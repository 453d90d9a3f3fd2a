//! `aula fine-tune` end to end on a tiny generated data set (VGG16 without
//! ImageNet weights: what is tested is the sequence, its output and resuming).

use std::path::Path;
use std::process::{Command, Output};
use tempfile::TempDir;

/// cats_and_dogs_small's layout, 4 + 4 images per split.
fn fixture(root: &Path) {
    for split in ["train", "validation", "test"] {
        for (class, rgb) in [("cats", [200u8, 60, 40]), ("dogs", [40u8, 60, 200])] {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..4u32 {
                let img = image::RgbImage::from_fn(160, 120, |x, y| {
                    let v = ((x + 3 * y + 17 * i) % 40) as u8;
                    image::Rgb([rgb[0] + v, rgb[1] + v, rgb[2] + v])
                });
                img.save(dir.join(format!("{class}.{i}.jpg"))).unwrap();
            }
        }
    }
}

fn fine_tune(data: &Path, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aula"))
        .args(["fine-tune", "--weights", "none", "--head-epochs", "2", "--epochs", "1"])
        .args(["--steps-per-epoch", "1", "--validation-steps", "1", "--test-steps", "1"])
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .env("AULA_THREADS", "2")
        .output()
        .unwrap()
}

#[test]
fn trains_the_head_then_block5_then_tests_and_a_rerun_resumes() {
    let tmp = TempDir::new().unwrap();
    let (data, out) = (tmp.path().join("data"), tmp.path().join("out"));
    fixture(&data);
    let run = fine_tune(&data, &out);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    // The slides' counts: 4 tensors with the base frozen, 4 + 3 × 2 with block 5 unfrozen.
    assert!(stdout.contains("data_augmentation: 4 trainable weight tensors, 2 epochs"), "{stdout}");
    assert!(stdout.contains("fine_tuning: 10 trainable weight tensors, 1 epochs"), "{stdout}");

    let metrics: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    let (head, fine) = (&metrics["data_augmentation"], &metrics["fine_tuning"]);
    assert_eq!((head["epochs"].as_u64(), fine["epochs"].as_u64()), (Some(2), Some(1)), "{metrics}");
    assert_eq!(head["epoch_s"].as_array().map(Vec::len), Some(2), "{metrics}");
    let test_acc = fine["test_acc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&test_acc), "{metrics}");
    for step in ["data_augmentation", "fine_tuning"] {
        assert!(out.join(step).join("smoothed_acc.png").is_file(), "no curves for {step}");
    }

    // Everything is checkpointed: a second run trains nothing and reports the same.
    let again = fine_tune(&data, &out);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&again.stderr));
    assert!(stdout.contains("2 of 2 epochs done") && stdout.contains("1 of 1 epochs done"), "{stdout}");
    let metrics2: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics2["fine_tuning"]["val_acc"], fine["val_acc"]);
    assert_eq!(metrics2["fine_tuning"]["test_acc"], fine["test_acc"]);
}

#[test]
fn a_missing_data_folder_is_named() {
    let tmp = TempDir::new().unwrap();
    let run = fine_tune(&tmp.path().join("nowhere"), &tmp.path().join("out"));
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains(&tmp.path().join("nowhere").join("train").display().to_string()), "{stderr}");
}
