//! The slides' sequence for "Alternativa 1" (feature extraction), end to end.

use aula::features::{extract_features, Features};
use aula::prelude::*;
use anyhow::{Context, Result};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// cats_and_dogs_small (default: $AULA_DATA, else ../shared/data/cats_and_dogs_small).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output folder for metrics.json and the curves.
    #[arg(long, default_value = "out")]
    out: PathBuf,
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use VGG16's own 'caffe' preprocessing instead of the slides' rescale 1/255.
    #[arg(long)]
    caffe: bool,
}

pub fn run(args: Args) -> Result<()> {
    let data = args.data.or_else(aula::data::default_data_dir).context(
        "no data folder: pass --data or set AULA_DATA to cats_and_dogs_small (build it with `aula split`)",
    )?;
    seed(args.seed);
    println!("{}", device_info());

    // Slide "Importación de VGG16".
    let conv_base = VGG16("imagenet", false, (150, 150, 3))?;
    let summary = conv_base.summary();
    println!("{summary}");

    // Slide "Extracción rápida sin Data Augmentation".
    let (datagen, section) = if args.caffe {
        (ImageDataGenerator::caffe(), "feature_extraction_caffe")
    } else {
        (ImageDataGenerator::rescale(1.0 / 255.0), "feature_extraction")
    };
    let start = Instant::now();
    let extract = |split: &str| -> Result<Features> {
        let generator = datagen.flow_from_directory(data.join(split), (150, 150), 20, ClassMode::Binary)?;
        extract_features(&conv_base, &generator)
    };
    let (train, validation, test) = (extract("train")?, extract("validation")?, extract("test")?);
    let extract_s = start.elapsed().as_secs_f64();
    let cached = train.cached && validation.cached && test.cached;
    println!("features: {:.1}s ({})", extract_s, if cached { "from the cache" } else { "computed" });

    let mut model = Sequential::new("sequential");
    model.add(Dense(256).activation("relu").input_dim(4 * 4 * 512))?;
    model.add(Dropout(0.5))?;
    model.add(Dense(1).activation("sigmoid"))?;
    println!("{}", model.summary());
    model.compile(RMSprop::new(2e-5), "binary_crossentropy", &["acc"])?;
    let start = Instant::now();
    let history = model.fit(
        &train.flat(),
        &train.labels,
        args.epochs,
        20,
        Some((&validation.flat(), &validation.labels)),
    )?;
    let train_s = start.elapsed().as_secs_f64();
    let (test_loss, test_acc) = model.evaluate(&test.flat(), &test.labels, 20)?;
    let (best, best_epoch) = history.best_val_acc().context("no epochs were run")?;
    println!("best val_acc {best:.4} at epoch {best_epoch}; test acc {test_acc:.4}");

    let dir = args.out.join(section);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut plots = plot_history(&history, None, &dir, "raw")?;
    plots.extend(plot_history(&history, Some(0.8), &dir, "smoothed")?);
    history.save(dir.join("history.json"))?;
    let metrics = json!({
        "val_acc": history.val_acc,
        "best_val_acc": best,
        "best_epoch": best_epoch,
        "test_acc": test_acc,
        "test_loss": test_loss,
        "total_params": summary.total_params,
        "extract_wall_s": extract_s,
        "features_from_cache": cached,
        "train_wall_s": train_s,
        "epochs": args.epochs,
        "preprocessing": if args.caffe { "caffe" } else { "rescale 1/255" },
        "device": device_info(),
        // The precision the conv base ran in (the cache keeps each apart).
        "precision": train.precision,
        "seed": args.seed,
        "plots": plots.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
    });
    aula::metrics::record(args.out.join("metrics.json"), section, metrics)?;
    println!("wrote {}", args.out.join("metrics.json").display());
    Ok(())
}
