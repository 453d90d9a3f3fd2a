//! Images from folders, Keras style:
//!
//! ```no_run
//! use aula::data::{ClassMode, ImageDataGenerator};
//! # fn main() -> anyhow::Result<()> {
//! let train_datagen = ImageDataGenerator::rescale(1.0 / 255.0);
//! let mut train_generator = train_datagen.flow_from_directory(
//!     "cats_and_dogs_small/train", (150, 150), 20, ClassMode::Binary)?;
//! // Found 2000 images belonging to 2 classes.
//! let (images, labels) = train_generator.next_batch()?; // (20, 3, 150, 150), (20,)
//! # Ok(()) }
//! ```
//!
//! - [`augment`]: Keras's random rotations, shifts, shear, zoom and flips;
//! - [`decoded`]: decoded images kept in memory between epochs;
//! - [`directory`]: `ImageDataGenerator`, `flow_from_directory`, the iterator;
//! - [`image_io`]: decoding, RGB conversion, Keras's nearest resize, tensors;
//! - [`split`]: Chollet's train/validation/test split and where the data is.

pub mod augment;
pub mod decoded;
pub mod directory;
pub mod image_io;
pub mod split;

pub use augment::{Augmentation, FillMode, Transform};
pub use directory::{ClassMode, DirectoryIterator, ImageDataGenerator};
pub use image_io::{
    decode_all, has_image_extension, images_to_tensor, load_image, Preprocessing, CAFFE_MEAN_BGR,
    IMAGE_EXTENSIONS,
};
pub use split::{default_data_dir, make_split};
