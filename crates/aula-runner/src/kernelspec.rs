//! Finding kernelspecs (`<data dir>/kernels/<name>/kernel.json`) the way Jupyter does.
//!
//! Data dirs, in Jupyter's order: each entry of `$JUPYTER_PATH`; the user's data dir
//! (`$JUPYTER_DATA_DIR`, else `$XDG_DATA_HOME/jupyter`, else `~/.local/share/jupyter`);
//! `{prefix}/share/jupyter` of the Python environment named by `$AULA_JUPYTER_PREFIX`
//! (Jupyter's own `sys.prefix` dir, e.g. aula's venv-jupyter); then
//! `/usr/local/share/jupyter` and `/usr/share/jupyter`. The first match wins.

use jupyter_protocol::JupyterKernelspec;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// Environment variable naming the Python prefix (a venv) whose `share/jupyter` is searched.
pub const PREFIX_ENV: &str = "AULA_JUPYTER_PREFIX";

/// A kernelspec found on disk.
#[derive(Clone, Debug)]
pub struct KernelSpec {
    /// The kernel's name: its directory's name, as Jupyter lists it.
    pub name: String,
    /// The kernelspec directory (holds `kernel.json`; `{resource_dir}` in argv).
    pub dir: PathBuf,
    /// The parsed `kernel.json`.
    pub spec: JupyterKernelspec,
    /// The Python prefix this spec was found under, if it came from `$AULA_JUPYTER_PREFIX`.
    pub prefix: Option<PathBuf>,
}

impl KernelSpec {
    /// How to interrupt it: `message` (interrupt_request on the control channel) or
    /// `signal` (SIGINT, Jupyter's default).
    pub fn interrupt_by_message(&self) -> bool {
        self.spec.interrupt_mode.as_deref() == Some("message")
    }

    /// `argv` with `{connection_file}`, `{resource_dir}` and `{prefix}` substituted. A spec
    /// from a Python prefix that starts with a bare `python`/`python3` gets that prefix's
    /// interpreter, as `jupyter_client` does for the specs of its own environment.
    pub fn command_line(&self, connection_file: &Path) -> Vec<String> {
        let mut argv: Vec<String> = self
            .spec
            .argv
            .iter()
            .map(|arg| {
                let mut a = arg.replace("{connection_file}", &connection_file.to_string_lossy());
                a = a.replace("{resource_dir}", &self.dir.to_string_lossy());
                if let Some(prefix) = &self.prefix {
                    a = a.replace("{prefix}", &prefix.to_string_lossy());
                }
                a
            })
            .collect();
        if let (Some(prefix), Some(first)) = (&self.prefix, argv.first_mut()) {
            if first == "python" || first == "python3" {
                let candidate = prefix.join("bin").join(first.as_str());
                if candidate.exists() {
                    *first = candidate.to_string_lossy().into_owned();
                }
            }
        }
        argv
    }

    /// The spec's `env`, with `$VAR` / `${VAR}` references to the current environment
    /// filled in (Python's `string.Template.safe_substitute`, as `jupyter_client` does).
    pub fn environment(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        if let Some(spec_env) = &self.spec.env {
            for (k, v) in spec_env {
                env.insert(
                    k.clone(),
                    substitute_env(v, |name| std::env::var(name).ok()),
                );
            }
        }
        env
    }
}

/// A kernel seen while searching, for listings and error messages.
#[derive(Clone, Debug)]
pub struct FoundKernel {
    pub name: String,
    pub display_name: Option<String>,
    pub dir: PathBuf,
}

/// No kernelspec with that name, or an unreadable one.
#[derive(Debug, thiserror::Error)]
pub enum KernelspecError {
    #[error("{}", not_found(name, found, searched))]
    NotFound {
        name: String,
        found: Vec<FoundKernel>,
        searched: Vec<PathBuf>,
    },
    #[error("invalid kernelspec {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// "no Jupyter kernel named …", the kernels found and the folders searched.
fn not_found(name: &str, found: &[FoundKernel], searched: &[PathBuf]) -> String {
    let mut f = format!("no Jupyter kernel named {name:?}.");
    if found.is_empty() {
        f.push_str(" No kernelspecs were found at all.");
    } else {
        f.push_str(" Kernels found:");
        for k in found {
            f += &match &k.display_name {
                Some(d) => format!("\n  {:<20} {:?}  ({})", k.name, d, k.dir.display()),
                None => format!("\n  {:<20} ({})", k.name, k.dir.display()),
            };
        }
    }
    f.push_str("\nSearched:");
    for s in searched {
        f += &format!("\n  {}", s.join("kernels").display());
    }
    f
}

/// The Jupyter data dirs, in search order, without duplicates.
pub fn data_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(paths) = std::env::var_os("JUPYTER_PATH") {
        dirs.extend(std::env::split_paths(&paths).filter(|p| !p.as_os_str().is_empty()));
    }
    if let Some(d) = std::env::var_os("JUPYTER_DATA_DIR").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(d));
    } else if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(d).join("jupyter"));
    } else if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(home).join(".local/share/jupyter"));
    }
    if let Some(prefix) = prefix() {
        dirs.push(prefix.join("share/jupyter"));
    }
    dirs.push(PathBuf::from("/usr/local/share/jupyter"));
    dirs.push(PathBuf::from("/usr/share/jupyter"));
    let mut seen = HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// `$AULA_JUPYTER_PREFIX`, if set and not empty.
