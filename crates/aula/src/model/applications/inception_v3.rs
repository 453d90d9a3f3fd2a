//! InceptionV3 (Szegedy et al., 2015) as Keras builds it
//! (`keras/applications/inception_v3.py`), layer names included.
//!
//! Keras names only the concatenations `mixed0` … `mixed10`, `mixed9_0` and
//! `mixed9_1`; every other layer gets Keras's automatic name. Keras's ImageNet
//! files (released for Keras 2.0; TF2 Keras checks the same md5) were saved
//! when automatic names counted from 1 (`conv2d_1` … `conv2d_94`,
//! `batch_normalization_1` …, as ports that read them with h5py show), and
//! aula loads by name, so it uses those names. TF2 Keras, which counts from
//! `conv2d`, shows every number one lower.

use super::Application;
use crate::data::Preprocessing;
use crate::model::layers::{
    Activation, AveragePooling2D, BatchNormalization, Concatenate, Conv2D, Dense, GlobalAveragePooling2D, LayerSpec,
    MaxPooling2D, Size2,
};
use crate::model::Sequential;
use crate::weights::Weights;
use anyhow::Result;
use std::collections::BTreeMap;

pub const APPLICATION: Application = Application {
    name: "InceptionV3",
    module: "inception_v3",
    keras_top: "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
    keras_notop: "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    default_size: 299,
    min_size: 75,
    preprocessing: Preprocessing::Tf,
};

/// `InceptionV3(weights='imagenet', include_top=False, input_shape=(150, 150, 3))`.
///
/// `weights`: `"imagenet"`, `"none"`, a path, or a [`Weights`] value.
#[allow(non_snake_case)]
pub fn InceptionV3(weights: impl Into<Weights>, include_top: bool, input_shape: (i64, i64, i64)) -> Result<Sequential> {
    inception_v3(weights, include_top, input_shape)
}

/// Same as [`InceptionV3`], in Rust's spelling.
pub fn inception_v3(weights: impl Into<Weights>, include_top: bool, input_shape: (i64, i64, i64)) -> Result<Sequential> {
    APPLICATION.check_input_shape(include_top, input_shape)?;
    let (h, w, c) = input_shape;
    let mut k = Keras::default();
    let mut layers = chain([
        k.conv_bn(32, 3, 2, "valid"),
        k.conv_bn(32, 3, 1, "valid"),
        k.conv(64, 3),
        vec![MaxPooling2D(3).strides(2).name(&k.name("max_pooling2d"))],
        k.conv_bn(80, 1, 1, "valid"),
        k.conv_bn(192, 3, 1, "valid"),
        vec![MaxPooling2D(3).strides(2).name(&k.name("max_pooling2d"))],
    ]);
    // 35 × 35 (for 299 × 299 inputs)
    for (i, pool_filters) in [32, 64, 64].into_iter().enumerate() {
        layers.push(k.block_35(pool_filters, &format!("mixed{i}")));
    }
    layers.push(k.reduction_35());
    // 17 × 17
    for (i, filters) in [128, 160, 160, 192].into_iter().enumerate() {
        layers.push(k.block_17(filters, &format!("mixed{}", 4 + i)));
    }
    layers.push(k.reduction_17());
    // 8 × 8
    for i in 0..2 {
        layers.push(k.block_8(i));
    }
    if include_top {
        layers.push(GlobalAveragePooling2D().name("avg_pool"));
        layers.push(Dense(1000).activation("softmax").name("predictions"));
    }
    let mut model = Sequential::new("inception_v3");
    let mut layers = layers.into_iter();
    if let Some(first) = layers.next() {
        model.add(first.input_shape(&[h, w, c]))?;
    }
    for layer in layers {
        model.add(layer)?;
    }
    APPLICATION.load(&mut model, weights.into(), include_top)?;
    Ok(model)
}

/// Layers one after another.
fn chain<const N: usize>(parts: [Vec<LayerSpec>; N]) -> Vec<LayerSpec> {
    parts.into_iter().flatten().collect()
}

/// Hands out Keras's automatic names (`conv2d_7`) in the order Keras makes
/// the layers, which is the order the methods below are called in.
#[derive(Default)]
struct Keras {
    made: BTreeMap<&'static str, usize>,
}

