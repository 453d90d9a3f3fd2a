//! The outputs of a model's frozen first layers (the whole VGG16 base in
//! "Alternativa 2", blocks 1-4 when fine-tuning) for every image of an
//! iterator without augmentation. Those images and those layers do not
//! change, so their outputs are computed once and only the rest of the model
//! runs per evaluation: a third of each epoch with the frozen base on a CPU,
//! and nine tenths of VGG16's work on the test set after fine-tuning. The
//! numbers are those of running the whole model.
//!
//! The frozen layers run in the model's precision (bf16 where it measured
//! faster, see `aula::precision`); their outputs are kept in fp32, under a key
//! that names the precision when it is bf16.

use super::{binary_accuracy, binary_crossentropy};
use crate::data::DirectoryIterator;
use crate::cache::{self, load_cached, store, FrozenPrefixKey};
use crate::model::{Layer, Sequential};
use anyhow::Result;
use tch::{Device, Kind, Tensor};

pub(super) struct FrozenPrefixCache {
    /// Layers (of `Sequential::leaves`) whose outputs are kept.
    len: usize,
    /// Their outputs for every image, in `filenames` order, on the model's device.
    outputs: Tensor,
    labels: Tensor,
}

/// Above this the outputs are not kept (nor computed ahead).
const CACHE_LIMIT_BYTES: i64 = 1 << 30;

impl FrozenPrefixCache {
    /// In memory, for the validation of one `fit_generator`. None when there
    /// is nothing to keep: no frozen first layer, augmented images, or over 1 GiB.
    pub(super) fn build(model: &Sequential, images: &DirectoryIterator) -> Result<Option<FrozenPrefixCache>> {
        let Some(len) = frozen_len(model, images) else { return Ok(None) };
        compute(model, images, len, "imágenes de validación por las capas congeladas (una vez)")
    }

    /// The same, kept on disk under a content key as extracted features are
    /// (the frozen layers and their weights, the files, the preprocessing, the
    /// size): the next evaluation of these images by a model that shares those
    /// layers (notebook 03's test set, in every class run) skips them.
    pub(super) fn load_or_build(model: &Sequential, images: &DirectoryIterator) -> Result<Option<FrozenPrefixCache>> {
        let Some(len) = frozen_len(model, images) else { return Ok(None) };
        let path = cache::path(&format!("frozen-{}", key(model, len, images)?));
        let last = model.leaves()[len - 1].0.name.clone();
        if let Some((outputs, labels)) = load_cached(&path, images.samples()) {
            eprintln!("las salidas de las capas congeladas (hasta {last}) de estas {} imágenes vienen de {}", images.samples(), crate::paths::display_path(&path));
            return Ok(Some(FrozenPrefixCache { len, outputs: outputs.to_device(model.device()), labels }));
        }
        let what = format!("imágenes por las capas congeladas (hasta {last}; se guardan para la próxima vez)");
        let cache = compute(model, images, len, &what)?;
        if let Some(cache) = &cache {
            // A cache that cannot be written costs time next run, not this result.
            if let Err(e) = store(&path, &cache.outputs.to_device(Device::Cpu), &cache.labels) {
                eprintln!("aviso: las salidas de las capas congeladas no se guardan: {e:#}");
            }
        }
        Ok(cache)
    }

    /// `predict_generator` over the next `steps` batches of `images`, from the cache.
    pub(super) fn predict(&self, model: &Sequential, images: &mut DirectoryIterator, steps: usize) -> (Tensor, Tensor) {
        let _guard = tch::no_grad_guard();
        let all = model.leaves().len();
        let (mut ps, mut ys) = (Vec::new(), Vec::new());
        for _ in 0..steps {
            let indices: Vec<i64> = images.next_indices().into_iter().map(|i| i as i64).collect();
            let idx = Tensor::from_slice(&indices);
            let x = self.outputs.index_select(0, &idx.to_device(self.outputs.device()));
            ps.push(model.forward_leaves(&x, self.len..all, model.precision()).to_device(Device::Cpu).view([-1]));
            ys.push(self.labels.index_select(0, &idx));
        }
        (Tensor::cat(&ps, 0), Tensor::cat(&ys, 0))
    }

