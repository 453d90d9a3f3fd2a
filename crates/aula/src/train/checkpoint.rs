//! Per-epoch checkpoints of `fit_generator`, so a training of hours survives a
//! crash, a closed laptop or the end of a session and continues where it was.
//!
//! A checkpoint folder holds `checkpoint.json` (what was trained, how, and
//! the history so far) and `epoch-NNNN.safetensors` (the trainable weights and
//! RMSprop's state after that epoch). The weights file is written first and
//! the JSON that names it last, both atomically, so a process killed at any
//! moment leaves the previous complete checkpoint. The random state needs no
//! saving: every epoch reseeds from the run's seed and its number.

use super::{History, RMSprop};
use crate::model::Sequential;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

const FORMAT: u32 = 1;

/// What `checkpoint.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format: u32,
    /// SHA-256 of the architecture (every weight's name and shape), the set of
    /// trainable weights and the values of the frozen ones: a checkpoint only
    /// resumes the model it was made from.
    pub model: String,
    pub trainable: Vec<String>,
    pub optimizer: RMSprop,
    pub seed: u64,
    pub steps_per_epoch: usize,
    pub validation_steps: usize,
    /// Epochs done so far (= history length).
    pub epochs_done: usize,
    pub history: History,
    /// Wall time of each epoch, seconds.
    pub epoch_seconds: Vec<f64>,
    /// The line printed at the end of each epoch, replayed on resume.
    pub lines: Vec<String>,
    /// The file with the weights and optimizer state of the last epoch.
    pub weights_file: String,
    /// Where each epoch ran (device, threads), for provenance.
    pub devices: Vec<String>,
    /// When each epoch started and ended (UTC, RFC 3339): the record's wall clock.
    #[serde(default)]
    pub epoch_started: Vec<String>,
    #[serde(default)]
    pub epoch_ended: Vec<String>,
    /// Each run of the training: the first one and every resumption.
    #[serde(default)]
    pub sessions: Vec<Session>,
}

/// One run of a checkpointed training, started fresh or resumed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The first epoch it trained (1-based).
    pub first_epoch: usize,
    pub started: String,
    /// `device_info()` and the CPU model.
    pub device: String,
    /// What ran it: `$AULA_RENDER_COMMAND` (`make render` sets it), else this process's command line.
    pub command: String,
}

impl Session {
    pub(crate) fn now(first_epoch: usize) -> Session {
        let command = std::env::var("AULA_RENDER_COMMAND")
            .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
        Session {
            first_epoch,
            started: crate::paths::now_utc(),
            device: format!("{}; {}", crate::device::device_info(), crate::device::cpu_model()),
            command,
        }
    }
}

/// An exclusive lock on a checkpoint folder for the length of one training:
/// two trainings writing one folder would replace each other's epochs. It is
/// an OS file lock (flock), so it goes with the process however that ends,
/// SIGKILL included, and never needs cleaning up by hand.
pub(crate) struct FolderLock {
    _file: std::fs::File,
}

impl FolderLock {
    pub(crate) fn acquire(dir: &Path) -> Result<FolderLock> {
        use std::io::{Read, Write};
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create checkpoint folder {}", dir.display()))?;
        let path = dir.join("lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = if holder.trim().is_empty() { "it is just starting".to_string() } else { holder.trim().to_string() };
                bail!(
                    "checkpoint folder {} is in use by another training ({holder}). Wait until it ends \
                     (or stop it), or give this training another checkpoint folder",
                    dir.display()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        // Who holds it, for the error above.
        let started = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let command: Vec<String> = std::env::args().collect();
        let _ = file.set_len(0);
        let _ = write!(file, "pid {}, since {started}: {}", std::process::id(), command.join(" "));
        // Temporary files here are from writes cut short by a kill: with the
        // lock held, nobody else is writing them (they can be tens of MB).
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().ends_with(".tmp") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(FolderLock { _file: file })
    }
}

/// The identity of a model for resuming: see [`Checkpoint::model`].
pub(crate) fn model_fingerprint(model: &Sequential) -> String {
    let mut h = crate::cache::KeyHasher::new();
    for (name, t, trainable) in model.named_weights() {
        h.text(format!("{name} {:?} {trainable}\n", t.size()));
        if !trainable {
            // Frozen weights must be the same values (e.g. the ImageNet base).
            h.values(t);
        }
    }
    h.finish()
}

impl Checkpoint {
    pub fn json_path(dir: &Path) -> PathBuf {
        dir.join("checkpoint.json")
    }

    /// The checkpoint in `dir`, `None` when there is none yet.
    pub fn load(dir: &Path) -> Result<Option<Checkpoint>> {
        let path = Self::json_path(dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let c: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "checkpoint {} is damaged ({e}); delete {} to start the training again",
                path.display(),
                dir.display()
            )
        })?;
        if c.format != FORMAT {
            bail!("checkpoint {} has format {}, this aula reads format {FORMAT}", path.display(), c.format);
        }
        if c.history.epochs() != c.epochs_done || c.lines.len() != c.epochs_done {
            bail!(
                "checkpoint {} is inconsistent ({} epochs done, history of {}); delete {} to start again",
                path.display(),
                c.epochs_done,
                c.history.epochs(),
                dir.display()
            );
        }
        Ok(Some(c))
    }

