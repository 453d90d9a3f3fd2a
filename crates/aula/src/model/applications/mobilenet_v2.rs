//! MobileNetV2 (Sandler et al., 2018) as Keras builds it (`alpha=1.0`), layer
//! names included. TF-Hub's ImageNet MobileNetV2 is converted into those names by
//! `aula::convert::mobilenet_v2` (what `make weights` installs).

use super::Application;
use crate::data::Preprocessing;
use crate::model::layers::{
    Add, BatchNormalization, Conv2D, Dense, DepthwiseConv2D, GlobalAveragePooling2D, LayerSpec, ReLU6, ZeroPadding2D,
};
use crate::model::Sequential;
use crate::weights::Weights;
use anyhow::Result;

/// The inverted residual blocks in Keras's order (block ids 0 to 16):
/// (expansion, output channels, stride).
const BLOCKS: [(i64, i64, i64); 17] = [
    (1, 16, 1),
    (6, 24, 2),
    (6, 24, 1),
    (6, 32, 2),
    (6, 32, 1),
    (6, 32, 1),
    (6, 64, 2),
    (6, 64, 1),
    (6, 64, 1),
    (6, 64, 1),
    (6, 96, 1),
    (6, 96, 1),
    (6, 96, 1),
    (6, 160, 2),
    (6, 160, 1),
    (6, 160, 1),
    (6, 320, 1),
];

pub const APPLICATION: Application = Application {
    name: "MobileNetV2",
    module: "mobilenet_v2",
    keras_top: "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
    keras_notop: "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    default_size: 224,
    min_size: 32,
    preprocessing: Preprocessing::Tf,
};

/// `MobileNetV2(weights='imagenet', include_top=False, input_shape=(150, 150, 3))`.
///
/// `weights`: `"imagenet"`, `"none"`, a path, or a [`Weights`] value. The
/// ImageNet weights want [`Preprocessing::Tf`] (pixels scaled to -1..1).
#[allow(non_snake_case)]
pub fn MobileNetV2(weights: impl Into<Weights>, include_top: bool, input_shape: (i64, i64, i64)) -> Result<Sequential> {
    let weights = weights.into();
    APPLICATION.check_input_shape(include_top, input_shape)?;
    let (h, w, c) = input_shape;
    // Keras names the model after the size of the ImageNet weights it loads,
    // which is 224 whenever the input is not one of the trained sizes.
    let trained = h == w && [96, 128, 160, 192, 224].contains(&h);
    let rows = if weights == Weights::Imagenet && !trained { 224 } else { h };
    let mut model = Sequential::new(&format!("mobilenetv2_1.00_{rows}"));
    model.add(Conv2D(32, 3).strides(2).padding("same").use_bias(false).name("Conv1").input_shape(&[h, w, c]))?;
    model.add(batch_norm("bn_Conv1"))?;
    model.add(ReLU6().name("Conv1_relu"))?;
    let mut channels = 32;
    for (id, &(expansion, filters, stride)) in BLOCKS.iter().enumerate() {
        inverted_res_block(&mut model, channels, expansion, filters, stride, id)?;
        channels = filters;
    }
    model.add(Conv2D(1280, 1).use_bias(false).name("Conv_1"))?;
    model.add(batch_norm("Conv_1_bn"))?;
    model.add(ReLU6().name("out_relu"))?;
    if include_top {
        // Keras leaves this pooling unnamed: the name is the automatic one.
        model.add(GlobalAveragePooling2D().name("global_average_pooling2d"))?;
        model.add(Dense(1000).activation("softmax").name("predictions"))?;
    }
    APPLICATION.load(&mut model, weights, include_top)?;
    Ok(model)
}

fn batch_norm(name: &str) -> LayerSpec {
    BatchNormalization().epsilon(1e-3).momentum(0.999).name(name)
}

