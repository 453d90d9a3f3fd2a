//! Models as Keras builds them: a `Sequential` list of named layers, each with
//! its weights and a `trainable` flag. A whole model can be a layer of another
//! (`model.add(conv_base)`), as in the slide "Alternativa 2".
//!
//! Activations flow between layers in PyTorch's NCHW order; shapes are shown
//! and weights are stored in Keras's order (HWC, HWIO kernels), so everything
//! a student reads matches the slides.

pub mod applications;
mod flops;
pub mod layers;
mod padding;
mod summary;

pub use layers::{Dense, Dropout, Flatten, LayerSpec};
pub use padding::Padding;
pub use summary::{thousands, Summary};
pub use applications::vgg16::{vgg16, VGG16};

use crate::precision::Precision;
use crate::weights::{layout, NamedTensors};
use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Linear,
    Relu,
    /// `ReLU(6.)`: MobileNet's and EfficientNet-Lite's activation.
    Relu6,
    Sigmoid,
    Softmax,
    /// `swish` (x · sigmoid(x)), EfficientNet's.
    Swish,
}

impl std::str::FromStr for Activation {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "linear" | "" => Activation::Linear,
            "relu" => Activation::Relu,
            "relu6" => Activation::Relu6,
            "sigmoid" => Activation::Sigmoid,
            "softmax" => Activation::Softmax,
            "swish" | "silu" => Activation::Swish,
            other => bail!("unknown activation '{other}' (use relu, relu6, sigmoid, softmax, swish or linear)"),
        })
    }
}

impl Activation {
    fn apply(self, mut x: Tensor) -> Tensor {
        match self {
            Activation::Linear => x,
            // In place: saves one activation-sized allocation per layer.
            Activation::Relu => x.relu_(),
            // `relu6_`, not `hardtanh_()`: hardtanh's defaults clamp to -1..1.
            Activation::Relu6 => x.relu6_(),
            Activation::Sigmoid => x.sigmoid(),
            Activation::Softmax => x.softmax(-1, x.kind()),
            Activation::Swish => x.silu_(),
        }
    }
}

/// What a layer does. Weights live in [`Layer`], not here.
#[derive(Debug)]
pub enum LayerKind {
    Conv2D { filters: i64, kernel_size: [i64; 2], strides: [i64; 2], padding: Padding, activation: Activation },
    DepthwiseConv2D { kernel_size: [i64; 2], strides: [i64; 2], padding: Padding, depth_multiplier: i64, activation: Activation },
    SeparableConv2D {
        filters: i64,
        kernel_size: [i64; 2],
        strides: [i64; 2],
        padding: Padding,
        depth_multiplier: i64,
        activation: Activation,
    },
    /// Keras's momentum (0.99 keeps 99 % of the old moving average).
    BatchNormalization { epsilon: f64, momentum: f64 },
    Activation(Activation),
    /// (top, bottom, left, right)
    ZeroPadding2D { padding: [i64; 4] },
    MaxPooling2D { pool_size: [i64; 2], strides: [i64; 2], padding: Padding },
    AveragePooling2D { pool_size: [i64; 2], strides: [i64; 2], padding: Padding },
    GlobalAveragePooling2D,
    Flatten,
    Dense { units: i64, activation: Activation },
    Dropout { rate: f64 },
    /// A whole model used as one layer (`model.add(conv_base)`).
    Model(Box<Sequential>),
    /// The sum of branches that start from the same input (an empty branch is
    /// the identity): residual connections.
    Add(Vec<Sequential>),
    /// Branches that start from the same input, joined along the channels.
    Concatenate(Vec<Sequential>),
}

