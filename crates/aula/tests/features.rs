//! Feature extraction ("Alternativa 1") and its on-disk cache.

use aula::features::extract_features;
use aula::prelude::*;
use std::path::Path;

fn write_images(dir: &Path) {
    for (class, colour) in [("cats", [200u8, 80, 40]), ("dogs", [40, 90, 220])] {
        let folder = dir.join(class);
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..3u8 {
            let img = image::RgbImage::from_fn(40, 30, |x, y| {
                image::Rgb([colour[0].wrapping_add(i * 7), colour[1] ^ (x as u8), colour[2] ^ (y as u8)])
            });
            img.save(folder.join(format!("{class}.{i}.jpg"))).unwrap();
        }
    }
}

/// One test: it sets AULA_CACHE for the whole process.
#[test]
fn features_are_cached_by_content() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("AULA_CACHE", dir.path().join("cache"));
    let data = dir.path().join("train");
    write_images(&data);
    aula::train::seed(1);
    let conv_base = VGG16("none", false, (32, 32, 3)).unwrap();
    let datagen = ImageDataGenerator::rescale(1.0 / 255.0);
    let generator = datagen.flow_from_directory(&data, (32, 32), 4, ClassMode::Binary).unwrap();

    let first = extract_features(&conv_base, &generator).unwrap();
    assert!(!first.cached);
    assert_eq!(first.features.size(), [6, 1, 1, 512]);
    assert_eq!(Vec::<f32>::try_from(&first.labels).unwrap(), [0., 0., 0., 1., 1., 1.]);
    // The same as running the conv base by hand, in Keras's (N, H, W, C) order.
    let (x, _) = generator.load_batch(&[4]).unwrap();
    let direct = tch::no_grad(|| conv_base.forward_t(&x, false)).permute([0, 2, 3, 1]);
    assert!(direct.allclose(&first.features.narrow(0, 4, 1), 1e-5, 1e-6, false));

    let again = extract_features(&conv_base, &generator).unwrap();
    assert!(again.cached && again.path == first.path);
    assert!(again.features.equal(&first.features));

    // Another preprocessing, other weights or a changed image: another key.
    let caffe = ImageDataGenerator::caffe().flow_from_directory(&data, (32, 32), 4, ClassMode::Binary).unwrap();
    assert!(!extract_features(&conv_base, &caffe).unwrap().cached);
    let other = VGG16("none", false, (32, 32, 3)).unwrap();
    assert!(!extract_features(&other, &generator).unwrap().cached);
    image::RgbImage::new(40, 30).save(data.join("dogs").join("dogs.2.jpg")).unwrap();
    let changed = datagen.flow_from_directory(&data, (32, 32), 4, ClassMode::Binary).unwrap();
    let fresh = extract_features(&conv_base, &changed).unwrap();
    assert!(!fresh.cached && fresh.path != first.path);

    // A damaged cache file is recomputed, not trusted.
    std::fs::write(&fresh.path, b"garbage").unwrap();
    let recomputed = extract_features(&conv_base, &changed).unwrap();
    assert!(!recomputed.cached && recomputed.features.equal(&fresh.features));
}
