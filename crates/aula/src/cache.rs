//! The on-disk cache of computed tensors, `<cache>/features/`: the features of
//! "Alternativa 1" and the outputs of a model's frozen first layers, each kept
//! under a content key, and the one way aula hashes what goes into a key.
//!
//! A key is SHA-256 over a key struct ([`FeatureKey`], [`FrozenPrefixKey`]): the
//! struct names everything the tensors depend on, [`KeyHasher`] feeds it to the
//! hash. The bytes fed are those of the files that exist today (texts such as
//! `ImageDataGenerator { preprocessing: … }` included): a different byte would
//! make every cache cold, minutes of extraction for each user and CI run. The
//! test `key_pins` fails if a key changes; change one only on purpose.

use crate::data::Preprocessing;
use crate::precision::Precision;
use crate::weights::NamedTensors;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// SHA-256 in hex over texts, tensors and weights: every content key and
/// weights fingerprint of aula is made with it.
pub(crate) struct KeyHasher(Sha256);

impl KeyHasher {
    pub(crate) fn new() -> KeyHasher {
        KeyHasher(Sha256::new())
    }

    pub(crate) fn text(&mut self, bytes: impl AsRef<[u8]>) -> &mut Self {
        self.0.update(bytes);
        self
    }

    /// A tensor's values as f32, little-endian, in row-major order.
    pub(crate) fn values(&mut self, t: &Tensor) -> &mut Self {
        let t = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
        let mut bytes = vec![0u8; t.numel() * 4];
        t.copy_data_u8(&mut bytes, t.numel());
        if cfg!(target_endian = "big") {
            bytes.chunks_exact_mut(4).for_each(|b| b.reverse());
        }
        // One update per tensor, not per value: the same digest, hashed faster.
        self.0.update(&bytes);
        self
    }

    /// Each weight's name, shape and values.
    pub(crate) fn weights(&mut self, weights: &NamedTensors) -> &mut Self {
        for (name, t) in weights {
            self.text(name).text(format!("{:?}", t.size())).values(t);
        }
        self
    }

    pub(crate) fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// What extracted features depend on (`features::extract_features`).
pub(crate) struct FeatureKey<'a> {
    /// `features::weights_fingerprint` of the conv base.
    pub weights: String,
    /// `DirectoryIterator::content_key`: the image files and their labels.
    pub images: String,
    pub preprocessing: &'a Preprocessing,
    pub target_size: (u32, u32),
    pub input_shape: Option<&'a [i64]>,
    /// bf16 features differ from fp32 ones in the third digit.
    pub precision: Precision,
}

impl FeatureKey<'_> {
    pub(crate) fn digest(&self) -> String {
        let mut h = KeyHasher::new();
        h.text(&self.weights).text(&self.images);
        // The text is the one used before augmentation existed, so existing caches stay valid.
        h.text(format!(
            "ImageDataGenerator {{ preprocessing: {:?} }} {:?} {:?}",
            self.preprocessing, self.target_size, self.input_shape
        ));
        // Nothing is added for fp32, so the caches made before bf16 existed stay valid.
        if self.precision != Precision::Fp32 {
            h.text(format!(" precision {}", self.precision));
        }
        h.finish()
    }
}

/// What the outputs of a model's first layers depend on (`train::frozen_prefix`).
/// Whether the layers are trainable does not change their outputs, so it is not part of it.
pub(crate) struct FrozenPrefixKey<'a> {
    /// Each layer's description (name, kind, output shape) and weights.
    pub layers: Vec<(String, NamedTensors)>,
    pub images: String,
    pub preprocessing: &'a Preprocessing,
    pub target_size: (u32, u32),
    pub precision: Precision,
}

impl FrozenPrefixKey<'_> {
    pub(crate) fn digest(&self) -> String {
        let mut h = KeyHasher::new();
        h.text(b"aula-frozen-prefix-v1\0");
        for (description, weights) in &self.layers {
            h.text(description).weights(weights);
        }
        h.text(&self.images);
        h.text(format!("{:?} {:?}", self.preprocessing, self.target_size));
        if self.precision != Precision::Fp32 {
            h.text(format!(" precision {}", self.precision));
        }
        h.finish()
    }
}

/// Where the tensors of key `key` are kept: `<cache>/features/<first 32 characters>.safetensors`.
pub(crate) fn path(key: &str) -> PathBuf {
    crate::paths::cache_dir().join("features").join(format!("{}.safetensors", &key[..32]))
}

/// Features and labels from a cache file, when there is one for `samples`
/// images and `AULA_NO_FEATURE_CACHE` is not set. A damaged file is reported
/// and ignored: the caller computes them again.
pub(crate) fn load_cached(path: &Path, samples: usize) -> Option<(Tensor, Tensor)> {
    if !path.exists() || std::env::var_os("AULA_NO_FEATURE_CACHE").is_some() {
        return None;
    }
    load(path, samples).map_err(|e| eprintln!("aviso: no uso la caché de características: {e:#}")).ok()
}

/// Writes features and labels to a cache file, atomically.
pub(crate) fn store(path: &Path, features: &Tensor, labels: &Tensor) -> Result<()> {
    let dir = path.parent().expect("cache path has a folder");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    crate::paths::write_atomic_with(path, |tmp| {
        Ok(Tensor::write_safetensors(&[("features", features), ("labels", labels)], tmp)?)
    })
}

fn load(path: &Path, samples: usize) -> Result<(Tensor, Tensor)> {
    let mut tensors: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(path)
        .with_context(|| format!("{} is damaged", path.display()))?
        .into_iter()
        .collect();
    let (Some(f), Some(l)) = (tensors.remove("features"), tensors.remove("labels")) else {
        bail!("{} lacks features or labels", path.display())
    };
    if f.size()[0] != samples as i64 || l.size()[0] != samples as i64 {
        bail!("{} holds {} samples, expected {samples}", path.display(), f.size()[0]);
    }
    Ok((f, l))
}