impl Keras {
    fn name(&mut self, class: &'static str) -> String {
        let n = self.made.entry(class).or_default();
        *n += 1;
        format!("{class}_{n}")
    }

    /// Keras's `conv2d_bn`: a convolution without bias, batch normalization
    /// without γ (ReLU commutes with a positive scale, which the next layer
    /// can absorb), ReLU.
    fn conv_bn(&mut self, filters: i64, kernel: impl Into<Size2>, strides: i64, padding: &str) -> Vec<LayerSpec> {
        vec![
            Conv2D(filters, kernel).strides(strides).padding(padding).use_bias(false).name(&self.name("conv2d")),
            BatchNormalization().scale(false).name(&self.name("batch_normalization")),
            Activation("relu").name(&self.name("activation")),
        ]
    }

    /// `conv2d_bn` with its defaults: stride 1, 'same' padding.
    fn conv(&mut self, filters: i64, kernel: impl Into<Size2>) -> Vec<LayerSpec> {
        self.conv_bn(filters, kernel, 1, "same")
    }

    /// 3 × 3 average pooling that keeps the size, then a 1 × 1 convolution.
    fn pool_branch(&mut self, filters: i64) -> Vec<LayerSpec> {
        let pool = AveragePooling2D(3).strides(1).padding("same").name(&self.name("average_pooling2d"));
        chain([vec![pool], self.conv(filters, 1)])
    }

    /// mixed0–2: 1 × 1, 5 × 5, double 3 × 3 and pooling branches.
    fn block_35(&mut self, pool_filters: i64, name: &str) -> LayerSpec {
        let branch1x1 = self.conv(64, 1);
        let branch5x5 = chain([self.conv(48, 1), self.conv(64, 5)]);
        let branch3x3dbl = chain([self.conv(64, 1), self.conv(96, 3), self.conv(96, 3)]);
        let branch_pool = self.pool_branch(pool_filters);
        Concatenate(vec![branch1x1, branch5x5, branch3x3dbl, branch_pool]).name(name)
    }

    /// mixed3: halves the size with strided convolutions beside a max pooling.
    fn reduction_35(&mut self) -> LayerSpec {
        let branch3x3 = self.conv_bn(384, 3, 2, "valid");
        let branch3x3dbl = chain([self.conv(64, 1), self.conv(96, 3), self.conv_bn(96, 3, 2, "valid")]);
        let branch_pool = vec![MaxPooling2D(3).strides(2).name(&self.name("max_pooling2d"))];
        Concatenate(vec![branch3x3, branch3x3dbl, branch_pool]).name("mixed3")
    }

    /// mixed4–7: 7 × 7 convolutions factored into 1 × 7 and 7 × 1, with
    /// `filters` channels inside the branches.
    fn block_17(&mut self, filters: i64, name: &str) -> LayerSpec {
        let f = filters;
        let branch1x1 = self.conv(192, 1);
        let branch7x7 = chain([self.conv(f, 1), self.conv(f, (1, 7)), self.conv(192, (7, 1))]);
        let branch7x7dbl = chain([
            self.conv(f, 1),
            self.conv(f, (7, 1)),
            self.conv(f, (1, 7)),
            self.conv(f, (7, 1)),
            self.conv(192, (1, 7)),
        ]);
        let branch_pool = self.pool_branch(192);
        Concatenate(vec![branch1x1, branch7x7, branch7x7dbl, branch_pool]).name(name)
    }

    /// mixed8: halves the size again.
    fn reduction_17(&mut self) -> LayerSpec {
        let branch3x3 = chain([self.conv(192, 1), self.conv_bn(320, 3, 2, "valid")]);
        let branch7x7x3 = chain([
            self.conv(192, 1),
            self.conv(192, (1, 7)),
            self.conv(192, (7, 1)),
            self.conv_bn(192, 3, 2, "valid"),
        ]);
        let branch_pool = vec![MaxPooling2D(3).strides(2).name(&self.name("max_pooling2d"))];
        Concatenate(vec![branch3x3, branch7x7x3, branch_pool]).name("mixed8")
    }

