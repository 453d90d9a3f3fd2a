//! The data module on small generated fixtures (plus the real data when present).

use std::fs;
use std::path::{Path, PathBuf};

use aula::data::{
    decode_all, default_data_dir, images_to_tensor, load_image, make_split, ClassMode,
    DirectoryIterator, ImageDataGenerator, Preprocessing,
};
use image::{GrayImage, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use tch::{Kind, Tensor};
use tempfile::TempDir;

// ---------- fixtures ----------

fn solid(w: u32, h: u32, rgb: [u8; 3]) -> RgbImage {
    RgbImage::from_pixel(w, h, Rgb(rgb))
}

/// Saves an image, the format chosen by the extension.
fn save(img: &RgbImage, path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

/// A split folder with `n_cats` + `n_dogs` solid PNGs. Image k (counting cats
/// first, in file-name order) has red = 10 * k, so a batch's pixels tell which
/// files it holds and in which order.
fn fixture(n_cats: usize, n_dogs: usize) -> TempDir {
    let tmp = TempDir::new().unwrap();
    let mut k = 0u8;
    for (class, n) in [("cats", n_cats), ("dogs", n_dogs)] {
        for i in 0..n {
            // Zero-padded so that name order is numeric order.
            let path = tmp.path().join(class).join(format!("{class}.{i:02}.png"));
            save(&solid(7, 5, [10 * k, 100, 50]), &path);
            k += 1;
        }
    }
    tmp
}

/// Red values of a batch's images, i.e. which fixture files it holds.
fn ids(x: &Tensor) -> Vec<i64> {
    let red = x.select(1, 0).select(1, 0).select(1, 0); // pixel (0,0), channel R
    Vec::<f32>::try_from(red)
        .unwrap()
        .iter()
        .map(|v| (v / 10.0).round() as i64)
        .collect()
}

fn floats(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
}

fn raw() -> ImageDataGenerator {
    ImageDataGenerator::rescale(1.0)
}

/// The order in which one epoch visits the fixture images.
fn epoch_order(it: &mut DirectoryIterator) -> Vec<i64> {
    let mut order = Vec::new();
    for batch in it.epoch_batches() {
        order.extend(ids(&batch.unwrap().0));
    }
    order
}

fn err_text(r: anyhow::Result<impl std::fmt::Debug>) -> String {
    // `{:#}` shows the whole chain; the messages are built to be complete in
    // the top one anyway.
    format!("{:#}", r.unwrap_err())
}

// ---------- discovery and labels ----------

#[test]
fn finds_classes_counts_and_files() {
    let tmp = fixture(3, 2);
    let it = raw()
        .flow_from_directory(tmp.path(), (5, 7), 2, ClassMode::Binary)
        .unwrap();
    assert_eq!(it.samples(), 5);
    assert_eq!(it.found(), "Found 5 images belonging to 2 classes.");
    assert_eq!(
        it.class_indices(),
        &[("cats".to_string(), 0), ("dogs".to_string(), 1)]
    );
    assert_eq!(it.class_indices_map()["dogs"], 1);
    assert_eq!(it.classes(), &[0, 0, 0, 1, 1]);
    assert_eq!(it.filenames()[0], PathBuf::from("cats/cats.00.png"));
    assert_eq!(it.filenames()[4], PathBuf::from("dogs/dogs.01.png"));
    assert_eq!(it.filepaths()[4], tmp.path().join("dogs/dogs.01.png"));
    assert_eq!(it.len(), 3, "5 images in batches of 2: 2 + 2 + 1");
    assert_eq!(it.batch_size(), 2);
    assert_eq!(it.target_size(), (5, 7));
}

#[test]
fn unshuffled_batches_come_in_file_order_and_wrap_around() {
    let tmp = fixture(3, 2);
    let mut it = raw()
        .flow_from_directory(tmp.path(), (5, 7), 2, ClassMode::Binary)
        .unwrap()
        .shuffle(false);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (x, y) = it.next_batch().unwrap();
        seen.push((ids(&x), floats(&y)));
    }
    assert_eq!(seen[0], (vec![0, 1], vec![0.0, 0.0]));
    assert_eq!(seen[1], (vec![2, 3], vec![0.0, 1.0]));
    assert_eq!(
        seen[2],
        (vec![4], vec![1.0]),
        "the last batch of an epoch is smaller"
    );
    assert_eq!(
        seen[3],
        (vec![0, 1], vec![0.0, 0.0]),
        "then the next epoch starts"
    );
    assert_eq!(it.epoch(), 1);
}

#[test]
fn categorical_and_sparse_labels() {
    let tmp = fixture(2, 1);
    let mut it = raw()
        .flow_from_directory(tmp.path(), (5, 7), 3, ClassMode::Categorical)
        .unwrap()
        .shuffle(false);
    let (_, y) = it.next_batch().unwrap();
    assert_eq!(y.size(), vec![3, 2]);
    assert_eq!(floats(&y), vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0]);

    let mut it = raw()
        .flow_from_directory(tmp.path(), (5, 7), 3, ClassMode::Sparse)
        .unwrap()
        .shuffle(false);
    assert_eq!(floats(&it.next_batch().unwrap().1), vec![0.0, 0.0, 1.0]);
}

