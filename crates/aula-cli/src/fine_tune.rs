//! "Alternativa 2" and fine-tuning without Jupyter: the trainings of notebooks
//! 02 and 03, then the test set. The same library calls as the notebooks; on a
//! GPU machine it is how the long trainings are checked (scripts/gpu-check.sh).
//!
//! Every input and output location is checked before the first epoch: a
//! missing test/ split or an --out that cannot be created must not be found
//! after hours of training.

use aula::prelude::*;
use anyhow::{Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// cats_and_dogs_small (default: $AULA_DATA, else ../shared/data/cats_and_dogs_small).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output folder for metrics.json, the curves and (unless --checkpoints) the checkpoints.
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Per-epoch checkpoints: a rerun continues where an interrupted one stopped.
    #[arg(long)]
    checkpoints: Option<PathBuf>,
    /// VGG16's weights: "imagenet" or a file (.h5, .safetensors, .pth).
    #[arg(long, default_value = "imagenet")]
    weights: String,
    /// Epochs of the classifier on the frozen base (notebook 02: 30).
    #[arg(long, default_value_t = 30, value_parser = at_least_one)]
    head_epochs: usize,
    /// Epochs of fine-tuning, block 5 + classifier (notebook 03: 30; Chollet: 100).
    #[arg(long, default_value_t = 30, value_parser = at_least_one)]
    epochs: usize,
    /// Batches of 20 per epoch (100 = the 2,000 training images).
    #[arg(long, default_value_t = 100, value_parser = at_least_one)]
    steps_per_epoch: usize,
    /// Validation batches of 20 per epoch (50 = the 1,000 validation images).
    #[arg(long, default_value_t = 50, value_parser = at_least_one)]
    validation_steps: usize,
    /// Test batches of 20 (50 = the 1,000 test images).
    #[arg(long, default_value_t = 50, value_parser = at_least_one)]
    test_steps: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use VGG16's own 'caffe' preprocessing instead of the slides' rescale 1/255.
    #[arg(long)]
    caffe: bool,
}

pub fn run(args: Args) -> Result<()> {
    let data = args.data.clone().or_else(aula::data::default_data_dir).context(
        "no data folder: pass --data or set AULA_DATA to cats_and_dogs_small (build it with `aula split`)",
    )?;
    let suffix = if args.caffe { "_caffe" } else { "" };
    let checkpoints = args.checkpoints.clone().unwrap_or_else(|| args.out.join("checkpoints"));
    // Where the results go, before anything long runs.
    for dir in [&args.out, &checkpoints] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    seed(args.seed);
    println!("{}", device_info());

    let mut model = with_frozen_classifier(VGG16(args.weights.as_str(), false, (150, 150, 3))?)?;
    let preprocessing = if args.caffe { Preprocessing::Caffe } else { Preprocessing::Rescale(1.0 / 255.0) };
    let train_datagen = slides_augmentation(preprocessing.clone())?;
    let test_datagen = ImageDataGenerator::preprocess_input(preprocessing);
    let mut train = train_datagen.flow_from_directory(data.join("train"), (150, 150), 20, ClassMode::Binary)?;
    let mut validation = test_datagen.flow_from_directory(data.join("validation"), (150, 150), 20, ClassMode::Binary)?;
    // The test split is read at the very end: check it now (present, images, same classes).
    let mut test = test_datagen.flow_from_directory(data.join("test"), (150, 150), 20, ClassMode::Binary)?.shuffle(false);
    train.check_same_classes(&validation)?;
    train.check_same_classes(&test)?;
    let head = fit(&args, &mut model, &mut train, &mut validation, args.head_epochs, &checkpoints.join(format!("data_augmentation{suffix}")))?;

    unfreeze_block5(&mut model)?;
    let mut fine = fit(&args, &mut model, &mut train, &mut validation, args.epochs, &checkpoints.join(format!("fine_tuning{suffix}")))?;

    // Slide "Evaluación del modelo".
    let start = Instant::now();
    let (test_loss, test_acc) = model.evaluate_generator(&mut test, args.test_steps)?;
    let test_s = start.elapsed().as_secs_f64();
    println!("test acc {test_acc:.4} - test loss {test_loss:.4} ({test_s:.1} s)");

    let metrics = args.out.join("metrics.json");
    aula::metrics::record(&metrics, &format!("data_augmentation{suffix}"), head)?;
    fine["test_acc"] = json!(test_acc);
    fine["test_loss"] = json!(test_loss);
    fine["test_s"] = json!(test_s);
    aula::metrics::record(&metrics, &format!("fine_tuning{suffix}"), fine)?;
    println!("wrote {}", metrics.display());
    Ok(())
}

