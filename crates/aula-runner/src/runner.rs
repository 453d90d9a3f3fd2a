//! The lesson runner's modes over one notebook or a folder of notebooks.
//!
//! - `clase`: cells tagged `no-ejecutar` or `skip-execution` are not run and keep their
//!   stored outputs; every other code cell gets fresh outputs. The source is never written.
//! - `instructor`: every code cell runs; when all pass, the outputs are stored back into
//!   the source notebook (atomically).
//! - `check`: as `clase`, and a tagged cell without stored output is a failure too.
//!
//! Executed notebooks (and their HTML) go to the output folder, written atomically. All
//! inputs are read and their kernels found before anything runs, so bad input stops the
//! run with nothing written.

use crate::kernel::{self, ExecStatus, Kernel, KernelError};
use crate::kernelspec::{self, KernelSpec, KernelspecError};
use crate::notebook::{self, Notebook, NotebookError};
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Cells with one of these tags are not executed in `clase` and `check` modes.
pub const SKIP_TAGS: [&str; 2] = ["no-ejecutar", "skip-execution"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Clase,
    Instructor,
    Check,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Clase => "clase",
            Mode::Instructor => "instructor",
            Mode::Check => "check",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub mode: Mode,
    /// Where executed notebooks and their HTML go.
    pub out_dir: PathBuf,
    /// The kernel to use; otherwise each notebook's `metadata.kernelspec.name`.
    pub kernel: Option<String>,
    /// Per-cell limit; `None` for none.
    pub cell_timeout: Option<Duration>,
    pub startup_timeout: Duration,
    /// Also write an HTML rendering next to each executed notebook.
    pub html: bool,
    /// Keep running the cells after a failing one (the run still fails).
    pub continue_on_error: bool,
    /// `clase --store`: store the fresh outputs back into the source notebooks, as
    /// instructor mode does, when every cell passed; the tagged cells, not run, keep
    /// their recorded outputs. For refreshing the notebooks after editing a cell.
    pub store: bool,
    /// Start the next notebook's kernel while this one runs, at the lowest CPU priority
    /// (evcxr's kernel takes ≈ 17 s of CPU to start; its start then overlaps the cells).
    pub prestart: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Clase,
            out_dir: PathBuf::from("out"),
            kernel: None,
            cell_timeout: Some(Duration::from_secs(600)),
            startup_timeout: Duration::from_secs(60),
            html: true,
            continue_on_error: false,
            store: false,
            prestart: true,
        }
    }
}

/// Bad input: nothing was run and nothing written.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{}: no such file or folder", .0.display())]
    Missing(PathBuf),
    #[error("{}: no .ipynb notebooks in this folder", .0.display())]
    EmptyFolder(PathBuf),
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    Notebook(#[from] NotebookError),
    #[error("{}: no kernel given: the notebook has no metadata.kernelspec.name and --kernel was not set", .0.display())]
    NoKernelName(PathBuf),
    #[error("{}: {error}", path.display())]
    Kernelspec {
        path: PathBuf,
        error: KernelspecError,
    },
    #[error("{} and {} would both be written as {}", a.display(), b.display(), out.display())]
    NameClash {
        a: PathBuf,
        b: PathBuf,
        out: PathBuf,
    },
    #[error("{}: the output folder is the notebook's own folder, so the source would be overwritten; choose another --out", .0.display())]
    OutIsSource(PathBuf),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The kernel reported an error.
    Error,
    Timeout,
    KernelDied,
    /// `check`: a tagged cell has no stored output.
    MissingStoredOutput,
    /// The kernel did not start.
    KernelStart,
    /// An output file could not be written.
    Write,
}

/// One failure, with everything needed to understand it.
#[derive(Clone, Debug)]
pub struct CellFailure {
    /// 1-based position of the cell in the notebook (all cell types counted).
    pub cell: Option<usize>,
    pub source: String,
    pub kind: FailureKind,
    /// The full error text (ename, evalue, traceback), without escape codes.
    pub text: String,
}