#[test]
fn binary_needs_two_classes() {
    let tmp = fixture(1, 1);
    save(&solid(4, 4, [0, 0, 0]), &tmp.path().join("birds/b.png"));
    let msg = err_text(raw().flow_from_directory(tmp.path(), (4, 4), 2, ClassMode::Binary));
    assert!(
        msg.contains("exactly 2 class folders") && msg.contains("birds"),
        "{msg}"
    );
    // Other modes take any number of classes.
    let it = raw()
        .flow_from_directory(tmp.path(), (4, 4), 2, ClassMode::Sparse)
        .unwrap();
    assert_eq!(it.class_indices().len(), 3);
}

// ---------- pixels ----------

#[test]
fn batch_shape_and_rescale_values() {
    let tmp = TempDir::new().unwrap();
    save(&solid(9, 5, [200, 100, 50]), &tmp.path().join("cats/a.png"));
    save(&solid(3, 3, [0, 255, 10]), &tmp.path().join("dogs/b.png"));
    // target_size is (height, width), as in Keras.
    let mut it = ImageDataGenerator::rescale(1.0 / 255.0)
        .flow_from_directory(tmp.path(), (4, 6), 2, ClassMode::Binary)
        .unwrap()
        .shuffle(false);
    let (x, y) = it.next_batch().unwrap();
    assert_eq!(x.size(), vec![2, 3, 4, 6]);
    assert_eq!(x.kind(), Kind::Float);
    assert_eq!(y.size(), vec![2]);
    assert_eq!(y.kind(), Kind::Float);
    let expect = [[200.0, 100.0, 50.0], [0.0, 255.0, 10.0]];
    for (n, rgb) in expect.iter().enumerate() {
        for (c, v) in rgb.iter().enumerate() {
            let plane = x.get(n as i64).get(c as i64);
            let (lo, hi) = (plane.min().double_value(&[]), plane.max().double_value(&[]));
            let want = v / 255.0;
            assert!(
                (lo - want).abs() < 1e-6 && (hi - want).abs() < 1e-6,
                "image {n} channel {c}"
            );
        }
    }
}

#[test]
fn caffe_values_are_bgr_minus_imagenet_means() {
    let tmp = TempDir::new().unwrap();
    save(&solid(8, 8, [200, 100, 50]), &tmp.path().join("cats/a.png"));
    save(&solid(8, 8, [200, 100, 50]), &tmp.path().join("dogs/a.png"));
    let mut it = ImageDataGenerator::caffe()
        .flow_from_directory(tmp.path(), (8, 8), 1, ClassMode::Binary)
        .unwrap();
    let (x, _) = it.next_batch().unwrap();
    // Channel 0 is blue now, minus 103.939; then green and red.
    let want = [50.0 - 103.939, 100.0 - 116.779, 200.0 - 123.68];
    for (c, w) in want.iter().enumerate() {
        let plane = floats(&x.get(0).get(c as i64));
        assert!(
            plane.iter().all(|v| (v - w).abs() < 1e-3),
            "channel {c}: {} vs {w}",
            plane[0]
        );
    }
}

