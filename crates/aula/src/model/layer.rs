//! One layer: what it does ([`LayerKind`]), its weights and `trainable` flag, and
//! its forward pass. Conv kernels are kept in PyTorch's layout here (what libtorch
//! computes with); `io` shows them in Keras's.

use super::io::keras_layout;
use super::{ActivationFn, Padding, Sequential};
use crate::weights::NamedTensors;
use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

/// What a layer does. Weights live in [`Layer`], not here.
#[derive(Debug)]
pub enum LayerKind {
    Conv2D { filters: i64, kernel_size: [i64; 2], strides: [i64; 2], padding: Padding, activation: ActivationFn },
    DepthwiseConv2D { kernel_size: [i64; 2], strides: [i64; 2], padding: Padding, depth_multiplier: i64, activation: ActivationFn },
    SeparableConv2D {
        filters: i64,
        kernel_size: [i64; 2],
        strides: [i64; 2],
        padding: Padding,
        depth_multiplier: i64,
        activation: ActivationFn,
    },
    /// Keras's momentum (0.99 keeps 99 % of the old moving average).
    BatchNormalization { epsilon: f64, momentum: f64 },
    Activation(ActivationFn),
    /// (top, bottom, left, right)
    ZeroPadding2D { padding: [i64; 4] },
    MaxPooling2D { pool_size: [i64; 2], strides: [i64; 2], padding: Padding },
    AveragePooling2D { pool_size: [i64; 2], strides: [i64; 2], padding: Padding },
    GlobalAveragePooling2D,
    Flatten,
    Dense { units: i64, activation: ActivationFn },
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
            LayerKind::Activation(ActivationFn::Relu6) => "ReLU",
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
    pub(super) weights: Vec<(&'static str, Tensor)>,
    /// bf16 copies of `weights`, by index, made at the first bf16 pass and
    /// kept while the weights do not change (see `weight_like`).
    pub(super) casts: std::sync::Mutex<Vec<Option<Cast>>>,
}

/// A copy of a weight in another precision, and what it was made from: the
/// weight itself (kept alive here, so no other tensor can take its address)
/// and its version, which libtorch increases at each in-place change
/// (`set_weights`, an optimizer step).
#[derive(Debug)]
pub(super) struct Cast {
    pub(super) source: Tensor,
    pub(super) version: i64,
    pub(super) copy: Tensor,
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

    pub(super) fn models_mut(&mut self) -> Vec<&mut Sequential> {
        match &mut self.kind {
            LayerKind::Model(m) => vec![m],
            LayerKind::Add(branches) | LayerKind::Concatenate(branches) => branches.iter_mut().collect(),
            _ => vec![],
        }
    }

    pub(super) fn weight(&self, name: &str) -> Option<&Tensor> {
        self.weights.iter().find(|(n, _)| *n == name).map(|(_, t)| t)
    }

    /// The Keras names of this layer's weights and of those of the models inside it.
    pub(super) fn weight_names(&self) -> Vec<String> {
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
    pub(super) fn weight_like(&self, i: usize, x: &Tensor) -> Tensor {
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
    pub(super) fn forward_t(&self, x: &Tensor, train: bool, frozen: bool) -> Tensor {
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
}

/// Average pooling that, like TensorFlow's 'same', averages only the pixels
/// inside the image at the borders.
pub(super) fn average_pool(x: &Tensor, kernel: [i64; 2], strides: [i64; 2], padding: Padding) -> Tensor {
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

/// Keras's default `glorot_uniform` initialiser.
pub(crate) fn glorot_uniform(shape: &[i64], fan_in: i64, fan_out: i64, device: Device) -> Tensor {
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
    Tensor::empty(shape, (Kind::Float, device)).uniform_(-limit, limit)
}
