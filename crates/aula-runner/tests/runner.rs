//! aula-runner against a real kernel (ipykernel from aula's Jupyter venv) over the real
//! Jupyter protocol: modes, failures, and bad input.

mod common;

use common::*;
use serde_json::json;
use std::time::Instant;

#[test]
fn clase_runs_cells_keeps_tagged_outputs_and_never_touches_the_source() {
    let f = Fixture::new();
    let src = f.notebook(
        "lesson.ipynb",
        &notebook(vec![
            markdown("# Título"),
            code("print('hola')\nprint('mundo')"),
            code("x = 6 * 7\nx"),
            tagged(
                "print('slow training')",
                "no-ejecutar",
                stored_stream("stored epochs\n"),
            ),
            tagged(
                "raise SystemExit('must not run')",
                "skip-execution",
                stored_stream("stored 2\n"),
            ),
            code("from IPython.display import display, HTML\ndisplay(HTML('<b>ok</b>'))"),
            code(""),
        ]),
    );
    let before = std::fs::read(&src).unwrap();
    let r = f.run(&["clase", "lesson.ipynb", "--no-html"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.stdout
            .contains("lesson: 3 cells run, 2 skipped, 0 failed, wall "),
        "{r}"
    );
    assert_eq!(
        std::fs::read(&src).unwrap(),
        before,
        "the source must not change in clase mode"
    );

    let out = read_json(&f.out().join("lesson.ipynb"));
    let cells = out["cells"].as_array().unwrap();
    assert_eq!(text(&cells[0]["source"]), "# Título");
    assert_eq!(cells[1]["outputs"][0]["output_type"], "stream");
    assert_eq!(text(&cells[1]["outputs"][0]["text"]), "hola\nmundo\n");
    assert_eq!(cells[1]["execution_count"], 1);
    assert_eq!(cells[2]["outputs"][0]["output_type"], "execute_result");
    assert_eq!(text(&cells[2]["outputs"][0]["data"]["text/plain"]), "42");
    // Tagged cells: not run, stored outputs and count kept.
    assert_eq!(text(&cells[3]["outputs"][0]["text"]), "stored epochs\n");
    assert_eq!(cells[3]["execution_count"], 7);
    assert_eq!(text(&cells[4]["outputs"][0]["text"]), "stored 2\n");
    assert_eq!(cells[5]["outputs"][0]["output_type"], "display_data");
    assert_eq!(
        text(&cells[5]["outputs"][0]["data"]["text/html"]),
        "<b>ok</b>"
    );
    assert_eq!(cells[6]["outputs"], json!([]));
    // Unknown fields survive; the kernel's language_info is recorded, as Jupyter does.
    assert_eq!(out["metadata"]["aula_custom"], json!({"keep": ["me", 1]}));
    assert_eq!(out["metadata"]["language_info"]["name"], "python");
    assert_eq!(out["nbformat"], 4);
    // Nothing but the executed notebook in out/ (no temporary files left behind).
    assert_eq!(files_in(&f.out()), ["lesson.ipynb"]);
}

#[test]
fn the_kernel_gets_aula_out_the_run_s_out_folder_unless_set() {
    let f = Fixture::new();
    f.notebook(
        "metrics.ipynb",
        &notebook(vec![code("import os\nprint(os.environ.get('AULA_OUT'))")]),
    );
    let printed = |r: &Run| {
        assert_eq!(r.code, Some(0), "{r}");
        let out = read_json(&f.out().join("metrics.ipynb"));
        text(&out["cells"][0]["outputs"][0]["text"])
    };
    let r = f.run(&["clase", "metrics.ipynb", "--no-html"]);
    assert_eq!(printed(&r), format!("{}\n", f.out().display()));
    let r = f.run_env(
        &["clase", "metrics.ipynb", "--no-html"],
        &[("AULA_OUT", "/elsewhere")],
    );
    assert_eq!(printed(&r), "/elsewhere\n");
}

#[test]
fn check_fails_when_a_tagged_cell_has_no_stored_output() {
    let f = Fixture::new();
    let src = f.notebook(
        "nb.ipynb",
        &notebook(vec![
            code("print(1)"),
            tagged("print('long')", "no-ejecutar", json!([])),
        ]),
    );
    let before = std::fs::read(&src).unwrap();
    let r = f.run(&["check", "nb.ipynb", "--no-html"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("cell 2 is tagged `no-ejecutar`"), "{r}");
    assert!(r.stderr.contains("no stored output"), "{r}");
    assert!(
        r.stdout.contains("nb: 1 cells run, 1 skipped, 1 failed"),
        "{r}"
    );
    assert_eq!(std::fs::read(&src).unwrap(), before);

    // The same notebook with the output stored passes.
    let ok = f.notebook(
        "ok.ipynb",
        &notebook(vec![
            code("print(1)"),
            tagged("print('long')", "no-ejecutar", stored_stream("long\n")),
        ]),
    );
    let r = f.run(&["check", ok.to_str().unwrap(), "--no-html"]);
    assert_eq!(r.code, Some(0), "{r}");
}

#[test]
fn an_error_cell_fails_with_its_source_and_full_traceback() {
    let f = Fixture::new();
    let src = f.notebook(
        "err.ipynb",
        &notebook(vec![
            code("print('before')"),
            code("def f(d):\n    return 1 / d\nf(0)"),
            code("print('after')"),
        ]),
    );
    let before = std::fs::read(&src).unwrap();
    let r = f.run(&["clase", "err.ipynb", "--no-html"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("cell 2 failed"), "{r}");
    assert!(
        r.stderr.contains("def f(d):\n    return 1 / d\nf(0)"),
        "the source is shown: {r}"
    );
    assert!(
        r.stderr.contains("ZeroDivisionError: division by zero"),
        "{r}"
    );
    assert!(
        r.stderr.contains("Traceback"),
        "the whole traceback is shown: {r}"
    );
    assert!(r.stderr.contains("return 1 / d"), "{r}");
    assert!(
        !r.stderr.contains('\u{1b}'),
        "escape codes are stripped: {r}"
    );
    assert!(
        r.stdout.contains("err: 2 cells run, 0 skipped, 1 failed"),
        "{r}"
    );
    assert_eq!(std::fs::read(&src).unwrap(), before);

    let out = read_json(&f.out().join("err.ipynb"));
    assert_eq!(out["cells"][1]["outputs"][0]["output_type"], "error");
    assert_eq!(out["cells"][1]["outputs"][0]["ename"], "ZeroDivisionError");
    assert_eq!(
        out["cells"][2]["outputs"],
        json!([]),
        "cells after the failure are not run"
    );

    // --continue-on-error runs the rest, and still fails.
    let r = f.run(&["clase", "err.ipynb", "--no-html", "--continue-on-error"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stdout.contains("err: 3 cells run, 0 skipped, 1 failed"),
        "{r}"
    );
    let out = read_json(&f.out().join("err.ipynb"));
    assert_eq!(text(&out["cells"][2]["outputs"][0]["text"]), "after\n");
}

#[test]
fn a_cell_past_the_timeout_is_interrupted_and_reported() {
    let f = Fixture::new();
    let src = f.notebook(
        "slow.ipynb",
        &notebook(vec![
            code("import time; time.sleep(100)"),
            code("print('still alive')"),
        ]),
    );
    let before = std::fs::read(&src).unwrap();
    let t0 = Instant::now();
    let r = f.run(&[
        "clase",
        "slow.ipynb",
        "--no-html",
        "--timeout",
        "2",
        "--continue-on-error",
    ]);
    let took = t0.elapsed().as_secs_f64();
    assert_eq!(r.code, Some(1), "{r}");
    assert!(took < 30.0, "took {took:.1}s: {r}");
    assert!(r.stderr.contains("cell 1 timed out"), "{r}");
    assert!(r.stderr.contains("time.sleep(100)"), "{r}");
    assert!(r.stderr.contains("exceeded the 2 s timeout"), "{r}");
    assert!(
        r.stdout.contains("slow: 2 cells run, 0 skipped, 1 failed"),
        "{r}"
    );
    assert_eq!(std::fs::read(&src).unwrap(), before);
    let out = read_json(&f.out().join("slow.ipynb"));
    let errors: Vec<_> = out["cells"][0]["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["output_type"] == "error")
        .map(|o| o["ename"].as_str().unwrap().to_string())
        .collect();
    assert!(
        errors.contains(&"CellTimeoutError".to_string()),
        "{errors:?}"
    );
    // The interrupted kernel lives on: the next cell ran.
    assert_eq!(
        text(&out["cells"][1]["outputs"][0]["text"]),
        "still alive\n"
    );
}

/// Ctrl-C or `kill` on the runner: its kernel goes too, and so do the kernel's
/// runtime folder and connection file (they hold the kernel's HMAC key).
#[test]
fn a_runner_stopped_by_a_signal_leaves_no_kernel_and_no_connection_file() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let f = Fixture::new();
        f.notebook(
            "slow.ipynb",
            &notebook(vec![code(
                "import os, time\nopen('started', 'w').write(str(os.getpid()))\ntime.sleep(100)",
            )]),
        );
        let tmp = f.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let tmp_str = tmp.to_str().unwrap();
        let runner = f
            .command(
                &["clase", "slow.ipynb", "--no-html"],
                &[("TMPDIR", tmp_str)],
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = f.path().join("started");
        let t0 = Instant::now();
        while std::fs::read_to_string(&started).map_or(true, |s| s.is_empty()) {
            assert!(t0.elapsed().as_secs() < 120, "the cell never started");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let kernel_pid: i32 = std::fs::read_to_string(&started)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let runtime_dirs = || {
            std::fs::read_dir(&tmp)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("aula-kernel-"))
                .count()
        };
        assert_eq!(
            runtime_dirs(),
            1,
            "the kernel's runtime folder is in TMPDIR"
        );
        // SAFETY: kill(2) on the child this test started.
        unsafe { libc::kill(runner.id() as i32, signal) };
        let out = runner.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(128 + signal),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            runtime_dirs(),
            0,
            "connection file left behind after signal {signal}"
        );
        let t0 = Instant::now();
        while std::path::Path::new(&format!("/proc/{kernel_pid}")).exists() {
            let state =
                std::fs::read_to_string(format!("/proc/{kernel_pid}/stat")).unwrap_or_default();
            if state.contains(") Z") {
                break; // dead, waiting to be reaped
            }
            assert!(
                t0.elapsed().as_secs() < 10,
                "the kernel outlived the runner"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

#[test]
fn a_kernel_that_dies_mid_run_is_reported_with_the_cell() {
    let f = Fixture::new();
    let src = f.notebook(
        "die.ipynb",
        &notebook(vec![
            code("print(1)"),
            code("import os; os._exit(1)"),
            code("print(3)"),
        ]),
    );
    let before = std::fs::read(&src).unwrap();
    let r = f.run(&["clase", "die.ipynb", "--no-html", "--continue-on-error"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("cell 2 killed the kernel"), "{r}");
    assert!(r.stderr.contains("import os; os._exit(1)"), "{r}");
    assert!(
        r.stderr
            .contains("the kernel died while running this cell (exit status: 1)"),
        "{r}"
    );
    assert!(
        r.stdout.contains("die: 2 cells run, 0 skipped, 1 failed"),
        "{r}"
    );
    assert!(r.stdout.contains("1 not reached"), "{r}");
    assert_eq!(std::fs::read(&src).unwrap(), before);
    let out = read_json(&f.out().join("die.ipynb"));
    assert_eq!(out["cells"][1]["outputs"][0]["ename"], "DeadKernelError");
}

#[test]
fn malformed_json_is_an_input_error_naming_file_line_and_column() {
    let f = Fixture::new();
    let bad = b"{\n \"cells\": [\n  {\"cell_type\": \"code\",, }\n ]\n}\n";
    let src = f.write("broken.ipynb", bad);
    let r = f.run(&["clase", "broken.ipynb", "--no-html"]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(
        r.stderr
            .contains("broken.ipynb:3:24: malformed notebook JSON"),
        "{r}"
    );
    assert_eq!(std::fs::read(&src).unwrap(), bad);
    assert!(
        files_in(&f.out()).is_empty(),
        "nothing written on bad input"
    );

    // Valid JSON that is no notebook.
    f.write(
        "v3.ipynb",
        br#"{"nbformat": 3, "nbformat_minor": 0, "worksheets": []}"#,
    );
    let r = f.run(&["check", "v3.ipynb"]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(
        r.stderr
            .contains("v3.ipynb: not a valid nbformat 4 notebook: nbformat 3"),
        "{r}"
    );
}

#[test]
fn an_unknown_kernelspec_lists_the_kernels_found() {
    let f = Fixture::new();
    let mut nb = notebook(vec![code("print(1)")]);
    nb["metadata"]["kernelspec"]["name"] = json!("rust-aula-missing");
    let src = f.notebook("k.ipynb", &nb);
    let before = std::fs::read(&src).unwrap();
    let r = f.run(&["clase", "k.ipynb", "--no-html"]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(
        r.stderr
            .contains("k.ipynb: no Jupyter kernel named \"rust-aula-missing\""),
        "{r}"
    );
    assert!(
        r.stderr.contains(KERNEL),
        "the kernels found are listed: {r}"
    );
    assert_eq!(std::fs::read(&src).unwrap(), before);

    // --kernel overrides the notebook's metadata, and is checked the same way.
    let r = f.run(&["clase", "k.ipynb", "--no-html", "--kernel", KERNEL]);
    assert_eq!(r.code, Some(0), "{r}");
    let r = f.run(&["clase", "k.ipynb", "--no-html", "--kernel", "nope"]);
    assert_eq!(r.code, Some(2), "{r}");

    // No kernel anywhere.
    let mut nb = notebook(vec![code("print(1)")]);
    nb["metadata"] = json!({});
    f.notebook("nokernel.ipynb", &nb);
    let r = f.run(&["clase", "nokernel.ipynb"]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("nokernel.ipynb: no kernel given"), "{r}");
}

#[test]
fn clase_store_refreshes_the_run_cells_and_keeps_the_recorded_ones() {
    let f = Fixture::new();
    let src = f.notebook(
        "edited.ipynb",
        &notebook(vec![
            code("print('fresh')"),
            tagged(
                "print('would train')",
                "no-ejecutar",
                json!([{"output_type": "stream", "name": "stdout", "text": "recorded\n"}]),
            ),
        ]),
    );
    let r = f.run(&["clase", "edited.ipynb", "--no-html", "--store"]);
    assert_eq!(r.code, Some(0), "{r}");
    let nb = read_json(&src);
    assert_eq!(text(&nb["cells"][0]["outputs"][0]["text"]), "fresh\n");
    assert_eq!(text(&nb["cells"][1]["outputs"][0]["text"]), "recorded\n");
    // Only class mode takes it.
    let r = f.run(&["check", "edited.ipynb", "--no-html", "--store"]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("--store is for `clase`"), "{r}");
}

#[test]
fn instructor_runs_every_cell_and_stores_outputs_in_the_source() {
    let f = Fixture::new();
    let src = f.notebook(
        "teach.ipynb",
        &notebook(vec![
            code("print('fresh')"),
            tagged("print('now stored')", "no-ejecutar", json!([])),
        ]),
    );
    let r = f.run(&["instructor", "teach.ipynb", "--no-html"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.stdout.contains("teach: 2 cells run, 0 skipped, 0 failed"),
        "{r}"
    );
    let nb = read_json(&src);
    assert_eq!(text(&nb["cells"][0]["outputs"][0]["text"]), "fresh\n");
    assert_eq!(text(&nb["cells"][1]["outputs"][0]["text"]), "now stored\n");
    assert_eq!(nb["cells"][1]["metadata"]["tags"], json!(["no-ejecutar"]));
    assert_eq!(nb["metadata"]["aula_custom"], json!({"keep": ["me", 1]}));
    // Written as nbformat writes: one-space indent, trailing newline.
    let raw = std::fs::read_to_string(&src).unwrap();
    assert!(
        raw.starts_with("{\n \"cells\": [\n") && raw.ends_with("}\n"),
        "{raw}"
    );
    assert!(f.out().join("teach.ipynb").is_file());
    assert_eq!(
        files_in(f.path())
            .iter()
            .filter(|n| n.contains("tmp"))
            .count(),
        0
    );

    // Now the stored output satisfies check mode.
    let r = f.run(&["check", "teach.ipynb", "--no-html"]);
    assert_eq!(r.code, Some(0), "{r}");

    // A failing run does not overwrite the source.
    let failing = f.notebook(
        "fails.ipynb",
        &notebook(vec![code("print('x')"), code("1/0")]),
    );
    let before = std::fs::read(&failing).unwrap();
    let r = f.run(&["instructor", "fails.ipynb", "--no-html"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("not updated because of the failures"),
        "{r}"
    );
    assert_eq!(std::fs::read(&failing).unwrap(), before);
}

#[test]
fn a_folder_runs_in_name_order_with_html_from_the_venv() {
    let f = Fixture::new();
    f.notebook("lessons/02-second.ipynb", &notebook(vec![code("print(2)")]));
    f.notebook("lessons/01-first.ipynb", &notebook(vec![code("print(1)")]));
    f.write("lessons/notes.txt", b"not a notebook");
    let prefix = venv();
    let r = f.run_env(
        &["clase", "lessons"],
        &[("AULA_JUPYTER_PREFIX", prefix.to_str().unwrap())],
    );
    assert_eq!(r.code, Some(0), "{r}");
    let first = r
        .stdout
        .find("01-first: 1 cells run")
        .expect("first summary");
    let second = r
        .stdout
        .find("02-second: 1 cells run")
        .expect("second summary");
    assert!(first < second, "{r}");
    assert!(r.stdout.contains("2 notebooks, 0 failed"), "{r}");
    assert_eq!(
        files_in(&f.out()),
        [
            "01-first.html",
            "01-first.ipynb",
            "02-second.html",
            "02-second.ipynb"
        ]
    );
    let html = std::fs::read_to_string(f.out().join("01-first.html")).unwrap();
    assert!(
        html.contains("<html") && html.contains("print"),
        "an nbconvert page"
    );
}

#[test]
fn the_python_prefix_kernelspec_is_found_through_aula_jupyter_prefix() {
    // The venv's own `python3` spec says argv[0] = "python": the prefix's interpreter is used.
    let f = Fixture::new();
    let mut nb = notebook(vec![code("import sys; print(sys.prefix)")]);
    nb["metadata"]["kernelspec"]["name"] = json!("python3");
    f.notebook("p.ipynb", &nb);
    let prefix = venv();
    let r = f.run_env(
        &["clase", "p.ipynb", "--no-html"],
        &[("AULA_JUPYTER_PREFIX", prefix.to_str().unwrap())],
    );
    assert_eq!(r.code, Some(0), "{r}");
    let out = read_json(&f.out().join("p.ipynb"));
    let printed = text(&out["cells"][0]["outputs"][0]["text"]);
    assert!(printed.trim_end().ends_with("venv-jupyter"), "{printed}");
}

#[test]
fn kernels_that_cannot_start_are_reported() {
    let f = Fixture::new();
    let python = venv_python();
    f.kernelspec(
        "missing-binary",
        json!({"argv": ["/nonexistent/kernel", "{connection_file}"],
        "display_name": "Missing", "language": "none"}),
    );
    f.kernelspec("exits", json!({"argv": [python, "-c", "import sys; print('no luck'); sys.exit(3)", "{connection_file}"],
        "display_name": "Exits", "language": "none"}));
    f.kernelspec(
        "sleeps",
        json!({"argv": [python, "-c", "import time; time.sleep(60)", "{connection_file}"],
        "display_name": "Sleeps", "language": "none"}),
    );
    let src = f.notebook("n.ipynb", &notebook(vec![code("print(1)")]));
    let before = std::fs::read(&src).unwrap();

    let r = f.run(&[
        "clase",
        "n.ipynb",
        "--no-html",
        "--kernel",
        "missing-binary",
    ]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr
            .contains("cannot start kernel \"missing-binary\" (`/nonexistent/kernel"),
        "{r}"
    );
    assert!(
        r.stdout.contains("n: 0 cells run, 0 skipped, 1 failed"),
        "{r}"
    );

    let r = f.run(&["clase", "n.ipynb", "--no-html", "--kernel", "exits"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr
            .contains("kernel \"exits\" exited during start-up (exit status: 3)"),
        "{r}"
    );
    assert!(
        r.stderr.contains("no luck"),
        "the kernel's own output is shown: {r}"
    );

    let t0 = Instant::now();
    let r = f.run(&[
        "clase",
        "n.ipynb",
        "--no-html",
        "--kernel",
        "sleeps",
        "--startup-timeout",
        "2",
    ]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(t0.elapsed().as_secs() < 20, "{r}");
    assert!(
        r.stderr
            .contains("was not ready within the 2 s start-up timeout"),
        "{r}"
    );
    assert_eq!(std::fs::read(&src).unwrap(), before);
    assert!(
        files_in(&f.out()).is_empty(),
        "nothing written when no cell could run: {:?}",
        files_in(&f.out())
    );
}

#[test]
fn kernels_subcommand_lists_what_it_finds() {
    let f = Fixture::new();
    let r = f.run(&["kernels"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.stdout.contains(KERNEL) && r.stdout.contains("Python (aula-runner tests)"),
        "{r}"
    );
}

#[test]
fn a_rust_panic_reported_on_stderr_fails_the_cell() {
    // evcxr catches a cell's panic, prints it on stderr and replies `ok`. A kernelspec whose
    // language is Rust gets panic detection; this one is ipykernel wearing a Rust label.
    let f = Fixture::new();
    f.kernelspec(
        "fake-rust",
        json!({"argv": [venv_python(), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
               "display_name": "Rust (fake)", "language": "rust"}),
    );
    let panic_cell = "import sys\nprint(\"thread '<unnamed>' (42) panicked at src/lib.rs:9:1:\\nboom\\nnote: run with `RUST_BACKTRACE=1`\", file=sys.stderr)";
    let warn_cell = "import sys\nprint('warning: unused variable', file=sys.stderr)";
    f.notebook(
        "p.ipynb",
        &notebook(vec![
            code(warn_cell),
            code(panic_cell),
            code("print('after')"),
        ]),
    );
    let r = f.run(&["clase", "p.ipynb", "--no-html", "--kernel", "fake-rust"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("cell 2 failed"), "{r}");
    assert!(
        r.stderr
            .contains("panic: boom\nthread '<unnamed>' (42) panicked at src/lib.rs:9:1:"),
        "{r}"
    );
    assert!(
        r.stdout.contains("p: 2 cells run, 0 skipped, 1 failed"),
        "{r}"
    );

    // The same output from a Python kernel is just text on stderr.
    let r = f.run(&["clase", "p.ipynb", "--no-html"]);
    assert_eq!(r.code, Some(0), "{r}");
}

#[test]
fn a_kernel_that_lost_its_port_is_started_again_on_fresh_ports() {
    // Ports are chosen free, then released for the kernel to bind; in between another
    // process's outgoing connection may take one (seen in CI with tests running in
    // parallel). This kernel fails that way on its first start only.
    let f = Fixture::new();
    let marker = f.path().join("first-start-done");
    let prelude = format!(
        "marker = pathlib.Path({marker:?})\n\
         if not marker.exists():\n\
         \x20   marker.write_text('1')\n\
         \x20   print(\"zmq.error.ZMQError: Address already in use (addr='tcp://127.0.0.1:1')\", file=sys.stderr)\n\
         \x20   sys.exit(1)",
        marker = marker.display().to_string()
    );
    f.python_kernelspec_after("unlucky", &prelude);
    f.notebook("u.ipynb", &notebook(vec![code("print('ran')")]));
    let r = f.run(&["clase", "u.ipynb", "--no-html", "--kernel", "unlucky"]);
    assert!(marker.exists(), "the first start-up failed as planned: {r}");
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.stdout.contains("u: 1 cells run, 0 skipped, 0 failed"),
        "{r}"
    );
}

#[test]
fn the_next_notebook_s_kernel_starts_at_nice_19_while_this_one_runs() {
    // A kernel that takes 4 s to start and notes the niceness it started at.
    let f = Fixture::new();
    let starts = f.path().join("starts");
    let prelude = format!(
        "with open({starts:?}, 'a') as s: s.write(f'{{os.nice(0)}}\\n')\ntime.sleep(4)",
        starts = starts.display().to_string()
    );
    f.python_kernelspec_after("slow", &prelude);
    let cell = "import os, time; time.sleep(7); print('nice', os.nice(0), 'euid', os.geteuid())";
    f.notebook("a.ipynb", &notebook(vec![code(cell)]));
    f.notebook("b.ipynb", &notebook(vec![code(cell)]));
    let ready = |r: &Run| -> Vec<f64> {
        r.stderr
            .lines()
            .filter_map(|l| l.trim().strip_prefix("kernel ready in "))
            .map(|s| s.trim_end_matches('s').parse().unwrap())
            .collect()
    };

    let r = f.run(&["clase", "a.ipynb", "b.ipynb", "--no-html", "--kernel", "slow"]);
    assert_eq!(r.code, Some(0), "{r}");
    let waited = ready(&r);
    assert!(waited[0] >= 4.0, "a's kernel started cold: {r}");
    assert!(waited[1] < 2.0, "b's kernel was ready when a ended: {r}");
    // Both kernels start within moments of each other, so their lines come in either order.
    let started_at = std::fs::read_to_string(&starts).unwrap();
    let mut niceness: Vec<&str> = started_at.lines().collect();
    niceness.sort_unstable();
    assert_eq!(niceness, ["0", "19"], "a's kernel at nice 0, b's (started ahead) at 19");
    // b's kernel runs at nice 0 once it is b's turn (when allowed to lower its niceness).
    let b = std::fs::read_to_string(f.out().join("b.ipynb")).unwrap();
    if b.contains("euid 0") {
        assert!(b.contains("nice 0 euid"), "{b}");
    }

    std::fs::remove_file(&starts).unwrap();
    let r = f.run(&["clase", "a.ipynb", "b.ipynb", "--no-html", "--kernel", "slow", "--no-prestart"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(ready(&r)[1] >= 4.0, "--no-prestart: b's kernel starts when a is done: {r}");
    assert_eq!(std::fs::read_to_string(&starts).unwrap(), "0\n0\n");
}