#[test]
fn images_to_tensor_layout_is_nchw() {
    // A 2x1 image, left pixel red, right pixel blue: checks that H, W and the
    // channels land where they should, not just the shape.
    let mut img = RgbImage::new(2, 1);
    img.put_pixel(0, 0, Rgb([255, 0, 0]));
    img.put_pixel(1, 0, Rgb([0, 0, 255]));
    let x = images_to_tensor(&[img], &Preprocessing::Rescale(1.0));
    assert_eq!(x.size(), vec![1, 3, 1, 2]);
    assert_eq!(floats(&x), vec![255.0, 0.0, 0.0, 0.0, 0.0, 255.0]);
}

#[test]
fn preprocessing_apply_matches_the_batches() {
    // `Preprocessing::apply` (for tensors, e.g. after augmentation) and the
    // fused copy in `images_to_tensor` must agree.
    let imgs: Vec<RgbImage> = (0..3u8)
        .map(|i| RgbImage::from_fn(5, 4, |x, y| Rgb([i * 40 + x as u8, y as u8 * 30, 255 - i])))
        .collect();
    let raw = images_to_tensor(&imgs, &Preprocessing::Rescale(1.0));
    for pre in [Preprocessing::Rescale(1.0 / 255.0), Preprocessing::Caffe] {
        let fused = images_to_tensor(&imgs, &pre);
        let diff = (pre.apply(&raw) - &fused).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "{pre:?}: {diff}");
    }
}

#[test]
fn nearest_resize_picks_pillows_pixels() {
    // A 10x1 strip of distinct greys resized to 4x1: Pillow's NEAREST takes
    // columns 1, 3, 6, 8 (floor((x + 0.5) * 2.5)).
    let tmp = TempDir::new().unwrap();
    let mut img = RgbImage::new(10, 1);
    for x in 0..10 {
        img.put_pixel(x, 0, Rgb([x as u8 * 20, 0, 0]));
    }
    let path = tmp.path().join("strip.png");
    save(&img, &path);
    let out = load_image(&path, (1, 4)).unwrap();
    let reds: Vec<u8> = out.pixels().map(|p| p.0[0]).collect();
    assert_eq!(reds, vec![20, 60, 120, 160]);
}

// ---------- shuffling ----------

#[test]
fn shuffling_is_seeded_and_changes_each_epoch() {
    let tmp = fixture(6, 6);
    let make = |seed| {
        raw()
            .flow_from_directory(tmp.path(), (5, 7), 5, ClassMode::Binary)
            .unwrap()
            .seed(seed)
    };
    let mut a = make(42);
    let mut b = make(42);
    let a0 = epoch_order(&mut a);
    let a1 = epoch_order(&mut a);
    assert_eq!(a0, epoch_order(&mut b), "same seed, same first epoch");
    assert_eq!(a1, epoch_order(&mut b), "same seed, same second epoch");
    assert_ne!(a0, a1, "each epoch has its own order");
    let mut sorted = a0.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (0..12).collect::<Vec<_>>(),
        "an epoch shows every image once"
    );
    assert_ne!(a0, (0..12).collect::<Vec<_>>(), "shuffled by default");
    assert_ne!(a0, epoch_order(&mut make(7)), "another seed, another order");

    // reset() replays epoch 0; labels stay paired with their images.
    a.reset();
    let (x, y) = a.next_batch().unwrap();
    assert_eq!(ids(&x), a0[..5].to_vec());
    let want: Vec<f32> = ids(&x)
        .iter()
        .map(|&k| if k < 6 { 0.0 } else { 1.0 })
        .collect();
    assert_eq!(floats(&y), want);
}

