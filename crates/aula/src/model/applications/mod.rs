//! Keras's `keras.applications`: pretrained convolutional bases with the same
//! arguments everywhere (`weights`, `include_top`, `input_shape`) and Keras's
//! layer names, so freezing by name and loading Keras's `.h5` files work as in
//! the book. The slide "Otros modelos" lists Xception, InceptionV3, ResNet50,
//! VGG16, VGG19 and MobileNet; MobileNetV2 and EfficientNet-Lite0 are the light
//! nets whose ImageNet weights aula can install offline.

pub mod efficientnet_lite;
pub mod inception_v3;
pub mod mobilenet;
pub mod mobilenet_v2;
pub mod resnet50;
pub mod vgg16;
pub mod vgg19;
pub mod xception;

pub use efficientnet_lite::EfficientNetLite0;
pub use inception_v3::InceptionV3;
pub use mobilenet::MobileNet;
pub use mobilenet_v2::MobileNetV2;
pub use resnet50::ResNet50;
pub use vgg16::VGG16;
pub use vgg19::VGG19;
pub use xception::Xception;

use super::Sequential;
use crate::data::Preprocessing;
use crate::weights::{self, Manifest, Weights};
use anyhow::{bail, Result};
use std::path::PathBuf;

/// The applications by Keras name, with their constructors: the slide's list
/// and the two light nets.
pub const ALL: [(&str, Constructor); 8] = [
    ("VGG16", |w, top, shape| VGG16(w, top, shape)),
    ("VGG19", |w, top, shape| VGG19(w, top, shape)),
    ("ResNet50", |w, top, shape| ResNet50(w, top, shape)),
    ("InceptionV3", |w, top, shape| InceptionV3(w, top, shape)),
    ("Xception", |w, top, shape| Xception(w, top, shape)),
    ("MobileNet", |w, top, shape| MobileNet(w, top, shape)),
    ("MobileNetV2", |w, top, shape| MobileNetV2(w, top, shape)),
    ("EfficientNetLite0", |w, top, shape| EfficientNetLite0(w, top, shape)),
];

/// `(weights, include_top, input_shape) -> model`, as every application takes.
pub type Constructor = fn(Weights, bool, (i64, i64, i64)) -> Result<Sequential>;

/// An application by its Keras name (`"ResNet50"`), e.g. for a benchmark's argument.
pub fn by_name(name: &str) -> Result<Constructor> {
    match ALL.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        Some((_, build)) => Ok(*build),
        None => bail!("no application named {name}; known: {}", ALL.map(|(n, _)| n).join(", ")),
    }
}

/// What every application shares: its Keras name, the files Keras downloads
/// into `~/.keras/models`, its input-size limits and its preprocessing.
#[derive(Clone, Copy, Debug)]
pub struct Application {
    /// Keras's function name: `"ResNet50"`.
    pub name: &'static str,
    /// `keras.applications.<module>` and aula's manifest key: `"resnet50"`.
    pub module: &'static str,
    /// Keras's file with the classifier (`include_top=True`).
    pub keras_top: &'static str,
    /// Keras's file of the convolutional base.
    pub keras_notop: &'static str,
    /// The input size of the ImageNet classifier (and of `include_top=True`).
    pub default_size: i64,
    /// The smallest input the base accepts.
    pub min_size: i64,
    /// `<module>.preprocess_input`: how images must be scaled for the ImageNet weights.
    pub preprocessing: Preprocessing,
}

impl Application {
    /// Checks `input_shape` as Keras's `obtain_input_shape` does.
    pub fn check_input_shape(&self, include_top: bool, input_shape: (i64, i64, i64)) -> Result<()> {
        let (h, w, c) = input_shape;
        let name = self.name;
        if c != 3 {
            bail!("{name} takes RGB images: input_shape must end in 3, got {input_shape:?}");
        }
        let size = self.default_size;
        if include_top && (h, w) != (size, size) {
            bail!("with include_top=true {name}'s classifier needs input_shape ({size}, {size}, 3), got {input_shape:?}");
        }
        let min = self.min_size;
        if h < min || w < min {
            bail!("{name} needs images of at least {min}×{min}, got {input_shape:?}");
        }
        Ok(())
    }

