//! Layer constructors with Keras's names, so a cell reads like the slides:
//! `model.add(Dense(256).activation("relu").input_dim(4 * 4 * 512))?`, and the
//! Keras applications read like their Python source:
//! `Conv2D(64, 7).strides(2).padding("valid").use_bias(false).name("conv1_conv")`.
#![allow(non_snake_case)]

use super::padding::Padding;
use super::{glorot_uniform, ActivationFn, Layer, LayerKind, Sequential};
use anyhow::{bail, Result};
use tch::{Kind, Tensor};

/// A layer not yet added to a model: its weights are made by `Sequential::add`,
/// once the input shape is known.
#[derive(Debug)]
pub struct LayerSpec {
    kind: SpecKind,
    name: Option<String>,
    activation: String,
    input_shape: Option<Vec<i64>>,
    strides: Option<[i64; 2]>,
    padding: String,
    use_bias: bool,
    epsilon: f64,
    momentum: f64,
    scale: bool,
    depth_multiplier: i64,
}

#[derive(Debug)]
enum SpecKind {
    Conv2D { filters: i64, kernel: [i64; 2] },
    DepthwiseConv2D { kernel: [i64; 2] },
    SeparableConv2D { filters: i64, kernel: [i64; 2] },
    BatchNormalization,
    Activation,
    ZeroPadding2D([i64; 4]),
    MaxPooling2D { pool: [i64; 2] },
    AveragePooling2D { pool: [i64; 2] },
    GlobalAveragePooling2D,
    Flatten,
    Dense { units: i64 },
    Dropout { rate: f64 },
    Model(Box<Sequential>),
    Add(Vec<Vec<LayerSpec>>),
    Concatenate(Vec<Vec<LayerSpec>>),
}

/// A kernel, stride or pool size: `3` or `(1, 7)`, as Keras accepts both.
#[derive(Clone, Copy, Debug)]
pub struct Size2(pub [i64; 2]);

impl From<i64> for Size2 {
    fn from(k: i64) -> Self {
        Size2([k, k])
    }
}

impl From<(i64, i64)> for Size2 {
    fn from((h, w): (i64, i64)) -> Self {
        Size2([h, w])
    }
}

// Integer literals in a cell (`Conv2D(64, 3)`) are i32 unless typed.
impl From<i32> for Size2 {
    fn from(k: i32) -> Self {
        Size2([k as i64; 2])
    }
}

impl From<(i32, i32)> for Size2 {
    fn from((h, w): (i32, i32)) -> Self {
        Size2([h as i64, w as i64])
    }
}

/// `ZeroPadding2D`'s argument: `3`, `(3, 3)` or `((top, bottom), (left, right))`.
#[derive(Clone, Copy, Debug)]
pub struct Pad2D(pub [i64; 4]);

impl From<i64> for Pad2D {
    fn from(p: i64) -> Self {
        Pad2D([p; 4])
    }
}

impl From<(i64, i64)> for Pad2D {
    fn from((h, w): (i64, i64)) -> Self {
        Pad2D([h, h, w, w])
    }
}

impl From<((i64, i64), (i64, i64))> for Pad2D {
    fn from(((t, b), (l, r)): ((i64, i64), (i64, i64))) -> Self {
        Pad2D([t, b, l, r])
    }
}

impl From<i32> for Pad2D {
    fn from(p: i32) -> Self {
        Pad2D([p as i64; 4])
    }
}

impl From<((i32, i32), (i32, i32))> for Pad2D {
    fn from(((t, b), (l, r)): ((i32, i32), (i32, i32))) -> Self {
        Pad2D([t as i64, b as i64, l as i64, r as i64])
    }
}

/// `layers.Dense(units)`.
pub fn Dense(units: i64) -> LayerSpec {
    LayerSpec::new(SpecKind::Dense { units })
}

/// `layers.Dropout(rate)`.
pub fn Dropout(rate: f64) -> LayerSpec {
    LayerSpec::new(SpecKind::Dropout { rate })
}

