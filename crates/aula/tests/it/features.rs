//! Feature extraction ("Alternativa 1"), the frozen layers' outputs that
//! `predict_generator` keeps, and their on-disk cache.

use aula::features::extract_features;
use aula::model::layers::{Conv2D, MaxPooling2D};
use aula::precision::Precision;
use aula::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The tests share one AULA_CACHE, set once: it is process-wide, and the test
/// harness runs tests on several threads. Their keys differ, so they do not meet.
fn cache_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("AULA_CACHE", dir.path());
        dir
    });
    dir.path()
}

fn write_images(dir: &Path) {
    for (class, colour) in [("cats", [200u8, 80, 40]), ("dogs", [40, 90, 220])] {
        let folder = dir.join(class);
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..3u8 {
            let img = image::RgbImage::from_fn(40, 30, |x, y| {
                image::Rgb([colour[0].wrapping_add(i * 7), colour[1] ^ (x as u8), colour[2] ^ (y as u8)])
            });
            img.save(folder.join(format!("{class}.{i}.jpg"))).unwrap();
        }
    }
}

#[test]
#[ignore = "in its own process: see run_in_own_process"]
fn features_are_cached_by_content() {
    cache_dir();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train");
    write_images(&data);
    aula::train::seed(1);
    let mut conv_base = VGG16("none", false, (32, 32, 3)).unwrap();
    // Compared with forward_t below, which runs fp32 whatever this CPU's policy.
    conv_base.set_precision(Precision::Fp32);
    let datagen = ImageDataGenerator::rescale(1.0 / 255.0);
    let generator = datagen.flow_from_directory(&data, (32, 32), 4, ClassMode::Binary).unwrap();

    let first = extract_features(&conv_base, &generator).unwrap();
    assert!(!first.cached);
    assert_eq!(first.features.size(), [6, 1, 1, 512]);
    assert_eq!(Vec::<f32>::try_from(&first.labels).unwrap(), [0., 0., 0., 1., 1., 1.]);
    // The same as running the conv base by hand, in Keras's (N, H, W, C) order.
    let (x, _) = generator.load_batch(&[4]).unwrap();
    let direct = tch::no_grad(|| conv_base.forward_t(&x, false)).permute([0, 2, 3, 1]);
    assert!(direct.allclose(&first.features.narrow(0, 4, 1), 1e-5, 1e-6, false));

    let again = extract_features(&conv_base, &generator).unwrap();
    assert!(again.cached && again.path == first.path);
    assert!(again.features.equal(&first.features));

    // In bf16 the features are other numbers, kept (in fp32) under another key:
    // neither precision is ever served the other's file.
    conv_base.set_precision(Precision::Bf16);
    let bf16 = extract_features(&conv_base, &generator).unwrap();
    assert!(!bf16.cached && bf16.path != first.path && bf16.precision == Precision::Bf16);
    assert_eq!(bf16.features.kind(), tch::Kind::Float);
    let relative = (&bf16.features - &first.features).norm().double_value(&[]) / first.features.norm().double_value(&[]);
    assert!(relative > 0.0 && relative < 0.05, "bf16 vs fp32 features: relative L2 error {relative}");
    let bf16_again = extract_features(&conv_base, &generator).unwrap();
    assert!(bf16_again.cached && bf16_again.path == bf16.path && bf16_again.features.equal(&bf16.features));
    conv_base.set_precision(Precision::Fp32);
    assert!(extract_features(&conv_base, &generator).unwrap().features.equal(&first.features));

    // Another preprocessing, other weights or a changed image: another key.
    let caffe = ImageDataGenerator::caffe().flow_from_directory(&data, (32, 32), 4, ClassMode::Binary).unwrap();
    assert!(!extract_features(&conv_base, &caffe).unwrap().cached);
    let other = VGG16("none", false, (32, 32, 3)).unwrap();
    assert!(!extract_features(&other, &generator).unwrap().cached);
    image::RgbImage::new(40, 30).save(data.join("dogs").join("dogs.2.jpg")).unwrap();
    let changed = datagen.flow_from_directory(&data, (32, 32), 4, ClassMode::Binary).unwrap();
    let fresh = extract_features(&conv_base, &changed).unwrap();
    assert!(!fresh.cached && fresh.path != first.path);

    // A damaged cache file is recomputed, not trusted.
    std::fs::write(&fresh.path, b"garbage").unwrap();
    let recomputed = extract_features(&conv_base, &changed).unwrap();
    assert!(!recomputed.cached && recomputed.features.equal(&fresh.features));
}

