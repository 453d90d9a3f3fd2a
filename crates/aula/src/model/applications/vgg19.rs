//! VGG19: VGG16 with four convolutions in blocks 3 to 5.

use super::vgg16::vgg;
use super::Application;
use crate::data::Preprocessing;
use crate::model::Sequential;
use crate::weights::Weights;
use anyhow::Result;

const BLOCKS: [(usize, i64); 5] = [(2, 64), (2, 128), (4, 256), (4, 512), (4, 512)];

pub const APPLICATION: Application = Application {
    name: "VGG19",
    module: "vgg19",
    keras_top: "vgg19_weights_tf_dim_ordering_tf_kernels.h5",
    keras_notop: "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    default_size: 224,
    min_size: 32,
    preprocessing: Preprocessing::Caffe,
};

/// `VGG19(weights=..., include_top=..., input_shape=...)`.
#[allow(non_snake_case)]
pub fn VGG19(weights: impl Into<Weights>, include_top: bool, input_shape: (i64, i64, i64)) -> Result<Sequential> {
    vgg("vgg19", &BLOCKS, &APPLICATION, weights.into(), include_top, input_shape)
}