/// `layers.Flatten()`.
pub fn Flatten() -> LayerSpec {
    LayerSpec::new(SpecKind::Flatten)
}

/// `layers.Conv2D(filters, kernel_size)`; Keras's default `padding='valid'`.
pub fn Conv2D(filters: i64, kernel_size: impl Into<Size2>) -> LayerSpec {
    LayerSpec::new(SpecKind::Conv2D { filters, kernel: kernel_size.into().0 })
}

/// `layers.DepthwiseConv2D(kernel_size)`: one filter per input channel
/// (`depth_multiplier` of them), MobileNet's and EfficientNet's workhorse.
pub fn DepthwiseConv2D(kernel_size: impl Into<Size2>) -> LayerSpec {
    LayerSpec::new(SpecKind::DepthwiseConv2D { kernel: kernel_size.into().0 })
}

/// `layers.SeparableConv2D(filters, kernel_size)`: depthwise, then 1×1 (Xception).
pub fn SeparableConv2D(filters: i64, kernel_size: impl Into<Size2>) -> LayerSpec {
    LayerSpec::new(SpecKind::SeparableConv2D { filters, kernel: kernel_size.into().0 })
}

/// `layers.BatchNormalization()` (Keras's defaults: epsilon 1e-3, momentum 0.99).
pub fn BatchNormalization() -> LayerSpec {
    LayerSpec::new(SpecKind::BatchNormalization)
}

/// `layers.Activation('relu')`.
pub fn Activation(name: &str) -> LayerSpec {
    LayerSpec::new(SpecKind::Activation).activation(name)
}

/// `layers.ReLU(6.)`, MobileNet's capped ReLU (only 6 is supported).
pub fn ReLU6() -> LayerSpec {
    LayerSpec::new(SpecKind::Activation).activation("relu6")
}

/// `layers.ZeroPadding2D(padding)`.
pub fn ZeroPadding2D(padding: impl Into<Pad2D>) -> LayerSpec {
    LayerSpec::new(SpecKind::ZeroPadding2D(padding.into().0))
}

/// `layers.MaxPooling2D(pool_size)`; strides default to the pool size.
pub fn MaxPooling2D(pool_size: impl Into<Size2>) -> LayerSpec {
    LayerSpec::new(SpecKind::MaxPooling2D { pool: pool_size.into().0 })
}

/// `layers.AveragePooling2D(pool_size)`; strides default to the pool size.
pub fn AveragePooling2D(pool_size: impl Into<Size2>) -> LayerSpec {
    LayerSpec::new(SpecKind::AveragePooling2D { pool: pool_size.into().0 })
}

/// `layers.GlobalAveragePooling2D()`: (H, W, C) → (C,).
pub fn GlobalAveragePooling2D() -> LayerSpec {
    LayerSpec::new(SpecKind::GlobalAveragePooling2D)
}

/// `layers.add([...])` over branches that all start from the current output:
/// an empty branch is the identity (ResNet's shortcut).
pub fn Add(branches: Vec<Vec<LayerSpec>>) -> LayerSpec {
    LayerSpec::new(SpecKind::Add(branches))
}

/// `layers.concatenate([...], axis=-1)` over branches that all start from the
/// current output (Inception's "mixed" blocks).
pub fn Concatenate(branches: Vec<Vec<LayerSpec>>) -> LayerSpec {
    LayerSpec::new(SpecKind::Concatenate(branches))
}

impl From<Sequential> for LayerSpec {
    fn from(model: Sequential) -> Self {
        LayerSpec::new(SpecKind::Model(Box::new(model)))
    }
}

impl LayerSpec {
    fn new(kind: SpecKind) -> LayerSpec {
        LayerSpec {
            kind,
            name: None,
            activation: String::new(),
            input_shape: None,
            strides: None,
            padding: "valid".to_string(),
            use_bias: true,
            epsilon: 1e-3,
            momentum: 0.99,
            scale: true,
            depth_multiplier: 1,
        }
    }

