//! Results of the cells the slides mark "no ejecutar en clase" (hours on a
//! CPU). The instructor renders them once (`make render`); what they produce
//! (history, the trained weights of the trainable part, provenance) is
//! committed under `assets/rendered/<step>/`, and in class the notebook loads
//! it so that every later cell runs.

use crate::model::Sequential;
use crate::train::History;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The command that renders the slow cells, named by every "missing" error.
pub const RENDER_COMMAND: &str = "make render";

/// The repository's `assets/` folder: `$AULA_ASSETS`, else the first
/// `assets/` holding `weights.json` in the working directory or above it (a
/// notebook's kernel runs in `notebooks/`).
pub fn assets_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("AULA_ASSETS") {
        return Ok(PathBuf::from(dir));
    }
    let cwd = std::env::current_dir()?;
    for dir in cwd.ancestors() {
        let candidate = dir.join("assets");
        if candidate.join("weights.json").is_file() {
            return Ok(candidate);
        }
    }
    bail!("no assets/ folder (with weights.json) in {} or above; set AULA_ASSETS", cwd.display())
}

/// `assets/rendered/<step>`.
pub fn step_dir(step: &str) -> Result<PathBuf> {
    Ok(assets_dir()?.join("rendered").join(step))
}

/// A rendered file that must exist: a clear error naming it and the command
/// that renders it otherwise.
pub fn rendered_file(step: &str, file: &str) -> Result<PathBuf> {
    let path = step_dir(step)?.join(file);
    if !path.is_file() {
        bail!(
            "missing pre-rendered artifact {}: it is written by the cells tagged `no-ejecutar` of the \
             '{step}' notebook; render them with `{RENDER_COMMAND}` (hours on a CPU, minutes on a GPU)",
            path.display()
        );
    }
    Ok(path)
}

/// What a rendered step left: its history and the provenance record.
pub struct Rendered {
    pub history: History,
    pub provenance: Value,
}

/// Saves a step's results: `history.json`, `weights.safetensors` (trainable
/// weights only, f16) and `provenance.json` (date, commit, device, threads,
/// seed, epochs, wall time from the training's checkpoints in `checkpoints`,
/// which count every epoch once however many times the training resumed,
/// plus `extra`).
pub fn save(step: &str, history: &History, model: &Sequential, checkpoints: &Path, extra: Value) -> Result<PathBuf> {
    let Some(run) = crate::train::Checkpoint::load(checkpoints)? else {
        bail!("no checkpoint in {}: save() records a training made with fit_generator_with_checkpoints", checkpoints.display());
    };
    if run.history != *history {
        bail!("the history given is not the one of the checkpoint in {}", checkpoints.display());
    }
    let wall_s: f64 = run.epoch_seconds.iter().sum();
    let mut devices = run.devices.clone();
    devices.dedup();
    let dir = step_dir(step)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    history.save(dir.join("history.json"))?;
    model.save_trainable_weights(dir.join("weights.safetensors"), true)?;
    let mut provenance = json!({
        "step": step,
        "date": time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)?
            .format(&time::format_description::well_known::Rfc3339)?,
        "commit": git_commit(&dir),
        "device": devices,
        "threads": tch::get_num_threads(),
        "seed": crate::train::current_seed(),
        "epochs": history.epochs(),
        "wall_s": (wall_s * 10.0).round() / 10.0,
        "epoch_s": run.epoch_seconds.iter().map(|s| s.round()).collect::<Vec<_>>(),
        "optimizer": run.optimizer,
        "steps_per_epoch": run.steps_per_epoch,
        "validation_steps": run.validation_steps,
        "best_val_acc": history.best_val_acc().map(|(v, _)| v),
        "trainable_weights": model.trainable_weights(),
    });
    if let (Value::Object(p), Value::Object(e)) = (&mut provenance, extra) {
        p.extend(e);
    }
    // A rerun of `make render` saves finished trainings again: the same record
    // keeps the date and commit it was first saved with, not the rerun's.
    let without_stamp = |mut record: Value| {
        if let Value::Object(fields) = &mut record {
            fields.remove("date");
            fields.remove("commit");
        }
        record
    };
    let saved: Option<Value> = std::fs::read(dir.join("provenance.json")).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok());
    if saved.map(without_stamp) == Some(without_stamp(provenance.clone())) {
        return Ok(dir);
    }
    crate::paths::write_atomic(&dir.join("provenance.json"), &serde_json::to_vec_pretty(&provenance)?)?;
    Ok(dir)
}

/// Loads a step's results into `model` (its trainable part) and returns the
/// history and provenance; a missing file is an error naming it and `make render`.
pub fn restore(step: &str, model: &mut Sequential) -> Result<Rendered> {
    let history = History::load(rendered_file(step, "history.json")?)?;
    model.load_weights_by_name(rendered_file(step, "weights.safetensors")?)?;
    let path = rendered_file(step, "provenance.json")?;
    let provenance = serde_json::from_slice(&std::fs::read(&path)?)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    Ok(Rendered { history, provenance })
}

fn git_commit(dir: &Path) -> Value {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| Value::String(String::from_utf8_lossy(&o.stdout).trim().to_string()))
        .unwrap_or(Value::Null)
}
