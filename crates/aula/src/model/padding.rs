//! Keras's `padding='valid' | 'same'` for convolutions and poolings.
//!
//! TensorFlow's 'same' gives `ceil(in / stride)` outputs and, when the padding
//! needed is odd, puts the extra row and column at the bottom and right.
//! PyTorch's operators only pad symmetrically, so an uneven 'same' padding is
//! applied to the input first (zeros for convolutions, -∞ for max pooling).
//! Pretrained TensorFlow weights (MobileNet, EfficientNet, Xception) were
//! trained with exactly this placement; a one-pixel shift costs accuracy.

use anyhow::{bail, Result};
use tch::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    Valid,
    Same,
}

impl std::str::FromStr for Padding {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "valid" => Ok(Padding::Valid),
            "same" => Ok(Padding::Same),
            other => bail!("unknown padding '{other}' (use \"valid\" or \"same\")"),
        }
    }
}

impl Padding {
    /// Output size along one dimension, as Keras computes it.
    pub fn output_size(self, input: i64, kernel: i64, stride: i64) -> i64 {
        match self {
            Padding::Valid => (input - kernel).div_euclid(stride) + 1,
            Padding::Same => (input + stride - 1) / stride,
        }
    }

    /// (before, after) padding along one dimension.
    pub fn amounts(self, input: i64, kernel: i64, stride: i64) -> (i64, i64) {
        match self {
            Padding::Valid => (0, 0),
            Padding::Same => {
                let total = ((self.output_size(input, kernel, stride) - 1) * stride + kernel - input).max(0);
                (total / 2, total - total / 2)
            }
        }
    }

    /// Pads `x` (NCHW) for an operator with this kernel and stride. Returns the
    /// input to use and the symmetric padding to hand to the operator: the
    /// padding itself when it is even on both sides, else an explicitly padded
    /// input (filled with `fill`) and zero.
    pub fn apply(self, x: &Tensor, kernel: [i64; 2], strides: [i64; 2], fill: f64) -> (Tensor, [i64; 2]) {
        let size = x.size();
        let (top, bottom) = self.amounts(size[2], kernel[0], strides[0]);
        let (left, right) = self.amounts(size[3], kernel[1], strides[1]);
        if top == bottom && left == right {
            (x.shallow_clone(), [top, left])
        } else {
            (x.pad([left, right, top, bottom], "constant", fill), [0, 0])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_puts_the_odd_pixel_at_the_end_as_tensorflow_does() {
        // 224 → 112 with a 3×3 stride-2 kernel needs 1 pixel: after, not before.
        assert_eq!(Padding::Same.amounts(224, 3, 2), (0, 1));
        assert_eq!(Padding::Same.output_size(224, 3, 2), 112);
        // An odd input needs 2: one on each side.
        assert_eq!(Padding::Same.amounts(225, 3, 2), (1, 1));
        assert_eq!(Padding::Same.amounts(150, 1, 1), (0, 0));
        assert_eq!(Padding::Valid.output_size(299, 3, 2), 149);
        assert_eq!(Padding::Valid.output_size(150, 2, 2), 75);
    }

    #[test]
    fn uneven_padding_is_applied_to_the_input() {
        let x = Tensor::ones([1, 1, 4, 4], (tch::Kind::Float, tch::Device::Cpu));
        let (padded, sym) = Padding::Same.apply(&x, [3, 3], [2, 2], f64::NEG_INFINITY);
        assert_eq!(sym, [0, 0]);
        assert_eq!(padded.size(), [1, 1, 5, 5]);
        assert_eq!(padded.double_value(&[0, 0, 0, 0]), 1.0);
        assert_eq!(padded.double_value(&[0, 0, 4, 4]), f64::NEG_INFINITY);
        let (same, sym) = Padding::Same.apply(&x, [3, 3], [1, 1], 0.0);
        assert_eq!((same.size(), sym), (vec![1, 1, 4, 4], [1, 1]));
    }
}
