//! Weights in and out of a model by Keras name and in Keras's layout (conv kernels
//! HWIO, depthwise (H, W, C, m)): `set_weights`, `load_weights`, `save_weights`.

use super::{LayerKind, Sequential};
use crate::weights::{layout, NamedTensors};
use anyhow::{bail, Result};
use std::path::Path;
use tch::{Kind, Tensor};

impl Sequential {
    /// Takes weights by Keras name from `tensors` (Keras layout), checking every
    /// shape. `source` names the file in error messages.
    pub fn set_weights(&mut self, tensors: &NamedTensors, source: &str) -> Result<()> {
        self.assign_weights(tensors, source, true).map(|_| ())
    }

    /// Like Keras's `load_weights(..., by_name=True)`: takes the weights
    /// `tensors` has (shapes checked), leaves the others as they are, and
    /// fails on a name the model does not have. Returns how many it took.
    pub fn set_weights_by_name(&mut self, tensors: &NamedTensors, source: &str) -> Result<usize> {
        let known: std::collections::BTreeSet<String> = self.named_weights().into_iter().map(|(n, _, _)| n).collect();
        if let Some(unknown) = tensors.keys().find(|k| !known.contains(*k)) {
            bail!("{source} has weights for {unknown}, which this model does not have");
        }
        self.assign_weights(tensors, source, false)
    }

    pub(super) fn assign_weights(&mut self, tensors: &NamedTensors, source: &str, require_all: bool) -> Result<usize> {
        let _guard = tch::no_grad_guard();
        let mut taken = 0;
        for layer in &mut self.layers {
            for m in layer.models_mut() {
                taken += m.assign_weights(tensors, source, require_all)?;
            }
            for (param, dst) in &mut layer.weights {
                let key = format!("{}/{param}", layer.name);
                let Some(src) = tensors.get(&key) else {
                    if require_all {
                        bail!("{source} has no weights for layer {key}");
                    }
                    continue;
                };
                let keras = keras_layout(&layer.kind, param, dst);
                if src.size() != keras.size() {
                    bail!("{source}: {key} has shape {:?}, the model expects {:?}", src.size(), keras.size());
                }
                let src = from_keras_layout(&layer.kind, param, src);
                dst.copy_(&src.to_kind(dst.kind()).to_device(dst.device()));
                taken += 1;
            }
        }
        Ok(taken)
    }

    /// Loads a Keras `.h5` or a `.safetensors` weights file (Keras names and layout).
    pub fn load_weights(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let tensors = crate::weights::read_weights_file(path)?;
        self.set_weights(&tensors, &path.display().to_string())
    }

    /// Loads the weights a file has and keeps the rest (Keras's `by_name=True`):
    /// how a notebook restores the trained part of a model (the dense head,
    /// block 5) on top of the ImageNet conv base.
    pub fn load_weights_by_name(&mut self, path: impl AsRef<Path>) -> Result<usize> {
        let path = path.as_ref();
        let tensors = crate::weights::read_weights_file(path)?;
        self.set_weights_by_name(&tensors, &path.display().to_string())
    }

    /// The trainable weights only (Keras names and layout, on the CPU): what
    /// training changed when the conv base is frozen.
    pub fn get_trainable_weights(&self) -> NamedTensors {
        let trainable: std::collections::BTreeSet<String> =
            self.named_weights().into_iter().filter(|(_, _, t)| *t).map(|(n, _, _)| n).collect();
        self.get_weights().into_iter().filter(|(k, _)| trainable.contains(k)).collect()
    }

    /// Saves the trainable weights as safetensors, in f16 when `half` (half
    /// the size; plenty of precision for restoring a trained head).
    pub fn save_trainable_weights(&self, path: impl AsRef<Path>, half: bool) -> Result<()> {
        let mut tensors = self.get_trainable_weights();
        if half {
            for t in tensors.values_mut() {
                *t = t.to_kind(Kind::Half);
            }
        }
        crate::weights::write_safetensors(&tensors, path.as_ref())
    }

    /// Every weight by Keras name, in Keras layout, on the CPU.
    pub fn get_weights(&self) -> NamedTensors {
        let mut out = NamedTensors::new();
        for layer in &self.layers {
            out.extend(layer.get_weights());
        }
        out
    }

    /// Saves the weights (Keras names and layout), atomically: a Keras `.h5`
    /// when the name ends in `.h5`, else safetensors.
    pub fn save_weights(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if path.extension().is_some_and(|e| e == "h5") {
            crate::weights::write_keras_h5(&self.get_weights(), path)
        } else {
            crate::weights::write_safetensors(&self.get_weights(), path)
        }
    }

}

/// A weight seen in Keras's layout: conv kernels HWIO, depthwise kernels
/// (H, W, C, depth_multiplier). PyTorch's are OIHW and (C·m, 1, H, W).
pub(super) fn keras_layout(kind: &LayerKind, param: &str, t: &Tensor) -> Tensor {
    match (kind, param) {
        (LayerKind::Conv2D { .. }, "kernel") | (_, "pointwise_kernel") => layout::conv_to_keras(t),
        (
            LayerKind::DepthwiseConv2D { depth_multiplier: m, .. } | LayerKind::SeparableConv2D { depth_multiplier: m, .. },
            "depthwise_kernel",
        ) => layout::depthwise_to_keras(t, *m),
        _ => t.shallow_clone(),
    }
}

pub(super) fn from_keras_layout(kind: &LayerKind, param: &str, t: &Tensor) -> Tensor {
    match (kind, param) {
        (LayerKind::Conv2D { .. }, "kernel") | (_, "pointwise_kernel") => layout::conv_from_keras(t),
        (_, "depthwise_kernel") => layout::depthwise_from_keras(t),
        _ => t.shallow_clone(),
    }
}

