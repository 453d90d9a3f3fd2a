//! Xception (Chollet, 2017) as Keras builds it (`keras/applications/xception.py`),
//! layer names included.
//!
//! Keras leaves the four 1 × 1 shortcut convolutions, their batch
//! normalizations and the twelve sums unnamed. aula gives them Keras's
//! automatic names counted from 1 (`conv2d_1`, `batch_normalization_1`,
//! `add_1`), as Keras 2 did and as in aula's InceptionV3, whose ImageNet files
//! fix that numbering; TF2 Keras would show `conv2d`, `conv2d_1`… Keras's
//! Xception files match neither: they hold Keras 1 names, see [`from_keras1`].

use super::Application;
use crate::data::Preprocessing;
use crate::model::layers::{
    Activation, Add, BatchNormalization, Conv2D, Dense, GlobalAveragePooling2D, LayerSpec, MaxPooling2D,
    SeparableConv2D,
};
use crate::model::{Layer, Sequential};
use crate::weights::{self, NamedTensors, Weights};
use anyhow::Result;

pub const APPLICATION: Application = Application {
    name: "Xception",
    module: "xception",
    keras_top: "xception_weights_tf_dim_ordering_tf_kernels.h5",
    keras_notop: "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
    default_size: 299,
    min_size: 71,
    preprocessing: Preprocessing::Tf,
};

/// `Xception(weights='imagenet', include_top=False, input_shape=(150, 150, 3))`.
///
/// `weights`: `"imagenet"`, `"none"`, a path, or a [`Weights`] value.
#[allow(non_snake_case)]
pub fn Xception(weights: impl Into<Weights>, include_top: bool, input_shape: (i64, i64, i64)) -> Result<Sequential> {
    xception(weights, include_top, input_shape)
}

/// Same as [`Xception`], in Rust's spelling.
pub fn xception(weights: impl Into<Weights>, include_top: bool, input_shape: (i64, i64, i64)) -> Result<Sequential> {
    APPLICATION.check_input_shape(include_top, input_shape)?;
    let (h, w, c) = input_shape;
    let mut model = Sequential::new("xception");
    // Entry flow.
    model.add(Conv2D(32, 3).strides(2).use_bias(false).name("block1_conv1").input_shape(&[h, w, c]))?;
    model.add(BatchNormalization().name("block1_conv1_bn"))?;
    model.add(Activation("relu").name("block1_conv1_act"))?;
    model.add(Conv2D(64, 3).use_bias(false).name("block1_conv2"))?;
    model.add(BatchNormalization().name("block1_conv2_bn"))?;
    model.add(Activation("relu").name("block1_conv2_act"))?;
    let mut residuals = Residuals::default();
    // Block 2 takes block 1's ReLU output, so it starts with a convolution.
    let mut main = sepconv_bn("block2_sepconv1", 128);
    main.push(Activation("relu").name("block2_sepconv2_act"));
    main.extend(sepconv_bn("block2_sepconv2", 128));
    model.add(residuals.downsampling(main, "block2", 128))?;
    for (block, filters) in [("block3", 256), ("block4", 728)] {
        let main = chain([act_sepconv_bn(block, 1, filters), act_sepconv_bn(block, 2, filters)]);
        model.add(residuals.downsampling(main, block, filters))?;
    }
    // Middle flow: eight blocks that add their input.
    for b in 5..=12 {
        let block = format!("block{b}");
        let main = (1..=3).flat_map(|i| act_sepconv_bn(&block, i, 728)).collect();
        model.add(residuals.add(vec![vec![], main]))?;
    }
    // Exit flow.
    let main = chain([act_sepconv_bn("block13", 1, 728), act_sepconv_bn("block13", 2, 1024)]);
    model.add(residuals.downsampling(main, "block13", 1024))?;
    for (i, filters) in [(1, 1536), (2, 2048)] {
        let name = format!("block14_sepconv{i}");
        for layer in sepconv_bn(&name, filters) {
            model.add(layer)?;
        }
        model.add(Activation("relu").name(&format!("{name}_act")))?;
    }
    if include_top {
        model.add(GlobalAveragePooling2D().name("avg_pool"))?;
        model.add(Dense(1000).activation("softmax").name("predictions"))?;
    }
    load(&mut model, weights.into(), include_top)?;
    Ok(model)
}

