//! "Alternativa 2" on a tiny generated data set: augmentation through the
//! iterators, fit_generator, checkpoints, a training killed with SIGKILL and
//! resumed, and the errors of a bad checkpoint. In a process of its own
//! (`run_in_own_process`): libtorch's generator is process-wide.

use aula::data::{ClassMode, ImageDataGenerator};
use aula::prelude::*;
use aula::train::Checkpoint;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tempfile::TempDir;

use crate::fixtures::{images, small_conv_model};

/// The tests that seed libtorch's generator and then draw from it (to build
/// models whose frozen weights a checkpoint must recognise) take turns: it is
/// one generator for the whole process, and the test harness runs tests on
/// several threads.
fn torch_rng() -> MutexGuard<'static, ()> {
    static RNG: Mutex<()> = Mutex::new(());
    RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn augmenting() -> ImageDataGenerator {
    ImageDataGenerator::rescale(1.0 / 255.0)
        .rotation_range(40.0)
        .width_shift_range(0.2)
        .height_shift_range(0.2)
        .shear_range(0.2)
        .zoom_range(0.2)
        .horizontal_flip(true)
        .fill_mode("nearest")
        .unwrap()
}

/// A small conv base (frozen) + Flatten + Dense(16) + Dropout + Dense(1).
fn model(frozen_base: bool) -> Sequential {
    small_conv_model(frozen_base)
}

/// Trains in `checkpoints` (the child process of the SIGKILL test, and the
/// reference run); prints the history as JSON on its last line.
fn train(data: &Path, checkpoints: &Path, epochs: usize) -> History {
    aula::train::seed(11);
    let mut m = model(true);
    m.compile(RMSprop::new(1e-3), "binary_crossentropy", &["acc"]).unwrap();
    let mut train = augmenting().flow_from_directory(data, (32, 32), 4, ClassMode::Binary).unwrap();
    let mut val = ImageDataGenerator::rescale(1.0 / 255.0).flow_from_directory(data, (32, 32), 4, ClassMode::Binary).unwrap();
    m.fit_generator_with_checkpoints(&mut train, 4, epochs, Some(&mut val), 2, checkpoints).unwrap()
}

const EPOCHS: usize = 30;

/// Not a test by itself: the training process the SIGKILL test starts and kills.
#[test]
#[ignore]
fn child_training() {
    let (Some(data), Some(dir)) = (std::env::var_os("AULA_TEST_DATA"), std::env::var_os("AULA_TEST_CHECKPOINTS")) else {
        return;
    };
    let history = train(Path::new(&data), Path::new(&dir), EPOCHS);
    println!("HISTORY {}", aula::serde_json::to_string(&history).unwrap());
}

fn child(data: &Path, dir: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--ignored", "--exact", "fit_generator::child_training", "--nocapture", "--test-threads=1"])
        .env("AULA_TEST_DATA", data)
        .env("AULA_TEST_CHECKPOINTS", dir)
        .env("AULA_THREADS", "1");
    c
}

fn history_of(output: &str) -> History {
    let line = output.lines().find_map(|l| l.strip_prefix("HISTORY ")).unwrap_or_else(|| panic!("no history in:\n{output}"));
    aula::serde_json::from_str(line).unwrap()
}

fn epochs_done(dir: &Path) -> usize {
    Checkpoint::load(dir).ok().flatten().map_or(0, |c| c.epochs_done)
}