    /// `activation='relu'` (also `relu6`, `sigmoid`, `softmax`, `swish`, `linear`).
    pub fn activation(mut self, name: &str) -> Self {
        self.activation = name.to_string();
        self
    }

    /// `name='block1_conv1'`.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// `input_dim=4 * 4 * 512`, for the first layer of a model.
    pub fn input_dim(self, dim: i64) -> Self {
        self.input_shape(&[dim])
    }

    /// `input_shape=(150, 150, 3)`, Keras order, for the first layer of a model.
    pub fn input_shape(mut self, shape: &[i64]) -> Self {
        self.input_shape = Some(shape.to_vec());
        self
    }

    /// `strides=2` or `strides=(2, 2)`.
    pub fn strides(mut self, strides: impl Into<Size2>) -> Self {
        self.strides = Some(strides.into().0);
        self
    }

    /// `padding='same'` or `'valid'` (checked when the layer is added).
    pub fn padding(mut self, padding: &str) -> Self {
        self.padding = padding.to_string();
        self
    }

    /// `use_bias=False` (convolutions followed by batch normalization).
    pub fn use_bias(mut self, on: bool) -> Self {
        self.use_bias = on;
        self
    }

    /// `BatchNormalization(epsilon=...)`.
    pub fn epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = epsilon;
        self
    }

    /// `BatchNormalization(momentum=...)`.
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// `BatchNormalization(scale=False)`: no `gamma` (InceptionV3).
    pub fn scale(mut self, on: bool) -> Self {
        self.scale = on;
        self
    }

    /// `DepthwiseConv2D(depth_multiplier=...)`.
    pub fn depth_multiplier(mut self, m: i64) -> Self {
        self.depth_multiplier = m;
        self
    }

    /// Makes the layer's weights for `model`'s current output shape.
    pub(super) fn build(self, model: &mut Sequential) -> Result<Layer> {
        if let Some(shape) = &self.input_shape {
            if !model.layers.is_empty() {
                bail!("input_dim/input_shape belongs on the first layer of a model");
            }
            model.input_shape = Some(shape.clone());
        }
        let activation: ActivationFn = self.activation.parse()?;
        let padding: Padding = self.padding.parse()?;
        let device = model.device;
        let input = match (&self.kind, model.output_shape()) {
            (SpecKind::Model(m), None) => m.input_shape.clone().unwrap_or_default(),
            (_, Some(shape)) => shape,
            (_, None) => bail!("the first layer of a model needs input_dim or input_shape"),
        };
        if model.input_shape.is_none() {
            model.input_shape = Some(input.clone());
        }
        let image = |what: &str| -> Result<[i64; 3]> {
            match input[..] {
                [h, w, c] => Ok([h, w, c]),
                _ => bail!("{what} needs an (H, W, C) input, got {input:?}"),
            }
        };
        // Output (H, W) of a windowed operator, refusing windows larger than the image.
        let window = |what: &str, [h, w]: [i64; 2], k: [i64; 2], s: [i64; 2]| -> Result<[i64; 2]> {
            let out = [padding.output_size(h, k[0], s[0]), padding.output_size(w, k[1], s[1])];
            if out[0] < 1 || out[1] < 1 {
                bail!("{what} with a {k:?} window and padding '{}' needs a larger input than {input:?}", self.padding);
            }
            Ok(out)
        };
        let strides = self.strides.unwrap_or([1, 1]);
        let bias = |n: i64| ("bias", Tensor::zeros([n], (Kind::Float, device)));
        let mut weights: Vec<(&'static str, Tensor)> = Vec::new();
        let (kind, output_shape, prefix) = match self.kind {
            SpecKind::Dense { units } => {
                let [features] = input[..] else {
                    bail!("Dense needs a flat input, got shape {input:?}: add Flatten() first")
                };
                weights.push(("kernel", glorot_uniform(&[features, units], features, units, device)));
                weights.push(bias(units));
                (LayerKind::Dense { units, activation }, vec![units], "dense")
            }
            SpecKind::Conv2D { filters, kernel: k } => {
                let [h, w, c] = image("Conv2D")?;
                let [oh, ow] = window("Conv2D", [h, w], k, strides)?;
                let fan = k[0] * k[1];
                weights.push(("kernel", conv_kernel(model, &[filters, c, k[0], k[1]], c * fan, filters * fan)));
                if self.use_bias {
                    weights.push(bias(filters));
                }
                let kind = LayerKind::Conv2D { filters, kernel_size: k, strides, padding, activation };
                (kind, vec![oh, ow, filters], "conv2d")
            }
            SpecKind::DepthwiseConv2D { kernel: k } => {
                let [h, w, c] = image("DepthwiseConv2D")?;
                let [oh, ow] = window("DepthwiseConv2D", [h, w], k, strides)?;
                let m = self.depth_multiplier;
                let fan = k[0] * k[1];
                weights.push(("depthwise_kernel", conv_kernel(model, &[c * m, 1, k[0], k[1]], c * fan, m * fan)));
                if self.use_bias {
                    weights.push(bias(c * m));
                }
                let kind = LayerKind::DepthwiseConv2D { kernel_size: k, strides, padding, depth_multiplier: m, activation };
                (kind, vec![oh, ow, c * m], "depthwise_conv2d")
            }
            SpecKind::SeparableConv2D { filters, kernel: k } => {
                let [h, w, c] = image("SeparableConv2D")?;
                let [oh, ow] = window("SeparableConv2D", [h, w], k, strides)?;
                let m = self.depth_multiplier;
                let fan = k[0] * k[1];
                weights.push(("depthwise_kernel", conv_kernel(model, &[c * m, 1, k[0], k[1]], c * fan, m * fan)));
                weights.push(("pointwise_kernel", conv_kernel(model, &[filters, c * m, 1, 1], c * m, filters)));
                if self.use_bias {
                    weights.push(bias(filters));
                }
                let kind = LayerKind::SeparableConv2D { filters, kernel_size: k, strides, padding, depth_multiplier: m, activation };
                (kind, vec![oh, ow, filters], "separable_conv2d")
            }
            SpecKind::BatchNormalization => {
                let c = *input.last().unwrap_or(&0);
                let ones = || Tensor::ones([c], (Kind::Float, device));
                let zeros = || Tensor::zeros([c], (Kind::Float, device));
                if self.scale {
                    weights.push(("gamma", ones()));
                }
                weights.extend([("beta", zeros()), ("moving_mean", zeros()), ("moving_variance", ones())]);
                let kind = LayerKind::BatchNormalization { epsilon: self.epsilon, momentum: self.momentum };
                (kind, input, "batch_normalization")
            }
            SpecKind::Activation => (LayerKind::Activation(activation), input, "activation"),
            SpecKind::ZeroPadding2D(p) => {
                let [h, w, c] = image("ZeroPadding2D")?;
                (LayerKind::ZeroPadding2D { padding: p }, vec![h + p[0] + p[1], w + p[2] + p[3], c], "zero_padding2d")
            }
            SpecKind::MaxPooling2D { pool } | SpecKind::AveragePooling2D { pool } => {
                let max = matches!(self.kind, SpecKind::MaxPooling2D { .. });
                let what = if max { "MaxPooling2D" } else { "AveragePooling2D" };
                let [h, w, c] = image(what)?;
                let strides = self.strides.unwrap_or(pool);
                let [oh, ow] = window(what, [h, w], pool, strides)?;
                let (kind, prefix) = if max {
                    (LayerKind::MaxPooling2D { pool_size: pool, strides, padding }, "max_pooling2d")
                } else {
                    (LayerKind::AveragePooling2D { pool_size: pool, strides, padding }, "average_pooling2d")
                };
                (kind, vec![oh, ow, c], prefix)
            }
            SpecKind::GlobalAveragePooling2D => {
                let [_, _, c] = image("GlobalAveragePooling2D")?;
                (LayerKind::GlobalAveragePooling2D, vec![c], "global_average_pooling2d")
            }
            SpecKind::Flatten => (LayerKind::Flatten, vec![input.iter().product()], "flatten"),
            SpecKind::Dropout { rate } => {
                if !(0.0..1.0).contains(&rate) {
                    bail!("Dropout rate must be in [0, 1), got {rate}");
                }
                (LayerKind::Dropout { rate }, input, "dropout")
            }
            SpecKind::Add(branches) | SpecKind::Concatenate(branches) if branches.len() < 2 => {
                bail!("a merge layer needs at least two branches, got {}", branches.len())
            }
            SpecKind::Add(branches) => {
                let branches = build_branches(model, &input, branches)?;
                let shapes: Vec<Vec<i64>> = branches.iter().map(|b| b.output_shape().unwrap_or_default()).collect();
                if shapes.iter().any(|s| *s != shapes[0]) {
                    bail!("Add needs branches of one shape, got {shapes:?}");
                }
                (LayerKind::Add(branches), shapes[0].clone(), "add")
            }
            SpecKind::Concatenate(branches) => {
                let branches = build_branches(model, &input, branches)?;
                let shapes: Vec<Vec<i64>> = branches.iter().map(|b| b.output_shape().unwrap_or_default()).collect();
                let [h, w, _] = shapes[0][..] else { bail!("Concatenate needs (H, W, C) branches, got {shapes:?}") };
                if shapes.iter().any(|s| s.len() != 3 || s[..2] != [h, w]) {
                    bail!("Concatenate needs branches of one height and width, got {shapes:?}");
                }
                let channels = shapes.iter().map(|s| s[2]).sum();
                (LayerKind::Concatenate(branches), vec![h, w, channels], "concatenate")
            }
            SpecKind::Model(mut m) => {
                if m.input_shape.as_deref() != Some(&input[..]) {
                    bail!("model '{}' takes input {:?} but receives {input:?}", m.name, m.input_shape);
                }
                m.to_device(device);
                let out = m.output_shape().unwrap_or_default();
                let name = m.name.clone();
                return Ok(Layer {
                    name: self.name.unwrap_or(name),
                    trainable: true,
                    output_shape: out,
                    kind: LayerKind::Model(m),
                    weights: vec![],
                    casts: Default::default(),
                });
            }
        };
        // Moving statistics are state, not parameters: the optimizer never sees them.
        let weights = weights
            .into_iter()
            .map(|(n, t)| (n, t.set_requires_grad(!super::is_moving_statistic(n))))
            .collect();
        let name = self.name.unwrap_or_else(|| model.auto_name(prefix));
        Ok(Layer { name, kind, trainable: true, output_shape, weights, casts: Default::default() })
    }
}

/// A convolution kernel (OIHW), laid out channels-last when the model is.
fn conv_kernel(model: &Sequential, shape: &[i64], fan_in: i64, fan_out: i64) -> Tensor {
    let kernel = glorot_uniform(shape, fan_in, fan_out, model.device);
    if model.channels_last {
        super::to_channels_last(&kernel)
    } else {
        kernel
    }
}

/// Each branch of a merge becomes a small model that starts from `input`.
fn build_branches(parent: &Sequential, input: &[i64], branches: Vec<Vec<LayerSpec>>) -> Result<Vec<Sequential>> {
    let mut built = Vec::new();
    for (i, specs) in branches.into_iter().enumerate() {
        let mut branch = Sequential::new(&format!("branch_{i}"));
        branch.input_shape = Some(input.to_vec());
        branch.device = parent.device;
        branch.channels_last = parent.channels_last;
        for spec in specs {
            branch.add(spec)?;
        }
        built.push(branch);
    }
    Ok(built)
}
