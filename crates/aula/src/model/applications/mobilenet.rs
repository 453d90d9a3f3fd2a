//! MobileNet v1 (Howard et al., 2017) as Keras builds it
//! (`keras/applications/mobilenet.py`, alpha 1.0, depth_multiplier 1), layer
//! names included, so Keras's `.h5` files load.

use super::Application;
use crate::data::Preprocessing;
use crate::model::layers::{
    Activation, AveragePooling2D, BatchNormalization, Conv2D, DepthwiseConv2D, Dropout, Flatten, ReLU6, ZeroPadding2D,
};
use crate::model::Sequential;
use crate::weights::Weights;
use anyhow::{Context, Result};

/// The 13 depthwise-separable blocks (`conv_dw_1`… `conv_dw_13`): filters of
/// the pointwise 1×1 convolution and stride of the depthwise 3×3.
const BLOCKS: [(i64, i64); 13] = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
];

pub const APPLICATION: Application = Application {
    name: "MobileNet",
    module: "mobilenet",
    keras_top: "mobilenet_1_0_224_tf.h5",
    keras_notop: "mobilenet_1_0_224_tf_no_top.h5",
    default_size: 224,
    min_size: 32,
    preprocessing: Preprocessing::Tf,
};

/// `MobileNet(weights='imagenet', include_top=False, input_shape=(150, 150, 3))`.
///
/// `weights`: `"imagenet"`, `"none"`, a path, or a [`Weights`] value.
#[allow(non_snake_case)]
pub fn MobileNet(weights: impl Into<Weights>, include_top: bool, input_shape: (i64, i64, i64)) -> Result<Sequential> {
    mobilenet(weights, include_top, input_shape)
}

