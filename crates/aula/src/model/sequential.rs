//! Keras's `models.Sequential()`: a stack of named layers (a whole model can be one
//! of them), its device, precision and layout, and the state `compile` and `fit`
//! leave on it. Training itself (`compile`, `fit`, ...) is in [`crate::train`],
//! which adds those methods; weight I/O is in `io`.

use super::folding::run_layers;
use super::{is_moving_statistic, to_channels_last, Layer, LayerKind, LayerSpec, Summary};
use crate::history::History;
use crate::optimizers::RMSprop;
use crate::precision::Precision;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

/// What `compile` fixed: the optimizer, and which weights it updates. Keras
/// reads `trainable` flags at compile time only; so do we.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) optimizer: RMSprop,
    pub(crate) trainable: Vec<String>,
    /// RMSprop's running mean of squared gradients, per weight.
    pub(crate) mean_square: BTreeMap<String, Tensor>,
}

/// A stack of layers, Keras's `models.Sequential()` (also what `VGG16(...)` returns).
#[derive(Debug)]
pub struct Sequential {
    pub name: String,
    /// Keras's `model.trainable`: false freezes every layer inside.
    pub trainable: bool,
    /// Input shape without the batch dimension, Keras order (H, W, C) or (features,).
    pub(super) input_shape: Option<Vec<i64>>,
    pub(super) layers: Vec<Layer>,
    pub(super) device: Device,
    /// Keep images channels-last (NHWC in memory) through the convolutions:
    /// libtorch's CPU convolutions run about a third faster that way.
    pub(super) channels_last: bool,
    /// The precision of the frozen layers when set by `set_precision`; else
    /// the run-time policy of `aula::precision`.
    pub(super) precision: Option<Precision>,
    /// Set by `compile`: which weights the optimizer updates (see `train`).
    pub(crate) compiled: Option<Compiled>,
    /// The class folders `fit_generator` trained on (Keras's `class_indices`):
    /// predicting on folders named otherwise would read the labels swapped.
    pub(crate) class_indices: Option<Vec<(String, usize)>>,
    /// Keras's `model.history`: see [`Sequential::history`].
    pub(crate) history: Option<History>,
}

impl Default for Sequential {
    fn default() -> Self {
        Sequential::new("sequential")
    }
}

impl Sequential {
    pub fn new(name: &str) -> Sequential {
        Sequential {
            name: name.to_string(),
            trainable: true,
            input_shape: None,
            layers: Vec::new(),
            device: crate::device::default_device(),
            channels_last: true,
            precision: None,
            compiled: None,
            class_indices: None,
            history: None,
        }
    }

    /// The history of the last `fit` / `fit_generator` (Keras's `model.history`),
    /// updated after every epoch: when a training is interrupted, its complete
    /// epochs are here (the call itself returned an error, not a `History`).
    pub fn history(&self) -> Option<&History> {
        self.history.as_ref()
    }

    /// Adds a layer (`Dense(256).activation("relu")`, `Dropout(0.5)`, `Flatten()`,
    /// or a whole model such as the conv base). Its weights are created now,
    /// Keras-style (Glorot uniform kernels, zero biases), on the model's device.
    pub fn add(&mut self, layer: impl Into<LayerSpec>) -> Result<&mut Self> {
        let layer = layer.into().build(self)?;
        self.layers.push(layer);
        Ok(self)
    }

    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The layers, to change their `trainable` flags (the fine-tuning loop of
    /// the slide "Fine-tuning" walks `conv_base.layers`).
    pub fn layers_mut(&mut self) -> &mut [Layer] {
        &mut self.layers
    }

    /// Keras's `model.get_layer(name)`, searching inside nested models too.
    pub fn get_layer(&mut self, name: &str) -> Result<&mut Layer> {
        let known: Vec<String> = self.layer_names();
        self.find_layer(name).with_context(|| format!("no layer named '{name}'; layers: {}", known.join(", ")))
    }

    pub(super) fn find_layer(&mut self, name: &str) -> Option<&mut Layer> {
        for layer in &mut self.layers {
            if layer.name == name {
                return Some(layer);
            }
            for m in layer.models_mut() {
                if let Some(found) = m.find_layer(name) {
                    return Some(found);
                }
            }
        }
        None
    }

    pub fn layer_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for layer in &self.layers {
            // A merge's branches come before the merge, as in Keras's layer list.
            if !matches!(layer.kind, LayerKind::Model(_)) {
                layer.models().iter().for_each(|m| names.extend(m.layer_names()));
            }
            names.push(layer.name.clone());
            if let LayerKind::Model(m) = &layer.kind {
                names.extend(m.layer_names());
            }
        }
        names
    }

