//! EfficientNet-Lite0's real ImageNet weights: the conversion `make weights`
//! runs, and what the classifier says about the lesson's cats and dogs.

use aula::data::{images_to_tensor, load_image};
use aula::convert::efficientnet_lite::from_torch;
use aula::model::applications::efficientnet_lite::{EfficientNetLite0, APPLICATION};
use aula::weights::Manifest;
use std::path::PathBuf;
use tch::Tensor;

fn installed() {
    let path = Manifest::load().get("efficientnet_lite0").unwrap().cache_path();
    assert!(path.exists(), "{} is missing: run `make weights` first (make test does)", path.display());
}

/// The first `n` photos of a class folder, in name order.
fn photos(class: &str, n: usize) -> Vec<PathBuf> {
    let data =
        aula::data::default_data_dir().expect("the lesson's data (shared/data/cats_and_dogs_small or $AULA_DATA)");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(data.join("test").join(class)).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.truncate(n);
    files
}

fn top5(probs: &Tensor) -> Vec<(i64, f64)> {
    let (values, indices) = probs.topk(5, -1, true, true);
    (0..5).map(|i| (indices.int64_value(&[i]), values.double_value(&[i]))).collect()
}

/// Every cat's top 5 holds an ImageNet cat (281–285: tabby, tiger cat,
/// Persian, Siamese, Egyptian cat), every dog's a dog breed (151–268).
#[test]
fn imagenet_classifier_knows_cats_and_dogs() {
    installed();
    let model = EfficientNetLite0("imagenet", true, (224, 224, 3)).unwrap();
    for (class, range) in [("cats", 281..=285), ("dogs", 151..=268)] {
        let files = photos(class, 5);
        let images: Vec<_> = files.iter().map(|f| load_image(f, (224, 224)).unwrap()).collect();
        let probs = model.forward_t(&images_to_tensor(&images, &APPLICATION.preprocessing), false);
        for (i, file) in files.iter().enumerate() {
            let top = top5(&probs.get(i as i64));
            assert!(
                top.iter().any(|(c, _)| range.contains(c)),
                "{}: top 5 {top:?} has no ImageNet {class}",
                file.display()
            );
        }
    }
}

/// `make weights`'s conversion gives the bytes of assets/weights.json's SHA-256.
#[test]
fn conversion_matches_the_manifest() {
    let entry = Manifest::load().get("efficientnet_lite0").unwrap().clone();
    let source = entry.source_cache_path();
    assert!(source.exists(), "{} is missing: run `make weights` first (make test does)", source.display());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("lite0.safetensors");
    aula::weights::write_safetensors(&from_torch(&source).unwrap(), &dest).unwrap();
    assert_eq!(aula::weights::sha256_file(&dest).unwrap(), entry.sha256);
}