/// Layers one after another.
fn chain<const N: usize>(parts: [Vec<LayerSpec>; N]) -> Vec<LayerSpec> {
    parts.into_iter().flatten().collect()
}

/// A 3 × 3 separable convolution without bias and its batch normalization.
fn sepconv_bn(name: &str, filters: i64) -> Vec<LayerSpec> {
    vec![
        SeparableConv2D(filters, 3).padding("same").use_bias(false).name(name),
        BatchNormalization().name(&format!("{name}_bn")),
    ]
}

/// `block<b>_sepconv<i>_act`, then the convolution: from block 3 on, the ReLU
/// comes first, so the shortcut takes the block's input before it.
fn act_sepconv_bn(block: &str, i: usize, filters: i64) -> Vec<LayerSpec> {
    let name = format!("{block}_sepconv{i}");
    chain([vec![Activation("relu").name(&format!("{name}_act"))], sepconv_bn(&name, filters)])
}

/// Keras's automatic names, counted from 1, for the layers of the residual
/// connections: shortcut convolutions with their batch normalizations, and sums.
#[derive(Default)]
struct Residuals {
    shortcuts: usize,
    adds: usize,
}

impl Residuals {
    fn add(&mut self, branches: Vec<Vec<LayerSpec>>) -> LayerSpec {
        self.adds += 1;
        Add(branches).name(&format!("add_{}", self.adds))
    }

    /// A block that halves the size: `main`, a 3 × 3 stride-2 max pooling,
    /// plus a strided 1 × 1 convolution of the block's input. The shortcut
    /// branch comes first because Keras makes its layers first.
    fn downsampling(&mut self, mut main: Vec<LayerSpec>, block: &str, filters: i64) -> LayerSpec {
        main.push(MaxPooling2D(3).strides(2).padding("same").name(&format!("{block}_pool")));
        self.shortcuts += 1;
        let n = self.shortcuts;
        let shortcut = vec![
            Conv2D(filters, 1).strides(2).padding("same").use_bias(false).name(&format!("conv2d_{n}")),
            BatchNormalization().name(&format!("batch_normalization_{n}")),
        ];
        self.add(vec![shortcut, main])
    }
}

/// Keras 1's automatic layer name prefix and weight names for each class
/// Xception uses, with the Keras 2 weight names they stand for.
const KERAS1: [(&str, &str, &[(&str, &str)]); 4] = [
    ("Conv2D", "convolution2d", &[("kernel", "W")]),
    (
        "SeparableConv2D",
        "separableconvolution2d",
        &[("depthwise_kernel", "depthwise_kernel"), ("pointwise_kernel", "pointwise_kernel")],
    ),
    // Keras 1 kept the moving variance under the name running_std.
    (
        "BatchNormalization",
        "batchnormalization",
        &[("gamma", "gamma"), ("beta", "beta"), ("moving_mean", "running_mean"), ("moving_variance", "running_std")],
    ),
    ("Dense", "dense", &[("kernel", "W"), ("bias", "b")]),
];

/// Keras's Xception files were saved by Keras 1, and TF2 Keras still checks
/// the same md5 as keras-applications did. Their layers carry Keras 1's
/// automatic names (`convolution2d_3`, `separableconvolution2d_1`,
/// `batchnormalization_40`; weights such as `convolution2d_3_W`), numbered in
/// the order the layers were made, as ports that read them with h5py show;
/// Keras itself loads them by position. This renames them to the model's
/// names: the n-th layer of a class in the file (by number) is the model's
/// n-th of that class, the model keeping Keras's order.
fn from_keras1(model: &Sequential, tensors: &NamedTensors) -> NamedTensors {
    let mut layers = Vec::new();
    in_order(model, &mut layers);
    let mut renamed = NamedTensors::new();
    for (class, prefix, weight_names) in KERAS1 {
        let mut numbers: Vec<u32> = tensors
            .keys()
            .filter_map(|k| k.split('/').next()?.strip_prefix(prefix)?.strip_prefix('_')?.parse().ok())
            .collect();
        numbers.sort_unstable();
        numbers.dedup();
        let ours = layers.iter().filter(|l| l.kind.class_name() == class);
        for (layer, n) in ours.zip(numbers) {
            for (keras2, keras1) in weight_names {
                if let Some(t) = tensors.get(&format!("{prefix}_{n}/{prefix}_{n}_{keras1}")) {
                    renamed.insert(format!("{}/{keras2}", layer.name), t.shallow_clone());
                }
            }
        }
    }
    renamed
}

