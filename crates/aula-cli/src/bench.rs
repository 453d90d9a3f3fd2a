//! `aula bench`: the aula side of `make bench` (scripts/bench.py runs PyTorch and
//! PIL in the same script and prints the ratios).

use anyhow::{Context, Result};
use aula::prelude::*;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = 2)]
    threads: i32,
    /// Timed batches of 32 images (after one warm-up batch).
    #[arg(long, default_value_t = 8)]
    batches: usize,
    /// cats_and_dogs_small, for the decoding benchmark.
    #[arg(long)]
    data: Option<PathBuf>,
}

/// VGG16's convolutional base at 150×150 costs 13.23 GFLOP per image.
const VGG16_GFLOP_150: f64 = 13.23;

pub fn run(args: Args) -> Result<()> {
    tch::set_num_threads(args.threads);
    let mut conv_base = vgg16(Weights::None, false, (150, 150, 3))?;
    let extract_img_s = images_per_second(&conv_base, args.batches);
    conv_base.set_channels_last(false);
    let nchw_img_s = images_per_second(&conv_base, args.batches);

    let data = args.data.or_else(aula::data::default_data_dir).context("no data folder for the decode benchmark")?;
    let mut files = Vec::new();
    for split in ["train", "validation", "test"] {
        let generator = ImageDataGenerator::rescale(1.0 / 255.0).flow_from_directory(
            data.join(split),
            (150, 150),
            32,
            ClassMode::Binary,
        )?;
        files.extend(generator.filepaths().iter().cloned());
    }
    let start = Instant::now();
    let images = aula::data::decode_all(&files, (150, 150))?;
    let decode_img_s = images.len() as f64 / start.elapsed().as_secs_f64();

    println!(
        "VGG16 conv base, 150×150, batch 32, {} threads: {extract_img_s:.1} img/s ({:.0} GFLOP/s); NCHW: {nchw_img_s:.1} img/s",
        args.threads,
        extract_img_s * VGG16_GFLOP_150
    );
    println!("JPEG decode + resize to 150×150, {} images: {decode_img_s:.0} img/s", images.len());
    if args.json {
        let out = json!({
            "vgg16_extract_img_s": extract_img_s,
            "vgg16_extract_gflops": extract_img_s * VGG16_GFLOP_150,
            "vgg16_extract_nchw_img_s": nchw_img_s,
            "decode_img_s": decode_img_s,
            "threads": args.threads,
            "device": device_info(),
        });
        println!("{out}");
    }
    Ok(())
}

/// Conv-base throughput on one random batch of 32 (after a warm-up batch).
fn images_per_second(conv_base: &Sequential, batches: usize) -> f64 {
    let x = Tensor::rand([32, 3, 150, 150], (Kind::Float, conv_base.device()));
    let _guard = tch::no_grad_guard();
    let _ = conv_base.forward_t(&x, false);
    let start = Instant::now();
    for _ in 0..batches {
        let _ = conv_base.forward_t(&x, false);
    }
    (32 * batches) as f64 / start.elapsed().as_secs_f64()
}