#[test]
#[ignore = "in its own process: see run_in_own_process"]
fn sigkill_after_epoch_k_then_resume_gives_the_same_history() {
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    images(&data, 8);
    // The reference: one uninterrupted run.
    let reference_dir = tmp.path().join("reference");
    let out = child(&data, &reference_dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reference = history_of(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(reference.epochs(), EPOCHS);

    // Killed with SIGKILL once at least 3 epochs are saved...
    let dir = tmp.path().join("killed");
    let mut proc = child(&data, &dir).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    while epochs_done(&dir) < 3 {
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint after 300 s");
        assert!(proc.try_wait().unwrap().is_none(), "the training ended before it could be killed");
        std::thread::sleep(Duration::from_millis(2));
    }
    // A second training on the same folder meanwhile is refused, naming the holder.
    {
        let _rng = torch_rng();
        aula::train::seed(11);
        let mut second = model(true);
        second.compile(RMSprop::new(1e-3), "binary_crossentropy", &["acc"]).unwrap();
        let mut gen = augmenting().flow_from_directory(&data, (32, 32), 4, ClassMode::Binary).unwrap();
        let err = second.fit_generator_with_checkpoints(&mut gen, 4, EPOCHS, None, 0, &dir).unwrap_err().to_string();
        assert!(err.contains("in use by another training") && err.contains(&format!("pid {}", proc.id())), "{err}");
        assert!(err.contains(&dir.display().to_string()), "{err}");
    }
    proc.kill().unwrap(); // SIGKILL on Unix
    proc.wait().unwrap();
    let k = epochs_done(&dir);
    assert!((3..EPOCHS).contains(&k), "killed after epoch {k}");

    // ... and resumed: epochs k+1.. only, the same numbers as the reference.
    let out = child(&data, &dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("{k} de {EPOCHS} épocas hechas")), "{stdout}");
    // The resumption is marked where it happened, and recorded.
    assert!(stdout.contains(&format!("[reanudado en la época {}: ", k + 1)), "{stdout}");
    let sessions = Checkpoint::load(&dir).unwrap().unwrap().sessions;
    assert_eq!(sessions.iter().map(|s| s.first_epoch).collect::<Vec<_>>(), [1, k + 1]);
    // (The kill left the lock file; the OS released its lock with the process.)
    let resumed = history_of(&stdout);
    assert_eq!(resumed.epochs(), EPOCHS, "no lost or repeated epoch");
    assert_eq!(resumed, reference, "resumed run differs from the uninterrupted one (killed after epoch {k})");
    // Only the last epoch's weights are kept.
    let files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.iter().filter(|p| p.extension().is_some_and(|e| e == "safetensors")).count(), 1, "{files:?}");
    // The model learned the (easy) task.
    assert!(reference.val_acc.last().unwrap() > &0.9, "{reference:?}");
}

#[test]
#[ignore = "in its own process: see run_in_own_process"]
fn resume_errors_name_the_checkpoint() {
    let _rng = torch_rng();
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    images(&data, 4);
    let dir = tmp.path().join("ckpt");
    train(&data, &dir, 2);

    // Another model: the conv base trainable too (fine-tuning in the same folder).
    aula::train::seed(11);
    let mut other = model(false);
    other.compile(RMSprop::new(1e-3), "binary_crossentropy", &["acc"]).unwrap();
    let mut gen = augmenting().flow_from_directory(&data, (32, 32), 4, ClassMode::Binary).unwrap();
    let err = other.fit_generator_with_checkpoints(&mut gen, 2, 3, None, 0, &dir).unwrap_err().to_string();
    assert!(err.contains("was made by another model") && err.contains("checkpoint.json"), "{err}");
    assert!(err.contains("trains 4 weight tensors") && err.contains("this model 6"), "{err}");

    // Another learning rate.
    aula::train::seed(11);
    let mut same = model(true);
    same.compile(RMSprop::new(1e-5), "binary_crossentropy", &["acc"]).unwrap();
    let err = same.fit_generator_with_checkpoints(&mut gen, 4, 3, None, 2, &dir).unwrap_err().to_string();
    assert!(err.contains("trained with RMSprop { lr: 0.001"), "{err}");

    // The weights file missing.
    let c = Checkpoint::load(&dir).unwrap().unwrap();
    let weights = dir.join(&c.weights_file);
    std::fs::rename(&weights, tmp.path().join("aside")).unwrap();
    aula::train::seed(11);
    let mut m = model(true);
    m.compile(RMSprop::new(1e-3), "binary_crossentropy", &["acc"]).unwrap();
    let mut val = ImageDataGenerator::rescale(1.0 / 255.0).flow_from_directory(&data, (32, 32), 4, ClassMode::Binary).unwrap();
    let err = format!("{:#}", m.fit_generator_with_checkpoints(&mut gen, 4, 3, Some(&mut val), 2, &dir).unwrap_err());
    assert!(err.contains(&weights.display().to_string()) && err.contains("damaged or missing"), "{err}");

    // Fewer epochs than the checkpoint holds: refused, never "Epoch 3/1".
    let err = m.fit_generator_with_checkpoints(&mut gen, 4, 1, Some(&mut val), 2, &dir).unwrap_err().to_string();
    assert!(err.contains("already holds 2 epochs") && err.contains("epochs=2"), "{err}");

    // A leftover of a write cut short by a kill is removed by the next training.
    let leftover = dir.join("epoch-0003.safetensors.4242.tmp");
    std::fs::write(&leftover, b"half a file").unwrap();
    let _ = m.fit_generator_with_checkpoints(&mut gen, 4, 1, Some(&mut val), 2, &dir);
    assert!(!leftover.exists(), "stale temporary file kept");

    // A damaged checkpoint.json (a half-written file from another tool).
    std::fs::write(Checkpoint::json_path(&dir), b"{\"format\": 1, \"model\": ").unwrap();
    let err = format!("{:#}", m.fit_generator_with_checkpoints(&mut gen, 4, 3, Some(&mut val), 2, &dir).unwrap_err());
    assert!(err.contains("checkpoint.json is damaged") && err.contains("delete"), "{err}");
}