    /// Output shape without the batch dimension, Keras order.
    pub fn output_shape(&self) -> Option<Vec<i64>> {
        self.layers.last().map(|l| l.output_shape.clone()).or_else(|| self.input_shape.clone())
    }

    pub fn input_shape(&self) -> Option<&[i64]> {
        self.input_shape.as_deref()
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn count_params(&self) -> i64 {
        self.layers.iter().map(Layer::count_params).sum()
    }

    /// Every weight tensor with its Keras name (`block1_conv1/kernel`) and whether
    /// it is trainable now (its layer's flag and every enclosing model's flag;
    /// batch normalization's moving statistics never are).
    pub fn named_weights(&self) -> Vec<(String, &Tensor, bool)> {
        let mut out = Vec::new();
        self.collect_weights(self.trainable, &mut out);
        out
    }

    pub(super) fn collect_weights<'a>(&'a self, parent_trainable: bool, out: &mut Vec<(String, &'a Tensor, bool)>) {
        for layer in &self.layers {
            let trainable = parent_trainable && layer.trainable;
            for m in layer.models() {
                m.collect_weights(trainable && m.trainable, out);
            }
            out.extend(
                layer
                    .weights
                    .iter()
                    .map(|(n, t)| (format!("{}/{n}", layer.name), t, trainable && !is_moving_statistic(n))),
            );
        }
    }

    /// Keras's `len(model.trainable_weights)`: the slide counts 30 before
    /// freezing the conv base and 4 after.
    pub fn trainable_weights(&self) -> usize {
        self.named_weights().iter().filter(|(_, _, t)| *t).count()
    }

    /// Keras's `model.trainable = flag`.
    pub fn set_trainable(&mut self, flag: bool) {
        self.trainable = flag;
    }

    /// Runs the model; `train` switches dropout on, and batch normalization
    /// to batch statistics in the layers that are trainable.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.run(x, train, false)
    }

    pub(super) fn run(&self, x: &Tensor, train: bool, frozen: bool) -> Tensor {
        let frozen = frozen || !self.trainable;
        let mut x = x.to_device(self.device);
        if self.channels_last && x.dim() == 4 {
            x = to_channels_last(&x);
        }
        run_layers(self.layers.iter().map(|layer| (layer, frozen)), x, train)
    }

    /// The layers in the order data flows through them, nested models
    /// expanded, each with whether its weights are trainable now (its own flag
    /// and every enclosing one; a layer without weights counts as frozen). A
    /// merge is one step: trainable when any weight in its branches is.
    pub(crate) fn leaves(&self) -> Vec<(&Layer, bool)> {
        let mut out = Vec::new();
        self.collect_leaves(self.trainable, &mut out);
        out
    }

    pub(super) fn collect_leaves<'a>(&'a self, parent_trainable: bool, out: &mut Vec<(&'a Layer, bool)>) {
        for layer in &self.layers {
            let trainable = parent_trainable && layer.trainable;
            match &layer.kind {
                LayerKind::Model(m) => m.collect_leaves(trainable && m.trainable, out),
                LayerKind::Add(branches) | LayerKind::Concatenate(branches) => {
                    let mut weights = Vec::new();
                    branches.iter().for_each(|b| b.collect_weights(trainable && b.trainable, &mut weights));
                    out.push((layer, weights.iter().any(|(_, _, t)| *t)));
                }
                _ => out.push((layer, trainable && layer.weights.iter().any(|(n, _)| !is_moving_statistic(n)))),
            }
        }
    }

    /// How many leading layers (see `leaves`) are frozen: their output for a
    /// given image never changes during training, so it can be computed once.
    pub(crate) fn frozen_prefix_len(&self) -> usize {
        self.leaves().iter().take_while(|(_, trainable)| !trainable).count()
    }

    /// Runs the layers `range` of `leaves()` only, in evaluation mode (dropout
    /// off, batch normalization on its moving statistics). The first of them
    /// whose outputs are images (the convolutional stages, nearly all the
    /// arithmetic) run in `precision`; the layers after them, and the result,
    /// in fp32: a head is cheap, and its probabilities feed the loss and metrics.
    pub(crate) fn forward_leaves(&self, x: &Tensor, range: std::ops::Range<usize>, precision: Precision) -> Tensor {
        let leaves = self.leaves();
        let layers: Vec<&Layer> = leaves[range].iter().map(|(layer, _)| *layer).collect();
        let mut x = x.to_device(self.device);
        if self.channels_last && x.dim() == 4 {
            x = to_channels_last(&x);
        }
        let images = match precision {
            Precision::Fp32 => 0,
            _ => layers.iter().take_while(|layer| layer.output_shape.len() == 3).count(),
        };
        if images > 0 {
            // Without gradients: the layers' bf16 weight copies have none. The
            // casts keep channels-last (libtorch preserves the memory format).
            let low = layers[..images].iter().map(|layer| (*layer, true));
            x = tch::no_grad(|| run_layers(low, x.to_kind(precision.kind()), false)).to_kind(Kind::Float);
        }
        run_layers(layers[images..].iter().map(|layer| (*layer, true)), x, false)
    }