    /// Puts `weights` into a freshly built `model`:
    /// - `none`: keeps the random initialisation;
    /// - a file: Keras `.h5`, `.safetensors` or torch `.pth` with Keras names;
    /// - `imagenet`: `$AULA_<MODULE>_WEIGHTS` if set, else Keras's own file in
    ///   `~/.keras/models` (as Keras would have downloaded it), else the weights
    ///   `make weights` installed (assets/weights.json), else an error naming them.
    pub fn load(&self, model: &mut Sequential, weights: Weights, include_top: bool) -> Result<()> {
        let path = match weights {
            Weights::None => return Ok(()),
            Weights::File(path) => return model.load_weights(&path),
            Weights::Imagenet => self.imagenet_file(include_top)?,
        };
        // An installed classifier also serves its base: take the weights the model has.
        let mut tensors = weights::read_weights_file(&path)?;
        let names: std::collections::BTreeSet<String> = model.named_weights().into_iter().map(|(n, _, _)| n).collect();
        tensors.retain(|k, _| names.contains(k));
        model.set_weights(&tensors, &path.display().to_string())
    }

    fn imagenet_file(&self, include_top: bool) -> Result<PathBuf> {
        let keras_file = if include_top { self.keras_top } else { self.keras_notop };
        let keras_dir = crate::paths::keras_models_dir();
        let manifest = Manifest::load();
        match manifest.get(self.module) {
            Ok(entry) if entry.include_top || !include_top => weights::resolve_imagenet(entry),
            // No Keras file for the models Keras lacks (EfficientNet-Lite0).
            _ if !keras_file.is_empty() && keras_dir.join(keras_file).exists() => Ok(keras_dir.join(keras_file)),
            Ok(_) => bail!(
                "aula installs only {}'s convolutional base; for include_top=true put Keras's {keras_file} into {}",
                self.name,
                keras_dir.display()
            ),
            Err(_) => bail!(
                "no ImageNet weights for {} here: Keras downloads {keras_file} from storage.googleapis.com, which \
                 aula cannot reach. Put that file into {} (or pass weights=\"<path>\"), or use weights=\"none\"",
                self.name,
                keras_dir.display()
            ),
        }
    }
}

/// What the architectures' tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use super::Constructor;
    use crate::model::Sequential;
    use crate::weights::NamedTensors;
    use tch::{Kind, Tensor};

    /// Batch normalization starts as the identity (γ=1, β=0, μ=0, σ²=1), which
    /// would hide swapped weights in a round trip: give every statistic its own value.
    pub(crate) fn randomize_batch_norm(model: &mut Sequential) {
        let mut tensors = model.get_weights();
        for (name, t) in tensors.iter_mut() {
            if name.ends_with("/gamma") || name.ends_with("/moving_variance") {
                *t = t.rand_like() + 0.5;
            } else if name.ends_with("/beta") || name.ends_with("/moving_mean") {
                *t = (t.rand_like() - 0.5) * 0.2;
            }
        }
        model.set_weights(&tensors, "test").unwrap();
    }

    /// Keras h5 round trip of one architecture at `shape`: save, load, the same
    /// tensors and the same outputs; then a file without `missing_layer`'s weights
    /// must be refused with an error naming it. Returns the saved weights, for
    /// layout checks.
    pub(crate) fn check_keras_h5_round_trip(build: Constructor, shape: (i64, i64, i64), missing_layer: &str) -> NamedTensors {
        let dir = tempfile::tempdir().unwrap();
        let mut model = build("none".into(), false, shape).unwrap();
        randomize_batch_norm(&mut model);
        let path = dir.path().join("model.h5");
        model.save_weights(&path).unwrap();

        let loaded = build(path.to_str().unwrap().into(), false, shape).unwrap();
        let (a, b) = (model.get_weights(), loaded.get_weights());
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (name, t) in &a {
            assert!(t.equal(&b[name]), "{name} differs after the round trip");
        }
        let x = Tensor::rand([2, 3, shape.0, shape.1], (Kind::Float, model.device()));
        assert!(model.forward_t(&x, false).allclose(&loaded.forward_t(&x, false), 1e-5, 1e-6, false));

        let prefix = format!("{missing_layer}/");
        let partial: NamedTensors =
            a.iter().filter(|(k, _)| !k.starts_with(&prefix)).map(|(k, t)| (k.clone(), t.shallow_clone())).collect();
        assert!(partial.len() < a.len(), "the model has no layer {missing_layer}");
        let broken = dir.path().join("broken.h5");
        crate::weights::write_keras_h5(&partial, &broken).unwrap();
        let e = build(broken.to_str().unwrap().into(), false, shape).unwrap_err().to_string();
        assert!(e.contains(missing_layer), "{e}");
        a
    }
}
