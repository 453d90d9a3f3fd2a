//! Models as Keras builds them: a `Sequential` list of named layers, each with
//! its weights and a `trainable` flag. A whole model can be a layer of another
//! (`model.add(conv_base)`), as in the slide "Alternativa 2".
//!
//! Activations flow between layers in PyTorch's NCHW order; shapes are shown
//! and weights are stored in Keras's order (HWC, HWIO kernels), so everything
//! a student reads matches the slides.

pub mod layers;
mod summary;
mod vgg16;

pub use layers::{Dense, Dropout, Flatten, LayerSpec};
pub use summary::{thousands, Summary};
pub use vgg16::{vgg16, VGG16};

use crate::weights::NamedTensors;
use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Linear,
    Relu,
    Sigmoid,
    Softmax,
}

impl std::str::FromStr for Activation {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "linear" | "" => Activation::Linear,
            "relu" => Activation::Relu,
            "sigmoid" => Activation::Sigmoid,
            "softmax" => Activation::Softmax,
            other => bail!("unknown activation '{other}' (use relu, sigmoid, softmax or linear)"),
        })
    }
}

impl Activation {
    fn apply(self, mut x: Tensor) -> Tensor {
        match self {
            Activation::Linear => x,
            // In place: saves one activation-sized allocation per layer.
            Activation::Relu => x.relu_(),
            Activation::Sigmoid => x.sigmoid(),
            Activation::Softmax => x.softmax(-1, x.kind()),
        }
    }
}

/// What a layer does. Weights live in [`Layer`], not here.
#[derive(Debug)]
pub enum LayerKind {
    Conv2D { filters: i64, kernel_size: i64, activation: Activation },
    MaxPooling2D { pool_size: i64 },
    Flatten,
    Dense { units: i64, activation: Activation },
    Dropout { rate: f64 },
    /// A whole model used as one layer (`model.add(conv_base)`).
    Model(Box<Sequential>),
}

impl LayerKind {
    /// Keras's class name, shown in `summary()`.
    pub fn class_name(&self) -> &'static str {
        match self {
            LayerKind::Conv2D { .. } => "Conv2D",
            LayerKind::MaxPooling2D { .. } => "MaxPooling2D",
            LayerKind::Flatten => "Flatten",
            LayerKind::Dense { .. } => "Dense",
            LayerKind::Dropout { .. } => "Dropout",
            LayerKind::Model(_) => "Model",
        }
    }
}

/// One named layer with its weights (`kernel`, `bias`) and its `trainable` flag.
#[derive(Debug)]
pub struct Layer {
    pub name: String,
    pub kind: LayerKind,
    /// Keras's `layer.trainable`. A change takes effect at the next `compile`.
    pub trainable: bool,
    /// Output shape without the batch dimension, Keras order: (H, W, C) or (units,).
    pub output_shape: Vec<i64>,
    /// (`kernel` | `bias`, tensor). Conv kernels are stored OIHW (what conv2d
    /// takes), dense kernels (in, out) as in Keras.
    weights: Vec<(&'static str, Tensor)>,
}

impl Layer {
    /// The model inside a layer made from a whole model (`model.add(conv_base)`),
    /// to walk its layers as the fine-tuning slide does with `conv_base.layers`.
    pub fn as_model_mut(&mut self) -> Result<&mut Sequential> {
        match &mut self.kind {
            LayerKind::Model(m) => Ok(m),
            other => bail!("layer '{}' is a {}, not a model", self.name, other.class_name()),
        }
    }

