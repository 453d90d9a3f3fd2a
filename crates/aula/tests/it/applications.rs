//! keras.applications in aula: each architecture's parameter count and output
//! shape against Keras's published figures, and loading Keras-layout h5 files.

use aula::model::applications::vgg19::VGG19;
use aula::model::{vgg16, Sequential};
use aula::weights::{read_keras_h5, write_keras_h5, Weights};

fn params(model: &Sequential) -> i64 {
    model.count_params()
}

#[test]
fn vgg19_matches_keras() {
    let base = VGG19(Weights::None, false, (224, 224, 3)).unwrap();
    assert_eq!(params(&base), 20_024_384);
    assert_eq!(base.output_shape().unwrap(), [7, 7, 512]);
    assert_eq!(params(&VGG19(Weights::None, true, (224, 224, 3)).unwrap()), 143_667_240);
}

#[test]
fn an_h5_written_in_keras_layout_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vgg16.h5");
    let model = vgg16(Weights::None, false, (32, 32, 3)).unwrap();
    model.save_weights(&path).unwrap();
    let back = read_keras_h5(&path).unwrap();
    let original = model.get_weights();
    assert_eq!(back.len(), original.len());
    for (k, t) in &original {
        assert!(t.equal(&back[k]), "{k} differs");
    }
    let loaded = vgg16(path.to_str().unwrap(), false, (32, 32, 3)).unwrap();
    assert!(loaded.get_weights()["block5_conv3/kernel"].equal(&original["block5_conv3/kernel"]));
    // A file without one layer names it.
    let mut partial = original;
    partial.remove("block4_conv2/kernel");
    write_keras_h5(&partial, &path).unwrap();
    let e = format!("{:#}", vgg16(path.to_str().unwrap(), false, (32, 32, 3)).unwrap_err());
    assert!(e.contains("block4_conv2/kernel") && e.contains("vgg16.h5"), "{e}");
}
