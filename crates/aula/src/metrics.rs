//! `out/metrics.json`: what a lesson run measured, one section per slide step,
//! merged into the file so several programs or notebooks can each add theirs.

use anyhow::{Context, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// Sets `section` of the JSON object in `path` to `value`, keeping the other
/// sections; the file is replaced atomically.
pub fn record(path: impl AsRef<Path>, section: &str, value: Value) -> Result<()> {
    let path = path.as_ref();
    let mut all: Map<String, Value> = match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a JSON object; move it away to start afresh", path.display()))?,
        Err(_) => Map::new(),
    };
    all.insert(section.to_string(), value);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let json = serde_json::to_vec_pretty(&Value::Object(all))?;
    crate::paths::write_atomic(path, &json)
}

/// The lesson's metrics file: `$AULA_OUT/metrics.json` (the lesson runner sets
/// `AULA_OUT` for the kernel), else `out/metrics.json` beside the notebook.
pub fn lesson_metrics_path() -> std::path::PathBuf {
    let out = std::env::var_os("AULA_OUT").map(std::path::PathBuf::from).unwrap_or_else(|| "out".into());
    out.join("metrics.json")
}