    pub fn count_params(&self) -> i64 {
        match &self.kind {
            LayerKind::Model(m) => m.count_params(),
            _ => self.weights.iter().map(|(_, t)| t.numel() as i64).sum(),
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        match &self.kind {
            LayerKind::Conv2D { activation, .. } => {
                let (w, b) = (&self.weights[0].1, &self.weights[1].1);
                activation.apply(x.conv2d(w, Some(b), [1, 1], [1, 1], [1, 1], 1))
            }
            LayerKind::MaxPooling2D { pool_size: p } => x.max_pool2d([*p, *p], [*p, *p], [0, 0], [1, 1], false),
            // Keras flattens (H, W, C): move channels last first so a Dense layer
            // sees features in the same order as Keras (and as saved features).
            LayerKind::Flatten if x.dim() == 4 => x.permute([0, 2, 3, 1]).flatten(1, -1),
            LayerKind::Flatten => x.flatten(1, -1),
            LayerKind::Dense { activation, .. } => {
                let (w, b) = (&self.weights[0].1, &self.weights[1].1);
                activation.apply(x.matmul(w) + b)
            }
            LayerKind::Dropout { rate } => x.dropout(*rate, train),
            LayerKind::Model(m) => m.forward_t(x, train),
        }
    }
}

/// A stack of layers, Keras's `models.Sequential()` (also what `VGG16(...)` returns).
#[derive(Debug)]
pub struct Sequential {
    pub name: String,
    /// Keras's `model.trainable`: false freezes every layer inside.
    pub trainable: bool,
    /// Input shape without the batch dimension, Keras order (H, W, C) or (features,).
    input_shape: Option<Vec<i64>>,
    layers: Vec<Layer>,
    device: Device,
    /// Keep images channels-last (NHWC in memory) through the convolutions:
    /// libtorch's CPU convolutions run about a third faster that way.
    channels_last: bool,
    /// Set by `compile`: which weights the optimizer updates (see `train`).
    pub(crate) compiled: Option<crate::train::Compiled>,
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
            compiled: None,
        }
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

