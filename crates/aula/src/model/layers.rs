//! Layer constructors with Keras's names, so a cell reads like the slides:
//! `model.add(Dense(256).activation("relu").input_dim(4 * 4 * 512))?`.
#![allow(non_snake_case)]

use super::{glorot_uniform, Activation, Layer, LayerKind, Sequential};
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
}

#[derive(Debug)]
enum SpecKind {
    Conv2D { filters: i64, kernel_size: i64 },
    MaxPooling2D { pool_size: i64 },
    Flatten,
    Dense { units: i64 },
    Dropout { rate: f64 },
    Model(Box<Sequential>),
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

/// `layers.Conv2D(filters, (k, k), padding='same')`.
pub fn Conv2D(filters: i64, kernel_size: i64) -> LayerSpec {
    LayerSpec::new(SpecKind::Conv2D { filters, kernel_size })
}

/// `layers.MaxPooling2D((p, p))`.
pub fn MaxPooling2D(pool_size: i64) -> LayerSpec {
    LayerSpec::new(SpecKind::MaxPooling2D { pool_size })
}

impl From<Sequential> for LayerSpec {
    fn from(model: Sequential) -> Self {
        LayerSpec::new(SpecKind::Model(Box::new(model)))
    }
}

impl LayerSpec {
    fn new(kind: SpecKind) -> LayerSpec {
        LayerSpec { kind, name: None, activation: String::new(), input_shape: None }
    }

    /// `activation='relu'` (also `sigmoid`, `softmax`, `linear`).
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

    /// Makes the layer's weights for `model`'s current output shape.
    pub(super) fn build(self, model: &mut Sequential) -> Result<Layer> {
        if let Some(shape) = &self.input_shape {
            if !model.layers.is_empty() {
                bail!("input_dim/input_shape belongs on the first layer of a model");
            }
            model.input_shape = Some(shape.clone());
        }
        let activation: Activation = self.activation.parse()?;
        let device = model.device;
        let input = match (&self.kind, model.output_shape()) {
            (SpecKind::Model(m), None) => m.input_shape.clone().unwrap_or_default(),
            (_, Some(shape)) => shape,
            (_, None) => bail!("the first layer of a model needs input_dim or input_shape"),
        };
        if model.input_shape.is_none() {
            model.input_shape = Some(input.clone());
        }
        let (kind, weights, output_shape, prefix) = match self.kind {
            SpecKind::Dense { units } => {
                let [features] = input[..] else {
                    bail!("Dense needs a flat input, got shape {input:?}: add Flatten() first")
                };
                let kernel = glorot_uniform(&[features, units], features, units, device);
                let bias = Tensor::zeros([units], (Kind::Float, device));
                (LayerKind::Dense { units, activation }, vec![("kernel", kernel), ("bias", bias)], vec![units], "dense")
            }
            SpecKind::Conv2D { filters, kernel_size: k } => {
                let [h, w, c] = input[..] else { bail!("Conv2D needs an (H, W, C) input, got {input:?}") };
                let kernel = glorot_uniform(&[filters, c, k, k], c * k * k, filters * k * k, device);
                let kernel = if model.channels_last { super::to_channels_last(&kernel) } else { kernel };
                let bias = Tensor::zeros([filters], (Kind::Float, device));
                let kind = LayerKind::Conv2D { filters, kernel_size: k, activation };
                (kind, vec![("kernel", kernel), ("bias", bias)], vec![h, w, filters], "conv2d")
            }
            SpecKind::MaxPooling2D { pool_size: p } => {
                let [h, w, c] = input[..] else { bail!("MaxPooling2D needs an (H, W, C) input, got {input:?}") };
                (LayerKind::MaxPooling2D { pool_size: p }, vec![], vec![h / p, w / p, c], "max_pooling2d")
            }
            SpecKind::Flatten => (LayerKind::Flatten, vec![], vec![input.iter().product()], "flatten"),
            SpecKind::Dropout { rate } => {
                if !(0.0..1.0).contains(&rate) {
                    bail!("Dropout rate must be in [0, 1), got {rate}");
                }
                (LayerKind::Dropout { rate }, vec![], input, "dropout")
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
                });
            }
        };
        let weights = weights.into_iter().map(|(n, t)| (n, t.set_requires_grad(true))).collect();
        let name = self.name.unwrap_or_else(|| model.auto_name(prefix));
        Ok(Layer { name, kind, trainable: true, output_shape, weights })
    }
}
