//! VGG16 (Simonyan & Zisserman, 2014) as Keras builds it, layer names included.

use super::layers::{Conv2D, Dense, Flatten, MaxPooling2D};
use super::Sequential;
use crate::weights::{self, Manifest, Weights};
use anyhow::{bail, Result};

/// The architecture table: for each block, how many 3×3 convolutions and how
/// many filters. Each block ends with a 2×2 max pooling.
const BLOCKS: [(usize, i64); 5] = [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)];

/// Keras's file with the classifier on top (`include_top=True`).
const KERAS_VGG16_TOP: &str = "vgg16_weights_tf_dim_ordering_tf_kernels.h5";

/// `VGG16(weights='imagenet', include_top=False, input_shape=(150, 150, 3))`.
///
/// `weights`: `"imagenet"`, `"none"`, a path, or a [`Weights`] value.
#[allow(non_snake_case)]
pub fn VGG16(weights: impl Into<Weights>, include_top: bool, input_shape: (i64, i64, i64)) -> Result<Sequential> {
    vgg16(weights, include_top, input_shape)
}

/// Same as [`VGG16`], in Rust's spelling.
pub fn vgg16(weights: impl Into<Weights>, include_top: bool, input_shape: (i64, i64, i64)) -> Result<Sequential> {
    let weights = weights.into();
    let (h, w, c) = input_shape;
    if c != 3 {
        bail!("VGG16 takes RGB images: input_shape must end in 3, got {input_shape:?}");
    }
    if include_top && (h, w) != (224, 224) {
        bail!("with include_top=true VGG16's classifier needs input_shape (224, 224, 3), got {input_shape:?}");
    }
    if h < 32 || w < 32 {
        bail!("VGG16 needs images of at least 32×32 (five 2×2 poolings), got {input_shape:?}");
    }
    let mut model = Sequential::new("vgg16");
    for (b, &(convs, filters)) in BLOCKS.iter().enumerate() {
        for i in 1..=convs {
            let mut conv = Conv2D(filters, 3).activation("relu").name(&format!("block{}_conv{i}", b + 1));
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
    match weights {
        Weights::None => {}
        Weights::File(path) => model.load_weights(&path)?,
        Weights::Imagenet if include_top => {
            let path = crate::paths::keras_models_dir().join(KERAS_VGG16_TOP);
            if !path.exists() {
                bail!(
                    "VGG16's ImageNet classifier (include_top=true) needs Keras's {KERAS_VGG16_TOP} in {}; \
                     aula ships only the convolutional base: use include_top=false",
                    crate::paths::keras_models_dir().display()
                );
            }
            model.load_weights(&path)?;
        }
        Weights::Imagenet => {
            let path = weights::resolve_imagenet(Manifest::load().get("vgg16")?)?;
            model.load_weights(&path)?;
        }
    }
    Ok(model)
}
