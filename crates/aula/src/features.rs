//! "Alternativa 1": run the conv base once over every image, keep the feature
//! maps (N, 4, 4, 512) and their labels, and train a small classifier on them.
//!
//! Extraction is the slow part (13 GFLOP per image on a CPU), so the result is
//! cached on disk under a content key: the conv base's weights, the image files
//! and labels, the preprocessing and the input size. Change any of them and the
//! features are computed again; change nothing and they load in a second.
//!
//! The conv base runs in the precision `conv_base.precision()` says (bf16
//! where it measured faster, see `aula::precision`); the features are kept in
//! fp32 either way, under a key that names the precision when it is bf16.

use crate::data::DirectoryIterator;
use crate::model::Sequential;
use crate::precision::Precision;
use crate::weights::NamedTensors;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Feature maps in Keras order (N, H, W, C) and labels (N,), on the CPU.
#[derive(Debug)]
pub struct Features {
    pub features: Tensor,
    pub labels: Tensor,
    /// Where they are cached.
    pub path: PathBuf,
    /// True when they came from the cache.
    pub cached: bool,
    /// The precision the conv base ran in.
    pub precision: Precision,
}

impl Features {
    /// Chollet's `np.reshape(features, (N, 4 * 4 * 512))`.
    pub fn flat(&self) -> Tensor {
        self.features.flatten(1, -1)
    }
}

/// SHA-256 over every weight of a model (names, shapes and values).
pub fn weights_fingerprint(model: &Sequential) -> String {
    let mut hasher = Sha256::new();
    hash_weights(&mut hasher, &model.get_weights());
    hex::encode(hasher.finalize())
}

/// Feeds each weight's name, shape and values (f32, little-endian) to `hasher`.
pub(crate) fn hash_weights(hasher: &mut Sha256, weights: &NamedTensors) {
    for (name, t) in weights {
        hasher.update(name.as_bytes());
        hasher.update(format!("{:?}", t.size()).as_bytes());
        let values = Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap_or_default();
        // One update per tensor, not per value: the same digest, hashed faster.
        hasher.update(values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    }
}

/// Runs `conv_base` once over every image of `generator` (in file order), with a progress bar; loads the result from the cache when the
/// weights, files and preprocessing are unchanged.
pub fn extract_features(conv_base: &Sequential, generator: &DirectoryIterator) -> Result<Features> {
    if !generator.generator().augmentation.is_identity() {
        bail!(
            "extract_features runs every image through the conv base once, so random augmentations would be \
             frozen into the features: for data augmentation put the conv base inside the model (\"Alternativa 2\") \
             and train with fit_generator"
        );
    }
    let precision = conv_base.precision();
    let key = {
        let mut h = Sha256::new();
        h.update(weights_fingerprint(conv_base));
        h.update(generator.content_key()?);
        // Preprocessing, image size and order change the features too.
        // (The text is the one used before augmentation existed, so existing caches stay valid.)
        let preprocessing = format!("ImageDataGenerator {{ preprocessing: {:?} }}", generator.generator().preprocessing);
        h.update(format!("{preprocessing} {:?} {:?}", generator.target_size(), conv_base.input_shape()));
        // bf16 features differ from fp32 ones in the third digit. (Nothing is
        // added for fp32, so the caches made before bf16 existed stay valid.)
        if precision != Precision::Fp32 {
            h.update(format!(" precision {precision}"));
        }
        hex::encode(h.finalize())
    };
    let path = cache_path(&key);
    if let Some((features, labels)) = load_cached(&path, generator.samples()) {
        return Ok(Features { features, labels, path, cached: true, precision });
    }

    let n = generator.samples();
    let mut bar = crate::progress::Progress::new(n as u64, "extrayendo características", "imágenes");
    let _running = crate::interrupt::Running::start();
    let (mut features, mut labels) = (Vec::new(), Vec::new());
    // File order (not the generator's shuffled order): features[i] is filenames()[i].
    let order: Vec<usize> = (0..n).collect();
    for (i, indices) in order.chunks(generator.batch_size()).enumerate() {
        crate::interrupt::check(|| {
            format!("extracción de características interrumpida tras {} de {n} imágenes: no se guarda nada; ejecutar otra vez la celda empieza de nuevo.", i * generator.batch_size())
        })?;
        let (x, y) = generator.load_batch(indices)?;
        // NCHW → Keras's (N, H, W, C), the order Flatten uses.
        let maps = conv_base.predict_on_batch(&x).permute([0, 2, 3, 1]).to_device(Device::Cpu).contiguous();
        bar.inc(x.size()[0] as u64);
        features.push(maps.to_kind(Kind::Float));
        labels.push(y);
    }
    bar.finish();
    if features.is_empty() {
        bail!("no images to extract features from");
    }
    let (features, labels) = (Tensor::cat(&features, 0), Tensor::cat(&labels, 0));
    store(&path, &features, &labels)?;
    Ok(Features { features, labels, path, cached: false, precision })
}

/// Where the features of content key `key` are kept: `<cache>/features/`.
pub(crate) fn cache_path(key: &str) -> PathBuf {
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
    let tmp = crate::paths::tmp_path(path);
    Tensor::write_safetensors(&[("features", features), ("labels", labels)], &tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
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