/// clap's check for counts that must be at least 1 (0 epochs would train nothing).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Slide "Extracción con Data Augmentation": conv_base + Flatten + Dense(256,
/// relu) + Dense(1, sigmoid), compiled with the base frozen (slide "Compilación":
/// 30 → 4 trainable weight tensors for VGG16) and RMSprop(2e-5).
pub fn with_frozen_classifier(conv_base: Sequential) -> Result<Sequential> {
    let base_name = conv_base.name.clone();
    let mut model = Sequential::new("sequential");
    model.add(conv_base)?;
    model.add(Flatten())?;
    model.add(Dense(256).activation("relu"))?;
    model.add(Dense(1).activation("sigmoid"))?;
    model.get_layer(&base_name)?.trainable = false;
    model.compile(RMSprop::new(2e-5), "binary_crossentropy", &["acc"])?;
    Ok(model)
}

/// Slide "Cambios al código para fine tuning": the base trainable from
/// `block5_conv1` on (the slide's `set_trainable` loop), compiled with RMSprop(1e-5).
pub fn unfreeze_block5(model: &mut Sequential) -> Result<()> {
    let vgg16 = model.get_layer("vgg16")?;
    vgg16.trainable = true;
    let mut set_trainable = false;
    for layer in vgg16.as_model_mut()?.layers_mut() {
        set_trainable |= layer.name == "block5_conv1";
        layer.trainable = set_trainable;
    }
    model.compile(RMSprop::new(1e-5), "binary_crossentropy", &["acc"])?;
    Ok(())
}

/// The slides' `ImageDataGenerator(rotation_range=40, width_shift_range=0.2,
/// height_shift_range=0.2, shear_range=0.2, zoom_range=0.2, horizontal_flip=True,
/// fill_mode='nearest')`, with `preprocessing` instead of `rescale=1./255` if asked.
pub fn slides_augmentation(preprocessing: Preprocessing) -> Result<ImageDataGenerator> {
    ImageDataGenerator::preprocess_input(preprocessing)
        .rotation_range(40.0)
        .width_shift_range(0.2)
        .height_shift_range(0.2)
        .shear_range(0.2)
        .zoom_range(0.2)
        .horizontal_flip(true)
        .fill_mode("nearest")
}

/// One checkpointed training; its metrics section (curves written beside it).
fn fit(
    args: &Args,
    model: &mut Sequential,
    train: &mut DirectoryIterator,
    validation: &mut DirectoryIterator,
    epochs: usize,
    checkpoints: &Path,
) -> Result<serde_json::Value> {
    let step = checkpoints.file_name().and_then(|s| s.to_str()).unwrap_or("training");
    println!("{step}: {} trainable weight tensors, {epochs} epochs", model.trainable_weights());
    let history = model.fit_generator_with_checkpoints(train, args.steps_per_epoch, epochs, Some(validation), args.validation_steps, checkpoints)?;
    let run = aula::train::Checkpoint::load(checkpoints)?.context("the training left no checkpoint")?;
    let (best_val_acc, best_epoch) = history.best_val_acc().context("no epochs were run")?;
    println!("{step}: best val_acc {best_val_acc:.4} at epoch {best_epoch}");
    let dir = args.out.join(step);
    let mut plots = plot_history(&history, None, &dir, "raw")?;
    plots.extend(plot_history(&history, Some(0.8), &dir, "smoothed")?);
    history.save(dir.join("history.json"))?;
    Ok(json!({
        "best_val_acc": best_val_acc, "best_epoch": best_epoch, "epochs": history.epochs(),
        "val_acc": history.val_acc, "epoch_s": run.epoch_seconds, "devices": run.devices,
        "steps_per_epoch": args.steps_per_epoch, "validation_steps": args.validation_steps,
        "weights": args.weights, "seed": args.seed,
        "plots": plots.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
    }))
}
