//! An interrupt stops aula's long loops at the next batch boundary (aula::interrupt):
//! the weights are those of the last complete batch, the model's history has
//! the complete epochs, a checkpointed training continues when run again, and
//! the flag is lowered so the next loop runs. The stop is scheduled at an
//! exact poll (`request_after_polls`) so the batch it lands on is known; the
//! kernel's flag file is tested here too, and end to end in kernel/tests/interrupt.sh.
//! In a process of its own (`run_in_own_process`), one test at a time: the flag and
//! libtorch's generator are process-wide.

use aula::data::{ClassMode, ImageDataGenerator};
use aula::interrupt::{request_after_polls, Interrupted};
use aula::model::layers::{Conv2D, MaxPooling2D};
use aula::prelude::*;
use aula::train::Checkpoint;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::fixtures::{images, small_conv_model};

/// One test at a time, each with the process's AULA_CACHE set to a temporary folder.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    static CACHE: OnceLock<tempfile::TempDir> = OnceLock::new();
    let guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    CACHE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("AULA_CACHE", dir.path());
        dir
    });
    aula::interrupt::clear();
    guard
}

fn interrupted(err: &aula::Error) -> String {
    err.downcast_ref::<Interrupted>().unwrap_or_else(|| panic!("not an interrupt: {err:#}")).message.clone()
}

/// A dense head without dropout: a batch's update depends only on which samples it holds.
fn head() -> Sequential {
    let mut model = Sequential::new("sequential");
    model.add(Dense(8).activation("relu").input_dim(16)).unwrap();
    model.add(Dense(1).activation("sigmoid")).unwrap();
    model.compile(RMSprop::new(1e-2), "binary_crossentropy", &["acc"]).unwrap();
    model
}

/// A copy of the model's weights (get_weights shares their storage).
fn weights(model: &Sequential) -> Vec<(String, Tensor)> {
    model.get_weights().into_iter().map(|(name, t)| (name, t.copy())).collect()
}

fn same_weights(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> bool {
    a.iter().zip(b).all(|((n1, t1), (n2, t2))| n1 == n2 && t1.allclose(t2, 1e-5, 1e-6, false))
}

#[test]
#[ignore = "in its own process: see run_in_own_process"]
fn fit_stops_at_the_next_batch_with_the_weights_of_that_batch_and_the_complete_epochs() {
    let _serial = serial();
    // 60 samples in batches of 10: 6 batches an epoch. The stop lands on the 9th poll,
    // i.e. in epoch 2 after its 2nd batch.
    aula::train::seed(5);
    let y = Tensor::arange(60, (Kind::Float, Device::Cpu)).remainder(2);
    let x = Tensor::randn([60, 16], (Kind::Float, Device::Cpu)) + y.view([-1, 1]);
    aula::train::seed(3);
    let mut model = head();
    request_after_polls(9);
    let err = model.fit(&x, &y, 3, 10, None).unwrap_err();
    let message = interrupted(&err);
    assert!(message.contains("entrenamiento interrumpido en la época 2/3, tras 2 de 6 lotes"), "{message}");
    assert!(message.contains("el modelo conserva los pesos de ese momento"), "{message}");

    // The reference: epoch 1, then epoch 2's first batches one by one, drawn from the same
    // permutation fit draws (libtorch's generator is in the same state).
    aula::train::seed(3);
    let mut reference = head();
    let epoch1 = reference.fit(&x, &y, 1, 10, None).unwrap();
    let after_epoch1 = weights(&reference);
    let order = Tensor::randperm(60, (Kind::Int64, Device::Cpu));
    let mut after_batch = Vec::new();
    for b in 0..3 {
        let idx = order.narrow(0, b * 10, 10);
        reference.fit(&x.index_select(0, &idx), &y.index_select(0, &idx), 1, 10, None).unwrap();
        after_batch.push(weights(&reference));
    }
    let stopped = weights(&model);
    assert!(same_weights(&stopped, &after_batch[1]), "not the weights after epoch 2's 2nd batch");
    assert!(!same_weights(&stopped, &after_batch[0]) && !same_weights(&stopped, &after_batch[2]));
    assert!(!same_weights(&stopped, &after_epoch1));
    assert_eq!(model.history(), Some(&epoch1), "the model's history holds the complete epoch");
    assert!(message.contains("tiene 1 época completa"), "{message}");

    // The flag is down: the next training runs to the end.
    let history = model.fit(&x, &y, 2, 10, None).unwrap();
    assert_eq!(history.epochs(), 2);
    assert_eq!(model.history(), Some(&history));
}

/// A small frozen conv base + a head with dropout, compiled, seeded.
fn conv_model(frozen_base: bool) -> Sequential {
    aula::train::seed(11);
    let mut model = small_conv_model(frozen_base);
    model.compile(RMSprop::new(1e-3), "binary_crossentropy", &["acc"]).unwrap();
    model
}

fn iterators(data: &Path) -> (aula::data::DirectoryIterator, aula::data::DirectoryIterator) {
    let augmenting = ImageDataGenerator::rescale(1.0 / 255.0).rotation_range(40.0).horizontal_flip(true);
    let train = augmenting.flow_from_directory(data, (32, 32), 4, ClassMode::Binary).unwrap();
    let val = ImageDataGenerator::rescale(1.0 / 255.0).flow_from_directory(data, (32, 32), 4, ClassMode::Binary).unwrap();
    (train, val)
}

fn safetensors_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "safetensors"));
    files
}

