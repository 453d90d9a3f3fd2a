//! Keras's HDF5 weights files (`model.save_weights`, and the files Keras
//! downloads into `~/.keras/models`).
//!
//! Layout: one group per layer (`block1_conv1`), whose attribute `weight_names`
//! lists datasets such as `block1_conv1/kernel:0`, stored under the group.
//! Conv kernels are HWIO, dense kernels (in, out): the layout aula keeps.
//! [`write_keras_h5`] writes the same layout, so Keras's `load_weights` reads it.

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

/// Every float dataset of an HDF5 file by its full path
/// (`model_weights/keras_layer/MobilenetV2/Conv/weights:0`), for files whose
/// layer groups nest deeper than [`read_keras_h5`]'s `<layer>/<weight>` keys
/// can tell apart: a TF-Hub module saved inside a Keras model holds a whole
/// network under one layer. Other datasets (an optimizer's step counter) are skipped.
pub fn read_h5_datasets(path: &Path) -> Result<NamedTensors> {
    let file = hdf5::File::open(path)
        .with_context(|| format!("{} is not a readable HDF5 file (truncated or damaged?)", path.display()))?;
    let mut out = NamedTensors::new();
    for name in datasets_under(&file)? {
        let dataset = file.dataset(&name)?;
        if !matches!(dataset.dtype()?.to_descriptor()?, hdf5::types::TypeDescriptor::Float(_)) {
            continue;
        }
        let shape: Vec<i64> = dataset.shape().iter().map(|&d| d as i64).collect();
        let values: Vec<f32> =
            dataset.read_raw().with_context(|| format!("{}: cannot read {name}", path.display()))?;
        out.insert(name, Tensor::from_slice(&values).reshape(&shape));
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

/// Writes `tensors` (Keras names `layer/weight`, Keras layout) as Keras's
/// `save_weights` does: a group per layer holding `<layer>/<weight>:0`
/// datasets, with the `layer_names` and `weight_names` attributes Keras reads.
pub fn write_keras_h5(tensors: &NamedTensors, path: &Path) -> Result<()> {
    crate::paths::write_atomic_with(path, |tmp| write_h5(tensors, tmp))
}

fn write_h5(tensors: &NamedTensors, path: &Path) -> Result<()> {
    use hdf5::types::VarLenAscii;
    let ascii = |names: &[String]| -> Result<Vec<VarLenAscii>> {
        names.iter().map(|n| VarLenAscii::from_ascii(n).context("weight names must be ASCII")).collect()
    };
    let file = hdf5::File::create(path)?;
    let mut layers: Vec<&str> = tensors.keys().filter_map(|k| k.rsplit_once('/').map(|(l, _)| l)).collect();
    layers.dedup();
    for layer in &layers {
        let group = file.create_group(layer)?;
        let mut weight_names = Vec::new();
        for (name, t) in tensors.iter().filter(|(k, _)| k.rsplit_once('/').map(|(l, _)| l) == Some(*layer)) {
            let weight = name.rsplit('/').next().unwrap_or(name);
            let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
            let values = Vec::<f32>::try_from(t.to_kind(tch::Kind::Float).flatten(0, -1))?;
            let dataset = format!("{layer}/{weight}:0");
            group.new_dataset::<f32>().shape(shape).create(dataset.as_str())?.write_raw(&values)?;
            weight_names.push(dataset);
        }
        let names = ascii(&weight_names)?;
        group.new_attr::<VarLenAscii>().shape(names.len()).create("weight_names")?.write(&names)?;
    }
    let names = ascii(&layers.iter().map(|l| l.to_string()).collect::<Vec<_>>())?;
    file.new_attr::<VarLenAscii>().shape(names.len()).create("layer_names")?.write(&names)?;
    Ok(())
}
