//! Where aula keeps what it downloads and computes, and the one way it writes a file.
//!
//! Shared by the library (`aula::paths` re-exports it) and by `aula-runner`, which must
//! not link libtorch just to find the cache folder or to write a notebook safely.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// `AULA_CACHE`, else `~/.cache/aula`: converted weights, extracted features,
/// checkpoints, the Jupyter venv and the kernel. An empty `AULA_CACHE` counts as unset.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("AULA_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => home_dir().join(".cache").join("aula"),
    }
}

/// `~/.keras/models`, where Keras (and the slide "Importación de VGG16") keeps weights.
pub fn keras_models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KERAS_HOME") {
        return PathBuf::from(dir).join("models");
    }
    home_dir().join(".keras").join("models")
}

/// `$HOME`, else the current folder.
pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Writes `bytes` to `path` atomically; see [`write_atomic_with`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |tmp| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(tmp)?
            .write_all(bytes)
    })
}

/// Writes `path` atomically through `write`, which gets the path of a temporary file to
/// fill (for writers that only take a path: libtorch's safetensors, HDF5, nbconvert):
///
/// - the temporary file is a fresh, uniquely named `.<name>.XXXXXX.tmp` in the same
///   folder as `path`, so that the final rename is atomic and two writers (threads or
///   processes) never share it;
/// - it is flushed to disk (fsync) before the rename, so that a crash leaves the old file
///   or the new one, never a renamed empty one;
/// - it takes the permissions of the file it replaces, or 0644 for a new file (what a
///   plain create gives under the usual umask; temporary files are created 0600);
/// - on any error it is removed, and `path` is left as it was.
///
/// A reader of `path` therefore sees either the previous file or the complete new one.
pub fn write_atomic_with<E: From<io::Error>>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    // Dropping `tmp` on an early return deletes the temporary file.
    write(tmp.path())?;
    // `write` may have written through its own handle: flush the file itself.
    std::fs::File::open(tmp.path())?.sync_all()?;
    let permissions = match std::fs::metadata(path) {
        Ok(meta) => Some(meta.permissions()),
        Err(_) => new_file_permissions(),
    };
    if let Some(p) = permissions {
        std::fs::set_permissions(tmp.path(), p)?;
    }
    tmp.persist(path).map_err(|e| E::from(e.error))?;
    Ok(())
}

#[cfg(unix)]
fn new_file_permissions() -> Option<std::fs::Permissions> {
    use std::os::unix::fs::PermissionsExt;
    Some(std::fs::Permissions::from_mode(0o644))
}

#[cfg(not(unix))]
fn new_file_permissions() -> Option<std::fs::Permissions> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_the_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        write_atomic(&p, b"old").unwrap();
        let r: io::Result<()> = write_atomic_with(&p, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err(io::Error::other("disk full"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn path_writers_may_replace_the_temporary_file() {
        // nbconvert's output is renamed onto the temporary path, hdf5 truncates it.
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("made-elsewhere");
        std::fs::write(&made, b"<html>").unwrap();
        let p = dir.path().join("x.html");
        write_atomic_with(&p, |tmp| std::fs::rename(&made, tmp)).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"<html>");
    }

    #[cfg(unix)]
    #[test]
    fn keeps_the_permissions_of_the_file_it_replaces() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.ipynb");
        write_atomic(&p, b"1").unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&p, b"2").unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn an_empty_aula_cache_counts_as_unset() {
        // Only this test touches AULA_CACHE in this crate's test binary.
        std::env::set_var("AULA_CACHE", "");
        assert!(cache_dir().ends_with(".cache/aula"));
        std::env::set_var("AULA_CACHE", "/somewhere");
        assert_eq!(cache_dir(), PathBuf::from("/somewhere"));
        std::env::remove_var("AULA_CACHE");
    }
}
