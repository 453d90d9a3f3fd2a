//! Where aula keeps what it downloads and computes, outside the checkout.

use std::path::PathBuf;

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

fn home_dir() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."))
}

/// Writes `bytes` to `path` atomically: a reader never sees half a file, and a
/// failed write leaves the previous file as it was.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
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
pub fn tmp_path(path: &std::path::Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}
