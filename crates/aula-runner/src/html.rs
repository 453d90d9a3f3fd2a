//! HTML renderings through `jupyter nbconvert --to html` (from aula's Jupyter venv when
//! there is one). Optional: without nbconvert the runner warns and goes on.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one nbconvert may take.
const NBCONVERT_TIMEOUT: Duration = Duration::from_secs(300);

/// `jupyter-nbconvert`, looked for in `$AULA_JUPYTER_PREFIX/bin`, then in aula's venv
/// (`${AULA_CACHE:-~/.cache/aula}/venv-jupyter/bin`, made by
/// `scripts/setup-jupyter-venv.sh`), then on `PATH`.
pub fn find_nbconvert() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(prefix) = crate::kernelspec::prefix() {
        candidates.push(prefix.join("bin/jupyter-nbconvert"));
    }
    candidates.push(default_venv().join("bin/jupyter-nbconvert"));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("jupyter-nbconvert")));
    }
    candidates.into_iter().find(|c| is_executable(c))
}

/// `${AULA_CACHE:-$HOME/.cache/aula}/venv-jupyter`.
pub fn default_venv() -> PathBuf {
    aula_paths::cache_dir().join("venv-jupyter")
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// Why no HTML was made.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot create a temporary folder in {}: {error}", dir.display())]
    TempDir { dir: PathBuf, error: std::io::Error },
    #[error("{} took over {} s", .0.display(), NBCONVERT_TIMEOUT.as_secs())]
    Timeout(PathBuf),
    #[error("cannot run {}: {error}", nbconvert.display())]
    Spawn {
        nbconvert: PathBuf,
        error: std::io::Error,
    },
    #[error("{} failed ({status}):\n{tail}", nbconvert.display())]
    Failed {
        nbconvert: PathBuf,
        status: std::process::ExitStatus,
        tail: String,
    },
    #[error("cannot move the HTML to {}: {error}", html.display())]
    Move {
        html: PathBuf,
        error: std::io::Error,
    },
}

/// Renders `ipynb` to `html` (atomically: nbconvert writes into a temporary folder
/// beside `html`, then the file is renamed into place).
pub async fn render(nbconvert: &Path, ipynb: &Path, html: &Path) -> Result<(), RenderError> {
    let dir = html
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".nbconvert-")
        .tempdir_in(dir)
        .map_err(|error| RenderError::TempDir {
            dir: dir.to_path_buf(),
            error,
        })?;
    let stem = "rendered";
    let mut cmd = tokio::process::Command::new(nbconvert);
    cmd.arg("--to")
        .arg("html")
        .arg("--log-level=WARN")
        .arg("--output-dir")
        .arg(tmp.path())
        .arg("--output")
        .arg(stem)
        .arg(ipynb)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(NBCONVERT_TIMEOUT, cmd.output()).await {
        Err(_) => return Err(RenderError::Timeout(nbconvert.to_path_buf())),
        Ok(Err(error)) => {
            return Err(RenderError::Spawn {
                nbconvert: nbconvert.to_path_buf(),
                error,
            })
        }
        Ok(Ok(o)) => o,
    };
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = err.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(RenderError::Failed {
            nbconvert: nbconvert.to_path_buf(),
            status: output.status,
            tail: tail.join("\n"),
        });
    }
    // Moved onto the atomic writer's temporary file, which is then synced and renamed.
    let rendered = tmp.path().join(format!("{stem}.html"));
    aula_paths::write_atomic_with(html, |dest| std::fs::rename(&rendered, dest)).map_err(|error| {
        RenderError::Move {
            html: html.to_path_buf(),
            error,
        }
    })
}
