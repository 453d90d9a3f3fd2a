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
use crate::cache::{self, load_cached, store, FeatureKey, KeyHasher};
use anyhow::{bail, Result};
use std::path::PathBuf;
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
    let mut hasher = KeyHasher::new();
    hasher.weights(&model.get_weights());
    hasher.finish()
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
    // Preprocessing, image size and order change the features too.
    let key = FeatureKey {
        weights: weights_fingerprint(conv_base),
        images: generator.content_key()?,
        preprocessing: &generator.generator().preprocessing,
        target_size: generator.target_size(),
        input_shape: conv_base.input_shape(),
        precision,
    };
    let path = cache::path(&key.digest());
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