    /// Checks that this checkpoint continues `model` trained as asked.
    pub(crate) fn check_matches(&self, dir: &Path, model: &Sequential, optimizer: RMSprop, seed: u64, steps: (usize, usize)) -> Result<()> {
        let path = Self::json_path(dir).display().to_string();
        if self.model != model_fingerprint(model) {
            let trainable: Vec<String> =
                model.named_weights().into_iter().filter(|(_, _, t)| *t).map(|(n, _, _)| n).collect();
            let why = if self.trainable != trainable {
                format!(
                    "it trains {} weight tensors ({}…), this model {} ({}…)",
                    self.trainable.len(),
                    self.trainable.first().map_or("", |s| s.as_str()),
                    trainable.len(),
                    trainable.first().map_or("", |s| s.as_str())
                )
            } else {
                "the layers, their shapes or the frozen weights differ".to_string()
            };
            bail!("checkpoint {path} was made by another model: {why}. Use another checkpoint folder, or delete this one to start again");
        }
        if self.optimizer != optimizer {
            bail!("checkpoint {path} was trained with {:?}, this fit uses {optimizer:?}", self.optimizer);
        }
        if self.seed != seed {
            bail!("checkpoint {path} was trained with seed {}, this fit uses seed {seed} (aula::train::seed)", self.seed);
        }
        if (self.steps_per_epoch, self.validation_steps) != steps {
            bail!(
                "checkpoint {path} has steps_per_epoch={} and validation_steps={}, this fit asks for {} and {}",
                self.steps_per_epoch,
                self.validation_steps,
                steps.0,
                steps.1
            );
        }
        Ok(())
    }

    /// Saves the state after an epoch: the weights file, then the JSON naming
    /// it, then removes the other epochs' weights files.
    pub(crate) fn save(&mut self, dir: &Path, model: &Sequential) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        self.weights_file = format!("epoch-{:04}.safetensors", self.epochs_done);
        let mut tensors: crate::weights::NamedTensors = BTreeMap::new();
        for (name, t) in model.get_trainable_weights() {
            tensors.insert(format!("weights/{name}"), t);
        }
        for (name, t) in model.optimizer_state().into_iter().flatten() {
            tensors.insert(format!("rmsprop/{name}"), t.to_device(tch::Device::Cpu).contiguous());
        }
        crate::weights::write_safetensors(&tensors, &dir.join(&self.weights_file))?;
        crate::paths::write_atomic(&Self::json_path(dir), &serde_json::to_vec_pretty(self)?)?;
        // Every other epoch's weights go: the previous one, and any left by a process
        // killed between writing the JSON and this clean-up.
        for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("epoch-") && name.ends_with(".safetensors") && name != self.weights_file {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Puts the checkpoint's weights and optimizer state into `model`.
    pub(crate) fn restore(&self, dir: &Path, model: &mut Sequential) -> Result<()> {
        let path = dir.join(&self.weights_file);
        let damaged = || format!("checkpoint weights {} are damaged or missing; delete {} to start again", path.display(), dir.display());
        let all = Tensor::read_safetensors(&path).with_context(damaged)?;
        let (mut weights, mut state) = (BTreeMap::new(), BTreeMap::new());
        for (name, t) in all {
            if let Some(n) = name.strip_prefix("weights/") {
                weights.insert(n.to_string(), t);
            } else if let Some(n) = name.strip_prefix("rmsprop/") {
                state.insert(n.to_string(), t.to_device(model.device()));
            }
        }
        if weights.len() != self.trainable.len() {
            bail!("{}: {} trainable weights, the checkpoint lists {}; {}", path.display(), weights.len(), self.trainable.len(), damaged());
        }
        model.set_weights_by_name(&weights, &path.display().to_string())?;
        model.set_optimizer_state(state)
    }
}
