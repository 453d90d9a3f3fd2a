//! Where aula keeps what it downloads and computes, outside the checkout, and how it
//! writes files: [`aula_paths`] (shared with aula-runner), plus what only the library needs.

use std::path::Path;

pub use aula_paths::{cache_dir, keras_models_dir};

/// `path` as a recorded log shows it: relative to the repository when inside
/// it, `~/…` under the home folder, else as it is. A notebook's stored outputs
/// must not carry one machine's absolute paths (`/root/…`, `/work/render/…`).
pub fn display_path(path: &Path) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2);
    if let Some(rel) = repo.and_then(|r| path.strip_prefix(r).ok()) {
        return rel.display().to_string();
    }
    let home = aula_paths::home_dir();
    match path.strip_prefix(&home) {
        Ok(rel) if home.is_absolute() => format!("~/{}", rel.display()),
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

/// Writes `bytes` to `path` atomically: a reader never sees half a file, and a
/// failed write leaves the previous file as it was ([`aula_paths::write_atomic_with`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    aula_paths::write_atomic(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `path` atomically through a writer that takes a path (libtorch's safetensors,
/// HDF5): `write` fills a temporary file beside `path`, which then replaces `path`.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    use anyhow::Context;
    aula_paths::write_atomic_with(path, write).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_paths_are_relative_to_the_repository_or_home() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).unwrap();
        assert_eq!(display_path(&repo.join("assets/rendered/x")), "assets/rendered/x");
        let home = aula_paths::home_dir();
        if home.is_absolute() && !repo.starts_with(&home) {
            assert_eq!(display_path(&home.join(".cache/aula/checkpoints")), "~/.cache/aula/checkpoints");
        }
        assert_eq!(display_path(Path::new("/elsewhere/x")), "/elsewhere/x");
    }
}