/// Every layer, a merge's branches before the merge.
fn in_order<'a>(model: &'a Sequential, out: &mut Vec<&'a Layer>) {
    for layer in model.layers() {
        layer.models().into_iter().for_each(|m| in_order(m, out));
        out.push(layer);
    }
}

/// [`Application::load`], reading Keras's own files too (see [`from_keras1`]).
fn load(model: &mut Sequential, weights: Weights, include_top: bool) -> Result<()> {
    let path = match weights {
        Weights::None => return Ok(()),
        Weights::File(path) => path,
        Weights::Imagenet => APPLICATION.imagenet_file(include_top)?,
    };
    let mut tensors = weights::read_weights_file(&path)?;
    if tensors.keys().any(|k| k.starts_with("convolution2d_")) {
        tensors = from_keras1(model, &tensors);
    }
    // set_weights skips what the model lacks: the classifier, for the base.
    model.set_weights(&tensors, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::applications::test_support::{check_keras_h5_round_trip, randomize_batch_norm};

    #[test]
    fn parameters_shapes_and_names_match_keras() {
        let mut model = Xception("none", false, (299, 299, 3)).unwrap();
        let summary = model.summary();
        let totals = (summary.total_params, summary.trainable_params, summary.non_trainable_params);
        assert_eq!(totals, (20_861_480, 20_806_952, 54_528));
        assert_eq!(model.output_shape().unwrap(), [10, 10, 2048]);
        let names = model.layer_names();
        // Keras's model.layers has 132, its InputLayer included.
        assert_eq!(names.len(), 131);
        assert_eq!(names[..3], ["block1_conv1", "block1_conv1_bn", "block1_conv1_act"]);
        assert_eq!(names.last().unwrap(), "block14_sepconv2_act");
        assert_eq!(model.get_layer("block14_sepconv2_act").unwrap().output_shape, [10, 10, 2048]);
        assert_eq!(model.get_layer("block2_pool").unwrap().output_shape, [74, 74, 128]);
        assert_eq!(model.get_layer("block4_pool").unwrap().output_shape, [19, 19, 728]);
        assert_eq!(model.get_layer("block13_sepconv2_bn").unwrap().output_shape, [19, 19, 1024]);
        let unnamed = [("conv2d_1", [74, 74, 128]), ("batch_normalization_4", [10, 10, 1024]), ("add_12", [10, 10, 1024])];
        for (name, shape) in unnamed {
            assert_eq!(model.get_layer(name).unwrap().output_shape, shape, "{name}");
        }
        assert!(model.get_layer("conv2d_5").is_err());
        assert!(model.get_layer("add_13").is_err());
        let weights = model.get_weights();
        assert_eq!(weights["block2_sepconv1/depthwise_kernel"].size(), [3, 3, 64, 1]);
        assert_eq!(weights["block2_sepconv1/pointwise_kernel"].size(), [1, 1, 64, 128]);
        assert!(!weights.contains_key("block2_sepconv1/bias"));
        assert!(summary.to_string().contains("block13_pool (MaxPooling2D)"));

        let top = Xception("none", true, (299, 299, 3)).unwrap();
        assert_eq!(top.count_params(), 22_910_480);
        assert_eq!(top.output_shape().unwrap(), [1000]);
        assert_eq!(top.layer_names()[131..], ["avg_pool", "predictions"]);

        // The lesson's input, and Keras's smallest.
        assert_eq!(Xception("none", false, (150, 150, 3)).unwrap().output_shape().unwrap(), [5, 5, 2048]);
        assert_eq!(Xception("none", false, (71, 71, 3)).unwrap().output_shape().unwrap(), [3, 3, 2048]);
        assert!(Xception("none", false, (70, 71, 3)).is_err());
    }


    fn assert_same_weights(a: &NamedTensors, b: &NamedTensors) {
        assert_eq!(a.len(), b.len());
        for (name, t) in a {
            assert!(t.equal(&b[name]), "{name} differs");
        }
    }

    #[test]
    fn keras_h5_round_trip() {
        let a = check_keras_h5_round_trip(|w, t, s| Xception(w, t, s), (71, 71, 3), "block7_sepconv2_bn");
        assert_eq!(a["block1_conv1/kernel"].size(), [3, 3, 3, 32], "Keras's HWIO layout");
    }

    /// Keras's files' names, as published by those who read them with h5py
    /// (block1's convolutions are convolution2d_1 and _2, the shortcuts 3 to 6).
    fn keras1_name(layer: &str) -> Option<String> {
        let separable = |b: usize, i: usize| match b {
            2..=4 => 2 * (b - 2) + i,
            5..=12 => 6 + 3 * (b - 5) + i,
            _ => 30 + 2 * (b - 13) + i,
        };
        let block_sep = |name: &str| -> Option<(usize, usize)> {
            let (b, i) = name.strip_prefix("block")?.split_once("_sepconv")?;
            Some((b.parse().ok()?, i.parse().ok()?))
        };
        // Batch normalizations: block1's two, then per downsampling block its
        // shortcut's before its own; the middle flow has no shortcut.
        let bn = |name: &str| -> Option<usize> {
            if let Some(n) = name.strip_prefix("batch_normalization_") {
                let n: usize = n.parse().ok()?;
                return Some([3, 6, 9, 36][n - 1]);
            }
            if let Some(i) = name.strip_prefix("block1_conv").and_then(|r| r.strip_suffix("_bn")) {
                return i.parse().ok();
            }
            let (b, i) = block_sep(name.strip_suffix("_bn")?)?;
            let shortcuts = match b {
                2 => 1,
                3 => 2,
                4..=12 => 3,
                _ => 4,
            };
            Some(2 + shortcuts + separable(b, i))
        };
        if layer.ends_with("_bn") || layer.starts_with("batch_normalization_") {
            return Some(format!("batchnormalization_{}", bn(layer)?));
        }
        if let Some(n) = layer.strip_prefix("conv2d_") {
            return Some(format!("convolution2d_{}", n.parse::<usize>().ok()? + 2));
        }
        if let Some(i) = layer.strip_prefix("block1_conv") {
            return Some(format!("convolution2d_{i}"));
        }
        // Keras's file numbers its one dense layer 2: any number will do.
        if layer == "predictions" {
            return Some("dense_2".to_string());
        }
        let (b, i) = block_sep(layer)?;
        Some(format!("separableconvolution2d_{}", separable(b, i)))
    }

    #[test]
    fn reads_keras_own_files_with_keras1_names() {
        let dir = tempfile::tempdir().unwrap();
        let shape = (71, 71, 3);
        let mut model = Xception("none", true, (299, 299, 3)).unwrap();
        randomize_batch_norm(&mut model);
        let keras2 = model.get_weights();
        // Keras 1's weight names for Keras 2's.
        fn suffix(w: &str) -> &str {
            match w {
                "kernel" => "W",
                "bias" => "b",
                "moving_mean" => "running_mean",
                "moving_variance" => "running_std",
                other => other,
            }
        }
        let mut keras1 = NamedTensors::new();
        for (name, t) in &keras2 {
            let (layer, weight) = name.split_once('/').unwrap();
            let old = keras1_name(layer).unwrap_or_else(|| panic!("no Keras 1 name for {layer}"));
            keras1.insert(format!("{old}/{old}_{}", suffix(weight)), t.shallow_clone());
        }
        assert_eq!(keras1.len(), keras2.len());
        // Spot checks against the published correspondence.
        for name in [
            "convolution2d_3/convolution2d_3_W",
            "batchnormalization_36/batchnormalization_36_running_std",
            "batchnormalization_37/batchnormalization_37_gamma",
            "separableconvolution2d_34/separableconvolution2d_34_pointwise_kernel",
        ] {
            assert!(keras1.contains_key(name), "{name}");
        }
        let path = dir.path().join("xception_weights_tf_dim_ordering_tf_kernels.h5");
        crate::weights::write_keras_h5(&keras1, &path).unwrap();

        let top = Xception(path.to_str().unwrap(), true, (299, 299, 3)).unwrap();
        assert_same_weights(&keras2, &top.get_weights());
        // The classifier's file also serves the base.
        let base = Xception(path.to_str().unwrap(), false, shape).unwrap();
        let mut expected = keras2;
        expected.retain(|k, _| !k.starts_with("predictions/"));
        assert_same_weights(&expected, &base.get_weights());
    }
}
