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
    fine_tune_with(data, out, "2")
}

/// `aula fine-tune` on `data`: `head_epochs` epochs of the head, 1 of fine-tuning.
fn fine_tune_with(data: &Path, out: &Path, head_epochs: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aula"))
        .args(["fine-tune", "--weights", "none", "--head-epochs", head_epochs, "--epochs", "1"])
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
    assert!(stdout.contains("2 de 2 épocas hechas") && stdout.contains("1 de 1 épocas hechas"), "{stdout}");
    let metrics2: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics2["fine_tuning"]["val_acc"], fine["val_acc"]);
    assert_eq!(metrics2["fine_tuning"]["test_acc"], fine["test_acc"]);

    // Fewer head epochs than its checkpoint holds: refused, never "Epoch 3/1".
    let fewer = fine_tune_with(&data, &out, "1");
    let (stdout, stderr) = (String::from_utf8_lossy(&fewer.stdout), String::from_utf8_lossy(&fewer.stderr));
    assert!(!fewer.status.success() && stderr.contains("already holds 2 epochs"), "{stdout}\n{stderr}");
    assert!(!stdout.contains("Epoch 3/1") && !stdout.contains("Epoch 2/1"), "{stdout}");
}

/// What is wrong with the inputs or outputs is said before the first epoch.
#[test]
fn bad_inputs_and_outputs_are_refused_before_any_epoch() {
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    fixture(&data);
    let refused = |run: Output, expect: &str| {
        let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
        assert!(!run.status.success(), "{stdout}");
        assert!(!stdout.contains("Epoch 1/"), "trained before refusing:\n{stdout}");
        assert!(stderr.contains(expect), "expected {expect:?} in:\n{stderr}");
    };
    // 0 epochs: a clear refusal, not "the training left no checkpoint".
    refused(fine_tune_with(&data, &tmp.path().join("o0"), "0"), "must be at least 1");
    // An --out that cannot be created (a file is in the way).
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    refused(fine_tune(&data, &file.join("out")), &file.join("out").display().to_string());
    // Validation classes named differently.
    std::fs::rename(data.join("validation/dogs"), data.join("validation/Dogs")).unwrap();
    refused(fine_tune(&data, &tmp.path().join("o1")), "class folders do not match");
    std::fs::rename(data.join("validation/Dogs"), data.join("validation/dogs")).unwrap();
    // The test split missing: known now, not after hours of training.
    std::fs::remove_dir_all(data.join("test")).unwrap();
    refused(fine_tune(&data, &tmp.path().join("o2")), &data.join("test").display().to_string());
}

#[test]
fn a_missing_data_folder_is_named() {
    let tmp = TempDir::new().unwrap();
    let run = fine_tune(&tmp.path().join("nowhere"), &tmp.path().join("out"));
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains(&tmp.path().join("nowhere").join("train").display().to_string()), "{stderr}");
}
