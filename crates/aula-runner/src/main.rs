//! `aula-runner`: runs lesson notebooks headless through the Jupyter protocol.
//!
//! Exit status: 0 when every notebook ran clean, 1 when a cell failed (or a check did),
//! 2 for bad input (nothing was run and no file was written).

use aula_runner::runner::{self, Mode, Options, Printer};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "aula-runner",
    version,
    about = "Run Jupyter notebooks cell by cell through a real kernel (the lesson runner)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Class mode: cells tagged `no-ejecutar` or `skip-execution` keep their stored outputs;
    /// every other code cell runs. Executed notebooks (+ HTML) go to --out; the sources are
    /// not modified unless --store is given.
    Clase(RunArgs),
    /// Run every cell and store the outputs back into the source notebooks (atomically,
    /// and only when no cell failed). Copies (+ HTML) also go to --out.
    Instructor(RunArgs),
    /// As `clase`, and also fail when a tagged cell has no stored output. Exit status 1 on
    /// any failure.
    Check(RunArgs),
    /// List the Jupyter kernels found, and where they were searched for.
    Kernels,
}

#[derive(Args)]
struct RunArgs {
    /// Notebooks (.ipynb) or folders of notebooks (all *.ipynb in them, sorted by name).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Output folder for the executed notebooks and their HTML.
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Kernel name (a kernelspec); default: each notebook's metadata.kernelspec.name.
    #[arg(long)]
    kernel: Option<String>,
    /// Per-cell timeout in seconds (0: none). On timeout the cell is interrupted (and the
    /// kernel killed if it does not stop).
    #[arg(long, default_value_t = 600.0, value_name = "SECS")]
    timeout: f64,
    /// How long a kernel may take to start and answer kernel_info, in seconds.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    startup_timeout: f64,
    /// Do not render HTML.
    #[arg(long)]
    no_html: bool,
    /// Keep running later cells after a failing one (the run still fails).
    #[arg(long)]
    continue_on_error: bool,
    /// No per-cell progress on stderr (summaries and failures are still printed).
    #[arg(long, short)]
    quiet: bool,
    /// (clase) Store the fresh outputs back into the source notebooks when every cell
    /// passed (atomically); the tagged cells keep their recorded outputs.
    #[arg(long)]
    store: bool,
    /// One kernel at a time: do not start the next notebook's kernel while this one runs.
    #[arg(long)]
    no_prestart: bool,
}

fn seconds(name: &str, secs: f64) -> Result<Duration, String> {
    if secs.is_finite() && secs >= 0.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!(
            "--{name} must be a number of seconds ≥ 0, not {secs}"
        ))
    }
}

/// Ctrl-C, `kill` or a closed terminal: the kernels' process groups are killed and their
/// runtime folders (connection files with their keys) removed before the runner exits
/// with 128 + the signal, as a shell reports it. Notebooks are written atomically, so
/// none is left half-written.
fn exit_cleanly_on_signals() {
    use tokio::signal::unix::{signal, SignalKind};
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a signal runtime");
        rt.block_on(async {
            let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) else {
                return; // the default actions stay: the kernels still die with the runner
            };
            let code = tokio::select! {
                _ = int.recv() => 128 + libc::SIGINT,
                _ = term.recv() => 128 + libc::SIGTERM,
                _ = hup.recv() => 128 + libc::SIGHUP,
            };
            eprintln!("aula-runner: stopped by a signal; kernels stopped, their files removed");
            aula_runner::kernel::abandon_all();
            std::process::exit(code);
        });
    });
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit_cleanly_on_signals();
    let (mode, args) = match cli.command {
        Command::Clase(a) => (Mode::Clase, a),
        Command::Instructor(a) => (Mode::Instructor, a),
        Command::Check(a) => (Mode::Check, a),
        Command::Kernels => return list_kernels(),
    };
    let timeout = match seconds("timeout", args.timeout) {
        Ok(d) if d.is_zero() => None,
        Ok(d) => Some(d),
        Err(e) => return usage(&e),
    };
    let startup_timeout = match seconds("startup-timeout", args.startup_timeout) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => return usage("--startup-timeout must be > 0"),
        Err(e) => return usage(&e),
    };
    // The notebooks write their metrics to $AULA_OUT (aula::metrics): unless the caller
    // chose a place, that is this run's --out, not an out/ folder beside each notebook.
    if std::env::var_os("AULA_OUT").is_none() {
        match std::path::absolute(&args.out) {
            Ok(out) => std::env::set_var("AULA_OUT", out),
            Err(e) => return usage(&format!("--out {}: {e}", args.out.display())),
        }
    }
    // Instructor mode renders the "no ejecutar" cells: their guard
    // (aula::rendered::render_here) lets them train only when this is set.
    if mode == Mode::Instructor && std::env::var_os("AULA_RENDER").is_none() {
        std::env::set_var("AULA_RENDER", "1");
    }
    if args.store && mode != Mode::Clase {
        return usage(
            "--store is for `clase` (instructor mode always stores; check mode never does)",
        );
    }
    let opts = Options {
        store: args.store,
        prestart: !args.no_prestart,
        mode,
        out_dir: args.out,
        kernel: args.kernel,
        cell_timeout: timeout,
        startup_timeout,
        html: !args.no_html,
        continue_on_error: args.continue_on_error,
    };
    let mut printer = Printer { quiet: args.quiet };
    match runner::run(&args.paths, &opts, &mut printer) {
        Err(e) => {
            eprintln!("aula-runner: error: {e}");
            ExitCode::from(2)
        }
        Ok(reports) => {
            let failed: Vec<_> = reports.iter().filter(|r| !r.ok()).collect();
            if reports.len() > 1 {
                println!(
                    "{} notebooks, {} failed ({} mode)",
                    reports.len(),
                    failed.len(),
                    mode.name()
                );
            }
            if failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("aula-runner: error: {msg}");
    ExitCode::from(2)
}

fn list_kernels() -> ExitCode {
    let dirs = aula_runner::kernelspec::data_dirs();
    let found = aula_runner::kernelspec::list(&dirs);
    if found.is_empty() {
        println!("no kernels found");
    }
    for k in &found {
        println!(
            "{:<20} {:<30} {}",
            k.name,
            k.display_name.as_deref().unwrap_or(""),
            k.dir.display()
        );
    }
    println!("searched:");
    for d in dirs {
        println!("  {}", d.join("kernels").display());
    }
    ExitCode::SUCCESS
}