/// What happened to one notebook.
#[derive(Clone, Debug)]
pub struct NotebookReport {
    pub name: String,
    pub path: PathBuf,
    pub mode: Mode,
    pub run: usize,
    pub skipped: usize,
    /// Cells that failed (errors, timeouts, a dead kernel, tagged cells without output).
    pub failed: usize,
    /// Code cells not run because an earlier cell failed.
    pub not_reached: usize,
    pub wall: Duration,
    pub failures: Vec<CellFailure>,
    pub executed: Option<PathBuf>,
    pub html: Option<PathBuf>,
    pub source_updated: bool,
    pub warnings: Vec<String>,
}

impl NotebookReport {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// `<name>: N cells run, M skipped, K failed, wall X.Xs`.
    pub fn summary_line(&self) -> String {
        let mut line = format!(
            "{}: {} cells run, {} skipped, {} failed, wall {:.1}s",
            self.name,
            self.run,
            self.skipped,
            self.failed,
            self.wall.as_secs_f64()
        );
        if self.not_reached > 0 {
            line.push_str(&format!(
                " ({} not reached after the failure)",
                self.not_reached
            ));
        }
        if self
            .failures
            .iter()
            .any(|f| f.kind == FailureKind::KernelStart)
        {
            line.push_str(" (the kernel did not start)");
        }
        line
    }
}

/// Progress and results as they happen.
pub trait Observer {
    fn notebook_started(&mut self, _path: &Path, _kernel: &KernelSpec, _code_cells: usize) {}
    fn kernel_ready(&mut self, _name: &str, _elapsed: Duration) {}
    fn cell_started(&mut self, _cell: usize, _nth_code: usize, _code_cells: usize) {}
    fn cell_finished(&mut self, _cell: usize, _status: &ExecStatus, _elapsed: Duration) {}
    fn warning(&mut self, _message: &str) {}
    fn notebook_finished(&mut self, _report: &NotebookReport) {}
}

/// An observer that prints nothing.
pub struct Silent;
impl Observer for Silent {}

/// Prints progress to stderr (unless quiet), failures in full to stderr, and the summary
/// line of each notebook to stdout.
pub struct Printer {
    pub quiet: bool,
}

impl Observer for Printer {
    fn notebook_started(&mut self, path: &Path, kernel: &KernelSpec, code_cells: usize) {
        if !self.quiet {
            eprintln!(
                "{}: starting kernel {:?} ({}), {} code cells",
                path.display(),
                kernel.name,
                kernel.spec.display_name,
                code_cells
            );
        }
    }
    fn kernel_ready(&mut self, _name: &str, elapsed: Duration) {
        if !self.quiet {
            eprintln!("  kernel ready in {:.1}s", elapsed.as_secs_f64());
        }
    }
    fn cell_started(&mut self, cell: usize, nth: usize, total: usize) {
        if !self.quiet {
            eprint!("  [{nth}/{total}] cell {cell} … ");
            let _ = std::io::stderr().flush();
        }
    }
    fn cell_finished(&mut self, _cell: usize, status: &ExecStatus, elapsed: Duration) {
        if !self.quiet {
            let word = match status {
                ExecStatus::Ok => "ok".to_string(),
                ExecStatus::Error => "ERROR".to_string(),
                ExecStatus::TimedOut { .. } => "TIMEOUT".to_string(),
                ExecStatus::KernelDied { status } => format!("KERNEL DIED ({status})"),
            };
            eprintln!("{word} {:.1}s", elapsed.as_secs_f64());
        }
    }
    fn warning(&mut self, message: &str) {
        eprintln!("warning: {message}");
    }
    fn notebook_finished(&mut self, report: &NotebookReport) {
        for f in &report.failures {
            eprintln!("{}", describe_failure(report, f));
        }
        println!("{}", report.summary_line());
        let _ = std::io::stdout().flush();
    }
}

