//! The cache keys of files that exist today, pinned: a change here makes every
//! user's feature cache cold (minutes of extraction) and stops a resumed training
//! from recognising its checkpoint. Change a key only on purpose, and say so.

use crate::data::{ClassMode, DirectoryIterator, ImageDataGenerator};
use crate::model::layers::{Conv2D, MaxPooling2D};
use crate::model::{Dense, Flatten, Sequential};
use crate::precision::Precision;
use crate::weights::NamedTensors;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// A frozen conv base + Flatten + Dense(1), every layer named and every weight a
/// fixed ramp (no random numbers, no global name counters).
pub(crate) fn fixed_model() -> Sequential {
    let mut base = Sequential::new("base");
    base.add(Conv2D(4, 3).activation("relu").input_shape(&[32, 32, 3]).name("block1_conv1")).unwrap();
    base.add(MaxPooling2D(2).name("block1_pool")).unwrap();
    base.trainable = false;
    let mut model = Sequential::new("sequential");
    model.add(base).unwrap();
    model.add(Flatten().name("flatten")).unwrap();
    model.add(Dense(1).activation("sigmoid").name("dense")).unwrap();
    let ramp: NamedTensors = model
        .get_weights()
        .into_iter()
        .map(|(name, t)| {
            let n = t.numel() as i64;
            (name, (Tensor::arange(n, (Kind::Float, Device::Cpu)) / 1000.0).reshape(t.size()))
        })
        .collect();
    model.set_weights_by_name(&ramp, "test").unwrap();
    model.set_precision(Precision::Fp32);
    model
}

/// Three cats and three dogs, 40×30 PNGs of fixed pixels, under `dir`.
pub(crate) fn fixed_images(dir: &Path) -> DirectoryIterator {
    for (class, colour) in [("cats", [200u8, 80, 40]), ("dogs", [40, 90, 220])] {
        let folder = dir.join(class);
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..3u8 {
            let img = image::RgbImage::from_fn(40, 30, |x, y| {
                image::Rgb([colour[0].wrapping_add(i * 7), colour[1] ^ (x as u8), colour[2] ^ (y as u8)])
            });
            img.save(folder.join(format!("{class}.{i}.png"))).unwrap();
        }
    }
    ImageDataGenerator::rescale(1.0 / 255.0)
        .flow_from_directory(dir, (32, 32), 4, ClassMode::Binary)
        .unwrap()
        .shuffle(false)
}

#[test]
fn cache_keys_are_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let images = fixed_images(dir.path());
    let model = fixed_model();
    let keys = [
        images.content_key().unwrap(),
        crate::features::weights_fingerprint(&model),
        crate::train::frozen_prefix::key(&model, model.frozen_prefix_len(), &images).unwrap(),
        crate::train::checkpoint::model_fingerprint(&model),
    ];
    assert_eq!(
        keys,
        [
            "650e09a8e15079310a7a8b93876d5768db12b878032e1aefca10c88f95bc045c",
            "7207eaabd61c8e2d324a77641cb1e33fa65bc439a21b1d40a87bd58de52dd00d",
            "28f1b4f8bee79e319d8c03d4f3c0137374e2c976480e9edc51bf1e3b4098d12c",
            "25b80b97b3428b82bd3e8f99fec007fa1cbbd880ca6bcf6c6dbab0979499cefb",
        ]
    );
}
