//! ResNet50 (He et al., 2015) as Keras builds it (`keras/applications/resnet.py`),
//! layer names included, so Keras's `.h5` files load and `conv5_block3_out`
//! can be found by name.

use super::Application;
use crate::data::Preprocessing;
use crate::model::layers::{
    Activation, Add, BatchNormalization, Conv2D, Dense, GlobalAveragePooling2D, LayerSpec, MaxPooling2D, ZeroPadding2D,
};
use crate::model::Sequential;
use crate::weights::Weights;
use anyhow::Result;

/// Keras's `stack1` calls: (name, bottleneck filters, blocks, stride of the
/// first block). Each block outputs 4 × filters channels.
const STACKS: [(&str, i64, usize, i64); 4] =
    [("conv2", 64, 3, 1), ("conv3", 128, 4, 2), ("conv4", 256, 6, 2), ("conv5", 512, 3, 2)];

/// Keras's ResNet uses this instead of BatchNormalization's default 1e-3: the
/// weights come from the authors' Caffe model (1e-5), and 1.001e-5 is the
/// smallest value TensorFlow's fused batch normalization accepts.
const EPSILON: f64 = 1.001e-5;

pub const APPLICATION: Application = Application {
    name: "ResNet50",
    module: "resnet50",
    keras_top: "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
    keras_notop: "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    default_size: 224,
    min_size: 32,
    preprocessing: Preprocessing::Caffe,
};

/// `ResNet50(weights='imagenet', include_top=False, input_shape=(150, 150, 3))`.
///
/// `weights`: `"imagenet"`, `"none"`, a path, or a [`Weights`] value.
#[allow(non_snake_case)]
pub fn ResNet50(weights: impl Into<Weights>, include_top: bool, input_shape: (i64, i64, i64)) -> Result<Sequential> {
    resnet50(weights, include_top, input_shape)
}

/// Same as [`ResNet50`], in Rust's spelling.
pub fn resnet50(weights: impl Into<Weights>, include_top: bool, input_shape: (i64, i64, i64)) -> Result<Sequential> {
    APPLICATION.check_input_shape(include_top, input_shape)?;
    let (h, w, c) = input_shape;
    let mut model = Sequential::new("resnet50");
    model.add(ZeroPadding2D(3).name("conv1_pad").input_shape(&[h, w, c]))?;
    model.add(Conv2D(64, 7).strides(2).name("conv1_conv"))?;
    model.add(batch_norm("conv1_bn"))?;
    model.add(Activation("relu").name("conv1_relu"))?;
    model.add(ZeroPadding2D(1).name("pool1_pad"))?;
    model.add(MaxPooling2D(3).strides(2).name("pool1_pool"))?;
    for (stack, filters, blocks, stride) in STACKS {
        for b in 1..=blocks {
            let name = format!("{stack}_block{b}");
            // Only a stack's first block changes the width (and, but in conv2,
            // the size): its shortcut is a 1×1 projection; the others add their input.
            let stride = if b == 1 { stride } else { 1 };
            let shortcut = match b {
                1 => vec![
                    Conv2D(4 * filters, 1).strides(stride).name(&format!("{name}_0_conv")),
                    batch_norm(&format!("{name}_0_bn")),
                ],
                _ => vec![],
            };
            model.add(Add(vec![bottleneck(&name, filters, stride), shortcut]).name(&format!("{name}_add")))?;
            model.add(Activation("relu").name(&format!("{name}_out")))?;
        }
    }
    if include_top {
        model.add(GlobalAveragePooling2D().name("avg_pool"))?;
        model.add(Dense(1000).activation("softmax").name("predictions"))?;
    }
    APPLICATION.load(&mut model, weights.into(), include_top)?;
    Ok(model)
}

/// Keras's `block1` main path: 1×1 (strided) reduction, 3×3, 1×1 expansion to
/// 4 × filters; no ReLU at the end, it comes after the sum.
fn bottleneck(name: &str, filters: i64, stride: i64) -> Vec<LayerSpec> {
    let n = |suffix: &str| format!("{name}_{suffix}");
    vec![
        Conv2D(filters, 1).strides(stride).name(&n("1_conv")),
        batch_norm(&n("1_bn")),
        Activation("relu").name(&n("1_relu")),
        Conv2D(filters, 3).padding("same").name(&n("2_conv")),
        batch_norm(&n("2_bn")),
        Activation("relu").name(&n("2_relu")),
        Conv2D(4 * filters, 1).name(&n("3_conv")),
        batch_norm(&n("3_bn")),
    ]
}

fn batch_norm(name: &str) -> LayerSpec {
    BatchNormalization().epsilon(EPSILON).name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::applications::test_support::check_keras_h5_round_trip;
    use tch::{Kind, Tensor};

    #[test]
    fn parameters_shapes_and_names_match_keras() {
        let mut model = ResNet50("none", false, (224, 224, 3)).unwrap();
        let summary = model.summary();
        let totals = (summary.total_params, summary.trainable_params, summary.non_trainable_params);
        assert_eq!(totals, (23_587_712, 23_534_592, 53_120));
        assert_eq!(model.output_shape().unwrap(), [7, 7, 2048]);
        let names = model.layer_names();
        // Keras's model.layers has 175, its InputLayer included.
        assert_eq!(names.len(), 174);
        assert_eq!(names[..6], ["conv1_pad", "conv1_conv", "conv1_bn", "conv1_relu", "pool1_pad", "pool1_pool"]);
        assert_eq!(names[6], "conv2_block1_1_conv");
        assert!(names.contains(&"conv2_block1_0_conv".to_string()));
        assert!(!names.contains(&"conv2_block2_0_conv".to_string()), "identity blocks have no projection");
        assert_eq!(names.last().unwrap(), "conv5_block3_out");
        assert_eq!(model.get_layer("conv5_block3_out").unwrap().output_shape, [7, 7, 2048]);
        assert_eq!(model.get_layer("conv4_block6_2_conv").unwrap().output_shape, [14, 14, 256]);
        assert!(summary.to_string().contains("conv5_block3_add (Add)"));

        let top = ResNet50("none", true, (224, 224, 3)).unwrap();
        assert_eq!(top.count_params(), 25_636_712);
        assert_eq!(top.output_shape().unwrap(), [1000]);
        assert_eq!(top.layer_names()[174..], ["avg_pool", "predictions"]);

        // The lesson's input, and Keras's smallest.
        assert_eq!(ResNet50("none", false, (150, 150, 3)).unwrap().output_shape().unwrap(), [5, 5, 2048]);
        assert_eq!(ResNet50("none", false, (32, 32, 3)).unwrap().output_shape().unwrap(), [1, 1, 2048]);
        assert!(ResNet50("none", false, (31, 32, 3)).is_err());
    }

    #[test]
    fn forward_gives_the_promised_shape() {
        let model = ResNet50("none", false, (64, 64, 3)).unwrap();
        assert_eq!(model.output_shape().unwrap(), [2, 2, 2048]);
        let x = Tensor::rand([2, 3, 64, 64], (Kind::Float, model.device()));
        assert_eq!(model.forward_t(&x, false).size(), [2, 2048, 2, 2]);
    }


    #[test]
    fn keras_h5_round_trip() {
        let a = check_keras_h5_round_trip(|w, t, s| ResNet50(w, t, s), (64, 64, 3), "conv4_block2_2_bn");
        assert_eq!(a["conv1_conv/kernel"].size(), [7, 7, 3, 64], "Keras's HWIO layout");
    }
}