pub fn prefix() -> Option<PathBuf> {
    std::env::var_os(PREFIX_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// Every kernelspec in `dirs` (the first of each name wins, as in Jupyter).
pub fn list(dirs: &[PathBuf]) -> Vec<FoundKernel> {
    let mut found: Vec<FoundKernel> = Vec::new();
    let mut seen = HashSet::new();
    for data_dir in dirs {
        let Ok(entries) = std::fs::read_dir(data_dir.join("kernels")) else {
            continue;
        };
        let mut names: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter(|e| e.path().join("kernel.json").is_file())
            .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
            .collect();
        names.sort();
        for (name, dir) in names {
            if !seen.insert(name.to_lowercase()) {
                continue;
            }
            let display_name = std::fs::read(dir.join("kernel.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v.get("display_name")?.as_str().map(str::to_string));
            found.push(FoundKernel {
                name,
                display_name,
                dir,
            });
        }
    }
    found
}

/// Finds the kernelspec called `name` (case-insensitively, like Jupyter) in `dirs`.
pub fn find_in(name: &str, dirs: &[PathBuf]) -> Result<KernelSpec, KernelspecError> {
    let prefix_dir = prefix().map(|p| (p.join("share/jupyter"), p));
    for data_dir in dirs {
        let Ok(entries) = std::fs::read_dir(data_dir.join("kernels")) else {
            continue;
        };
        let mut matches: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .map(|e| e.path())
            .filter(|p| p.join("kernel.json").is_file())
            .collect();
        matches.sort();
        // An exact-case match first.
        matches.sort_by_key(|p| p.file_name().and_then(|n| n.to_str()) != Some(name));
        if let Some(dir) = matches.into_iter().next() {
            let path = dir.join("kernel.json");
            let bytes = std::fs::read(&path).map_err(|e| KernelspecError::Invalid {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let spec: JupyterKernelspec =
                serde_json::from_slice(&bytes).map_err(|e| KernelspecError::Invalid {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            if spec.argv.is_empty() {
                return Err(KernelspecError::Invalid {
                    path,
                    message: "`argv` is empty".into(),
                });
            }
            let from_prefix = prefix_dir
                .as_ref()
                .filter(|(share, _)| share == data_dir)
                .map(|(_, p)| p.clone());
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(name)
                .to_string();
            return Ok(KernelSpec {
                name,
                dir,
                spec,
                prefix: from_prefix,
            });
        }
    }
    Err(KernelspecError::NotFound {
        name: name.to_string(),
        found: list(dirs),
        searched: dirs.to_vec(),
    })
}

/// Finds the kernelspec called `name` in the standard data dirs.
pub fn find(name: &str) -> Result<KernelSpec, KernelspecError> {
    find_in(name, &data_dirs())
}

/// `string.Template(value).safe_substitute(env)`: `$$` → `$`, `$NAME` and `${NAME}` are
/// replaced when `lookup` knows NAME, and left as they are otherwise.
pub fn substitute_env(value: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let is_start = |c: char| c == '_' || c.is_ascii_alphabetic();
    let is_ident = |c: char| c == '_' || c.is_ascii_alphanumeric();
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end)
                    if end > 0
                        && inner[..end].starts_with(is_start)
                        && inner[..end].chars().all(is_ident) =>
                {
                    let name = &inner[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => out.push_str(&rest[pos..pos + 3 + end]),
                    }
                    rest = &inner[end + 1..];
                }
                _ => {
                    out.push('$');
                    rest = after;
                }
            }
        } else if after.starts_with(is_start) {
            let end = after.find(|c: char| !is_ident(c)).unwrap_or(after.len());
            let name = &after[..end];
            match lookup(name) {
                Some(v) => out.push_str(&v),
                None => {
                    out.push('$');
                    out.push_str(name);
                }
            }
            rest = &after[end..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_substitution_is_safe() {
        let lookup = |n: &str| match n {
            "HOME" => Some("/home/a".to_string()),
            "LD_LIBRARY_PATH" => Some("/x".to_string()),
            _ => None,
        };
        assert_eq!(
            substitute_env("${HOME}/lib:${LD_LIBRARY_PATH}", lookup),
            "/home/a/lib:/x"
        );
        assert_eq!(substitute_env("$HOME/x", lookup), "/home/a/x");
        assert_eq!(
            substitute_env("$NOPE and ${NOPE}", lookup),
            "$NOPE and ${NOPE}"
        );
        assert_eq!(
            substitute_env("cost $$5, $ alone, ${", lookup),
            "cost $5, $ alone, ${"
        );
    }

    #[test]
    fn finds_by_name_and_lists_others() {
        let tmp = tempfile::tempdir().unwrap();
        let k = tmp.path().join("kernels/rust-aula");
        std::fs::create_dir_all(&k).unwrap();
        std::fs::write(
            k.join("kernel.json"),
            r#"{"argv": ["evcxr_jupyter", "--control_file", "{connection_file}"],
                "display_name": "Rust · aula", "language": "rust", "interrupt_mode": "message",
                "env": {"X": "${HOME}"}}"#,
        )
        .unwrap();
        let dirs = vec![tmp.path().to_path_buf()];
        let spec = find_in("Rust-Aula", &dirs).unwrap();
        assert_eq!(spec.name, "rust-aula");
        assert!(spec.interrupt_by_message());
        assert_eq!(
            spec.command_line(Path::new("/tmp/c.json")),
            ["evcxr_jupyter", "--control_file", "/tmp/c.json"]
        );
        let err = find_in("nope", &dirs).unwrap_err().to_string();
        assert!(
            err.contains("\"nope\"") && err.contains("rust-aula") && err.contains("Rust · aula"),
            "{err}"
        );
    }
}
