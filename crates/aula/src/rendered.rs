//! Results of the cells the slides mark "no ejecutar en clase" (hours on a
//! CPU). The instructor renders them once (`make render`); what they produce
//! (history, the trained weights of the trainable part, provenance) is
//! committed under `assets/rendered/<step>/`, and in class the notebook loads
//! it so that every later cell runs.

use crate::display::{decimal, Table};
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

/// Set (to anything but "0") where the slow cells may train: `aula-runner
/// instructor`, which `make render` runs, sets it.
pub const RENDER_VAR: &str = "AULA_RENDER";

/// The guard of a slow cell ("no ejecutar en clase"): true in instructor mode,
/// and the cell trains. Anywhere else (JupyterLab's "Run All", a student's
/// Shift-Enter) false, after saying in Spanish what the cell would do, how long
/// the recorded run took, that the next cell loads it and how to render it
/// again: nothing trains for hours and the recorded results are never
/// overwritten. `what` names the training in Spanish ("el clasificador con
/// aumento de datos").
///
/// ```ignore
/// if aula::rendered::render_here("data_augmentation", "el clasificador con aumento de datos") {
///     let history = model.fit_generator_with_checkpoints(/* … */)?;
///     aula::rendered::save("data_augmentation", &history, &model, &checkpoints, json!({}))?;
/// }
/// ```
pub fn render_here(step: &str, what: &str) -> bool {
    if render_mode() {
        return true;
    }
    let provenance = step_dir(step)
        .ok()
        .and_then(|dir| std::fs::read(dir.join("provenance.json")).ok())
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
    println!("{}", guard_message(step, what, provenance.as_ref()));
    false
}

/// Instructor mode: `AULA_RENDER` set to anything but "" or "0".
fn render_mode() -> bool {
    std::env::var_os(RENDER_VAR).is_some_and(|v| !v.is_empty() && v != "0")
}

/// What [`render_here`] says outside instructor mode.
fn guard_message(step: &str, what: &str, provenance: Option<&Value>) -> String {
    let recorded = match provenance {
        Some(p) => {
            let epochs = p["epochs"].as_u64().unwrap_or(0);
            let device = p["device"].get(0).and_then(Value::as_str).map_or("?".to_string(), device_es);
            let best = p["best_val_acc"].as_f64().map_or(String::new(), |v| {
                format!(", mejor val_acc {}", decimal(v, 3))
            });
            format!(
                "La ejecución grabada: {epochs} épocas en {} ({device}){best}. La celda siguiente carga \
                 sus resultados (historia y pesos entrenados).",
                duration_es(p["wall_s"].as_f64().unwrap_or(0.0))
            )
        }
        None => format!("Aún no hay ejecución grabada en assets/rendered/{step}/."),
    };
    format!(
        "Celda «no ejecutar en clase»: entrenaría {what}, horas en una CPU, así que aquí no se ejecuta.\n\
         {recorded}\n\
         El profesor la vuelve a grabar con `{RENDER_COMMAND}`. Para entrenar aquí de todos modos, \
         ejecuta `std::env::set_var(\"{RENDER_VAR}\", \"1\");` y luego esta celda otra vez."
    )
}