    /// `evaluate_generator` over the next `steps` batches of `images`, from the cache.
    pub(super) fn evaluate(&self, model: &Sequential, images: &mut DirectoryIterator, steps: usize) -> (f64, f64) {
        let (p, y) = self.predict(model, images, steps);
        loss_and_accuracy(&p, &y)
    }
}

/// Binary crossentropy and accuracy of probabilities `p` against labels `y`.
pub(super) fn loss_and_accuracy(p: &Tensor, y: &Tensor) -> (f64, f64) {
    let y = y.to_kind(Kind::Float).view([-1]);
    (binary_crossentropy(p, &y).double_value(&[]), binary_accuracy(p, &y))
}

/// How many first layers of `model` are frozen, when there are any and the
/// images are not augmented (augmented images differ every time).
fn frozen_len(model: &Sequential, images: &DirectoryIterator) -> Option<usize> {
    let len = model.frozen_prefix_len();
    (len > 0 && images.generator().augmentation.is_identity()).then_some(len)
}

/// Runs the first `len` layers over every image, in file order.
fn compute(model: &Sequential, images: &DirectoryIterator, len: usize, what: &str) -> Result<Option<FrozenPrefixCache>> {
    let _guard = tch::no_grad_guard();
    let _running = crate::interrupt::Running::start();
    let n = images.samples();
    let order: Vec<usize> = (0..n).collect();
    let mut outputs = Vec::new();
    let mut bar = crate::progress::Progress::new(n as u64, what, "imágenes");
    for (i, indices) in order.chunks(images.batch_size()).enumerate() {
        crate::interrupt::check(|| format!("cálculo de las capas congeladas interrumpido tras {} de {n} imágenes: ejecutar otra vez la celda empieza de nuevo.", i * images.batch_size()))?;
        let (x, _) = images.load_batch(indices)?;
        let out = model.forward_leaves(&x, 0..len, model.precision());
        if outputs.is_empty() && (out.numel() / indices.len()) as i64 * 4 * n as i64 > CACHE_LIMIT_BYTES {
            return Ok(None);
        }
        bar.inc(indices.len() as u64);
        outputs.push(out.contiguous());
    }
    bar.finish();
    if outputs.is_empty() {
        return Ok(None);
    }
    Ok(Some(FrozenPrefixCache { len, outputs: Tensor::cat(&outputs, 0), labels: images.labels() }))
}

/// The content key: what the first `len` layers compute (names, kinds, output
/// shapes and weights), the images and labels, the preprocessing and the size.
/// Whether the layers are trainable does not change their outputs, so it is not
/// part of it; the precision they run in does, when it is not fp32 (the files
/// made before bf16 existed keep their key).
pub(crate) fn key(model: &Sequential, len: usize, images: &DirectoryIterator) -> Result<String> {
    let key = FrozenPrefixKey {
        layers: model.leaves()[..len].iter().map(|(layer, _)| (describe(layer), layer.get_weights())).collect(),
        images: images.content_key()?,
        preprocessing: &images.generator().preprocessing,
        target_size: images.target_size(),
        precision: model.precision(),
    };
    Ok(key.digest())
}

/// A layer's name, kind and output shape; a merge, with its branches' layers.
fn describe(layer: &Layer) -> String {
    let models = layer.models();
    if models.is_empty() {
        return format!("{} {:?} {:?}", layer.name, layer.kind, layer.output_shape);
    }
    let branches: Vec<String> =
        models.iter().map(|m| m.layers().iter().map(describe).collect::<Vec<_>>().join(", ")).collect();
    format!("{} {} {:?} [{}]", layer.name, layer.kind.class_name(), layer.output_shape, branches.join(" | "))
}