#[test]
fn decoded_images_kept_between_epochs_give_the_same_batches() {
    // Noisy pictures, so that the augmentation's interpolation shows in every value.
    let tmp = TempDir::new().unwrap();
    for (class, n) in [("cats", 3), ("dogs", 3)] {
        for i in 0..n {
            let img = RgbImage::from_fn(12, 9, |x, y| Rgb([(x * 20 + i) as u8, (y * 25) as u8, (x * y + 7 * i) as u8]));
            save(&img, &tmp.path().join(class).join(format!("{class}.{i}.png")));
        }
    }
    let datagen = ImageDataGenerator::rescale(1.0 / 255.0).rotation_range(40.0).zoom_range(0.2).horizontal_flip(true);
    let mut kept = datagen.flow_from_directory(tmp.path(), (9, 12), 4, ClassMode::Binary).unwrap();
    let mut decoded_each_time =
        datagen.flow_from_directory(tmp.path(), (9, 12), 4, ClassMode::Binary).unwrap().decoded_budget(0);
    let epoch = |it: &mut DirectoryIterator| -> Vec<Tensor> { it.epoch_batches().map(|b| b.unwrap().0).collect() };
    let first = epoch(&mut kept);
    let (first_decoded, second_decoded) = (epoch(&mut decoded_each_time), epoch(&mut decoded_each_time));
    // The files go away: the second epoch comes from memory, and equals what decoding gave.
    for class in ["cats", "dogs"] {
        fs::remove_dir_all(tmp.path().join(class)).unwrap();
        fs::create_dir_all(tmp.path().join(class)).unwrap();
    }
    let second = epoch(&mut kept);
    assert_eq!(first.len(), 2);
    for (a, b) in first.iter().chain(&second).zip(first_decoded.iter().chain(&second_decoded)) {
        assert!(a.equal(b), "the same batch with and without kept images");
    }
    assert!(!first[0].equal(&second[0]), "a new epoch draws new transforms");
    let err = format!("{:#}", decoded_each_time.epoch_batches().next().unwrap().unwrap_err());
    assert!(err.contains("cats.") || err.contains("dogs."), "{err}");
}

#[test]
fn epoch_batches_starts_a_fresh_epoch_when_one_is_under_way() {
    let tmp = fixture(3, 2);
    let mut it = raw()
        .flow_from_directory(tmp.path(), (5, 7), 2, ClassMode::Binary)
        .unwrap()
        .shuffle(false);
    let _ = it.next_batch().unwrap();
    assert_eq!(epoch_order(&mut it), vec![0, 1, 2, 3, 4]);
    assert_eq!(it.epoch(), 1);
}

// ---------- broken and odd files ----------

#[test]
fn non_image_files_are_skipped() {
    let tmp = fixture(2, 2);
    fs::write(tmp.path().join("cats/notes.txt"), "not a picture").unwrap();
    fs::write(tmp.path().join("dogs/.DS_Store"), "hidden").unwrap();
    let it = raw()
        .flow_from_directory(tmp.path(), (5, 7), 2, ClassMode::Binary)
        .unwrap();
    assert_eq!(it.samples(), 4);
    assert_eq!(it.skipped(), &[tmp.path().join("cats/notes.txt")]);
}

#[test]
fn truncated_jpeg_is_an_error_naming_the_file() {
    let tmp = fixture(2, 2);
    // A noisy JPEG so that it has real scan data to cut.
    let noisy = RgbImage::from_fn(64, 48, |x, y| {
        Rgb([(x * 7 + y * 13) as u8, (x * y) as u8, (x ^ y) as u8])
    });
    let path = tmp.path().join("dogs/dog.broken.jpg");
    save(&noisy, &path);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();

    let msg = err_text(load_image(&path, (10, 10)));
    assert!(
        msg.contains("cannot decode") && msg.contains("dog.broken.jpg"),
        "{msg}"
    );
    assert!(msg.contains("truncated"), "{msg}");

    // Through the iterator too: the batch that holds it fails.
    let mut it = raw()
        .flow_from_directory(tmp.path(), (5, 7), 5, ClassMode::Binary)
        .unwrap();
    let msg = err_text(it.next_batch());
    assert!(msg.contains("dog.broken.jpg"), "{msg}");
}

#[test]
fn zero_byte_file_is_an_error_naming_the_file() {
    let tmp = fixture(1, 1);
    let path = tmp.path().join("cats/empty.jpg");
    fs::write(&path, b"").unwrap();
    let mut it = raw()
        .flow_from_directory(tmp.path(), (5, 7), 3, ClassMode::Binary)
        .unwrap();
    let msg = err_text(it.next_batch());
    assert!(
        msg.contains(&format!("{} is empty (0 bytes)", path.display())),
        "{msg}"
    );
}