/// Same as [`MobileNet`], in Rust's spelling.
pub fn mobilenet(weights: impl Into<Weights>, include_top: bool, input_shape: (i64, i64, i64)) -> Result<Sequential> {
    APPLICATION.check_input_shape(include_top, input_shape)?;
    let (h, w, c) = input_shape;
    let mut model = Sequential::new("mobilenet_1.00_224");
    model.add(Conv2D(32, 3).strides(2).padding("same").use_bias(false).name("conv1").input_shape(&[h, w, c]))?;
    model.add(BatchNormalization().name("conv1_bn"))?;
    model.add(ReLU6().name("conv1_relu"))?;
    for (i, (filters, stride)) in BLOCKS.into_iter().enumerate() {
        let id = i + 1;
        // A strided block pads the bottom and right by hand and convolves
        // 'valid': TensorFlow's 'same' would pad both sides of an odd input.
        let depthwise = if stride == 1 {
            DepthwiseConv2D(3).padding("same")
        } else {
            model.add(ZeroPadding2D(((0, 1), (0, 1))).name(&format!("conv_pad_{id}")))?;
            DepthwiseConv2D(3).strides(stride)
        };
        model.add(depthwise.use_bias(false).name(&format!("conv_dw_{id}")))?;
        model.add(BatchNormalization().name(&format!("conv_dw_{id}_bn")))?;
        model.add(ReLU6().name(&format!("conv_dw_{id}_relu")))?;
        model.add(Conv2D(filters, 1).padding("same").use_bias(false).name(&format!("conv_pw_{id}")))?;
        model.add(BatchNormalization().name(&format!("conv_pw_{id}_bn")))?;
        model.add(ReLU6().name(&format!("conv_pw_{id}_relu")))?;
    }
    if include_top {
        // Keras's classifier is a 1×1 convolution on the pooled (1, 1, 1024)
        // map: GlobalAveragePooling2D(keepdims=True), Dropout, Conv2D
        // 'conv_preds', Reshape((1000,)) 'reshape_2', softmax. aula has neither
        // keepdims nor Reshape, so an average pooling over the whole map keeps
        // the (1, 1, 1024) shape and Flatten reshapes: the same computation,
        // and conv_preds keeps Keras's (1, 1, 1024, 1000) kernel, so Keras's
        // mobilenet_1_0_224_tf.h5 loads as it is.
        let map = model.output_shape().context("MobileNet's base has an output")?;
        model.add(AveragePooling2D((map[0], map[1])).name("global_average_pooling2d"))?;
        model.add(Dropout(1e-3).name("dropout"))?;
        model.add(Conv2D(1000, 1).padding("same").name("conv_preds"))?;
        model.add(Flatten().name("reshape_2"))?;
        model.add(Activation("softmax").name("predictions"))?;
    }
    APPLICATION.load(&mut model, weights.into(), include_top)?;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::applications::test_support::check_keras_h5_round_trip;
    use tch::{Kind, Tensor};

    #[test]
    fn parameters_shapes_and_names_match_keras() {
        let mut model = MobileNet("none", false, (224, 224, 3)).unwrap();
        let summary = model.summary();
        let totals = (summary.total_params, summary.trainable_params, summary.non_trainable_params);
        assert_eq!(totals, (3_228_864, 3_206_976, 21_888));
        assert_eq!(model.output_shape().unwrap(), [7, 7, 1024]);
        let names = model.layer_names();
        // Keras's model.layers has 86, its InputLayer included.
        assert_eq!(names.len(), 85);
        assert_eq!(names[..6], ["conv1", "conv1_bn", "conv1_relu", "conv_dw_1", "conv_dw_1_bn", "conv_dw_1_relu"]);
        assert_eq!(names[8..12], ["conv_pw_1_relu", "conv_pad_2", "conv_dw_2", "conv_dw_2_bn"]);
        assert_eq!(names.last().unwrap(), "conv_pw_13_relu");
        assert_eq!(model.get_layer("conv_pw_11_relu").unwrap().output_shape, [14, 14, 512]);
        let table = summary.to_string();
        assert!(table.contains("conv_dw_13 (DepthwiseConv2D)"), "{table}");
        assert!(table.contains("conv_pw_13_relu (ReLU)"), "{table}");

        let top = MobileNet("none", true, (224, 224, 3)).unwrap();
        assert_eq!(top.count_params(), 4_253_864);
        assert_eq!(top.output_shape().unwrap(), [1000]);
        assert_eq!(
            top.layer_names()[85..],
            ["global_average_pooling2d", "dropout", "conv_preds", "reshape_2", "predictions"]
        );
        assert_eq!(top.get_weights()["conv_preds/kernel"].size(), [1, 1, 1024, 1000]);

        // The lesson's input, an odd one, and Keras's smallest.
        assert_eq!(MobileNet("none", false, (150, 150, 3)).unwrap().output_shape().unwrap(), [4, 4, 1024]);
        assert_eq!(MobileNet("none", false, (75, 75, 3)).unwrap().output_shape().unwrap(), [2, 2, 1024]);
        assert_eq!(MobileNet("none", false, (32, 32, 3)).unwrap().output_shape().unwrap(), [1, 1, 1024]);
        assert!(MobileNet("none", true, (150, 150, 3)).is_err());
    }

    #[test]
    fn forward_gives_the_promised_shape() {
        let model = MobileNet("none", false, (64, 64, 3)).unwrap();
        assert_eq!(model.output_shape().unwrap(), [2, 2, 1024]);
        let x = Tensor::rand([2, 3, 64, 64], (Kind::Float, model.device()));
        assert_eq!(model.forward_t(&x, false).size(), [2, 1024, 2, 2]);
    }

    #[test]
    fn the_classifier_is_keras_pooled_1x1_convolution() {
        let model = MobileNet("none", true, (224, 224, 3)).unwrap();
        let x = Tensor::rand([1, 3, 224, 224], (Kind::Float, model.device()));
        let probs = model.forward_t(&x, false);
        assert_eq!(probs.size(), [1, 1000]);
        // By hand: the features' mean over the map, times the kernel seen as (1024, 1000).
        let leaves = model.leaves();
        let base = leaves.iter().position(|(l, _)| l.name == "global_average_pooling2d").unwrap();
        let features = model.forward_leaves(&x, 0..base, crate::precision::Precision::Fp32).mean_dim([2, 3].as_slice(), false, Kind::Float);
        let w = model.get_weights();
        let kernel = w["conv_preds/kernel"].reshape([1024, 1000]).to_device(x.device());
        let logits = features.matmul(&kernel) + w["conv_preds/bias"].to_device(x.device());
        assert!(probs.allclose(&logits.softmax(-1, Kind::Float), 1e-5, 1e-6, false));
    }


    #[test]
    fn keras_h5_round_trip() {
        let a = check_keras_h5_round_trip(|w, t, s| MobileNet(w, t, s), (64, 64, 3), "conv_dw_7");
        assert_eq!(a["conv_dw_1/depthwise_kernel"].size(), [3, 3, 32, 1], "Keras's depthwise layout");
    }
}
