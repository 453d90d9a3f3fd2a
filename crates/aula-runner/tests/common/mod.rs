//! Helpers for the runner's tests: a real kernel (ipykernel from aula's Jupyter venv,
//! registered under a private JUPYTER_PATH), notebooks built in a temporary folder, and
//! the `aula-runner` binary run against them.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The kernel name the fixtures register.
pub const KERNEL: &str = "aula-test-py";

/// aula's Jupyter venv (`scripts/setup-jupyter-venv.sh`); the tests need its ipykernel.
pub fn venv() -> PathBuf {
    let cache = std::env::var_os("AULA_CACHE")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/aula")
        });
    let venv = cache.join("venv-jupyter");
    let python = venv.join("bin/python");
    assert!(
        venv.join(".complete").is_file() && python.is_file(),
        "\n\nThe Jupyter venv is missing ({}): aula-runner's tests run notebooks on a real \
         kernel (ipykernel) from it.\nCreate it with `scripts/setup-jupyter-venv.sh` \
         (or `make python-tools`), then rerun the tests.\n\n",
        venv.display()
    );
    venv
}

pub fn venv_python() -> PathBuf {
    venv().join("bin/python")
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// A temporary folder with a JUPYTER_PATH holding the `aula-test-py` kernelspec
    /// (`python -m ipykernel_launcher -f {connection_file}` with the venv's python).
    pub fn new() -> Fixture {
        let python = venv_python();
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        f.kernelspec(
            KERNEL,
            json!({
                "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python (aula-runner tests)",
                "language": "python",
            }),
        );
        f
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn jupyter_path(&self) -> PathBuf {
        self.path().join("jupyter")
    }

    pub fn out(&self) -> PathBuf {
        self.path().join("out")
    }

    /// Registers a kernelspec under this fixture's JUPYTER_PATH.
    pub fn kernelspec(&self, name: &str, spec: Value) {
        let dir = self.jupyter_path().join("kernels").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("kernel.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
    }

    /// Registers an ipykernel kernelspec that first runs `prelude` (Python, with `os`,
    /// `pathlib`, `sys` and `time` imported): a kernel that misbehaves at start-up.
    pub fn python_kernelspec_after(&self, name: &str, prelude: &str) {
        let script = format!(
            "import os, pathlib, runpy, sys, time\n{prelude}\n\
             sys.argv = ['ipykernel_launcher', '-f', sys.argv[1]]\n\
             runpy.run_module('ipykernel_launcher', run_name='__main__')\n"
        );
        self.kernelspec(
            name,
            json!({"argv": [venv_python(), "-c", script, "{connection_file}"],
                   "display_name": name, "language": "python"}),
        );
    }

    /// Writes a notebook (relative path) and returns its path.
    pub fn notebook(&self, rel: &str, nb: &Value) -> PathBuf {
        self.write(rel, serde_json::to_string_pretty(nb).unwrap().as_bytes())
    }

    pub fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Runs `aula-runner <args>` in the fixture's folder, with only its own kernels
    /// visible and `--out <fixture>/out` unless `args` names one.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let output = self.command(args, env).output().expect("aula-runner runs");
        Run::from(output)
    }

    /// The `aula-runner <args>` command of [`Fixture::run_env`], not started.
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aula-runner"));
        cmd.args(args);
        if !args.contains(&"--out") && !matches!(args.first(), Some(&"kernels")) {
            cmd.arg("--out").arg(self.out());
        }
        cmd.current_dir(self.path())
            .env("JUPYTER_PATH", self.jupyter_path())
            // Keep the user's own kernels and venvs out of the way.
            .env("JUPYTER_DATA_DIR", self.path().join("no-user-data"))
            .env_remove("AULA_JUPYTER_PREFIX")
            .env_remove("AULA_OUT");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A notebook for the test kernel, with the given cells.
pub fn notebook(cells: Vec<Value>) -> Value {
    json!({
        "cells": cells,
        "metadata": {
            "kernelspec": {"name": KERNEL, "display_name": "Python (aula-runner tests)", "language": "python"},
            "aula_custom": {"keep": ["me", 1]},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    })
}

static NEXT_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn id() -> String {
    format!(
        "cell-{}",
        NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

pub fn code(source: &str) -> Value {
    json!({"cell_type": "code", "id": id(), "execution_count": null, "metadata": {}, "outputs": [], "source": source})
}

/// A code cell with tags and stored outputs.
pub fn tagged(source: &str, tag: &str, outputs: Value) -> Value {
    json!({"cell_type": "code", "id": id(), "execution_count": 7, "metadata": {"tags": [tag]},
           "outputs": outputs, "source": source})
}

pub fn markdown(source: &str) -> Value {
    json!({"cell_type": "markdown", "id": id(), "metadata": {}, "source": source})
}

pub fn stored_stream(text: &str) -> Value {
    json!([{"output_type": "stream", "name": "stdout", "text": [text]}])
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A multiline field (string or list of strings) as one string.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => String::new(),
    }
}

/// All the files under `dir` (empty when it does not exist).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