/// A frozen conv base + Flatten + Dense(1): `predict_generator` keeps the
/// outputs of the conv base, pooling and Flatten (the frozen first layers).
fn fine_tuned_model() -> Sequential {
    let mut base = Sequential::new("base");
    base.add(Conv2D(4, 3).activation("relu").input_shape(&[32, 32, 3]).name("block1_conv1")).unwrap();
    base.add(MaxPooling2D(2).name("block1_pool")).unwrap();
    base.trainable = false;
    let mut model = Sequential::new("sequential");
    model.add(base).unwrap();
    model.add(Flatten()).unwrap();
    model.add(Dense(1).activation("sigmoid")).unwrap();
    model
}

/// The whole model over every image, in file order, without any cache.
fn direct(model: &Sequential, generator: &aula::data::DirectoryIterator) -> Tensor {
    let (x, _) = generator.load_batch(&(0..generator.samples()).collect::<Vec<_>>()).unwrap();
    tch::no_grad(|| model.forward_t(&x, false)).view([-1])
}

fn frozen_cache_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(cache_dir().join("features"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.file_name().unwrap().to_string_lossy().starts_with("frozen-"));
    files.sort();
    files
}

fn one(value: f32, shape: &[i64], name: &str) -> aula::weights::NamedTensors {
    [(name.to_string(), Tensor::full(shape, value as f64, (tch::Kind::Float, tch::Device::Cpu)))].into_iter().collect()
}

#[test]
#[ignore = "in its own process: see run_in_own_process"]
fn predictions_reuse_the_frozen_layers_outputs_from_disk() {
    cache_dir();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("test");
    write_images(&data);
    aula::train::seed(3);
    let mut model = fine_tuned_model();
    // Compared with forward_t, which runs fp32 whatever this CPU's policy.
    model.set_precision(Precision::Fp32);
    let datagen = ImageDataGenerator::rescale(1.0 / 255.0);
    let flow = |d: &ImageDataGenerator| d.flow_from_directory(&data, (32, 32), 4, ClassMode::Binary).unwrap().shuffle(false);
    let mut test = flow(&datagen);
    let close = |a: &Tensor, b: &Tensor| a.allclose(b, 1e-5, 1e-6, false);

    // A partial pass computes as before and keeps nothing.
    let (p, _) = model.predict_generator(&mut test, 1).unwrap();
    assert!(close(&p, &direct(&model, &test).narrow(0, 0, 4)));
    assert!(frozen_cache_files().is_empty());

    // A whole pass (6 images in 2 batches of 4): the numbers of the whole model, and one file.
    let mut test = flow(&datagen);
    let (p, y) = model.predict_generator(&mut test, 2).unwrap();
    assert!(close(&p, &direct(&model, &test)), "{p:?}");
    assert_eq!(Vec::<f32>::try_from(&y).unwrap(), [0., 0., 0., 1., 1., 1.]);
    let files = frozen_cache_files();
    assert_eq!(files.len(), 1);
    let cached = &files[0];

    // The next pass reads the file: proved by planting other outputs in it.
    let saved = std::fs::read(cached).unwrap();
    let tensors = Tensor::read_safetensors(cached).unwrap();
    let features = &tensors.iter().find(|(n, _)| n == "features").unwrap().1;
    let labels = &tensors.iter().find(|(n, _)| n == "labels").unwrap().1;
    Tensor::write_safetensors(&[("features", &features.zeros_like()), ("labels", labels)], cached).unwrap();
    let (planted, _) = model.predict_generator(&mut flow(&datagen), 2).unwrap();
    assert!(!close(&planted, &p), "the cache file was not read");
    std::fs::write(cached, &saved).unwrap();
    let (again, y_again) = model.predict_generator(&mut flow(&datagen), 2).unwrap();
    assert!(again.equal(&p) && y_again.equal(&y));
    // evaluate_generator agrees with the predictions it comes from.
    let (loss, acc) = model.evaluate_generator(&mut flow(&datagen), 2).unwrap();
    let expected_acc = p.gt(0.5).to_kind(tch::Kind::Float).eq_tensor(&y).to_kind(tch::Kind::Float).mean(None).double_value(&[]);
    assert!((acc - expected_acc).abs() < 1e-9 && loss.is_finite());

    // A new head (the layer that trains) reuses the file, with its own numbers.
    model.set_weights_by_name(&one(0.01, &[900, 1], "dense_1/kernel"), "test").unwrap();
    let (p_head, _) = model.predict_generator(&mut flow(&datagen), 2).unwrap();
    assert!(close(&p_head, &direct(&model, &flow(&datagen))) && !close(&p_head, &p));
    assert_eq!(frozen_cache_files().len(), 1);

    // The frozen layers in bf16: their own file, never the fp32 one; nearly the same probabilities.
    model.set_precision(Precision::Bf16);
    let (p_bf16, _) = model.predict_generator(&mut flow(&datagen), 2).unwrap();
    assert_eq!(frozen_cache_files().len(), 2);
    assert!(p_bf16.allclose(&p_head, 0.0, 1e-2, false) && !p_bf16.equal(&p_head), "{p_bf16:?} vs {p_head:?}");
    let (p_bf16_again, _) = model.predict_generator(&mut flow(&datagen), 2).unwrap();
    assert!(p_bf16_again.equal(&p_bf16));
    assert_eq!(frozen_cache_files().len(), 2);
    model.set_precision(Precision::Fp32);

    // Other frozen weights, another preprocessing or a changed image: another key.
    model.set_weights_by_name(&one(0.02, &[3, 3, 3, 4], "block1_conv1/kernel"), "test").unwrap();
    let (p_base, _) = model.predict_generator(&mut flow(&datagen), 2).unwrap();
    assert!(close(&p_base, &direct(&model, &flow(&datagen))));
    assert_eq!(frozen_cache_files().len(), 3);
    let _ = model.predict_generator(&mut flow(&ImageDataGenerator::caffe()), 2).unwrap();
    assert_eq!(frozen_cache_files().len(), 4);
    image::RgbImage::new(40, 30).save(data.join("dogs").join("dogs.2.jpg")).unwrap();
    let (p_changed, _) = model.predict_generator(&mut flow(&datagen), 2).unwrap();
    assert!(close(&p_changed, &direct(&model, &flow(&datagen))));
    assert_eq!(frozen_cache_files().len(), 5);

    // Augmented images are never kept.
    let augmenting = ImageDataGenerator::rescale(1.0 / 255.0).horizontal_flip(true);
    let _ = model.predict_generator(&mut flow(&augmenting), 2).unwrap();
    assert_eq!(frozen_cache_files().len(), 5);

    // A damaged file is ignored (with a warning) and written again.
    let files = frozen_cache_files();
    for f in &files {
        std::fs::write(f, b"garbage").unwrap();
    }
    let (recomputed, _) = model.predict_generator(&mut flow(&datagen), 2).unwrap();
    assert!(recomputed.equal(&p_changed));
    assert!(files.iter().any(|f| Tensor::read_safetensors(f).is_ok()), "the damaged file was not rewritten");
}

