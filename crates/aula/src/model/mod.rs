//! Models as Keras builds them: a `Sequential` list of named layers, each with
//! its weights and a `trainable` flag. A whole model can be a layer of another
//! (`model.add(conv_base)`), as in the slide "Alternativa 2".
//!
//! Activations flow between layers in PyTorch's NCHW order; shapes are shown
//! and weights are stored in Keras's order (HWC, HWIO kernels), so everything
//! a student reads matches the slides.

pub mod applications;
mod activation;
mod flops;
mod folding;
mod io;
mod layer;
pub mod layers;
mod padding;
mod sequential;
mod summary;

pub use activation::ActivationFn;
pub use layer::{Layer, LayerKind};
pub(crate) use layer::{glorot_uniform, is_moving_statistic};
pub(crate) use crate::device::to_channels_last;
pub(crate) use sequential::Compiled;
pub use sequential::Sequential;

pub use layers::{Dense, Dropout, Flatten, LayerSpec};
pub use padding::Padding;
pub use summary::{thousands, Summary};
pub use applications::vgg16::{vgg16, VGG16};