#[test]
fn garbage_with_an_image_extension_is_an_error() {
    let tmp = TempDir::new().unwrap();
    let path = tmp.path().join("cat.7.jpg");
    fs::write(&path, b"this is a text file pretending to be a JPEG").unwrap();
    let msg = err_text(load_image(&path, (10, 10)));
    assert!(
        msg.contains("cannot decode") && msg.contains("cat.7.jpg"),
        "{msg}"
    );
    assert!(msg.contains("not an image file"), "{msg}");

    // A real JPEG header with garbage after it.
    let path = tmp.path().join("cat.8.jpg");
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0];
    bytes.extend_from_slice(&[0x13; 200]);
    fs::write(&path, &bytes).unwrap();
    let msg = err_text(load_image(&path, (10, 10)));
    assert!(
        msg.contains("cannot decode") && msg.contains("cat.8.jpg"),
        "{msg}"
    );
}

#[test]
fn decode_all_fails_on_the_broken_file() {
    let tmp = TempDir::new().unwrap();
    let good = tmp.path().join("good.png");
    save(&solid(4, 4, [1, 2, 3]), &good);
    let bad = tmp.path().join("bad.png");
    fs::write(&bad, b"nope").unwrap();
    assert_eq!(
        decode_all(&[good.clone(), good.clone()], (2, 2))
            .unwrap()
            .len(),
        2
    );
    let msg = err_text(decode_all(&[good, bad], (2, 2)));
    assert!(msg.contains("bad.png"), "{msg}");
}

// ---------- colour models ----------

#[test]
fn grayscale_becomes_rgb() {
    let tmp = TempDir::new().unwrap();
    let png = tmp.path().join("gray.png");
    GrayImage::from_pixel(6, 4, Luma([77])).save(&png).unwrap();
    let img = load_image(&png, (4, 6)).unwrap();
    assert!(img.pixels().all(|p| p.0 == [77, 77, 77]));

    let jpg = tmp.path().join("gray.jpg");
    GrayImage::from_pixel(16, 16, Luma([77]))
        .save(&jpg)
        .unwrap();
    let img = load_image(&jpg, (8, 8)).unwrap();
    assert!(
        img.pixels()
            .all(|p| p.0.iter().all(|&v| v.abs_diff(77) <= 2)),
        "{:?}",
        img.get_pixel(0, 0)
    );
}

#[test]
fn rgba_png_drops_alpha() {
    // PIL's convert('RGB') drops alpha without blending it, even when the
    // pixel is fully transparent; so do we.
    let tmp = TempDir::new().unwrap();
    let png = tmp.path().join("rgba.png");
    RgbaImage::from_pixel(5, 5, Rgba([10, 20, 30, 0]))
        .save(&png)
        .unwrap();
    let img = load_image(&png, (5, 5)).unwrap();
    assert!(img.pixels().all(|p| p.0 == [10, 20, 30]));
}

#[test]
fn cmyk_jpeg_becomes_rgb() {
    // The image crate cannot write CMYK JPEGs, so the test builds one by hand
    // (Adobe-style, inverted values, as Photoshop writes them): stored samples
    // (200, 100, 50, 255) mean "no ink" for K and give RGB (200, 100, 50).
    let tmp = TempDir::new().unwrap();
    let path = tmp.path().join("cmyk.jpg");
    fs::write(&path, cmyk_jpeg([200, 100, 50, 255])).unwrap();
    let img = load_image(&path, (8, 8)).unwrap();
    assert!(
        img.pixels().all(|p| p
            .0
            .iter()
            .zip([200u8, 100, 50])
            .all(|(&v, w)| v.abs_diff(w) <= 2)),
        "{:?}",
        img.get_pixel(0, 0)
    );
}