#[test]
#[ignore = "in its own process: see run_in_own_process"]
fn a_nan_loss_stops_the_training_and_says_so() {
    let _rng = torch_rng();
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    images(&data, 4);
    aula::train::seed(3);
    let mut m = model(true);
    m.compile(RMSprop::new(1e-3), "binary_crossentropy", &["acc"]).unwrap();
    // NaN inputs: a NaN loss at the first batch, whatever the weights.
    let mut gen = ImageDataGenerator::rescale(f32::NAN).flow_from_directory(&data, (32, 32), 4, ClassMode::Binary).unwrap();
    let dir = tmp.path().join("ckpt");
    let err = m.fit_generator_with_checkpoints(&mut gen, 2, 3, None, 0, &dir).unwrap_err().to_string();
    assert!(err.contains("the loss became NaN at epoch 1, batch 1") && err.contains("TerminateOnNaN"), "{err}");
    // No checkpoint of a NaN epoch; the folder stays usable.
    assert!(Checkpoint::load(&dir).unwrap().is_none());
}

#[test]
#[ignore = "in its own process: see run_in_own_process"]
fn class_folders_must_match_across_splits() {
    let _rng = torch_rng();
    let tmp = TempDir::new().unwrap();
    let (train_dir, val_dir) = (tmp.path().join("train"), tmp.path().join("validation"));
    images(&train_dir, 4);
    images(&val_dir, 4);
    // Capitals sort first: Dogs=0, cats=1, the labels swapped.
    std::fs::rename(val_dir.join("dogs"), val_dir.join("Dogs")).unwrap();
    aula::train::seed(3);
    let mut m = model(true);
    m.compile(RMSprop::new(1e-3), "binary_crossentropy", &["acc"]).unwrap();
    let rescaled = ImageDataGenerator::rescale(1.0 / 255.0);
    let mut train = rescaled.flow_from_directory(&train_dir, (32, 32), 4, ClassMode::Binary).unwrap();
    let mut val = rescaled.flow_from_directory(&val_dir, (32, 32), 4, ClassMode::Binary).unwrap();
    let err = m.fit_generator(&mut train, 1, 1, Some(&mut val), 1).unwrap_err().to_string();
    assert!(err.contains("do not match") && err.contains("cats=0, dogs=1") && err.contains("Dogs=0, cats=1"), "{err}");
    assert!(err.contains(&train_dir.display().to_string()) && err.contains(&val_dir.display().to_string()), "{err}");
    // Trained on cats/dogs, the model refuses to be evaluated on Dogs/cats.
    m.fit_generator(&mut train, 1, 1, None, 0).unwrap();
    let err = m.evaluate_generator(&mut val, 2).unwrap_err().to_string();
    assert!(err.contains("the model was trained on cats=0, dogs=1"), "{err}");
    assert!(m.evaluate_generator(&mut train, 2).is_ok());
}

#[test]
#[ignore = "in its own process: see run_in_own_process"]
fn augmented_batches_are_seeded_and_feature_extraction_refuses_them() {
    let _rng = torch_rng();
    let tmp = TempDir::new().unwrap();
    images(tmp.path(), 4);
    let plain = ImageDataGenerator::rescale(1.0 / 255.0).flow_from_directory(tmp.path(), (32, 32), 8, ClassMode::Binary).unwrap();
    let mut a = augmenting().flow_from_directory(tmp.path(), (32, 32), 8, ClassMode::Binary).unwrap().shuffle(false);
    let mut b = augmenting().flow_from_directory(tmp.path(), (32, 32), 8, ClassMode::Binary).unwrap().shuffle(false);
    let (xa, ya) = a.next_batch().unwrap();
    let (xb, _) = b.next_batch().unwrap();
    let (xp, yp) = plain.load_batch(&(0..8).collect::<Vec<_>>()).unwrap();
    assert!(xa.equal(&xb), "same seed, same augmented batch");
    assert!(!xa.equal(&xp), "augmentation changed nothing");
    assert!(ya.equal(&yp));
    // Values stay in the rescaled range (bilinear, nearest fill).
    assert!(xa.min().double_value(&[]) >= 0.0 && xa.max().double_value(&[]) <= 1.0);
    // A new epoch, new transforms.
    a.set_epoch(1);
    assert!(!a.next_batch().unwrap().0.equal(&xa));
    // The picture of the slide.
    let versions = augmenting().augmented_versions(tmp.path().join("cats/cats.0.png"), (32, 32), 4, 1).unwrap();
    assert_eq!(versions.size(), [4, 3, 32, 32]);
    ImageGrid::new(&versions, &[], 4).unwrap();

    let base = model(true);
    let err = extract_features(&base, &a).unwrap_err().to_string();
    assert!(err.contains("Alternativa 2"), "{err}");
}