    /// The training pass (`forward_t(x, true)`) with its first `low` leaves in
    /// `precision` and without gradients: they must have no weight that
    /// trains (`frozen_image_prefix`). The other leaves run as `forward_t`
    /// runs them, in fp32: the layers that train keep fp32 weights,
    /// gradients and optimizer state.
    pub(crate) fn forward_train_mixed(&self, x: &Tensor, low: usize, precision: Precision) -> Tensor {
        let leaves = self.leaves();
        let mut x = x.to_device(self.device);
        if self.channels_last && x.dim() == 4 {
            x = to_channels_last(&x);
        }
        let frozen = leaves[..low].iter().map(|(layer, _)| (*layer, true));
        let y = tch::no_grad(|| run_layers(frozen, x.to_kind(precision.kind()), true)).to_kind(Kind::Float);
        run_layers(leaves[low..].iter().map(|(layer, trainable)| (*layer, !trainable)), y, true)
    }

    /// How many first leaves output images and have no weight among
    /// `trainable` (the names `compile` fixed): the frozen convolutional
    /// stages, which a training step can run in bf16.
    pub(crate) fn frozen_image_prefix(&self, trainable: &[String]) -> usize {
        let trains = |layer: &Layer| layer.weight_names().iter().any(|name| trainable.contains(name));
        self.leaves().iter().take_while(|(layer, _)| layer.output_shape.len() == 3 && !trains(layer)).count()
    }

    /// The precision this model's frozen layers run in: the one given to
    /// `set_precision`, else the run-time policy for its device
    /// (`aula::precision::policy`, shown by `device_info()`).
    pub fn precision(&self) -> Precision {
        self.precision.unwrap_or_else(|| crate::precision::policy(self.device).precision)
    }

    /// Runs the frozen layers in `precision` whatever the policy says: to
    /// compare the two (as `set_channels_last` does for layouts) and in tests.
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = Some(precision);
    }

    /// Keras's `model.predict_on_batch(x)`: the output for one batch, without
    /// gradients or dropout, the convolutional stages in `precision()`, the
    /// result in fp32.
    pub fn predict_on_batch(&self, x: &Tensor) -> Tensor {
        let _guard = tch::no_grad_guard();
        self.forward_leaves(x, 0..self.leaves().len(), self.precision())
    }

    /// Keras's `model.predict(x)`, without gradients, in batches of `batch_size`.
    pub fn predict(&self, x: &Tensor, batch_size: i64) -> Tensor {
        let n = x.size()[0];
        let outs: Vec<Tensor> = (0..n)
            .step_by(batch_size.max(1) as usize)
            .map(|i| self.predict_on_batch(&x.narrow(0, i, batch_size.min(n - i))).to_device(Device::Cpu))
            .collect();
        Tensor::cat(&outs, 0)
    }

    /// Whether convolutions run channels-last (the default) or NCHW; for
    /// comparisons, since results are the same up to rounding.
    pub fn set_channels_last(&mut self, on: bool) {
        let _guard = tch::no_grad_guard();
        self.channels_last = on;
        for layer in &mut self.layers {
            layer.models_mut().into_iter().for_each(|m| m.set_channels_last(on));
            for (_, kernel) in layer.weights.iter_mut().filter(|(_, t)| t.dim() == 4) {
                let relaid = if on { to_channels_last(kernel) } else { kernel.contiguous() };
                *kernel = relaid.detach().set_requires_grad(kernel.requires_grad());
            }
        }
    }

    /// Moves every weight to `device`.
    pub fn to_device(&mut self, device: Device) {
        self.device = device;
        for layer in &mut self.layers {
            layer.models_mut().into_iter().for_each(|m| m.to_device(device));
            for (_, t) in &mut layer.weights {
                *t = t.to_device(device).detach().set_requires_grad(t.requires_grad());
            }
        }
    }

    /// Keras's `model.summary()`: the table of layers, output shapes and parameters.
    pub fn summary(&self) -> Summary {
        Summary::of(self)
    }

    /// A fresh Keras-style name for a layer of this kind: `dense_1`, `dense_2`…
    pub(super) fn auto_name(&self, prefix: &str) -> String {
        let n = self.layers.iter().filter(|l| l.name.starts_with(&format!("{prefix}_"))).count();
        format!("{prefix}_{}", n + 1)
    }
}