/// "3 h 25 min", "12 min".
fn duration_es(seconds: f64) -> String {
    let minutes = (seconds / 60.0).round() as u64;
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

/// What a rendered step left: its history and the provenance record.
pub struct Rendered {
    pub history: History,
    pub provenance: Value,
}

impl Rendered {
    /// The recorded run in a student's words: what a cell shows instead of the raw
    /// `provenance.json` (whose keys stay English: it is a data file).
    pub fn table(&self) -> Table {
        let p = &self.provenance;
        let text = |key: &str| p[key].as_str().map(str::to_string);
        let mut table = Table::new(&["ejecución grabada", ""]);
        let mut row = |name: &str, value: Option<String>| {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                table.row(vec![name.to_string(), value]);
            }
        };
        // Not the recipe: the cell above shows it as code, and the record keeps it in English.
        row("paso", text("step"));
        let epoch_s: Vec<f64> = p["epoch_s"].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default();
        row("épocas", Some(self.history.epochs().to_string()));
        row("tiempo de entrenamiento", p["wall_s"].as_f64().map(|s| format!("{} (suma de las épocas)", duration_es(s))));
        row("tiempo por época", median(&epoch_s).map(|m| {
            let fastest = epoch_s.iter().copied().fold(f64::INFINITY, f64::min);
            format!("mediana {m:.0} s (la más rápida {fastest:.0} s)")
        }));
        row("de principio a fin", match (text("started"), text("ended")) {
            (Some(a), Some(b)) => Some(format!("{a} → {b}")),
            _ => None,
        });
        let sessions = p["sessions"].as_array().map_or(0, Vec::len);
        let resumed = sessions.saturating_sub(1);
        row("reanudada", (resumed > 0).then(|| format!("{resumed} {} (se ve en el registro)", if resumed == 1 { "vez" } else { "veces" })));
        let devices: Vec<String> = p["device"].as_array().map(|a| a.iter().filter_map(Value::as_str).map(device_es).collect()).unwrap_or_default();
        row("dispositivo", Some(devices.join(" · ")));
        row("CPU", text("cpu"));
        row("mejor val_acc", self.history.best_val_acc().map(|(acc, epoch)| format!("{} (época {epoch})", decimal(acc, 3))));
        let dirty = if p["uncommitted_changes"] == Value::Bool(true) { " (con cambios sin confirmar)" } else { "" };
        row("commit", text("commit").map(|c| format!("{c}{dirty}")));
        row("grabada el", text("date"));
        row("orden", p["sessions"][0]["command"].as_str().map(|c| format!("`{c}`")));
        table
    }

    pub fn evcxr_display(&self) {
        self.table().evcxr_display();
    }
}