impl LayerKind {
    /// Keras's class name, shown in `summary()`.
    pub fn class_name(&self) -> &'static str {
        match self {
            LayerKind::Conv2D { .. } => "Conv2D",
            LayerKind::DepthwiseConv2D { .. } => "DepthwiseConv2D",
            LayerKind::SeparableConv2D { .. } => "SeparableConv2D",
            LayerKind::BatchNormalization { .. } => "BatchNormalization",
            LayerKind::Activation(Activation::Relu6) => "ReLU",
            LayerKind::Activation(_) => "Activation",
            LayerKind::ZeroPadding2D { .. } => "ZeroPadding2D",
            LayerKind::MaxPooling2D { .. } => "MaxPooling2D",
            LayerKind::AveragePooling2D { .. } => "AveragePooling2D",
            LayerKind::GlobalAveragePooling2D => "GlobalAveragePooling2D",
            LayerKind::Flatten => "Flatten",
            LayerKind::Dense { .. } => "Dense",
            LayerKind::Dropout { .. } => "Dropout",
            LayerKind::Model(_) => "Model",
            LayerKind::Add(_) => "Add",
            LayerKind::Concatenate(_) => "Concatenate",
        }
    }
}

/// Batch normalization's moving mean and variance: weights Keras saves and
/// counts as non-trainable, which no optimizer ever updates.
pub(crate) fn is_moving_statistic(name: &str) -> bool {
    name.starts_with("moving_")
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
    /// bf16 copies of `weights`, by index, made at the first bf16 pass and
    /// kept while the weights do not change (see `weight_like`).
    casts: std::sync::Mutex<Vec<Option<Cast>>>,
}

