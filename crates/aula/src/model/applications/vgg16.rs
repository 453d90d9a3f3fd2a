//! VGG16 (Simonyan & Zisserman, 2014) as Keras builds it, layer names included.

use super::Application;
use crate::data::Preprocessing;
use crate::model::layers::{Conv2D, Dense, Flatten, MaxPooling2D};
use crate::model::Sequential;
use crate::weights::Weights;
use anyhow::Result;

/// The architecture table: for each block, how many 3×3 convolutions and how
/// many filters. Each block ends with a 2×2 max pooling.
const BLOCKS: [(usize, i64); 5] = [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)];

pub const APPLICATION: Application = Application {
    name: "VGG16",
    module: "vgg16",
    keras_top: "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
    keras_notop: "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    default_size: 224,
    min_size: 32,
    preprocessing: Preprocessing::Caffe,
};

/// `VGG16(weights='imagenet', include_top=False, input_shape=(150, 150, 3))`.
///
/// `weights`: `"imagenet"`, `"none"`, a path, or a [`Weights`] value.
#[allow(non_snake_case)]
pub fn VGG16(weights: impl Into<Weights>, include_top: bool, input_shape: (i64, i64, i64)) -> Result<Sequential> {
    vgg16(weights, include_top, input_shape)
}

/// Same as [`VGG16`], in Rust's spelling.
pub fn vgg16(weights: impl Into<Weights>, include_top: bool, input_shape: (i64, i64, i64)) -> Result<Sequential> {
    vgg("vgg16", &BLOCKS, &APPLICATION, weights.into(), include_top, input_shape)
}

/// VGG16 and VGG19 differ only in how many convolutions each block has.
pub(crate) fn vgg(
    name: &str,
    blocks: &[(usize, i64)],
    app: &Application,
    weights: Weights,
    include_top: bool,
    input_shape: (i64, i64, i64),
) -> Result<Sequential> {
    app.check_input_shape(include_top, input_shape)?;
    let (h, w, c) = input_shape;
    let mut model = Sequential::new(name);
    for (b, &(convs, filters)) in blocks.iter().enumerate() {
        for i in 1..=convs {
            let mut conv = Conv2D(filters, 3).padding("same").activation("relu").name(&format!("block{}_conv{i}", b + 1));
            if b == 0 && i == 1 {
                conv = conv.input_shape(&[h, w, c]);
            }
            model.add(conv)?;
        }
        model.add(MaxPooling2D(2).name(&format!("block{}_pool", b + 1)))?;
    }
    if include_top {
        model.add(Flatten().name("flatten"))?;
        model.add(Dense(4096).activation("relu").name("fc1"))?;
        model.add(Dense(4096).activation("relu").name("fc2"))?;
        model.add(Dense(1000).activation("softmax").name("predictions"))?;
    }
    app.load(&mut model, weights, include_top)?;
    Ok(model)
}