/// A baseline 8x8 JPEG with four components (CMYK), each a constant value:
/// only DC coefficients, quantisation 1, Adobe APP14 marker with transform 0.
fn cmyk_jpeg(samples: [u8; 4]) -> Vec<u8> {
    fn segment(out: &mut Vec<u8>, marker: u8, body: &[u8]) {
        out.extend_from_slice(&[0xFF, marker]);
        out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(body);
    }
    // The standard luminance DC table (JPEG spec K.3): code lengths and symbols.
    let dc_counts = [0u8, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
    let dc_symbols: Vec<u8> = (0..12).collect();
    // Canonical Huffman codes: (code, length) per DC symbol (= bit size).
    let mut dc_codes = [(0u32, 0u32); 12];
    let (mut code, mut k) = (0u32, 0usize);
    for (len, &count) in dc_counts.iter().enumerate() {
        for _ in 0..count {
            dc_codes[dc_symbols[k] as usize] = (code, len as u32 + 1);
            code += 1;
            k += 1;
        }
        code <<= 1;
    }

    let mut out = vec![0xFF, 0xD8];
    segment(
        &mut out,
        0xEE,
        &[b'A', b'd', b'o', b'b', b'e', 0, 100, 0, 0, 0, 0, 0],
    );
    let mut dqt = vec![0u8];
    dqt.extend_from_slice(&[1; 64]);
    segment(&mut out, 0xDB, &dqt);
    let mut sof = vec![8, 0, 8, 0, 8, 4];
    for id in 1..=4 {
        sof.extend_from_slice(&[id, 0x11, 0]);
    }
    segment(&mut out, 0xC0, &sof);
    let mut dht = vec![0x00];
    dht.extend_from_slice(&dc_counts);
    dht.extend_from_slice(&dc_symbols);
    segment(&mut out, 0xC4, &dht);
    // AC table with a single symbol, end-of-block, coded as "0".
    let mut dht = vec![0x10, 1];
    dht.extend_from_slice(&[0; 15]);
    dht.push(0x00);
    segment(&mut out, 0xC4, &dht);
    let mut sos = vec![4];
    for id in 1..=4 {
        sos.extend_from_slice(&[id, 0x00]);
    }
    sos.extend_from_slice(&[0, 63, 0]);
    segment(&mut out, 0xDA, &sos);

    // One MCU: per component, the DC difference then end-of-block.
    let mut bits: Vec<bool> = Vec::new();
    let mut push = |value: u32, len: u32| {
        for i in (0..len).rev() {
            bits.push((value >> i) & 1 == 1);
        }
    };
    for s in samples {
        // With only a DC term the decoded sample is DC / 8 + 128.
        let dc = (i32::from(s) - 128) * 8;
        let size = 32 - dc.unsigned_abs().leading_zeros();
        let (code, len) = dc_codes[size as usize];
        push(code, len);
        // Negative values are stored as dc - 1 in `size` bits (JPEG's one's complement).
        let extra = (if dc < 0 { dc - 1 } else { dc }) as u32 & ((1u32 << size) - 1);
        push(extra, size);
        push(0, 1); // end of block
    }
    // Pad the last byte with 1 bits, as the spec asks.
    bits.resize(bits.len().div_ceil(8) * 8, true);
    for byte in bits.chunks(8) {
        let b = byte.iter().fold(0u8, |acc, &bit| (acc << 1) | bit as u8);
        out.push(b);
        if b == 0xFF {
            out.push(0x00); // byte stuffing
        }
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

// ---------- folders ----------

#[test]
fn empty_class_folder_is_an_error_naming_it() {
    let tmp = fixture(2, 0);
    fs::create_dir_all(tmp.path().join("dogs")).unwrap();
    let msg = err_text(raw().flow_from_directory(tmp.path(), (5, 7), 2, ClassMode::Binary));
    assert!(
        msg.contains(&tmp.path().join("dogs").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("no images"), "{msg}");
}

#[test]
fn missing_directory_suggests_the_split_command() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("cats_and_dogs_small/validation");
    let msg = err_text(raw().flow_from_directory(&dir, (150, 150), 20, ClassMode::Binary));
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert!(
        msg.contains("does not exist") && msg.contains("aula split --from"),
        "{msg}"
    );
    let to = format!("--to {}`", tmp.path().join("cats_and_dogs_small").display());
    assert!(msg.contains(&to), "{msg}");
}

#[test]
fn folder_without_class_subfolders_is_an_error() {
    let tmp = TempDir::new().unwrap();
    save(&solid(4, 4, [0, 0, 0]), &tmp.path().join("cat.0.png"));
    let msg = err_text(raw().flow_from_directory(tmp.path(), (4, 4), 2, ClassMode::Binary));
    assert!(msg.contains("no class subfolders"), "{msg}");
}

#[test]
fn images_in_nested_folders_belong_to_the_top_class() {
    let tmp = fixture(1, 1);
    save(
        &solid(4, 4, [0, 0, 0]),
        &tmp.path().join("cats/more/cat.x.png"),
    );
    let it = raw()
        .flow_from_directory(tmp.path(), (4, 4), 2, ClassMode::Binary)
        .unwrap();
    assert_eq!(it.classes(), &[0, 0, 1]);
    assert_eq!(it.filenames()[1], PathBuf::from("cats/more/cat.x.png"));
}

// ---------- content key ----------

#[test]
fn content_key_follows_the_bytes_not_the_location() {
    let a = fixture(2, 2);
    let b = fixture(2, 2);
    let key = |dir: &Path| {
        raw()
            .flow_from_directory(dir, (5, 7), 2, ClassMode::Binary)
            .unwrap()
            .content_key()
            .unwrap()
    };
    let ka = key(a.path());
    assert_eq!(ka.len(), 64);
    assert_eq!(ka, key(b.path()), "same files in another folder");
    save(&solid(7, 5, [1, 2, 3]), &b.path().join("dogs/dogs.01.png"));
    assert_ne!(ka, key(b.path()), "one image changed");
    fs::rename(
        b.path().join("dogs/dogs.01.png"),
        b.path().join("cats/zz.png"),
    )
    .unwrap();
    assert_ne!(ka, key(b.path()), "labels changed");
}

// ---------- the split ----------

#[test]
fn make_split_copies_chollets_numbers() {
    let tmp = TempDir::new().unwrap();
    let kaggle = tmp.path().join("kaggle/train");
    fs::create_dir_all(&kaggle).unwrap();
    // Content is copied, not decoded: a few bytes naming the file will do.
    // Numbers past 1999 exist in Kaggle's folder and must be left alone.
    for prefix in ["cat", "dog"] {
        for i in 0..2010 {
            fs::write(
                kaggle.join(format!("{prefix}.{i}.jpg")),
                format!("{prefix} {i}"),
            )
            .unwrap();
        }
    }
    let dest = tmp.path().join("cats_and_dogs_small");
    make_split(&kaggle, &dest).unwrap();
    for (split, n) in [("train", 1000), ("validation", 500), ("test", 500)] {
        for class in ["cats", "dogs"] {
            let count = fs::read_dir(dest.join(split).join(class)).unwrap().count();
            assert_eq!(count, n, "{split}/{class}");
        }
    }
    let read = |p: &str| fs::read_to_string(dest.join(p)).unwrap();
    assert_eq!(read("train/cats/cat.0.jpg"), "cat 0");
    assert_eq!(read("train/dogs/dog.999.jpg"), "dog 999");
    assert_eq!(read("validation/cats/cat.1000.jpg"), "cat 1000");
    assert_eq!(read("test/dogs/dog.1999.jpg"), "dog 1999");
    assert!(!dest.join("test/dogs/dog.2000.jpg").exists());

    // A missing source file is named, and nothing is half-built.
    fs::remove_file(kaggle.join("dog.1234.jpg")).unwrap();
    let dest2 = tmp.path().join("second");
    let msg = err_text(make_split(&kaggle, &dest2));
    assert!(
        msg.contains("dog.1234.jpg") && msg.contains("1 of the 4000"),
        "{msg}"
    );
    assert!(!dest2.exists());

    let msg = err_text(make_split(&tmp.path().join("nowhere"), &dest2));
    assert!(
        msg.contains("nowhere") && msg.contains("not a directory"),
        "{msg}"
    );
}

/// Kaggle's train/ folder with cat/dog 0..2000, each file holding its own name.
fn kaggle_fixture(dir: &Path) -> PathBuf {
    let kaggle = dir.join("kaggle/train");
    fs::create_dir_all(&kaggle).unwrap();
    for prefix in ["cat", "dog"] {
        for i in 0..2000 {
            fs::write(kaggle.join(format!("{prefix}.{i}.jpg")), format!("{prefix} {i}")).unwrap();
        }
    }
    kaggle
}

#[test]
fn make_split_never_writes_through_a_link_into_the_source() {
    let tmp = TempDir::new().unwrap();
    let kaggle = kaggle_fixture(tmp.path());
    let dest = tmp.path().join("small");
    fs::create_dir_all(dest.join("train/cats")).unwrap();
    fs::create_dir_all(dest.join("train/dogs")).unwrap();
    // A hard link and a symlink to source images already where the split copies to.
    fs::hard_link(kaggle.join("cat.1.jpg"), dest.join("train/cats/cat.1.jpg")).unwrap();
    std::os::unix::fs::symlink(kaggle.join("dog.2.jpg"), dest.join("train/dogs/dog.2.jpg")).unwrap();
    make_split(&kaggle, &dest).unwrap();
    assert_eq!(fs::read_to_string(kaggle.join("cat.1.jpg")).unwrap(), "cat 1", "source truncated");
    assert_eq!(fs::read_to_string(kaggle.join("dog.2.jpg")).unwrap(), "dog 2", "source truncated");
    assert_eq!(fs::read_to_string(dest.join("train/cats/cat.1.jpg")).unwrap(), "cat 1");
    let copy = dest.join("train/dogs/dog.2.jpg");
    assert!(!fs::symlink_metadata(&copy).unwrap().file_type().is_symlink(), "the link was kept");
    assert_eq!(fs::read_to_string(copy).unwrap(), "dog 2");
    // Running it again over its own result is fine.
    make_split(&kaggle, &dest).unwrap();
}

#[test]
fn make_split_refuses_a_destination_with_extra_images() {
    let tmp = TempDir::new().unwrap();
    let kaggle = kaggle_fixture(tmp.path());
    let dest = tmp.path().join("small");
    fs::create_dir_all(dest.join("validation/cats")).unwrap();
    fs::write(dest.join("validation/cats/cat.5000.jpg"), "left over").unwrap();
    let msg = err_text(make_split(&kaggle, &dest));
    assert!(
        msg.contains("validation/cats") && msg.contains("cat.5000.jpg") && msg.contains("1 file"),
        "{msg}"
    );
    assert!(!dest.join("train").exists(), "nothing is written before the refusal");
}

// ---------- the real data, when this machine has it ----------

fn real_data() -> Option<PathBuf> {
    default_data_dir().filter(|d| d.join("train").is_dir())
}

#[test]
fn real_data_train_has_2000_images_in_2_classes() {
    let Some(dir) = real_data() else {
        eprintln!("no real data (set AULA_DATA or build the split): skipped");
        return;
    };
    let mut it = ImageDataGenerator::rescale(1.0 / 255.0)
        .flow_from_directory(dir.join("train"), (150, 150), 20, ClassMode::Binary)
        .unwrap();
    assert_eq!(it.found(), "Found 2000 images belonging to 2 classes.");
    assert_eq!(it.len(), 100);
    let (x, y) = it.next_batch().unwrap();
    assert_eq!(x.size(), vec![20, 3, 150, 150]);
    assert_eq!(y.size(), vec![20]);
    let (lo, hi) = (x.min().double_value(&[]), x.max().double_value(&[]));
    assert!(lo >= 0.0 && hi <= 1.0 && hi > 0.5, "{lo} {hi}");
}

/// Decode speed on the real data:
/// `cargo test -p aula --test data -- --ignored --nocapture decode_speed`.
#[test]
#[ignore]
fn decode_speed_real_data() {
    let Some(dir) = real_data() else {
        eprintln!("no real data: skipped");
        return;
    };
    let mut paths = Vec::new();
    for split in ["train", "validation", "test"] {
        let it = raw()
            .flow_from_directory(dir.join(split), (150, 150), 20, ClassMode::Binary)
            .unwrap();
        paths.extend_from_slice(it.filepaths());
    }
    // Warm the page cache so that the disk is not measured.
    for p in &paths {
        fs::read(p).unwrap();
    }
    let start = std::time::Instant::now();
    let imgs = decode_all(&paths, (150, 150)).unwrap();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "decode + resize to 150x150: {} images in {secs:.2} s = {:.0} img/s on {} threads",
        imgs.len(),
        imgs.len() as f64 / secs,
        rayon::current_num_threads()
    );
    let start = std::time::Instant::now();
    let mut it = ImageDataGenerator::rescale(1.0 / 255.0)
        .flow_from_directory(dir.join("train"), (150, 150), 20, ClassMode::Binary)
        .unwrap();
    let mut n = 0;
    for batch in it.epoch_batches() {
        n += batch.unwrap().0.size()[0];
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "epoch of batches of 20 (tensors included): {n} images in {secs:.2} s = {:.0} img/s",
        n as f64 / secs
    );
}