/// A copy of a weight in another precision, and what it was made from: the
/// weight itself (kept alive here, so no other tensor can take its address)
/// and its version, which libtorch increases at each in-place change
/// (`set_weights`, an optimizer step).
#[derive(Debug)]
struct Cast {
    source: Tensor,
    version: i64,
    copy: Tensor,
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
        let own: i64 = self.weights.iter().map(|(_, t)| t.numel() as i64).sum();
        own + self.models().iter().map(|m| m.count_params()).sum::<i64>()
    }

    /// The models inside this layer: a whole model used as a layer, or the
    /// branches of a merge.
    pub fn models(&self) -> Vec<&Sequential> {
        match &self.kind {
            LayerKind::Model(m) => vec![m],
            LayerKind::Add(branches) | LayerKind::Concatenate(branches) => branches.iter().collect(),
            _ => vec![],
        }
    }

    /// This layer's weights by Keras name, in Keras layout, on the CPU (with
    /// those of the models inside it).
    pub fn get_weights(&self) -> NamedTensors {
        let mut out = NamedTensors::new();
        self.models().into_iter().for_each(|m| out.extend(m.get_weights()));
        for (param, t) in &self.weights {
            let keras = keras_layout(&self.kind, param, t).to_device(Device::Cpu).contiguous();
            out.insert(format!("{}/{param}", self.name), keras);
        }
        out
    }

    fn models_mut(&mut self) -> Vec<&mut Sequential> {
        match &mut self.kind {
            LayerKind::Model(m) => vec![m],
            LayerKind::Add(branches) | LayerKind::Concatenate(branches) => branches.iter_mut().collect(),
            _ => vec![],
        }
    }

    fn weight(&self, name: &str) -> Option<&Tensor> {
        self.weights.iter().find(|(n, _)| *n == name).map(|(_, t)| t)
    }

    /// The Keras names of this layer's weights and of those of the models inside it.
    fn weight_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.weights.iter().map(|(n, _)| format!("{}/{n}", self.name)).collect();
        self.models().iter().for_each(|m| names.extend(m.named_weights().into_iter().map(|(n, _, _)| n)));
        names
    }

    /// Weight `i` in the element type of `x`: the weight itself when it
    /// already is; otherwise a copy, made once and reused while the weight is
    /// the same tensor at the same version. Casting VGG16's 14.7 M weights at
    /// every batch took 7–106 ms (median 27 ms, 5 % of a bf16 batch of 20) on
    /// a busy 2-core Xeon.
    /// The copies have no gradient: low precision runs only in passes without
    /// one (`Sequential::forward_leaves`).
    fn weight_like(&self, i: usize, x: &Tensor) -> Tensor {
        let w = &self.weights[i].1;
        if w.kind() == x.kind() {
            return w.shallow_clone();
        }
        let mut casts = self.casts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        casts.resize_with(self.weights.len(), || None);
        let version = w.internal_version();
        if let Some(c) = &casts[i] {
            let same = c.source.data_ptr() == w.data_ptr()
                && c.source.device() == w.device()
                && c.source.stride() == w.stride()
                && c.source.size() == w.size();
            if same && c.version == version && c.copy.kind() == x.kind() {
                return c.copy.shallow_clone();
            }
        }
        let copy = tch::no_grad(|| w.to_kind(x.kind()));
        casts[i] = Some(Cast { source: w.shallow_clone(), version, copy: copy.shallow_clone() });
        copy
    }

    /// `frozen`: an enclosing model or this layer is not trainable. Keras then
    /// runs batch normalization in inference mode, even while training.
    fn forward_t(&self, x: &Tensor, train: bool, frozen: bool) -> Tensor {
        let frozen = frozen || !self.trainable;
        // Weights are kept in fp32; a bf16 pass uses a bf16 copy of each.
        let index = |name: &str| self.weights.iter().position(|(n, _)| *n == name);
        let weight = |name: &str| index(name).map(|i| self.weight_like(i, x));
        let kernel = |i: usize| self.weight_like(i, x);
        let bias = weight("bias");
        match &self.kind {
            LayerKind::Conv2D { kernel_size, strides, padding, activation, .. } => {
                let (x, pad) = padding.apply(x, *kernel_size, *strides, 0.0);
                activation.apply(x.conv2d(&kernel(0), bias, strides, pad, [1, 1], 1))
            }
            LayerKind::DepthwiseConv2D { kernel_size, strides, padding, activation, .. } => {
                let (x, pad) = padding.apply(x, *kernel_size, *strides, 0.0);
                let groups = x.size()[1];
                activation.apply(x.conv2d(&kernel(0), bias, strides, pad, [1, 1], groups))
            }
            LayerKind::SeparableConv2D { kernel_size, strides, padding, activation, .. } => {
                let (x, pad) = padding.apply(x, *kernel_size, *strides, 0.0);
                let groups = x.size()[1];
                let depthwise = x.conv2d::<&Tensor>(&kernel(0), None, strides, pad, [1, 1], groups);
                activation.apply(depthwise.conv2d(&kernel(1), bias, [1, 1], [0, 0], [1, 1], 1))
            }
            LayerKind::BatchNormalization { epsilon, momentum } => x.batch_norm(
                weight("gamma"),
                weight("beta"),
                weight("moving_mean"),
                weight("moving_variance"),
                train && !frozen,
                1.0 - momentum, // PyTorch's momentum is the weight of the new batch
                *epsilon,
                true,
            ),
            LayerKind::Activation(activation) => activation.apply(x.shallow_clone()),
            LayerKind::ZeroPadding2D { padding: [t, b, l, r] } => x.constant_pad_nd([*l, *r, *t, *b]),
            LayerKind::MaxPooling2D { pool_size, strides, padding } => {
                let (x, pad) = padding.apply(x, *pool_size, *strides, f64::NEG_INFINITY);
                x.max_pool2d(pool_size, strides, pad, [1, 1], false)
            }
            LayerKind::AveragePooling2D { pool_size, strides, padding } => average_pool(x, *pool_size, *strides, *padding),
            LayerKind::GlobalAveragePooling2D => x.mean_dim([2, 3].as_slice(), false, x.kind()),
            // Keras flattens (H, W, C): move channels last first so a Dense layer
            // sees features in the same order as Keras (and as saved features).
            LayerKind::Flatten if x.dim() == 4 => x.permute([0, 2, 3, 1]).flatten(1, -1),
            LayerKind::Flatten => x.flatten(1, -1),
            LayerKind::Dense { activation, .. } => activation.apply(x.matmul(&kernel(0)) + kernel(1)),
            LayerKind::Dropout { rate } => x.dropout(*rate, train),
            LayerKind::Model(m) => m.run(x, train, frozen),
            LayerKind::Add(branches) => branches
                .iter()
                .map(|b| b.run(x, train, frozen))
                .reduce(|sum, y| sum + y)
                .expect("a merge has branches"),
            LayerKind::Concatenate(branches) => {
                let outs: Vec<Tensor> = branches.iter().map(|b| b.run(x, train, frozen)).collect();
                Tensor::cat(&outs, 1)
            }
        }
    }

    /// A convolution without activation followed by batch normalization in
    /// inference mode is one convolution: the normalization is then an affine
    /// map per channel, folded here into the kernel and the bias. That saves a
    /// pass over every activation map (EfficientNet-Lite0's base: 62 → 117 img/s
    /// on 2 cores, `make bench`). None when the pair does not fold: another layer kind, an
    /// activation in between, or batch statistics (training a trainable BN).
    fn forward_folded(&self, x: &Tensor, bn: &Layer, train: bool, frozen: bool) -> Option<Tensor> {
        let LayerKind::BatchNormalization { epsilon, .. } = bn.kind else { return None };
        if train && !frozen && bn.trainable {
            return None;
        }
        let linear_conv = matches!(
            self.kind,
            LayerKind::Conv2D { activation: Activation::Linear, .. }
                | LayerKind::DepthwiseConv2D { activation: Activation::Linear, .. }
                | LayerKind::SeparableConv2D { activation: Activation::Linear, .. }
        );
        if !linear_conv {
            return None;
        }
        let inv_std = (bn.weight("moving_variance")? + epsilon).rsqrt();
        let scale = match bn.weight("gamma") {
            Some(gamma) => gamma * inv_std,
            None => inv_std,
        };
        let mean = bn.weight("moving_mean")?;
        let shift = match bn.weight("beta") {
            Some(beta) => beta - mean * &scale,
            None => -(mean * &scale),
        };
        // Output channels are the kernels' first dimension (OIHW), depthwise ones
        // included. Folded in fp32, then in the input's precision.
        let kernel = |w: &Tensor| in_kind_of(&(w * scale.view([-1, 1, 1, 1])), x);
        let bias = in_kind_of(
            &match self.weight("bias") {
                Some(b) => b * &scale + shift,
                None => shift,
            },
            x,
        );
        Some(match &self.kind {
            LayerKind::Conv2D { kernel_size, strides, padding, .. } => {
                let (x, pad) = padding.apply(x, *kernel_size, *strides, 0.0);
                x.conv2d(&kernel(&self.weights[0].1), Some(&bias), strides, pad, [1, 1], 1)
            }
            LayerKind::DepthwiseConv2D { kernel_size, strides, padding, .. } => {
                let (x, pad) = padding.apply(x, *kernel_size, *strides, 0.0);
                let groups = x.size()[1];
                x.conv2d(&kernel(&self.weights[0].1), Some(&bias), strides, pad, [1, 1], groups)
            }
            LayerKind::SeparableConv2D { kernel_size, strides, padding, .. } => {
                let (x, pad) = padding.apply(x, *kernel_size, *strides, 0.0);
                let groups = x.size()[1];
                let depthwise = x.conv2d::<&Tensor>(&self.weight_like(0, &x), None, strides, pad, [1, 1], groups);
                depthwise.conv2d(&kernel(&self.weights[1].1), Some(&bias), [1, 1], [0, 0], [1, 1], 1)
            }
            _ => unreachable!("checked above"),
        })
    }
}