    fn find_layer(&mut self, name: &str) -> Option<&mut Layer> {
        for layer in &mut self.layers {
            if layer.name == name {
                return Some(layer);
            }
            if let LayerKind::Model(m) = &mut layer.kind {
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
    /// it is trainable now (its layer's flag and every enclosing model's flag).
    pub fn named_weights(&self) -> Vec<(String, &Tensor, bool)> {
        let mut out = Vec::new();
        self.collect_weights(self.trainable, &mut out);
        out
    }

    fn collect_weights<'a>(&'a self, parent_trainable: bool, out: &mut Vec<(String, &'a Tensor, bool)>) {
        for layer in &self.layers {
            let trainable = parent_trainable && layer.trainable;
            match &layer.kind {
                LayerKind::Model(m) => m.collect_weights(trainable && m.trainable, out),
                _ => out.extend(layer.weights.iter().map(|(n, t)| (format!("{}/{n}", layer.name), t, trainable))),
            }
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

    /// Runs the model; `train` switches dropout on.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut x = x.to_device(self.device);
        if self.channels_last && x.dim() == 4 {
            x = to_channels_last(&x);
        }
        for layer in &self.layers {
            x = layer.forward_t(&x, train);
        }
        x
    }

    /// The layers in the order data flows through them, nested models
    /// expanded, each with whether its weights are trainable now (its own flag
    /// and every enclosing one; a layer without weights counts as frozen).
    pub(crate) fn leaves(&self) -> Vec<(&Layer, bool)> {
        let mut out = Vec::new();
        self.collect_leaves(self.trainable, &mut out);
        out
    }

    fn collect_leaves<'a>(&'a self, parent_trainable: bool, out: &mut Vec<(&'a Layer, bool)>) {
        for layer in &self.layers {
            let trainable = parent_trainable && layer.trainable;
            match &layer.kind {
                LayerKind::Model(m) => m.collect_leaves(trainable && m.trainable, out),
                _ => out.push((layer, trainable && !layer.weights.is_empty())),
            }
        }
    }

    /// How many leading layers (see `leaves`) are frozen: their output for a
    /// given image never changes during training, so it can be computed once.
    pub(crate) fn frozen_prefix_len(&self) -> usize {
        self.leaves().iter().take_while(|(_, trainable)| !trainable).count()
    }

    /// Runs the layers `range` of `leaves()` only (evaluation: dropout off).
    pub(crate) fn forward_leaves(&self, x: &Tensor, range: std::ops::Range<usize>) -> Tensor {
        let mut x = x.to_device(self.device);
        if self.channels_last && x.dim() == 4 {
            x = to_channels_last(&x);
        }
        for (layer, _) in &self.leaves()[range] {
            x = layer.forward_t(&x, false);
        }
        x
    }

    /// Keras's `model.predict(x)`, without gradients, in batches of `batch_size`.
    pub fn predict(&self, x: &Tensor, batch_size: i64) -> Tensor {
        let _guard = tch::no_grad_guard();
        let n = x.size()[0];
        let outs: Vec<Tensor> = (0..n)
            .step_by(batch_size.max(1) as usize)
            .map(|i| self.forward_t(&x.narrow(0, i, batch_size.min(n - i)), false).to_device(Device::Cpu))
            .collect();
        Tensor::cat(&outs, 0)
    }

    /// Whether convolutions run channels-last (the default) or NCHW; for
    /// comparisons, since results are the same up to rounding.
    pub fn set_channels_last(&mut self, on: bool) {
        let _guard = tch::no_grad_guard();
        self.channels_last = on;
        for layer in &mut self.layers {
            match &mut layer.kind {
                LayerKind::Model(m) => m.set_channels_last(on),
                LayerKind::Conv2D { .. } => {
                    let kernel = &mut layer.weights[0].1;
                    let relaid = if on { to_channels_last(kernel) } else { kernel.contiguous() };
                    *kernel = relaid.detach().set_requires_grad(kernel.requires_grad());
                }
                _ => {}
            }
        }
    }

    /// Moves every weight to `device`.
    pub fn to_device(&mut self, device: Device) {
        self.device = device;
        for layer in &mut self.layers {
            match &mut layer.kind {
                LayerKind::Model(m) => m.to_device(device),
                _ => {
                    for (_, t) in &mut layer.weights {
                        *t = t.to_device(device).detach().set_requires_grad(t.requires_grad());
                    }
                }
            }
        }
    }

    /// Keras's `model.summary()`: the table of layers, output shapes and parameters.
    pub fn summary(&self) -> Summary {
        Summary::of(self)
    }

    /// Takes weights by Keras name from `tensors` (Keras layout), checking every
    /// shape. `source` names the file in error messages.
    pub fn set_weights(&mut self, tensors: &NamedTensors, source: &str) -> Result<()> {
        self.assign_weights(tensors, source, true).map(|_| ())
    }

    /// Like Keras's `load_weights(..., by_name=True)`: takes the weights
    /// `tensors` has (shapes checked), leaves the others as they are, and
    /// fails on a name the model does not have. Returns how many it took.
    pub fn set_weights_by_name(&mut self, tensors: &NamedTensors, source: &str) -> Result<usize> {
        let known: std::collections::BTreeSet<String> = self.named_weights().into_iter().map(|(n, _, _)| n).collect();
        if let Some(unknown) = tensors.keys().find(|k| !known.contains(*k)) {
            bail!("{source} has weights for {unknown}, which this model does not have");
        }
        self.assign_weights(tensors, source, false)
    }

    fn assign_weights(&mut self, tensors: &NamedTensors, source: &str, require_all: bool) -> Result<usize> {
        let _guard = tch::no_grad_guard();
        let mut taken = 0;
        for layer in &mut self.layers {
            if let LayerKind::Model(m) = &mut layer.kind {
                taken += m.assign_weights(tensors, source, require_all)?;
                continue;
            }
            for (param, dst) in &mut layer.weights {
                let key = format!("{}/{param}", layer.name);
                let Some(src) = tensors.get(&key) else {
                    if require_all {
                        bail!("{source} has no weights for layer {key}");
                    }
                    continue;
                };
                let keras = keras_layout(&layer.kind, param, dst);
                if src.size() != keras.size() {
                    bail!("{source}: {key} has shape {:?}, the model expects {:?}", src.size(), keras.size());
                }
                let src = from_keras_layout(&layer.kind, param, src);
                dst.copy_(&src.to_kind(dst.kind()).to_device(dst.device()));
                taken += 1;
            }
        }
        Ok(taken)
    }

    /// Loads a Keras `.h5` or a `.safetensors` weights file (Keras names and layout).
    pub fn load_weights(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let tensors = crate::weights::read_weights_file(path)?;
        self.set_weights(&tensors, &path.display().to_string())
    }

    /// Loads the weights a file has and keeps the rest (Keras's `by_name=True`):
    /// how a notebook restores the trained part of a model (the dense head,
    /// block 5) on top of the ImageNet conv base.
    pub fn load_weights_by_name(&mut self, path: impl AsRef<Path>) -> Result<usize> {
        let path = path.as_ref();
        let tensors = crate::weights::read_weights_file(path)?;
        self.set_weights_by_name(&tensors, &path.display().to_string())
    }

    /// The trainable weights only (Keras names and layout, on the CPU): what
    /// training changed when the conv base is frozen.
    pub fn get_trainable_weights(&self) -> NamedTensors {
        let trainable: std::collections::BTreeSet<String> =
            self.named_weights().into_iter().filter(|(_, _, t)| *t).map(|(n, _, _)| n).collect();
        self.get_weights().into_iter().filter(|(k, _)| trainable.contains(k)).collect()
    }

    /// Saves the trainable weights as safetensors, in f16 when `half` (half
    /// the size; plenty of precision for restoring a trained head).
    pub fn save_trainable_weights(&self, path: impl AsRef<Path>, half: bool) -> Result<()> {
        let mut tensors = self.get_trainable_weights();
        if half {
            for t in tensors.values_mut() {
                *t = t.to_kind(Kind::Half);
            }
        }
        crate::weights::write_safetensors(&tensors, path.as_ref())
    }

    /// Every weight by Keras name, in Keras layout, on the CPU.
    pub fn get_weights(&self) -> NamedTensors {
        let mut out = NamedTensors::new();
        for layer in &self.layers {
            match &layer.kind {
                LayerKind::Model(m) => out.extend(m.get_weights()),
                _ => {
                    for (param, t) in &layer.weights {
                        let keras = keras_layout(&layer.kind, param, t).to_device(Device::Cpu).contiguous();
                        out.insert(format!("{}/{param}", layer.name), keras);
                    }
                }
            }
        }
        out
    }

    /// Saves the weights as safetensors (Keras names and layout), atomically.
    pub fn save_weights(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::weights::write_safetensors(&self.get_weights(), path.as_ref())
    }

    /// A fresh Keras-style name for a layer of this kind: `dense_1`, `dense_2`…
    fn auto_name(&self, prefix: &str) -> String {
        let n = self.layers.iter().filter(|l| l.name.starts_with(&format!("{prefix}_"))).count();
        format!("{prefix}_{}", n + 1)
    }
}

/// A weight seen in Keras's layout (conv kernels HWIO), as a view.
fn keras_layout(kind: &LayerKind, param: &str, t: &Tensor) -> Tensor {
    match (kind, param) {
        (LayerKind::Conv2D { .. }, "kernel") => t.permute([2, 3, 1, 0]),
        _ => t.shallow_clone(),
    }
}

fn from_keras_layout(kind: &LayerKind, param: &str, t: &Tensor) -> Tensor {
    match (kind, param) {
        (LayerKind::Conv2D { .. }, "kernel") => t.permute([3, 2, 0, 1]),
        _ => t.shallow_clone(),
    }
}

/// The same NCHW tensor, stored NHWC in memory (PyTorch's `channels_last`):
/// tch has no memory-format argument, but libtorch picks the layout from the
/// strides, and a permuted contiguous NHWC tensor has exactly those strides.
pub(crate) fn to_channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Keras's default `glorot_uniform` initialiser.
fn glorot_uniform(shape: &[i64], fan_in: i64, fan_out: i64, device: Device) -> Tensor {
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
    Tensor::empty(shape, (Kind::Float, device)).uniform_(-limit, limit)
}
