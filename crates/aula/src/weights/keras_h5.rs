//! Keras's HDF5 weights files (`model.save_weights`, and the files Keras
//! downloads into `~/.keras/models`).
//!
//! Layout: one group per layer (`block1_conv1`), whose attribute `weight_names`
//! lists datasets such as `block1_conv1/kernel:0`, stored under the group.
//! Conv kernels are HWIO, dense kernels (in, out): the layout aula keeps.

use super::NamedTensors;
use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::Tensor;

/// Reads every layer's weights of a Keras h5 file into `layer/kernel`, `layer/bias`.
pub fn read_keras_h5(path: &Path) -> Result<NamedTensors> {
    let file = hdf5::File::open(path)
        .with_context(|| format!("{} is not a readable HDF5 file (truncated or damaged?)", path.display()))?;
    // Files written by `model.save()` keep the weights under `model_weights`.
    let root = match file.group("model_weights") {
        Ok(g) => g,
        Err(_) => file.as_group().with_context(|| format!("cannot read {}", path.display()))?,
    };
    let mut out = NamedTensors::new();
    for layer in root.member_names().with_context(|| format!("cannot list {}", path.display()))? {
        let Ok(group) = root.group(&layer) else { continue };
        for dataset_path in datasets_under(&group)? {
            let dataset = group.dataset(&dataset_path)?;
            let shape: Vec<i64> = dataset.shape().iter().map(|&d| d as i64).collect();
            let values: Vec<f32> = dataset
                .read_raw()
                .with_context(|| format!("{}: cannot read {layer}/{dataset_path}", path.display()))?;
            // `block1_conv1/kernel:0` → `kernel`
            let leaf = dataset_path.rsplit('/').next().unwrap_or(&dataset_path);
            let leaf = leaf.split(':').next().unwrap_or(leaf);
            out.insert(format!("{layer}/{leaf}"), Tensor::from_slice(&values).reshape(&shape));
        }
    }
    if out.is_empty() {
        bail!("{} holds no layer weights (is it a Keras weights file?)", path.display());
    }
    Ok(out)
}

/// Dataset paths of a layer group, walking nested groups (`block1_conv1/block1_conv1/kernel:0`).
fn datasets_under(group: &hdf5::Group) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for name in group.member_names()? {
        if group.dataset(&name).is_ok() {
            found.push(name);
        } else if let Ok(sub) = group.group(&name) {
            found.extend(datasets_under(&sub)?.into_iter().map(|d| format!("{name}/{d}")));
        }
    }
    Ok(found)
}