/// A recorded `device_info()` line in today's wording: records made before
/// it spoke Spanish say "2 threads" and "6.9× fp32 measured".
fn device_es(line: &str) -> String {
    line.replace(" threads", " hilos").replace("× fp32 measured", "× fp32, medido").replace("bf16 measured ", "bf16 medido a ")
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// Saves a step's results: `history.json`, `weights.safetensors` (trainable
/// weights only, f16) and `provenance.json`: date, commit (and whether the
/// checkout had uncommitted changes), device, CPU model, libtorch, threads,
/// seed, epochs, the wall clock of the first epoch's start and the last one's
/// end, the summed epoch times (each epoch once however many times the
/// training resumed) and every run of it with its command, from the
/// training's checkpoints in `checkpoints`, plus `extra`.
pub fn save(step: &str, history: &History, model: &Sequential, checkpoints: &Path, extra: Value) -> Result<PathBuf> {
    save_impl(step, history, Some(model), checkpoints, extra)
}

/// As [`save`], without the weights: for a run shown only by its curves (the
/// whole of VGG16 trained, 30 MB of weights no later cell needs).
pub fn save_history(step: &str, history: &History, checkpoints: &Path, extra: Value) -> Result<PathBuf> {
    save_impl(step, history, None, checkpoints, extra)
}

fn save_impl(step: &str, history: &History, model: Option<&Sequential>, checkpoints: &Path, extra: Value) -> Result<PathBuf> {
    // The recorded runs are the instructor's: a student's cell never replaces them.
    if !render_mode() {
        bail!(
            "assets/rendered/{step}/ is written only in instructor mode (`{RENDER_COMMAND}`, or {RENDER_VAR}=1): \
             the recorded run is kept as it was"
        );
    }
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
    if let Some(model) = model {
        model.save_trainable_weights(dir.join("weights.safetensors"), true)?;
    }
    let mut provenance = json!({
        "step": step,
        "date": time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)?
            .format(&time::format_description::well_known::Rfc3339)?,
        "commit": git_commit(&dir),
        "uncommitted_changes": git_dirty(&dir),
        "started": run.epoch_started.first(),
        "ended": run.epoch_ended.last(),
        "sessions": run.sessions,
        "cpu": crate::device::cpu_model(),
        "libtorch": crate::device::libtorch_version(),
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
        "trainable_weights": run.trainable.len(),
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
    let rendered = restore_history(step)?;
    model.load_weights_by_name(rendered_file(step, "weights.safetensors")?)?;
    Ok(rendered)
}

/// A step's history and provenance, without weights (see [`save_history`]).
pub fn restore_history(step: &str) -> Result<Rendered> {
    let history = History::load(rendered_file(step, "history.json")?)?;
    let path = rendered_file(step, "provenance.json")?;
    let provenance = serde_json::from_slice(&std::fs::read(&path)?)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    Ok(Rendered { history, provenance })
}

/// Whether tracked files differ from the commit (null outside git), the recorded
/// results themselves left out: `save` has just written this step's files, and a
/// record replacing an older one would otherwise always say "uncommitted changes".
fn git_dirty(dir: &Path) -> Value {
    std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no", "--", ":/", ":(top,exclude)assets/rendered"])
        .current_dir(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| Value::Bool(!o.stdout.is_empty()))
        .unwrap_or(Value::Null)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_says_what_the_recorded_run_took_and_what_comes_next() {
        let provenance = json!({"epochs": 30, "wall_s": 12312.0, "device": ["CPU, 2 threads"], "best_val_acc": 0.906});
        let text = guard_message("data_augmentation", "el clasificador con aumento de datos", Some(&provenance));
        assert!(text.contains("entrenaría el clasificador con aumento de datos"), "{text}");
        assert!(text.contains("30 épocas en 3 h 25 min (CPU, 2 hilos), mejor val_acc 0,906"), "{text}");
        assert!(text.contains("La celda siguiente carga") && text.contains("make render"), "{text}");
        assert!(text.contains("AULA_RENDER"), "{text}");
        let none = guard_message("fine_tuning", "x", None);
        assert!(none.contains("Aún no hay ejecución grabada en assets/rendered/fine_tuning/"), "{none}");
        assert_eq!((duration_es(59.0), duration_es(3600.0), duration_es(5400.0)), ("1 min".into(), "1 h".into(), "1 h 30 min".into()));
    }

    #[test]
    fn uncommitted_changes_leave_the_records_out() {
        let repo = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let ok = std::process::Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"])
                .args(args)
                .current_dir(repo.path())
                .output()
                .unwrap();
            assert!(ok.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&ok.stderr));
        };
        let step = repo.path().join("assets/rendered/fine_tuning");
        std::fs::create_dir_all(&step).unwrap();
        std::fs::write(step.join("history.json"), "{}").unwrap();
        std::fs::write(repo.path().join("lib.rs"), "// code").unwrap();
        git(&["init", "-q"]);
        git(&["add", "."]);
        git(&["commit", "-qm", "x"]);
        std::fs::write(step.join("history.json"), "{\"acc\": []}").unwrap();
        assert_eq!(git_dirty(&step), Value::Bool(false), "a rewritten record is not a code change");
        std::fs::write(repo.path().join("lib.rs"), "// changed").unwrap();
        assert_eq!(git_dirty(&step), Value::Bool(true));
    }

    #[test]
    fn the_record_reads_as_a_spanish_table() {
        let history = History { val_acc: vec![0.8, 0.9, 0.85], ..Default::default() };
        let provenance = json!({
            "step": "fine_tuning", "epoch_s": [300.0, 100.0, 120.0], "wall_s": 520.0,
            "started": "2026-12-01T10:00:00Z", "ended": "2026-12-01T10:09:00Z",
            "sessions": [{"command": "make render NOTEBOOKS=x"}, {"command": "make render"}],
            "device": ["CPU, 2 hilos"], "commit": "abc123", "uncommitted_changes": true,
        });
        let text = Rendered { history, provenance }.table().to_string();
        for expected in [
            "9 min (suma de las épocas)",
            "mediana 120 s (la más rápida 100 s)",
            "2026-12-01T10:00:00Z → 2026-12-01T10:09:00Z",
            "1 vez (se ve en el registro)",
            "0,900 (época 2)",
            "abc123 (con cambios sin confirmar)",
            "`make render NOTEBOOKS=x`",
        ] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
        assert!(!text.contains("grabada el"), "absent fields are left out:\n{text}");
    }
}