    /// mixed9 (`i` = 0) and mixed10: the 3 × 3 branches end in a 1 × 3 and a
    /// 3 × 1 convolution side by side, joined as `mixed9_<i>` and `concatenate_<i + 1>`.
    fn block_8(&mut self, i: usize) -> LayerSpec {
        let branch1x1 = self.conv(320, 1);
        let mut branch3x3 = self.conv(384, 1);
        let split = Concatenate(vec![self.conv(384, (1, 3)), self.conv(384, (3, 1))]).name(&format!("mixed9_{i}"));
        branch3x3.push(split);
        let mut branch3x3dbl = chain([self.conv(448, 1), self.conv(384, 3)]);
        let split = Concatenate(vec![self.conv(384, (1, 3)), self.conv(384, (3, 1))]).name(&self.name("concatenate"));
        branch3x3dbl.push(split);
        let branch_pool = self.pool_branch(192);
        Concatenate(vec![branch1x1, branch3x3, branch3x3dbl, branch_pool]).name(&format!("mixed{}", 9 + i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::applications::test_support::check_keras_h5_round_trip;

    #[test]
    fn parameters_shapes_and_names_match_keras() {
        let mut model = InceptionV3("none", false, (299, 299, 3)).unwrap();
        let summary = model.summary();
        let totals = (summary.total_params, summary.trainable_params, summary.non_trainable_params);
        assert_eq!(totals, (21_802_784, 21_768_352, 34_432));
        assert_eq!(model.output_shape().unwrap(), [8, 8, 2048]);
        let names = model.layer_names();
        // Keras's model.layers has 311, its InputLayer included.
        assert_eq!(names.len(), 310);
        assert_eq!(names[..4], ["conv2d_1", "batch_normalization_1", "activation_1", "conv2d_2"]);
        assert_eq!(names.last().unwrap(), "mixed10");
        assert_eq!(model.get_layer("mixed10").unwrap().output_shape, [8, 8, 2048]);
        assert_eq!(model.get_layer("mixed7").unwrap().output_shape, [17, 17, 768]);
        assert_eq!(model.get_layer("mixed2").unwrap().output_shape, [35, 35, 288]);
        assert_eq!(model.get_layer("mixed9_1").unwrap().output_shape, [8, 8, 768]);
        // The last automatic names: the 94 conv2d_bn and the ninth average pooling.
        assert_eq!(model.get_layer("conv2d_94").unwrap().output_shape, [8, 8, 192]);
        assert_eq!(model.get_layer("average_pooling2d_9").unwrap().output_shape, [8, 8, 2048]);
        assert_eq!(model.get_layer("concatenate_2").unwrap().output_shape, [8, 8, 768]);
        assert!(model.get_layer("conv2d_95").is_err());
        // Batch normalization without scale: β and the moving statistics only.
        let weights = model.get_weights();
        assert!(weights.contains_key("batch_normalization_1/beta"));
        assert!(!weights.contains_key("batch_normalization_1/gamma"));
        assert!(!weights.contains_key("conv2d_1/bias"));
        assert!(summary.to_string().contains("mixed10 (Concatenate)"));

        let top = InceptionV3("none", true, (299, 299, 3)).unwrap();
        assert_eq!(top.count_params(), 23_851_784);
        assert_eq!(top.output_shape().unwrap(), [1000]);
        assert_eq!(top.layer_names()[310..], ["avg_pool", "predictions"]);
        assert!(InceptionV3("none", true, (150, 150, 3)).is_err());

        // The lesson's input, and Keras's smallest.
        assert_eq!(InceptionV3("none", false, (150, 150, 3)).unwrap().output_shape().unwrap(), [3, 3, 2048]);
        assert_eq!(InceptionV3("none", false, (75, 75, 3)).unwrap().output_shape().unwrap(), [1, 1, 2048]);
        assert!(InceptionV3("none", false, (74, 75, 3)).is_err());
    }


    #[test]
    fn keras_h5_round_trip() {
        let a = check_keras_h5_round_trip(|w, t, s| InceptionV3(w, t, s), (75, 75, 3), "batch_normalization_57");
        assert_eq!(a["conv2d_1/kernel"].size(), [3, 3, 3, 32], "Keras's HWIO layout");
        assert_eq!(a["conv2d_33/kernel"].size(), [1, 7, 128, 128], "mixed4's 1 × 7");
    }
}