#[test]
#[ignore = "in its own process: see run_in_own_process"]
fn trainable_weights_round_trip_in_f16() {
    let _rng = torch_rng();
    aula::train::seed(5);
    let m = model(true);
    let tmp = TempDir::new().unwrap();
    let path = tmp.path().join("head.safetensors");
    m.save_trainable_weights(&path, true).unwrap();
    aula::train::seed(6);
    let mut fresh = model(true);
    assert_eq!(fresh.load_weights_by_name(&path).unwrap(), 4);
    let (a, b) = (m.get_weights(), fresh.get_weights());
    // (Kernels only: the biases start at zero in both.)
    for (name, t) in a.iter().filter(|(n, _)| n.ends_with("kernel")) {
        let tol = if name.starts_with("dense") { 1e-3 } else { 0.0 };
        assert!(t.allclose(&b[name], tol, tol, false) == name.starts_with("dense"), "{name}");
    }
    // A file with a layer this model lacks.
    let mut bigger = model(true);
    bigger.add(Dense(1).name("extra")).unwrap();
    bigger.save_trainable_weights(&path, false).unwrap();
    let err = fresh.load_weights_by_name(&path).unwrap_err().to_string();
    assert!(err.contains("extra/") && err.contains("does not have") && err.contains(&path.display().to_string()), "{err}");
}

/// In both precisions (bf16: the frozen base in bf16 while training, in the
/// validation cache and in evaluate_generator; on every machine, since
/// libtorch emulates bf16 where the CPU lacks it).
#[test]
#[ignore = "in its own process: see run_in_own_process"]
fn validation_through_the_frozen_layers_cache_matches_the_whole_model() {
    let _rng = torch_rng();
    let tmp = TempDir::new().unwrap();
    images(tmp.path(), 6);
    for precision in [Precision::Fp32, Precision::Bf16] {
        aula::train::seed(2);
        let mut m = model(true);
        m.set_precision(precision);
        m.compile(RMSprop::new(1e-3), "binary_crossentropy", &["acc"]).unwrap();
        let mut train = augmenting().flow_from_directory(tmp.path(), (32, 32), 4, ClassMode::Binary).unwrap();
        // 2 validation steps of 5: a partial, shuffled pass, different each epoch.
        let mut val =
            ImageDataGenerator::rescale(1.0 / 255.0).flow_from_directory(tmp.path(), (32, 32), 5, ClassMode::Binary).unwrap();
        let history = m.fit_generator(&mut train, 3, 2, Some(&mut val), 2).unwrap();
        val.seek_batch(2); // epoch 2 (index 1) validated batches 2 and 3
        let (loss, acc) = m.evaluate_generator(&mut val, 2).unwrap();
        assert!((history.val_loss[1] - loss).abs() < 1e-5, "{precision}: {} vs {loss}", history.val_loss[1]);
        assert_eq!(history.val_acc[1], acc, "{precision}");
    }
}