/// A failure as printed: where, the cell's source, and the kernel's full error text.
pub fn describe_failure(report: &NotebookReport, f: &CellFailure) -> String {
    let what = match f.kind {
        FailureKind::Error => "failed",
        FailureKind::Timeout => "timed out",
        FailureKind::KernelDied => "killed the kernel",
        FailureKind::MissingStoredOutput => "has no stored output",
        FailureKind::KernelStart => "kernel start-up failed",
        FailureKind::Write => "write failed",
    };
    let mut s = String::new();
    match f.cell {
        Some(cell) => s.push_str(&format!(
            "\n=== {}: cell {cell} {what} ===\n",
            report.path.display()
        )),
        None => s.push_str(&format!("\n=== {}: {what} ===\n", report.path.display())),
    }
    if f.cell.is_some() {
        s.push_str("--- source ---\n");
        s.push_str(f.source.trim_end());
        s.push('\n');
        s.push_str("--- error ---\n");
    }
    s.push_str(f.text.trim_end());
    s.push('\n');
    s
}

struct Plan {
    notebook: Notebook,
    spec: KernelSpec,
    name: String,
    out_ipynb: PathBuf,
    out_html: PathBuf,
}

/// The notebooks named by `inputs`: files as given, folders' `*.ipynb` sorted by name.
pub fn collect_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    let mut paths = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => InputError::Missing(input.clone()),
            _ => InputError::Io {
                path: input.clone(),
                error: e,
            },
        })?;
        if meta.is_dir() {
            let entries = std::fs::read_dir(input).map_err(|error| InputError::Io {
                path: input.clone(),
                error,
            })?;
            let mut found: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && p.extension().is_some_and(|x| x == "ipynb")
                        && !p
                            .file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with('.'))
                })
                .collect();
            if found.is_empty() {
                return Err(InputError::EmptyFolder(input.clone()));
            }
            found.sort();
            paths.extend(found);
        } else {
            paths.push(input.clone());
        }
    }
    Ok(paths)
}

fn plan(inputs: &[PathBuf], opts: &Options) -> Result<Vec<Plan>, InputError> {
    let paths = collect_inputs(inputs)?;
    let dirs = kernelspec::data_dirs();
    let mut specs: HashMap<String, KernelSpec> = HashMap::new();
    let mut outputs: HashMap<PathBuf, PathBuf> = HashMap::new();
    let mut plans = Vec::new();
    for path in paths {
        let notebook = Notebook::load(&path)?;
        let kernel_name = match (&opts.kernel, notebook.kernel_name()) {
            (Some(k), _) => k.clone(),
            (None, Some(k)) => k.to_string(),
            (None, None) => return Err(InputError::NoKernelName(path)),
        };
        let spec = match specs.get(&kernel_name) {
            Some(s) => s.clone(),
            None => {
                let s = kernelspec::find_in(&kernel_name, &dirs).map_err(|error| {
                    InputError::Kernelspec {
                        path: path.clone(),
                        error,
                    }
                })?;
                specs.insert(kernel_name.clone(), s.clone());
                s
            }
        };
        let file_name = path
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| "notebook.ipynb".into());
        let out_ipynb = opts.out_dir.join(&file_name);
        let out_html = out_ipynb.with_extension("html");
        if let Some(previous) = outputs.insert(out_ipynb.clone(), path.clone()) {
            return Err(InputError::NameClash {
                a: previous,
                b: path,
                out: out_ipynb,
            });
        }
        if same_file(&out_ipynb, &path) {
            return Err(InputError::OutIsSource(path));
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("notebook")
            .to_string();
        plans.push(Plan {
            notebook,
            spec,
            name,
            out_ipynb,
            out_html,
        });
    }
    Ok(plans)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (
        a.parent().map(std::fs::canonicalize),
        std::fs::canonicalize(b),
    ) {
        (Some(Ok(dir)), Ok(b)) => a.file_name().is_some_and(|n| dir.join(n) == b),
        _ => false,
    }
}

