//! Where aula keeps what it downloads and computes, outside the checkout.

use std::path::{Path, PathBuf};

/// `AULA_CACHE`, else `~/.cache/aula`: converted weights, extracted features.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AULA_CACHE") {
        return PathBuf::from(dir);
    }
    home_dir().join(".cache").join("aula")
}

/// `~/.keras/models`, where Keras (and the slide "Importación de VGG16") keeps weights.
pub fn keras_models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KERAS_HOME") {
        return PathBuf::from(dir).join("models");
    }
    home_dir().join(".keras").join("models")
}

/// `path` as a recorded log shows it: relative to the repository when inside
/// it, `~/…` under the home folder, else as it is. A notebook's stored outputs
/// must not carry one machine's absolute paths (`/root/…`, `/work/render/…`).
pub fn display_path(path: &Path) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2);
    if let Some(rel) = repo.and_then(|r| path.strip_prefix(r).ok()) {
        return rel.display().to_string();
    }
    match path.strip_prefix(home_dir()) {
        Ok(rel) if home_dir().is_absolute() => format!("~/{}", rel.display()),
        _ => path.display().to_string(),
    }
}

/// Now, UTC, RFC 3339 to the second: the time stamps of checkpoints and provenance.
pub fn now_utc() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."))
}

/// Writes `bytes` to `path` atomically: a reader never sees half a file, and a
/// failed write leaves the previous file as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let tmp = tmp_path(path);
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// A sibling temporary name for atomic writes (same folder, so rename is atomic).
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_paths_are_relative_to_the_repository_or_home() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).unwrap();
        assert_eq!(display_path(&repo.join("assets/rendered/x")), "assets/rendered/x");
        let home = home_dir();
        if home.is_absolute() && !repo.starts_with(&home) {
            assert_eq!(display_path(&home.join(".cache/aula/checkpoints")), "~/.cache/aula/checkpoints");
        }
        assert_eq!(display_path(Path::new("/elsewhere/x")), "/elsewhere/x");
    }
}
