//! PyTorch's tensor layouts ↔ Keras's: the one place the permutations are written.
//!
//! aula keeps weights in Keras layout wherever a student sees them (files, `get_weights`)
//! and in PyTorch's where libtorch computes with them (`Layer`'s tensors).

use tch::Tensor;

/// A convolution kernel, PyTorch's OIHW → Keras's HWIO.
pub fn conv_to_keras(t: &Tensor) -> Tensor {
    t.permute([2, 3, 1, 0])
}

/// A convolution kernel, Keras's HWIO → PyTorch's OIHW.
pub fn conv_from_keras(t: &Tensor) -> Tensor {
    t.permute([3, 2, 0, 1])
}

/// A depthwise kernel, PyTorch's (C·m, 1, H, W) → Keras's (H, W, C, m), for depth multiplier `m`.
pub fn depthwise_to_keras(t: &Tensor, m: i64) -> Tensor {
    let s = t.size();
    t.reshape([s[0] / m, m, s[2], s[3]]).permute([2, 3, 0, 1])
}

/// A depthwise kernel, Keras's (H, W, C, m) → PyTorch's (C·m, 1, H, W).
pub fn depthwise_from_keras(t: &Tensor) -> Tensor {
    let s = t.size();
    t.permute([2, 3, 0, 1]).reshape([s[2] * s[3], 1, s[0], s[1]])
}

/// A dense kernel, PyTorch's (out, in) → Keras's (in, out) (its own inverse).
pub fn dense_to_keras(t: &Tensor) -> Tensor {
    t.tr()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn each_permutation_has_its_inverse() {
        let conv = Tensor::arange(2 * 3 * 5 * 7, (Kind::Float, Device::Cpu)).reshape([2, 3, 5, 7]);
        assert_eq!(conv_to_keras(&conv).size(), [5, 7, 3, 2]);
        assert!(conv_from_keras(&conv_to_keras(&conv)).equal(&conv));
        let depthwise = Tensor::arange(6 * 3 * 3, (Kind::Float, Device::Cpu)).reshape([6, 1, 3, 3]);
        assert_eq!(depthwise_to_keras(&depthwise, 2).size(), [3, 3, 3, 2]);
        assert!(depthwise_from_keras(&depthwise_to_keras(&depthwise, 2)).equal(&depthwise));
    }
}