/// Runs every notebook named by `inputs`. `Err` only for bad input (then nothing ran);
/// each notebook's failures are in its report.
pub fn run(
    inputs: &[PathBuf],
    opts: &Options,
    obs: &mut dyn Observer,
) -> Result<Vec<NotebookReport>, InputError> {
    let plans = plan(inputs, opts)?;
    std::fs::create_dir_all(&opts.out_dir).map_err(|error| InputError::Io {
        path: opts.out_dir.clone(),
        error,
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(InputError::Runtime)?;
    let nbconvert = if opts.html {
        crate::html::find_nbconvert()
    } else {
        None
    };
    if opts.html && nbconvert.is_none() {
        obs.warning(
            "no HTML written: jupyter-nbconvert not found (run scripts/setup-jupyter-venv.sh \
             or `make python-tools`, or set AULA_JUPYTER_PREFIX)",
        );
    }
    // Each notebook's kernel, for the notebooks that run a cell.
    let kernels: Vec<Option<(KernelSpec, PathBuf)>> = plans
        .iter()
        .map(|p| {
            let runs_a_cell = p.notebook.cells().iter().any(|c| {
                notebook::is_code(c) && skip_tag(c, opts.mode).is_none()
            });
            runs_a_cell.then(|| (p.spec.clone(), kernel::working_dir(&p.notebook.path)))
        })
        .collect();
    let mut queue = KernelQueue::default();
    let mut reports = Vec::new();
    for (i, plan) in plans.into_iter().enumerate() {
        let next = match opts.prestart {
            true => kernels.get(i + 1).cloned().flatten(),
            false => None,
        };
        let report = rt.block_on(run_notebook(plan, next, &mut queue, opts, nbconvert.as_deref(), obs));
        obs.notebook_finished(&report);
        reports.push(report);
    }
    rt.block_on(queue.finish());
    Ok(reports)
}

/// The tag that keeps a code cell from running in this mode, if any.
fn skip_tag(cell: &Value, mode: Mode) -> Option<String> {
    if mode == Mode::Instructor {
        return None;
    }
    notebook::tags(cell)
        .iter()
        .find(|t| SKIP_TAGS.contains(t))
        .map(|t| t.to_string())
}

/// The kernels of a run of several notebooks: the next notebook's kernel starts while the
/// current one runs (at nice 19, so it takes only the CPU the cells leave idle), and a
/// finished notebook's kernel shuts down while the next one runs.
#[derive(Default)]
struct KernelQueue {
    ahead: Option<JoinHandle<Result<Kernel, KernelError>>>,
    shutting_down: Vec<JoinHandle<()>>,
}

impl KernelQueue {
    /// The notebook's kernel: the one started ahead of time when there is one, else a new
    /// one. The next notebook's kernel (`next`) starts now, beside it.
    async fn take(
        &mut self,
        spec: &KernelSpec,
        cwd: &Path,
        next: Option<(KernelSpec, PathBuf)>,
        opts: &Options,
        obs: &mut dyn Observer,
    ) -> Result<Kernel, KernelError> {
        let ahead = self.ahead.take();
        self.start_ahead(next, opts.startup_timeout);
        if let Some(ahead) = ahead {
            match ahead.await {
                Ok(Ok(k)) => {
                    k.normal_priority();
                    return Ok(k);
                }
                // At nice 19 beside a busy notebook a start can outlast the start-up
                // timeout, which says nothing about the kernel: start it again, now.
                Ok(Err(KernelError::StartTimeout { .. })) => obs.warning(&format!(
                    "{}: the kernel started during the previous notebook was not ready in \
                     time; starting another",
                    cwd.display()
                )),
                Ok(Err(e)) => return Err(e),
                Err(e) => obs.warning(&format!("the kernel started ahead of time was lost: {e}")),
            }
        }
        Kernel::start(spec, cwd, opts.startup_timeout).await
    }

    /// Starts the next notebook's kernel (on the runner's thread, as [`Kernel::start`] asks).
    fn start_ahead(&mut self, next: Option<(KernelSpec, PathBuf)>, startup_timeout: Duration) {
        if let Some((spec, cwd)) = next {
            self.ahead = Some(tokio::spawn(async move {
                Kernel::start_in_background(&spec, &cwd, startup_timeout).await
            }));
        }
    }

    fn retire(&mut self, kernel: Kernel) {
        self.shutting_down.push(tokio::spawn(kernel.shutdown()));
    }

    /// Waits for the shutdowns; a kernel started ahead for nothing is shut down too.
    async fn finish(mut self) {
        if let Some(ahead) = self.ahead.take() {
            if let Ok(Ok(k)) = ahead.await {
                k.shutdown().await;
            }
        }
        for s in self.shutting_down {
            let _ = s.await;
        }
    }
}

async fn run_notebook(
    plan: Plan,
    next: Option<(KernelSpec, PathBuf)>,
    queue: &mut KernelQueue,
    opts: &Options,
    nbconvert: Option<&Path>,
    obs: &mut dyn Observer,
) -> NotebookReport {
    let started = Instant::now();
    let Plan {
        mut notebook,
        spec,
        name,
        out_ipynb,
        out_html,
    } = plan;
    let mut report = NotebookReport {
        name,
        path: notebook.path.clone(),
        mode: opts.mode,
        run: 0,
        skipped: 0,
        failed: 0,
        not_reached: 0,
        wall: Duration::ZERO,
        failures: Vec::new(),
        executed: None,
        html: None,
        source_updated: false,
        warnings: Vec::new(),
    };

    // Which cells run.
    let mut to_run = Vec::new();
    for (i, cell) in notebook.cells().iter().enumerate() {
        if !notebook::is_code(cell) {
            continue;
        }
        match skip_tag(cell, opts.mode) {
            Some(tag) => {
                report.skipped += 1;
                let has_output = cell["outputs"].as_array().is_some_and(|o| !o.is_empty());
                if opts.mode == Mode::Check && !has_output {
                    report.failed += 1;
                    report.failures.push(CellFailure {
                        cell: Some(i + 1),
                        source: notebook::source(cell),
                        kind: FailureKind::MissingStoredOutput,
                        text: format!(
                            "cell {} is tagged `{tag}`, so it is not run in class, but it has no stored \
                             output; store one with `aula-runner instructor {}`",
                            i + 1,
                            notebook.path.display()
                        ),
                    });
                }
            }
            _ => to_run.push(i),
        }
    }

    // Run them.
    if !to_run.is_empty() {
        obs.notebook_started(&notebook.path, &spec, to_run.len());
        let cwd = kernel::working_dir(&notebook.path);
        let t0 = Instant::now();
        match queue.take(&spec, &cwd, next, opts, obs).await {
            Err(e) => {
                report.failed += 1;
                report.not_reached = to_run.len();
                report.failures.push(CellFailure {
                    cell: None,
                    source: String::new(),
                    kind: FailureKind::KernelStart,
                    text: e.to_string(),
                });
                // Nothing ran: leave the notebook as it was.
                report.wall = started.elapsed();
                return report;
            }
            Ok(mut k) => {
                obs.kernel_ready(k.name(), t0.elapsed());
                execute_cells(&mut k, &mut notebook, &to_run, opts, &mut report, obs).await;
                if let Some(li) = k.info.get("language_info").filter(|v| v.is_object()) {
                    if let Some(meta) = notebook.value["metadata"].as_object_mut() {
                        meta.insert("language_info".into(), li.clone());
                    }
                }
                for w in k.warnings.drain(..) {
                    obs.warning(&format!("{}: {w}", notebook.path.display()));
                    report.warnings.push(w);
                }
                queue.retire(k);
            }
        }
    }

    // Write the results.
    let json = notebook.to_json();
    match notebook::write_atomic(&out_ipynb, json.as_bytes()) {
        Ok(()) => report.executed = Some(out_ipynb.clone()),
        Err(e) => write_failure(
            &mut report,
            format!("cannot write {}: {e}", out_ipynb.display()),
        ),
    }
    if opts.mode == Mode::Instructor || opts.store {
        if report.failures.is_empty() {
            update_source(&notebook, &json, &mut report);
        } else {
            let msg = format!(
                "{}: not updated because of the failures above; the executed notebook is {}",
                notebook.path.display(),
                out_ipynb.display()
            );
            obs.warning(&msg);
            report.warnings.push(msg);
        }
    }
    if let (Some(nbconvert), Some(executed)) = (nbconvert, &report.executed) {
        match crate::html::render(nbconvert, executed, &out_html).await {
            Ok(()) => report.html = Some(out_html),
            Err(e) => {
                let msg = format!("no HTML for {}: {e}", notebook.path.display());
                obs.warning(&msg);
                report.warnings.push(msg);
            }
        }
    }
    report.wall = started.elapsed();
    report
}

async fn execute_cells(
    k: &mut Kernel,
    notebook: &mut Notebook,
    to_run: &[usize],
    opts: &Options,
    report: &mut NotebookReport,
    obs: &mut dyn Observer,
) {
    let total = to_run.len();
    let mut stopped = false;
    for (nth, &i) in to_run.iter().enumerate() {
        let cell = &mut notebook.cells_mut()[i];
        let source = notebook::source(cell);
        if stopped {
            report.not_reached += 1;
            cell["outputs"] = Value::Array(vec![]);
            cell["execution_count"] = Value::Null;
            continue;
        }
        if source.trim().is_empty() {
            cell["outputs"] = Value::Array(vec![]);
            cell["execution_count"] = Value::Null;
            continue;
        }
        obs.cell_started(i + 1, nth + 1, total);
        let exec = k.execute(&source, opts.cell_timeout).await;
        obs.cell_finished(i + 1, &exec.status, exec.elapsed);
        report.run += 1;
        let cell = &mut notebook.cells_mut()[i];
        cell["outputs"] = Value::Array(exec.outputs);
        cell["execution_count"] = exec.execution_count.map(Value::from).unwrap_or(Value::Null);
        let kind = match &exec.status {
            ExecStatus::Ok => None,
            ExecStatus::Error => Some(FailureKind::Error),
            ExecStatus::TimedOut { .. } => Some(FailureKind::Timeout),
            ExecStatus::KernelDied { .. } => Some(FailureKind::KernelDied),
        };
        if let Some(kind) = kind {
            report.failed += 1;
            report.failures.push(CellFailure {
                cell: Some(i + 1),
                source,
                kind,
                text: exec.error_text,
            });
            let kernel_gone = matches!(
                exec.status,
                ExecStatus::KernelDied { .. }
                    | ExecStatus::TimedOut {
                        kernel_alive: false
                    }
            );
            if kernel_gone || !opts.continue_on_error {
                stopped = true;
            }
        }
    }
}

fn update_source(notebook: &Notebook, json: &str, report: &mut NotebookReport) {
    // Someone saved the notebook while it ran: keep their version.
    match std::fs::read(&notebook.path) {
        Ok(now) if now == notebook.original => {}
        Ok(_) => {
            return write_failure(
                report,
                format!(
                    "{} changed on disk while it ran; not overwritten (the executed notebook is in the output folder)",
                    notebook.path.display()
                ),
            )
        }
        Err(e) => return write_failure(report, format!("cannot read {}: {e}", notebook.path.display())),
    }
    match notebook::write_atomic(&notebook.path, json.as_bytes()) {
        Ok(()) => report.source_updated = true,
        Err(e) => write_failure(
            report,
            format!("cannot write {}: {e}", notebook.path.display()),
        ),
    }
}

fn write_failure(report: &mut NotebookReport, text: String) {
    report.failures.push(CellFailure {
        cell: None,
        source: String::new(),
        kind: FailureKind::Write,
        text,
    });
}