/// Keras's `_inverted_res_block`: 1×1 expansion (none in block 0), 3×3
/// depthwise, linear 1×1 projection, and the identity shortcut when the
/// shape does not change.
fn inverted_res_block(
    model: &mut Sequential,
    in_channels: i64,
    expansion: i64,
    filters: i64,
    stride: i64,
    id: usize,
) -> Result<()> {
    let prefix = if id == 0 { "expanded_conv".to_string() } else { format!("block_{id}") };
    let name = |what: &str| format!("{prefix}_{what}");
    let mut layers = Vec::new();
    if id > 0 {
        layers.push(Conv2D(expansion * in_channels, 1).padding("same").use_bias(false).name(&name("expand")));
        layers.push(batch_norm(&name("expand_BN")));
        layers.push(ReLU6().name(&name("expand_relu")));
    }
    if stride == 2 {
        // Keras's `correct_pad`: one zero after, and one before only when the
        // size is odd, where TensorFlow's 'same' puts them. The 1×1 expansion
        // keeps the size, so the block's input size decides.
        let shape = model.output_shape().unwrap_or_default();
        layers.push(ZeroPadding2D(((shape[0] % 2, 1), (shape[1] % 2, 1))).name(&name("pad")));
    }
    let padding = if stride == 1 { "same" } else { "valid" };
    layers.push(DepthwiseConv2D(3).strides(stride).padding(padding).use_bias(false).name(&name("depthwise")));
    layers.push(batch_norm(&name("depthwise_BN")));
    layers.push(ReLU6().name(&name("depthwise_relu")));
    layers.push(Conv2D(filters, 1).padding("same").use_bias(false).name(&name("project")));
    layers.push(batch_norm(&name("project_BN")));
    if in_channels == filters && stride == 1 {
        model.add(Add(vec![layers, vec![]]).name(&name("add")))?;
    } else {
        for layer in layers {
            model.add(layer)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::applications::test_support::check_keras_h5_round_trip;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn parameter_counts_are_keras_ones() {
        let base = MobileNetV2("none", false, (224, 224, 3)).unwrap();
        let summary = base.summary();
        assert_eq!(summary.total_params, 2_257_984);
        assert_eq!(summary.trainable_params, 2_223_872);
        assert_eq!(summary.non_trainable_params, 34_112);
        let full = MobileNetV2("none", true, (224, 224, 3)).unwrap();
        assert_eq!(full.count_params(), 3_538_984);
        assert_eq!(full.output_shape(), Some(vec![1000]));
    }

    #[test]
    fn relu6_caps_at_six() {
        let mut model = Sequential::new("relu6");
        model.add(ReLU6().input_shape(&[4])).unwrap();
        let y = model.forward_t(&Tensor::from_slice(&[-1.0f32, 0.5, 3.0, 8.0]), false);
        assert_eq!(Vec::<f32>::try_from(y).unwrap(), [0.0, 0.5, 3.0, 6.0]);
    }

    #[test]
    fn output_shapes_follow_tensorflow_same_padding() {
        let base = MobileNetV2("none", false, (224, 224, 3)).unwrap();
        assert_eq!(base.output_shape(), Some(vec![7, 7, 1280]));
        // 150 → 75 → 38 → 19 → 10 → 5: odd sizes get a zero before too.
        let mut base = MobileNetV2("none", false, (150, 150, 3)).unwrap();
        assert_eq!(base.output_shape(), Some(vec![5, 5, 1280]));
        assert_eq!(base.get_layer("block_1_pad").unwrap().output_shape, vec![77, 77, 96]);
        assert_eq!(base.get_layer("block_3_pad").unwrap().output_shape, vec![39, 39, 144]);
        let x = Tensor::zeros([2, 3, 150, 150], (Kind::Float, Device::Cpu));
        assert_eq!(base.forward_t(&x, false).size(), [2, 1280, 5, 5]);
        assert!(MobileNetV2("none", true, (150, 150, 3)).is_err());
        assert!(MobileNetV2("none", false, (31, 31, 3)).is_err());
    }

    #[test]
    fn layer_names_are_keras_ones() {
        let model = MobileNetV2("none", true, (224, 224, 3)).unwrap();
        assert_eq!(model.name, "mobilenetv2_1.00_224");
        let names = model.layer_names();
        assert_eq!(names[..3], ["Conv1", "bn_Conv1", "Conv1_relu"]);
        let block_0 = ["expanded_conv_depthwise", "expanded_conv_depthwise_BN", "expanded_conv_depthwise_relu"];
        assert_eq!(names[3..6], block_0);
        assert_eq!(names[6..8], ["expanded_conv_project", "expanded_conv_project_BN"]);
        assert_eq!(names[8..12], ["block_1_expand", "block_1_expand_BN", "block_1_expand_relu", "block_1_pad"]);
        let top = ["Conv_1", "Conv_1_bn", "out_relu", "global_average_pooling2d", "predictions"];
        assert_eq!(names[names.len() - 5..], top);
        // A merge comes right after its branch, as in Keras's summary.
        let at = |name: &str| names.iter().position(|n| n == name).unwrap();
        assert_eq!(at("block_2_add"), at("block_2_project_BN") + 1);
        // The shortcut is added only where the shape is kept: 10 blocks.
        assert_eq!(names.iter().filter(|n| n.ends_with("_add")).count(), 10);
        for id in [2, 4, 5, 7, 8, 9, 11, 12, 14, 15] {
            assert!(names.contains(&format!("block_{id}_add")), "block_{id}_add");
        }
        assert!(!names.iter().any(|n| n == "block_16_add" || n == "block_1_add"));
        let pads: Vec<&str> = names.iter().filter(|n| n.ends_with("_pad")).map(String::as_str).collect();
        assert_eq!(pads, ["block_1_pad", "block_3_pad", "block_6_pad", "block_13_pad"]);
    }

    #[test]
    fn keras_h5_round_trip() {
        let a = check_keras_h5_round_trip(|w, t, s| MobileNetV2(w, t, s), (96, 96, 3), "block_13_depthwise");
        assert_eq!(a.len(), 260);
    }
}