/// What the instructor renders and class mode restores: `rendered::save` after
/// a checkpointed training, `rendered::restore` into a fresh model.
#[test]
#[ignore = "in its own process: see run_in_own_process"]
fn rendered_results_restore_the_trained_part_and_a_missing_one_names_file_and_command() {
    let _rng = torch_rng();
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    images(&data, 4);
    let dir = tmp.path().join("ckpt");
    let history = train(&data, &dir, 2);
    // The only test of this binary that reads AULA_ASSETS.
    std::env::set_var("AULA_ASSETS", tmp.path().join("assets"));

    // Rendering again finds the training done: nothing is retrained, the
    // weights come from the checkpoint (what a rerun of `make render` does).
    aula::train::seed(11);
    let mut trained = model(true);
    trained.compile(RMSprop::new(1e-3), "binary_crossentropy", &["acc"]).unwrap();
    let mut gen = augmenting().flow_from_directory(&data, (32, 32), 4, ClassMode::Binary).unwrap();
    let mut val = ImageDataGenerator::rescale(1.0 / 255.0).flow_from_directory(&data, (32, 32), 4, ClassMode::Binary).unwrap();
    let again = trained.fit_generator_with_checkpoints(&mut gen, 4, 2, Some(&mut val), 2, &dir).unwrap();
    assert_eq!(again, history);

    // Only in instructor mode (make render sets AULA_RENDER): a student's cell never replaces a record.
    std::env::remove_var("AULA_RENDER");
    let err = aula::rendered::save("tiny", &history, &trained, &dir, json!({})).unwrap_err().to_string();
    assert!(err.contains("only in instructor mode") && !tmp.path().join("assets/rendered/tiny").exists(), "{err}");
    std::env::set_var("AULA_RENDER", "1");
    let step_dir = aula::rendered::save("tiny", &history, &trained, &dir, json!({"recipe": "test"})).unwrap();
    let read = |p: &Path| -> aula::serde_json::Value { aula::serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let path = step_dir.join("provenance.json");
    let provenance = read(&path);
    assert_eq!((provenance["epochs"].as_u64(), provenance["seed"].as_u64()), (Some(2), Some(11)), "{provenance}");
    assert_eq!(provenance["recipe"], "test");
    assert_eq!(provenance["epoch_s"].as_array().map(Vec::len), Some(2), "{provenance}");
    // The wall clock, where and how it ran.
    let (started, ended) = (provenance["started"].as_str().unwrap(), provenance["ended"].as_str().unwrap());
    assert!(started.len() == 20 && started <= ended, "{provenance}");
    assert_eq!(provenance["sessions"][0]["first_epoch"], 1, "{provenance}");
    assert!(provenance["sessions"][0]["command"].as_str().is_some_and(|c| !c.is_empty()), "{provenance}");
    assert!(provenance["cpu"].as_str().is_some() && provenance["libtorch"] == "2.11.0", "{provenance}");
    // Saved again (a rerun of `make render`), the record keeps its first date and
    // commit; a different record (here the recipe) is written anew.
    let mut first = provenance.clone();
    first["date"] = json!("2001-01-01T00:00:00Z");
    first["commit"] = json!("first");
    std::fs::write(&path, aula::serde_json::to_vec_pretty(&first).unwrap()).unwrap();
    aula::rendered::save("tiny", &history, &trained, &dir, json!({"recipe": "test"})).unwrap();
    assert_eq!(read(&path), first);
    aula::rendered::save("tiny", &history, &trained, &dir, json!({"recipe": "test 2"})).unwrap();
    let third = read(&path);
    assert_eq!(third["recipe"], "test 2");
    assert_ne!(third["date"], first["date"]);

    // A fresh, untrained model restored: the trained model's predictions, up
    // to the f16 the weights are stored in. Only the trainable part is saved,
    // so the frozen base must be the same: seeded here, ImageNet's in the lesson.
    aula::train::seed(11);
    let mut fresh = model(true);
    let (x, _) = val.load_batch(&[0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    let before = fresh.predict(&x, 8);
    let rendered = aula::rendered::restore("tiny", &mut fresh).unwrap();
    assert_eq!(rendered.history, history);
    let (want, got) = (trained.predict(&x, 8), fresh.predict(&x, 8));
    let diff = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
    assert!(diff(&want, &got) < 1e-2, "restored predictions differ by {}", diff(&want, &got));
    assert!(diff(&want, &before) > 1e-2, "the test cannot tell a restored head from a random one");

    // A run shown only by its curves: history and provenance, no weights.
    let only = aula::rendered::save_history("tiny_curves", &history, &dir, json!({})).unwrap();
    assert!(only.join("history.json").is_file() && !only.join("weights.safetensors").exists());
    assert_eq!(aula::rendered::restore_history("tiny_curves").unwrap().history, history);

    // A history that is not the checkpoint's is refused.
    let mut other = history.clone();
    other.val_acc[0] += 0.5;
    let err = aula::rendered::save("tiny", &other, &trained, &dir, json!({})).unwrap_err().to_string();
    assert!(err.contains("not the one of the checkpoint"), "{err}");

    // Class mode without the rendered files: the file and the command that makes it.
    let err = aula::rendered::restore("fine_tuning", &mut fresh).err().unwrap().to_string();
    let missing = tmp.path().join("assets/rendered/fine_tuning/history.json");
    assert!(err.contains(&missing.display().to_string()) && err.contains("make render"), "{err}");
}