#[test]
#[ignore = "in its own process: see run_in_own_process"]
fn a_checkpointed_training_interrupted_mid_epoch_continues_when_run_again() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    images(&data, 8);
    let fit = |model: &mut Sequential, dir: &Path| {
        let (mut train, mut val) = iterators(&data);
        model.fit_generator_with_checkpoints(&mut train, 4, 3, Some(&mut val), 2, dir)
    };
    let reference = fit(&mut conv_model(true), &tmp.path().join("reference")).unwrap();

    // Polls of epoch 1: 4 training batches, then 4 while the validation images go through
    // the frozen base (16 images in batches of 4, kept for the later epochs). The 11th poll
    // is in epoch 2, after its 2nd batch.
    let dir = tmp.path().join("interrupted");
    let mut model = conv_model(true);
    request_after_polls(11);
    let message = interrupted(&fit(&mut model, &dir).unwrap_err());
    assert!(message.contains("época 2/3, tras 2 de 4 lotes"), "{message}");
    assert!(message.contains("El punto de control de la época 1 sigue en") && message.contains(&dir.display().to_string()), "{message}");
    // Only epoch 1 is on disk: half an epoch is never saved.
    assert_eq!(Checkpoint::load(&dir).unwrap().unwrap().epochs_done, 1);
    assert_eq!(safetensors_in(&dir).len(), 1);
    assert_eq!(model.history().unwrap().epochs(), 1);
    assert_eq!(model.history().unwrap().val_acc[0], reference.val_acc[0]);

    // "Run the cell again": the same model continues from epoch 1's checkpoint, and ends
    // where the uninterrupted run ended.
    let resumed = fit(&mut model, &dir).unwrap();
    assert_eq!(resumed, reference);
    assert_eq!(model.history(), Some(&reference));

    // Stopped in epoch 1's validation (the 6th poll: while the frozen base runs over the
    // validation images): nothing is saved, and the message says a rerun starts afresh.
    let dir = tmp.path().join("in-validation");
    let mut model = conv_model(true);
    request_after_polls(6);
    let message = interrupted(&fit(&mut model, &dir).unwrap_err());
    assert!(message.contains("época 1/3, durante la validación") && message.contains("aún no tiene ninguna época completa"), "{message}");
    assert!(message.contains("no hay aún ninguna época guardada"), "{message}");
    assert!(Checkpoint::load(&dir).unwrap().is_none() && safetensors_in(&dir).is_empty());
}

#[test]
#[ignore = "in its own process: see run_in_own_process"]
fn extraction_and_prediction_stop_and_store_nothing() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    images(&data, 8);
    let mut base = Sequential::new("base");
    base.add(Conv2D(8, 3).activation("relu").input_shape(&[32, 32, 3]).name("block1_conv1")).unwrap();
    base.add(MaxPooling2D(2).name("block1_pool")).unwrap();
    let images = ImageDataGenerator::rescale(1.0 / 255.0).flow_from_directory(&data, (32, 32), 4, ClassMode::Binary).unwrap();
    let features_dir = PathBuf::from(std::env::var_os("AULA_CACHE").unwrap()).join("features");
    request_after_polls(3);
    let message = interrupted(&aula::features::extract_features(&base, &images).unwrap_err());
    assert!(message.starts_with("extracción de características interrumpida tras 8 de 16 imágenes"), "{message}");
    assert!(!features_dir.exists() || std::fs::read_dir(&features_dir).unwrap().next().is_none(), "something was stored");
    let features = aula::features::extract_features(&base, &images).unwrap();
    assert!(!features.cached && features.path.exists() && features.features.size()[0] == 16);

    // A model with no frozen first layer: predict_generator runs it batch by batch.
    let model = conv_model(false);
    let mut images = images;
    request_after_polls(2);
    let message = interrupted(&model.predict_generator(&mut images, 4).unwrap_err());
    assert!(message.starts_with("predicción interrumpida tras 1 de 4 lotes"), "{message}");
    let (p, _) = model.predict_generator(&mut images, 4).unwrap();
    assert_eq!(p.size(), [16]);
}

/// The kernel's flag: a file named by AULA_INTERRUPT_FILE, raised from another thread while
/// a training runs (as the kernel's proxy does) and removed by the loop it stops; meanwhile
/// `<flag>.loop` says an aula loop is running.
#[test]
#[ignore = "in its own process: see run_in_own_process"]
fn the_kernels_flag_file_stops_a_running_loop_and_is_removed() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let flag = tmp.path().join("aula-interrupt");
    let marker = tmp.path().join("aula-interrupt.loop");
    std::env::set_var(aula::interrupt::FLAG_FILE_VAR, &flag);
    assert!(!aula::interrupt::requested());
    let training = std::thread::spawn(|| {
        let y = Tensor::arange(200, (Kind::Float, Device::Cpu)).remainder(2);
        let x = Tensor::randn([200, 16], (Kind::Float, Device::Cpu));
        let mut model = head();
        let result = model.fit(&x, &y, 100_000, 10, None);
        (result, model.history().cloned(), model.fit(&x, &y, 2, 10, None))
    });
    let start = std::time::Instant::now();
    while !marker.exists() {
        assert!(start.elapsed().as_secs() < 30 && !training.is_finished(), "no {} while fit runs", marker.display());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    std::fs::write(&flag, "").unwrap();
    let stopped = std::time::Instant::now();
    let (result, history, next) = training.join().unwrap();
    let message = interrupted(&result.unwrap_err());
    assert!(stopped.elapsed().as_secs_f64() < 1.0, "took {:?} to stop", stopped.elapsed());
    let epochs = history.unwrap().epochs();
    assert!(message.contains(&format!("en la época {}/100000, tras ", epochs + 1)), "{message}");
    assert!(!flag.exists(), "the stop lowers the flag");
    assert_eq!(next.unwrap().epochs(), 2, "the next training runs");
    assert!(!marker.exists(), "{} left behind", marker.display());
    std::env::remove_var(aula::interrupt::FLAG_FILE_VAR);
}
