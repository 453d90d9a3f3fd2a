//! The activation functions a layer applies (`activation='relu'`), by Keras name.
//!
//! `ActivationFn` is the function; `layers::Activation("relu")` is the Keras layer
//! that applies one (`LayerKind::Activation`).

use anyhow::{bail, Result};
use tch::Tensor;

/// An activation function, parsed from Keras's name (`"relu"`, `"sigmoid"`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivationFn {
    Linear,
    Relu,
    /// `ReLU(6.)`: MobileNet's and EfficientNet-Lite's activation.
    Relu6,
    Sigmoid,
    Softmax,
    /// `swish` (x · sigmoid(x)), EfficientNet's.
    Swish,
}

impl std::str::FromStr for ActivationFn {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "linear" | "" => ActivationFn::Linear,
            "relu" => ActivationFn::Relu,
            "relu6" => ActivationFn::Relu6,
            "sigmoid" => ActivationFn::Sigmoid,
            "softmax" => ActivationFn::Softmax,
            "swish" | "silu" => ActivationFn::Swish,
            other => bail!("unknown activation '{other}' (use relu, relu6, sigmoid, softmax, swish or linear)"),
        })
    }
}

impl ActivationFn {
    pub(super) fn apply(self, mut x: Tensor) -> Tensor {
        match self {
            ActivationFn::Linear => x,
            // In place: saves one activation-sized allocation per layer.
            ActivationFn::Relu => x.relu_(),
            // `relu6_`, not `hardtanh_()`: hardtanh's defaults clamp to -1..1.
            ActivationFn::Relu6 => x.relu6_(),
            ActivationFn::Sigmoid => x.sigmoid(),
            ActivationFn::Softmax => x.softmax(-1, x.kind()),
            ActivationFn::Swish => x.silu_(),
        }
    }
}
