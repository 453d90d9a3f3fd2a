//! `aula bench`: the aula side of `make bench` (scripts/bench.py runs PyTorch and
//! PIL in the same script and prints the ratios).

use anyhow::{Context, Result};
use aula::comparison::images_per_second;
use aula::precision::Precision;
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
    /// cats_and_dogs_small, for the decoding and augmentation benchmarks.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Timed steps (batches of 20) of the frozen data-augmentation training, after one
    /// warm-up step; 0 skips it.
    #[arg(long, default_value_t = 4)]
    da_steps: usize,
}

/// VGG16's convolutional base at 150×150 costs 13.23 GFLOP per image.
const VGG16_GFLOP_150: f64 = 13.23;

/// The backbones whose base throughput `make bench` reports besides VGG16's
/// (random weights: the speed is the same).
const BACKBONES: [&str; 7] = ["VGG19", "ResNet50", "InceptionV3", "Xception", "MobileNet", "MobileNetV2", "EfficientNetLite0"];

pub fn run(args: Args) -> Result<()> {
    tch::set_num_threads(args.threads);
    // Which precision the frozen layers run in here, and the calibration behind it.
    let policy = aula::precision::policy(default_device());
    let calibration = aula::precision::cpu_calibration();
    println!("{}", device_info());
    println!(
        "precision calibration ({}, {}): fp32 {:.1} ms, bf16 {:.1} ms: bf16 {:.2}× fp32{}",
        calibration.key.cpu_model,
        calibration.key.cpu_flags.join(" "),
        calibration.fp32_ms,
        calibration.bf16_ms,
        calibration.bf16_speedup,
        if calibration.from_cache { format!(" (from {})", calibration.path.display()) } else { String::new() }
    );
    let mut conv_base = vgg16(Weights::None, false, (150, 150, 3))?;
    // Both precisions, channels-last, in the same run: the ratio holds on a busy machine.
    conv_base.set_precision(Precision::Fp32);
    let fp32_img_s = images_per_second(&conv_base, 32, args.batches)?;
    conv_base.set_precision(Precision::Bf16);
    let bf16_img_s = images_per_second(&conv_base, 32, args.batches)?;
    // What aula runs: the policy's precision.
    let extract_img_s = if policy.precision == Precision::Bf16 { bf16_img_s } else { fp32_img_s };
    conv_base.set_precision(Precision::Fp32);
    conv_base.set_channels_last(false);
    let nchw_img_s = images_per_second(&conv_base, 32, args.batches)?;
    println!(
        "VGG16 conv base, 150×150, batch 32, {} threads: {extract_img_s:.1} img/s in {} ({:.0} GFLOP/s); \
         fp32 channels-last {fp32_img_s:.1}, bf16 channels-last {bf16_img_s:.1} ({:.2}×), fp32 NCHW {nchw_img_s:.1} img/s",
        args.threads,
        policy.precision,
        extract_img_s * VGG16_GFLOP_150,
        bf16_img_s / fp32_img_s,
    );
    let mut backbones = serde_json::Map::new();
    for name in BACKBONES {
        let base = aula::model::applications::by_name(name)?(Weights::None, false, (150, 150, 3))?;
        let img_s = images_per_second(&base, 32, args.batches)?;
        println!("{name} conv base, 150×150: {img_s:.1} img/s ({:.2} GFLOP per image)", base.flops() as f64 / 1e9);
        backbones.insert(format!("{}_extract_img_s", name.to_lowercase()), json!(img_s));
    }

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
    println!("JPEG decode + resize to 150×150, {} images: {decode_img_s:.0} img/s", images.len());

    let da_step_s = (args.da_steps > 0).then(|| da_step_seconds(&data, "VGG16", args.da_steps)).transpose()?;
    if let Some(s) = da_step_s {
        println!("frozen data-augmentation training: {s:.2} s per step of 20 ({:.0} s per 100-step epoch)", s * 100.0);
    }
    // The light net's steps are short: time 5× as many for the same precision.
    let effnet_da_step_s =
        (args.da_steps > 0).then(|| da_step_seconds(&data, "EfficientNetLite0", 5 * args.da_steps)).transpose()?;
    if let (Some(vgg), Some(effnet)) = (da_step_s, effnet_da_step_s) {
        println!("the same with EfficientNet-Lite0: {effnet:.3} s per step ({:.1}× faster)", vgg / effnet);
    }
    let ft_step_s = (args.da_steps > 0).then(|| ft_step_seconds(&data, args.da_steps)).transpose()?;
    if let Some(s) = ft_step_s {
        println!("fine-tuning training (block 5 + head): {s:.2} s per step of 20 ({:.0} s per 100-step epoch)", s * 100.0);
    }
    if args.json {
        let mut out = json!({
            "da_step_s": da_step_s,
            "da_epoch_s": da_step_s.map(|s| s * 100.0),
            "effnet_lite0_da_step_s": effnet_da_step_s,
            "ft_step_s": ft_step_s,
            "ft_epoch_s": ft_step_s.map(|s| s * 100.0),
            "vgg16_extract_img_s": extract_img_s,
            "vgg16_extract_gflops": extract_img_s * VGG16_GFLOP_150,
            "vgg16_extract_nchw_img_s": nchw_img_s,
            "vgg16_extract_fp32_img_s": fp32_img_s,
            "vgg16_extract_bf16_img_s": bf16_img_s,
            "precision": policy.precision,
            "precision_reason": policy.reason,
            "precision_calibration": {
                "fp32_ms": calibration.fp32_ms,
                "bf16_ms": calibration.bf16_ms,
                "bf16_speedup": calibration.bf16_speedup,
                "choice": calibration.precision,
                "reason": calibration.reason,
                "cpu_model": calibration.key.cpu_model,
                "cpu_flags": calibration.key.cpu_flags,
                "threads": calibration.key.threads,
                "libtorch": calibration.key.libtorch,
                "file": calibration.path,
            },
            "decode_img_s": decode_img_s,
            "threads": args.threads,
            "device": device_info(),
        });
        out.as_object_mut().expect("a JSON object").extend(backbones);
        println!("{out}");
    }
    Ok(())
}

