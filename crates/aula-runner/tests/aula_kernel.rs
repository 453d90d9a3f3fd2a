//! aula-runner against the real "Rust · aula" kernel (evcxr, installed by `make kernel`):
//! what a student's mistakes look like — a compile error, a panic, a cell past the
//! timeout, the kernel dying — each reported with the cell, the notebook left untouched.

mod common;

use common::*;
use serde_json::Value;
use std::path::PathBuf;

/// The installed "aula" kernelspec (`make kernel`), registered in the fixture.
fn with_aula_kernel() -> Fixture {
    let data = std::env::var_os("JUPYTER_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
            std::env::var_os("XDG_DATA_HOME")
                .map(PathBuf::from)
                .unwrap_or(home.join(".local/share"))
                .join("jupyter")
        });
    let path = data.join("kernels/aula/kernel.json");
    let spec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|_| {
        panic!("\n\nThe aula kernel is not installed ({} is missing): run `make kernel`, then rerun the tests.\n\n", path.display())
    }))
    .unwrap();
    let f = Fixture::new();
    f.kernelspec("aula", spec);
    f
}

fn rust_notebook(cells: Vec<Value>) -> Value {
    let mut nb = notebook(cells);
    nb["metadata"]["kernelspec"] =
        serde_json::json!({"name": "aula", "display_name": "Rust · aula", "language": "rust"});
    nb
}

/// A cell's outputs as JSON text (enough to look for a value in them).
fn outputs_text(nb: &Value, cell: usize) -> String {
    nb["cells"][cell]["outputs"].to_string()
}

#[test]
fn compile_error_panic_and_timeout_in_the_aula_kernel() {
    let f = with_aula_kernel();
    let src = f.notebook(
        "errores.ipynb",
        &rust_notebook(vec![
            code("let a = 40 + 2;\na"),
            code("let b: i32 = undefined_name + 1;"),
            code("panic!(\"boom en la celda\")"),
            code("a + 1"),
            code("std::thread::sleep(std::time::Duration::from_secs(300));"),
            code("a * 2"),
        ]),
    );
    let before = std::fs::read(&src).unwrap();
    let r = f.run(&[
        "clase",
        "errores.ipynb",
        "--no-html",
        "--continue-on-error",
        "--timeout",
        "30",
        "--startup-timeout",
        "600",
    ]);
    assert_eq!(r.code, Some(1), "{r}");
    // The rustc message in full, with the cell's source.
    assert!(r.stderr.contains("cell 2 failed"), "{r}");
    assert!(r.stderr.contains("let b: i32 = undefined_name + 1;"), "{r}");
    assert!(
        r.stderr
            .contains("cannot find value `undefined_name` in this scope"),
        "{r}"
    );
    assert!(r.stderr.contains("E0425"), "{r}");
    // The panic, with its message.
    assert!(r.stderr.contains("cell 3 failed"), "{r}");
    assert!(r.stderr.contains("boom en la celda"), "{r}");
    // The cell past the timeout is interrupted and named.
    assert!(r.stderr.contains("cell 5"), "{r}");
    assert!(
        r.stderr.to_lowercase().contains("timeout") || r.stderr.contains("timed out"),
        "{r}"
    );
    assert_eq!(
        std::fs::read(&src).unwrap(),
        before,
        "the source notebook changed"
    );

    let out = read_json(&f.out().join("errores.ipynb"));
    assert!(
        outputs_text(&out, 0).contains("42"),
        "{}",
        outputs_text(&out, 0)
    );
    // The kernel keeps its variables after a compile error and after a panic.
    assert!(
        outputs_text(&out, 3).contains("43"),
        "{}",
        outputs_text(&out, 3)
    );
}

#[test]
fn the_aula_kernel_dying_mid_run_is_reported_with_the_cell() {
    let f = with_aula_kernel();
    let src = f.notebook(
        "muere.ipynb",
        &rust_notebook(vec![
            code("1 + 1"),
            // The cell runs in a child of evcxr_jupyter: SIGKILL the kernel itself.
            code("std::process::Command::new(\"kill\").args([\"-9\", &std::os::unix::process::parent_id().to_string()]).status()?;\nstd::thread::sleep(std::time::Duration::from_secs(60));"),
            code("2 + 2"),
        ]),
    );
    let before = std::fs::read(&src).unwrap();
    let r = f.run(&[
        "clase",
        "muere.ipynb",
        "--no-html",
        "--timeout",
        "120",
        "--startup-timeout",
        "600",
    ]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("cell 2"), "{r}");
    assert!(
        r.stderr.to_lowercase().contains("died") || r.stderr.to_lowercase().contains("dead"),
        "{r}"
    );
    assert_eq!(
        std::fs::read(&src).unwrap(),
        before,
        "the source notebook changed"
    );
}