/// `w` in the element type of `x` (itself when it already is): a folded
/// kernel, computed at each pass, in the pass's precision.
fn in_kind_of(w: &Tensor, x: &Tensor) -> Tensor {
    if w.kind() == x.kind() {
        w.shallow_clone()
    } else {
        w.to_kind(x.kind())
    }
}

/// Runs `layers` one after the other, each with whether an enclosing model
/// freezes it; a convolution and the batch normalization after it run as one
/// folded convolution where they can (`Layer::forward_folded`).
fn run_layers<'a>(layers: impl IntoIterator<Item = (&'a Layer, bool)>, mut x: Tensor, train: bool) -> Tensor {
    let mut layers = layers.into_iter().peekable();
    while let Some((layer, frozen)) = layers.next() {
        match layers.peek().and_then(|&(next, next_frozen)| layer.forward_folded(&x, next, train, next_frozen)) {
            Some(y) => {
                layers.next();
                x = y;
            }
            None => x = layer.forward_t(&x, train, frozen),
        }
    }
    x
}

/// Average pooling that, like TensorFlow's 'same', averages only the pixels
/// inside the image at the borders.
fn average_pool(x: &Tensor, kernel: [i64; 2], strides: [i64; 2], padding: Padding) -> Tensor {
    let (padded, pad) = padding.apply(x, kernel, strides, 0.0);
    if padded.size() == x.size() {
        return x.avg_pool2d(kernel, strides, pad, false, false, None::<i64>);
    }
    // Uneven padding was added to the input: divide by how many real pixels each window saw.
    let sums = padded.avg_pool2d(kernel, strides, [0, 0], false, true, None::<i64>);
    let ones = x.ones_like().narrow(1, 0, 1);
    let (ones, _) = padding.apply(&ones, kernel, strides, 0.0);
    sums / ones.avg_pool2d(kernel, strides, [0, 0], false, true, None::<i64>)
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
    /// The precision of the frozen layers when set by `set_precision`; else
    /// the run-time policy of `aula::precision`.
    precision: Option<Precision>,
    /// Set by `compile`: which weights the optimizer updates (see `train`).
    pub(crate) compiled: Option<crate::train::Compiled>,
    /// The class folders `fit_generator` trained on (Keras's `class_indices`):
    /// predicting on folders named otherwise would read the labels swapped.
    pub(crate) class_indices: Option<Vec<(String, usize)>>,
    /// Keras's `model.history`: see [`Sequential::history`].
    pub(crate) history: Option<crate::train::History>,
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
    pub fn history(&self) -> Option<&crate::train::History> {
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

    fn find_layer(&mut self, name: &str) -> Option<&mut Layer> {
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

    fn collect_weights<'a>(&'a self, parent_trainable: bool, out: &mut Vec<(String, &'a Tensor, bool)>) {
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

    fn run(&self, x: &Tensor, train: bool, frozen: bool) -> Tensor {
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

    fn collect_leaves<'a>(&'a self, parent_trainable: bool, out: &mut Vec<(&'a Layer, bool)>) {
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
            for m in layer.models_mut() {
                taken += m.assign_weights(tensors, source, require_all)?;
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
            out.extend(layer.get_weights());
        }
        out
    }

    /// Saves the weights (Keras names and layout), atomically: a Keras `.h5`
    /// when the name ends in `.h5`, else safetensors.
    pub fn save_weights(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if path.extension().is_some_and(|e| e == "h5") {
            crate::weights::write_keras_h5(&self.get_weights(), path)
        } else {
            crate::weights::write_safetensors(&self.get_weights(), path)
        }
    }

    /// A fresh Keras-style name for a layer of this kind: `dense_1`, `dense_2`…
    fn auto_name(&self, prefix: &str) -> String {
        let n = self.layers.iter().filter(|l| l.name.starts_with(&format!("{prefix}_"))).count();
        format!("{prefix}_{}", n + 1)
    }
}

/// A weight seen in Keras's layout: conv kernels HWIO, depthwise kernels
/// (H, W, C, depth_multiplier). PyTorch's are OIHW and (C·m, 1, H, W).
fn keras_layout(kind: &LayerKind, param: &str, t: &Tensor) -> Tensor {
    match (kind, param) {
        (LayerKind::Conv2D { .. }, "kernel") | (_, "pointwise_kernel") => layout::conv_to_keras(t),
        (
            LayerKind::DepthwiseConv2D { depth_multiplier: m, .. } | LayerKind::SeparableConv2D { depth_multiplier: m, .. },
            "depthwise_kernel",
        ) => layout::depthwise_to_keras(t, *m),
        _ => t.shallow_clone(),
    }
}

fn from_keras_layout(kind: &LayerKind, param: &str, t: &Tensor) -> Tensor {
    match (kind, param) {
        (LayerKind::Conv2D { .. }, "kernel") | (_, "pointwise_kernel") => layout::conv_from_keras(t),
        (_, "depthwise_kernel") => layout::depthwise_from_keras(t),
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

#[cfg(test)]
mod tests {
    use super::layers::{Activation, BatchNormalization, Conv2D, DepthwiseConv2D, SeparableConv2D};
    use super::*;
    use crate::model::applications::test_support::randomize_batch_norm;

    /// Each convolution kind, then batch normalization; with `separated`, a
    /// linear activation in between keeps every pair from folding.
    fn convs_and_batch_norms(separated: bool) -> Sequential {
        let mut model = Sequential::new("m");
        let specs = [
            Conv2D(8, 3).padding("same").use_bias(false).input_shape(&[9, 9, 3]),
            DepthwiseConv2D(3).strides(2).padding("same").depth_multiplier(2),
            SeparableConv2D(6, 3),
        ];
        for (i, spec) in specs.into_iter().enumerate() {
            model.add(spec).unwrap();
            if separated {
                model.add(Activation("linear")).unwrap();
            }
            model.add(BatchNormalization().name(&format!("bn{i}"))).unwrap();
        }
        model
    }

    /// The same weights in both forms.
    fn folded_and_separated() -> (Sequential, Sequential) {
        let (mut folded, mut separated) = (convs_and_batch_norms(false), convs_and_batch_norms(true));
        randomize_batch_norm(&mut folded);
        separated.set_weights(&folded.get_weights(), "the folded model").unwrap();
        (folded, separated)
    }

    #[test]
    fn batch_norm_folded_into_convolutions_gives_the_same_output() {
        let (folded, separated) = folded_and_separated();
        assert_eq!(folded.count_params(), separated.count_params());
        let x = Tensor::rand([2, 3, 9, 9], (Kind::Float, Device::Cpu));
        let (y, z) = (folded.forward_t(&x, false), separated.forward_t(&x, false));
        assert_eq!(y.size(), [2, 6, 3, 3]);
        assert!(y.allclose(&z, 1e-4, 1e-5, false), "max difference {}", (&y - &z).abs().max());
        // Training a trainable BN uses the batch's statistics: nothing folds.
        let (y, z) = (folded.forward_t(&x, true), separated.forward_t(&x, true));
        assert!(y.allclose(&z, 1e-4, 1e-5, false));
        assert!(
            !y.allclose(&folded.forward_t(&x, false), 1e-2, 1e-2, false),
            "batch statistics differ from moving ones"
        );
    }

    /// In bf16 the folded convolutions (each kind, batch normalization folded
    /// in fp32 first) give fp32's numbers up to bf16's rounding.
    #[test]
    fn folded_convolutions_in_bf16() {
        use crate::precision::Precision;
        let (mut folded, _) = folded_and_separated();
        let x = Tensor::rand([2, 3, 9, 9], (Kind::Float, Device::Cpu));
        folded.set_precision(Precision::Fp32);
        let fp32 = folded.predict_on_batch(&x);
        folded.set_precision(Precision::Bf16);
        let bf16 = folded.predict_on_batch(&x);
        let relative = (&bf16 - &fp32).norm().double_value(&[]) / fp32.norm().double_value(&[]);
        assert!(bf16.kind() == Kind::Float && relative > 0.0 && relative < 2e-2, "relative L2 error {relative}");
    }

    /// A bf16 pass makes its bf16 copy of each weight once and reuses it
    /// while the weight is unchanged; `set_weights` or a training step (both
    /// ways RMSprop updates) make it anew.
    #[test]
    fn bf16_weight_copies_follow_the_weights() {
        use crate::precision::Precision;
        use crate::train::RMSprop;
        for channels_last in [true, false] {
            let mut model = Sequential::new("m");
            // Channels-last kernels take RMSprop's tensor-operation path, NCHW ones its one-pass loop.
            model.set_channels_last(channels_last);
            model.add(Conv2D(4, 3).activation("relu").input_shape(&[8, 8, 3]).name("conv")).unwrap();
            model.add(Flatten()).unwrap();
            model.add(Dense(1).activation("sigmoid")).unwrap();
            let x = Tensor::rand([6, 3, 8, 8], (Kind::Float, Device::Cpu));
            let y = Tensor::from_slice(&[0f32, 1., 0., 1., 0., 1.]);
            let run = |model: &mut Sequential, precision| {
                model.set_precision(precision);
                model.predict_on_batch(&x)
            };
            let copy_ptr = |model: &Sequential| {
                model.layers[0].casts.lock().unwrap()[0].as_ref().map(|c| c.copy.data_ptr() as usize)
            };
            let first = run(&mut model, Precision::Bf16);
            let made = copy_ptr(&model).expect("a bf16 copy of the kernel");
            assert!(run(&mut model, Precision::Bf16).equal(&first));
            assert_eq!(copy_ptr(&model), Some(made), "the copy was made again for unchanged weights");
            assert!(first.allclose(&run(&mut model, Precision::Fp32), 0.0, 1e-2, false));

            let mut weights = model.get_weights();
            let kernel = weights["conv/kernel"].shallow_clone() * 3.0;
            weights.insert("conv/kernel".into(), kernel);
            model.set_weights(&weights, "test").unwrap();
            let (fp32, bf16) = (run(&mut model, Precision::Fp32), run(&mut model, Precision::Bf16));
            assert!(!bf16.allclose(&first, 0.0, 1e-2, false), "the new kernel changed nothing");
            assert!(bf16.allclose(&fp32, 0.0, 1e-2, false), "a stale bf16 kernel after set_weights");

            model.compile(RMSprop::new(0.1), "binary_crossentropy", &["acc"]).unwrap();
            model.fit(&x, &y, 3, 6, None).unwrap();
            let (fp32_trained, bf16_trained) = (run(&mut model, Precision::Fp32), run(&mut model, Precision::Bf16));
            assert!(!fp32_trained.allclose(&fp32, 0.0, 1e-2, false), "training changed nothing");
            assert!(bf16_trained.allclose(&fp32_trained, 0.0, 1e-2, false), "a stale bf16 kernel after training");
        }
    }

    /// The gradient reaches a trainable kernel through the folding (fine-tuning
    /// a network whose batch normalization is frozen).
    #[test]
    fn folded_kernels_still_learn() {
        let (mut folded, mut separated) = folded_and_separated();
        for model in [&mut folded, &mut separated] {
            for bn in ["bn0", "bn1", "bn2"] {
                model.get_layer(bn).unwrap().trainable = false;
            }
        }
        let x = Tensor::rand([2, 3, 9, 9], (Kind::Float, Device::Cpu));
        let grads: Vec<Tensor> = [&folded, &separated]
            .iter()
            .map(|model| {
                let kernel = &model.layers()[0].weights[0].1;
                model.forward_t(&x, true).sum(Kind::Float).backward();
                let g = kernel.grad().copy();
                let _ = kernel.grad().zero_();
                g
            })
            .collect();
        assert!(grads[0].abs().sum(Kind::Float).double_value(&[]) > 0.0);
        assert!(
            grads[0].allclose(&grads[1], 1e-3, 1e-4, false),
            "{} vs {}",
            grads[0].abs().max(),
            (&grads[0] - &grads[1]).abs().max()
        );
    }
}