/// Seconds per training step of "Alternativa 2" with the base frozen: a batch of 20
/// augmented training images (kept decoded since the first epoch; augment, rescale), the base's
/// forward, the head's forward and backward, RMSprop. As the notebooks train it
/// (random base weights: the speed is the same).
fn da_step_seconds(data: &std::path::Path, backbone: &str, steps: usize) -> Result<f64> {
    aula::train::seed(0);
    let base = aula::model::applications::by_name(backbone)?(Weights::None, false, (150, 150, 3))?;
    let mut model = crate::fine_tune::with_frozen_classifier(base)?;
    timed_steps(&mut model, data, steps)
}

/// Seconds per training step of the fine-tuning: the same model with block 5
/// trainable too (RMSprop 1e-5), as notebook 03 trains it.
fn ft_step_seconds(data: &std::path::Path, steps: usize) -> Result<f64> {
    aula::train::seed(0);
    let mut model = crate::fine_tune::with_frozen_classifier(vgg16(Weights::None, false, (150, 150, 3))?)?;
    crate::fine_tune::unfreeze_block5(&mut model)?;
    timed_steps(&mut model, data, steps)
}

/// `steps` steps of the slides' augmented training data through `model`, after one warm-up step.
fn timed_steps(model: &mut Sequential, data: &std::path::Path, steps: usize) -> Result<f64> {
    let datagen = crate::fine_tune::slides_augmentation(Preprocessing::Rescale(1.0 / 255.0))?;
    let mut train = datagen.flow_from_directory(data.join("train"), (150, 150), 20, ClassMode::Binary)?;
    // The steady state of a 30-epoch training: every image was decoded in the
    // first epoch and is kept in memory (aula::data::decoded).
    let all: Vec<usize> = (0..train.samples()).collect();
    for chunk in all.chunks(100) {
        let _ = train.load_batch(chunk)?;
    }
    model.fit_generator(&mut train, 1, 1, None, 0)?; // warm-up
    let start = Instant::now();
    model.fit_generator(&mut train, steps, 1, None, 0)?;
    Ok(start.elapsed().as_secs_f64() / steps as f64)
}