/// The key of today's feature files, pinned: a change makes every user's
/// feature cache cold (minutes of extraction). Change it only on purpose.
#[test]
#[ignore = "in its own process: see run_in_own_process"]
fn the_feature_cache_key_is_unchanged() {
    cache_dir();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pinned");
    for (class, colour) in [("cats", [200u8, 80, 40]), ("dogs", [40, 90, 220])] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..3u8 {
            let img = image::RgbImage::from_fn(40, 30, |x, y| {
                image::Rgb([colour[0].wrapping_add(i * 7), colour[1] ^ (x as u8), colour[2] ^ (y as u8)])
            });
            img.save(data.join(class).join(format!("{class}.{i}.png"))).unwrap();
        }
    }
    let mut base = Sequential::new("base");
    base.add(Conv2D(4, 3).activation("relu").input_shape(&[32, 32, 3]).name("block1_conv1")).unwrap();
    base.add(MaxPooling2D(2).name("block1_pool")).unwrap();
    let ramp: aula::weights::NamedTensors = base
        .get_weights()
        .into_iter()
        .map(|(name, t)| (name, (Tensor::arange(t.numel() as i64, (tch::Kind::Float, tch::Device::Cpu)) / 1000.0).reshape(t.size())))
        .collect();
    base.set_weights_by_name(&ramp, "test").unwrap();
    let generator = ImageDataGenerator::rescale(1.0 / 255.0).flow_from_directory(&data, (32, 32), 4, ClassMode::Binary).unwrap();
    base.set_precision(Precision::Fp32);
    let fp32 = extract_features(&base, &generator).unwrap();
    base.set_precision(Precision::Bf16);
    let bf16 = extract_features(&base, &generator).unwrap();
    let names = [&fp32.path, &bf16.path].map(|p| p.file_name().unwrap().to_string_lossy().into_owned());
    assert_eq!(names, ["5baa197482fa0ea3d6cdfc8e6ec567f9.safetensors", "1317f2db68534ec5985f4e22cb85f30a.safetensors"]);
}
