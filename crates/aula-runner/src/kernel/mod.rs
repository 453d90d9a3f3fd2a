//! One running kernel, driven over the Jupyter messaging protocol (ZeroMQ, HMAC-SHA256).
//!
//! [`Kernel::start`] writes a connection file (free loopback ports, a random key) into a
//! private temporary folder, spawns the kernelspec's `argv` in its own process group with
//! the spec's `env`, and waits for `kernel_info_reply` and a live IOPub channel.
//! [`Kernel::execute`] runs one cell and collects its outputs as nbformat outputs until the
//! kernel is idle and has replied; it enforces the cell's timeout (interrupt, then kill)
//! and notices the kernel's process exiting. [`Kernel::shutdown`] asks politely
//! (`shutdown_request` on control), then kills what is left.
//!
//! Sockets, framing and signatures come from `jupyter-zmq-client`; requests are
//! `jupyter-protocol` types. Replies and IOPub messages are decoded as plain JSON, so a
//! kernel's outputs reach the notebook exactly as it sent them.
//!
//! - this file: [`Kernel`], its start-up handshake and the `execute` state machine;
//! - [`protocol`]: the channels, decoding of incoming messages, the socket readers;
//! - [`outputs`]: IOPub messages → nbformat outputs (streams, displays, errors, panics);
//! - [`process`]: the kernel's process group, signals, its private runtime folder and log.

mod outputs;
mod process;
mod protocol;

pub use outputs::rust_panic;
pub use process::{abandon_all, describe_status, working_dir};
pub use protocol::{Channel, Incoming};

use outputs::Outputs;
use process::{kill_group, log_tail, log_tail_block, write_private, LiveKernel};
use protocol::{read_loop, stamp, Event};

use crate::kernelspec::KernelSpec;
use jupyter_protocol::{
    ConnectionInfo, ExecuteRequest, InterruptRequest, JupyterMessage, KernelInfoRequest,
    ShutdownRequest,
};
use jupyter_zmq_client as jzc;
use serde_json::Value;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until};

/// How long an interrupted cell may take to stop before the kernel is killed.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(10);
/// How long a kernel may take to exit after `shutdown_request` before it is killed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long to wait for late outputs after a cell is done, and at most.
const LINGER: Duration = Duration::from_millis(30);
const LINGER_MAX: Duration = Duration::from_millis(300);

/// A kernel that could not be started.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot start kernel {name:?} (`{argv}`): {source}")]
    Spawn {
        name: String,
        argv: String,
        source: std::io::Error,
    },
    #[error("kernel {name:?} exited during start-up ({status}){log}")]
    ExitedAtStart {
        name: String,
        status: String,
        log: String,
    },
    #[error(
        "kernel {name:?} was not ready within the {secs} s start-up timeout \
         (no kernel_info_reply; see --startup-timeout){log}"
    )]
    StartTimeout {
        name: String,
        secs: f64,
        log: String,
    },
    #[error("kernel {name:?}: {message}")]
    Setup { name: String, message: String },
}

/// How a cell's execution ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecStatus {
    /// `execute_reply` with status `ok` and no error output.
    Ok,
    /// The kernel reported an error (an `error` output or an `execute_reply` not `ok`).
    Error,
    /// The cell ran past its timeout; `kernel_alive` is false when the kernel did not
    /// answer the interrupt and was killed.
    TimedOut { kernel_alive: bool },
    /// The kernel's process exited while the cell ran.
    KernelDied { status: String },
}

/// One cell's execution.
#[derive(Clone, Debug)]
pub struct Execution {
    /// nbformat 4 outputs, text split in lines as nbformat writes them.
    pub outputs: Vec<Value>,
    pub execution_count: Option<i64>,
    pub status: ExecStatus,
    pub elapsed: Duration,
    /// The full text of the errors (ename, evalue, traceback), escape codes removed.
    pub error_text: String,
}

/// A running kernel.
pub struct Kernel {
    name: String,
    interrupt_by_message: bool,
    /// A Rust kernel: a panic reported on stderr fails the cell (see [`rust_panic`]).
    detect_panics: bool,
    child: Child,
    pid: Option<i32>,
    exit: Option<ExitStatus>,
    shell: jzc::DealerSendConnection,
    control: jzc::DealerSendConnection,
    rx: mpsc::UnboundedReceiver<Event>,
    open_readers: usize,
    readers: Vec<JoinHandle<()>>,
    /// This kernel's entry for the signal handler ([`abandon_all`]).
    _live: LiveKernel,
    dir: tempfile::TempDir,
    /// `kernel_info_reply`'s content.
    pub info: Value,
    /// Things worth telling the user that did not stop anything.
    pub warnings: Vec<String>,
}

/// The CPU priority a kernel starts at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Priority {
    Normal,
    /// nice 19: a kernel started ahead of time, while another notebook runs.
    Lowest,
}

/// Start-ups tried when the kernel could not bind a port it was given.
const START_ATTEMPTS: u32 = 3;

/// The kernel's log says a port it was given was taken (EADDRINUSE, as Python's zmq and
/// Rust's std both word it).
fn lost_a_port_race(log: &str) -> bool {
    log.contains("Address already in use")
}

impl Kernel {
    /// Starts the kernel described by `spec` in the working directory `cwd`.
    ///
    /// On Linux the kernel is also killed when the thread that started it exits (so a
    /// runner stopped by Ctrl-C leaves no kernel behind): start kernels from a thread that
    /// outlives them, as [`crate::runner::run`] does.
    pub async fn start(
        spec: &KernelSpec,
        cwd: &Path,
        startup_timeout: Duration,
    ) -> Result<Kernel, KernelError> {
        Kernel::start_with(spec, cwd, startup_timeout, Priority::Normal).await
    }

    /// As [`Kernel::start`], at the lowest CPU priority (nice 19) for the kernel and
    /// everything it starts: a kernel started ahead of time takes only the CPU that the
    /// running notebook leaves idle. [`Kernel::normal_priority`] gives it back.
    pub async fn start_in_background(
        spec: &KernelSpec,
        cwd: &Path,
        startup_timeout: Duration,
    ) -> Result<Kernel, KernelError> {
        Kernel::start_with(spec, cwd, startup_timeout, Priority::Lowest).await
    }

    async fn start_with(
        spec: &KernelSpec,
        cwd: &Path,
        startup_timeout: Duration,
        priority: Priority,
    ) -> Result<Kernel, KernelError> {
        let deadline = tokio::time::Instant::now() + startup_timeout;
        let mut attempt = 1;
        loop {
            match Kernel::start_once(spec, cwd, startup_timeout, deadline, priority).await {
                // The ports are free when chosen but released before the kernel binds them
                // (it must bind them itself); in that gap another process's outgoing
                // connection can take one as its ephemeral port. jupyter_client has the same
                // window; a fresh set of ports is the cure.
                Err(KernelError::ExitedAtStart { log, .. })
                    if attempt < START_ATTEMPTS && lost_a_port_race(&log) =>
                {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_once(
        spec: &KernelSpec,
        cwd: &Path,
        startup_timeout: Duration,
        deadline: tokio::time::Instant,
        priority: Priority,
    ) -> Result<Kernel, KernelError> {
        let name = spec.name.clone();
        let setup = |message: String| KernelError::Setup {
            name: name.clone(),
            message,
        };

        let dir = tempfile::Builder::new()
            .prefix("aula-kernel-")
            .tempdir()
            .map_err(|e| setup(format!("cannot create a runtime folder: {e}")))?;
        let live = LiveKernel::register(dir.path());
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (ports, listeners) = jzc::peek_ports_with_listeners(ip, 5)
            .await
            .map_err(|e| setup(format!("cannot find free ports: {e}")))?;
        let info = ConnectionInfo {
            ip: ip.to_string(),
            transport: jupyter_protocol::connection_info::Transport::TCP,
            shell_port: ports[0],
            iopub_port: ports[1],
            stdin_port: ports[2],
            control_port: ports[3],
            hb_port: ports[4],
            key: uuid::Uuid::new_v4().simple().to_string(),
            signature_scheme: "hmac-sha256".into(),
            kernel_name: Some(spec.name.clone()),
        };
        let connection_file = dir
            .path()
            .join(format!("kernel-{}.json", uuid::Uuid::new_v4()));
        write_private(
            &connection_file,
            &serde_json::to_vec_pretty(&info).expect("serializable"),
        )
        .map_err(|e| setup(format!("cannot write {}: {e}", connection_file.display())))?;

        let log_path = dir.path().join("kernel.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| setup(format!("cannot create {}: {e}", log_path.display())))?;
        let log_err = log.try_clone().map_err(|e| setup(e.to_string()))?;

        let argv = spec.command_line(&connection_file);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .envs(spec.environment())
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true);
        #[cfg(unix)]
        {
            // Its own process group: an interrupt or a kill reaches the kernel's children
            // too, and the terminal's Ctrl-C goes to the runner only.
            cmd.process_group(0);
            #[cfg(target_os = "linux")]
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    // If the runner dies (Ctrl-C, kill), the kernel goes with it.
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    if priority == Priority::Lowest {
                        // Inherited by everything the kernel starts.
                        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().map_err(|source| KernelError::Spawn {
            name: name.clone(),
            argv: argv.join(" "),
            source,
        })?;
        // The kernel binds the ports next; until now they were held so no one else took them.
        drop(listeners);
        let mut child = child;
        let pid = child.id().map(|p| p as i32);
        live.set_group(pid);
        let session = uuid::Uuid::new_v4().to_string();

        // Wait for the kernel to listen, then connect. A kernel that exits, or takes too
        // long, is reported with what it printed.
        let ports_to_wait = [info.shell_port, info.iopub_port, info.control_port];
        let startup_secs = startup_timeout.as_secs_f64();
        let connect = async {
            for port in ports_to_wait {
                let addr = SocketAddr::new(ip, port);
                while tokio::net::TcpStream::connect(addr).await.is_err() {
                    sleep(Duration::from_millis(25)).await;
                }
            }
            let iopub = jzc::create_client_iopub_connection(&info, "", &session).await?;
            let identity = jzc::peer_identity_for_session(&session)?;
            let shell =
                jzc::create_client_shell_connection_with_identity(&info, &session, identity)
                    .await?;
            let control = jzc::create_client_control_connection(&info, &session).await?;
            Ok::<_, jzc::RuntimeError>((iopub, shell, control))
        };
        let connected = tokio::select! {
            r = connect => r,
            status = child.wait() => {
                let status = status.map(|s| describe_status(&s)).unwrap_or_else(|e| e.to_string());
                return Err(KernelError::ExitedAtStart { name, status, log: log_tail_block(dir.path()) });
            }
            _ = sleep_until(deadline) => {
                kill_group(pid);
                return Err(KernelError::StartTimeout { name, secs: startup_secs, log: log_tail_block(dir.path()) });
            }
        };
        let (iopub, shell, control) = match connected {
            Ok(c) => c,
            Err(e) => {
                kill_group(pid);
                return Err(setup(format!("cannot connect: {e}")));
            }
        };
        let (shell_tx, shell_rx) = shell.split();
        let (control_tx, control_rx) = control.split();
        let (tx, rx) = mpsc::unbounded_channel();
        let readers = vec![
            tokio::spawn(read_loop(iopub, Channel::IoPub, tx.clone())),
            tokio::spawn(read_loop(shell_rx, Channel::Shell, tx.clone())),
            tokio::spawn(read_loop(control_rx, Channel::Control, tx)),
        ];
        let mut kernel = Kernel {
            name: name.clone(),
            interrupt_by_message: spec.interrupt_by_message(),
            detect_panics: spec.spec.language.eq_ignore_ascii_case("rust"),
            child,
            pid,
            exit: None,
            shell: shell_tx,
            control: control_tx,
            rx,
            open_readers: readers.len(),
            readers,
            _live: live,
            dir,
            info: Value::Null,
            warnings: Vec::new(),
        };
        kernel.handshake(deadline, startup_secs).await?;
        Ok(kernel)
    }

    /// `kernel_info_request` until answered, then until IOPub carries a message (the
    /// subscription is live, so the first cell's outputs are not lost).
    async fn handshake(
        &mut self,
        deadline: tokio::time::Instant,
        startup_secs: f64,
    ) -> Result<(), KernelError> {
        let mut ids = HashSet::new();
        ids.insert(self.send_shell(KernelInfoRequest {}.into()).await?);
        let mut reply: Option<Value> = None;
        let mut iopub_live = false;
        let mut probes = 0;
        let mut next_probe = tokio::time::Instant::now() + Duration::from_millis(250);
        while reply.is_none() || !iopub_live {
            tokio::select! {
                ev = self.rx.recv(), if self.open_readers > 0 => match ev {
                    Some(Event::Message(m)) => {
                        if m.channel == Channel::IoPub {
                            iopub_live = true;
                        }
                        let ours = m.parent_id.as_ref().is_some_and(|p| ids.contains(p));
                        if ours && m.channel == Channel::Shell && m.msg_type == "kernel_info_reply" {
                            reply = Some(m.content);
                        }
                    }
                    Some(Event::Bad(ch, e)) => self.warnings.push(format!("ignored a bad message on {ch:?}: {e}")),
                    Some(Event::Closed) | None => self.open_readers = self.open_readers.saturating_sub(1),
                },
                status = self.child.wait() => {
                    let status = status.map(|s| describe_status(&s)).unwrap_or_else(|e| e.to_string());
                    return Err(KernelError::ExitedAtStart { name: self.name.clone(), status, log: self.log_tail_block() });
                }
                _ = sleep_until(next_probe), if reply.is_some() => {
                    // Answered on shell, nothing on IOPub yet: ask again so the kernel
                    // publishes busy/idle, a few times, then go on without it.
                    probes += 1;
                    if probes > 20 {
                        self.warnings.push("the kernel published nothing on IOPub during start-up".into());
                        break;
                    }
                    ids.insert(self.send_shell(KernelInfoRequest {}.into()).await?);
                    next_probe = tokio::time::Instant::now() + Duration::from_millis(250);
                }
                _ = sleep_until(deadline) => {
                    if reply.is_some() {
                        break;
                    }
                    return Err(KernelError::StartTimeout { name: self.name.clone(), secs: startup_secs, log: self.log_tail_block() });
                }
            }
        }
        self.info = reply.unwrap_or(Value::Null);
        if let Some(lang) = self
            .info
            .pointer("/language_info/name")
            .and_then(Value::as_str)
        {
            self.detect_panics |= lang.eq_ignore_ascii_case("rust");
        }
        Ok(())
    }

    async fn send_shell(&mut self, msg: JupyterMessage) -> Result<String, KernelError> {
        let msg = stamp(msg);
        let id = msg.header.msg_id.clone();
        self.shell.send(msg).await.map_err(|e| KernelError::Setup {
            name: self.name.clone(),
            message: format!("cannot send on shell: {e}"),
        })?;
        Ok(id)
    }

    /// The kernel's name (its kernelspec's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the kernel's process has exited.
    pub fn is_dead(&mut self) -> bool {
        if self.exit.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
            }
        }
        self.exit.is_some()
    }

    /// The last lines the kernel printed on its stdout/stderr.
    pub fn log_tail(&self) -> String {
        log_tail(self.dir.path())
    }

    fn log_tail_block(&self) -> String {
        log_tail_block(self.dir.path())
    }

    /// Executes `code`; `timeout` bounds the whole cell.
    pub async fn execute(&mut self, code: &str, timeout: Option<Duration>) -> Execution {
        let started = Instant::now();
        let mut outputs = Outputs::default();
        let request = ExecuteRequest {
            code: code.to_string(),
            silent: false,
            store_history: true,
            user_expressions: None,
            allow_stdin: false,
            stop_on_error: true,
        };
        let id = match self.send_shell(request.into()).await {
            Ok(id) => id,
            Err(e) => {
                let status = if self.is_dead() {
                    ExecStatus::KernelDied {
                        status: self.exit_description(),
                    }
                } else {
                    ExecStatus::Error
                };
                outputs.push_error("RunnerError", &e.to_string(), vec![]);
                return outputs.finish(None, status, started.elapsed());
            }
        };

        let mut deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut idle = false;
        let mut reply: Option<Value> = None;
        let mut interrupted = false;
        let status = loop {
            if idle && reply.is_some() {
                break None;
            }
            tokio::select! {
                ev = self.rx.recv(), if self.open_readers > 0 => match ev {
                    Some(Event::Message(m)) if m.parent_id.as_deref() == Some(id.as_str()) => {
                        match (m.channel, m.msg_type.as_str()) {
                            (Channel::IoPub, "status") if m.content["execution_state"] == "idle" => {
                                idle = true;
                            }
                            (Channel::IoPub, "status") => {}
                            (Channel::IoPub, _) => outputs.handle(&m.msg_type, &m.content),
                            (Channel::Shell, "execute_reply") => reply = Some(m.content),
                            _ => {}
                        }
                    }
                    Some(Event::Message(_)) => {}
                    Some(Event::Bad(ch, e)) => self.warnings.push(format!("ignored a bad message on {ch:?}: {e}")),
                    Some(Event::Closed) | None => self.open_readers = self.open_readers.saturating_sub(1),
                },
                status = self.child.wait() => {
                    if let Ok(s) = status {
                        self.exit = Some(s);
                    }
                    break Some(ExecStatus::KernelDied { status: self.exit_description() });
                }
                _ = sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    let secs = timeout.unwrap_or_default().as_secs_f64();
                    if !interrupted {
                        interrupted = true;
                        self.interrupt().await;
                        deadline = Some(tokio::time::Instant::now() + INTERRUPT_GRACE);
                    } else {
                        self.kill().await;
                        outputs.push_error(
                            "CellTimeoutError",
                            &format!("the cell exceeded the {} s timeout", fmt_secs(secs)),
                            vec![format!(
                                "The cell exceeded the {} s timeout and did not stop within {} s of an interrupt; the kernel was killed.",
                                fmt_secs(secs), INTERRUPT_GRACE.as_secs()
                            )],
                        );
                        break Some(ExecStatus::TimedOut { kernel_alive: false });
                    }
                }
            }
        };

        if status.is_none() {
            self.linger(&id, &mut outputs).await;
        }
        let execution_count = reply.as_ref().and_then(|r| r["execution_count"].as_i64());
        let status = match status {
            Some(ExecStatus::KernelDied { status }) => {
                let mut traceback = vec![format!(
                    "The kernel died while running this cell ({status})."
                )];
                let tail = self.log_tail();
                if !tail.trim().is_empty() {
                    traceback.push("The kernel's output (last lines):".into());
                    traceback.extend(tail.lines().map(str::to_string));
                }
                outputs.push_error(
                    "DeadKernelError",
                    &format!("the kernel died while running this cell ({status})"),
                    traceback,
                );
                ExecStatus::KernelDied { status }
            }
            Some(other) => other,
            None if interrupted => {
                let secs = timeout.unwrap_or_default().as_secs_f64();
                outputs.push_error(
                    "CellTimeoutError",
                    &format!("the cell exceeded the {} s timeout", fmt_secs(secs)),
                    vec![format!(
                        "The cell exceeded the {} s timeout and was interrupted.",
                        fmt_secs(secs)
                    )],
                );
                ExecStatus::TimedOut { kernel_alive: true }
            }
            None => {
                let reply = reply.unwrap_or(Value::Null);
                let reply_status = reply["status"].as_str().unwrap_or("ok");
                if reply_status != "ok" && !outputs.has_error() {
                    // Some kernels only put the error in the reply.
                    let ename = reply["ename"]
                        .as_str()
                        .unwrap_or(if reply_status == "aborted" {
                            "Aborted"
                        } else {
                            "Error"
                        });
                    let evalue = reply["evalue"]
                        .as_str()
                        .unwrap_or(if reply_status == "aborted" {
                            "the kernel aborted the execution"
                        } else {
                            ""
                        });
                    let traceback = reply["traceback"]
                        .as_array()
                        .map(|t| {
                            t.iter()
                                .filter_map(|l| l.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    outputs.push_error(ename, evalue, traceback);
                }
                if reply_status != "ok" || outputs.has_error() {
                    ExecStatus::Error
                } else {
                    ExecStatus::Ok
                }
            }
        };
        let mut exec = outputs.finish(execution_count, status, started.elapsed());
        if exec.status == ExecStatus::Ok && self.detect_panics {
            if let Some(text) = rust_panic(&exec.outputs) {
                exec.status = ExecStatus::Error;
                exec.error_text = text;
            }
        }
        exec
    }

    /// After idle and the reply, a few milliseconds more for outputs still in flight (a
    /// kernel may forward its process's stdout from another thread, as evcxr does).
    async fn linger(&mut self, id: &str, outputs: &mut Outputs) {
        let cap = tokio::time::Instant::now() + LINGER_MAX;
        let mut until = tokio::time::Instant::now() + LINGER;
        loop {
            tokio::select! {
                ev = self.rx.recv(), if self.open_readers > 0 => match ev {
                    Some(Event::Message(m)) if m.parent_id.as_deref() == Some(id) => {
                        if m.channel == Channel::IoPub && m.msg_type != "status" {
                            outputs.handle(&m.msg_type, &m.content);
                            until = (tokio::time::Instant::now() + LINGER).min(cap);
                        }
                    }
                    Some(Event::Message(_)) | Some(Event::Bad(..)) => {}
                    Some(Event::Closed) | None => self.open_readers = self.open_readers.saturating_sub(1),
                },
                _ = sleep_until(until) => return,
            }
        }
    }

    /// Interrupts the running cell: `interrupt_request` on control for kernels whose
    /// spec says `"interrupt_mode": "message"`, SIGINT to the kernel's process group
    /// otherwise (Jupyter's default). The aula kernel's proxy (kernel/proxy.py) turns the
    /// message into aula's stop flag, so a timed-out training or extraction stops at its
    /// next batch and the session's variables survive for the cells after it.
    pub async fn interrupt(&mut self) {
        if self.interrupt_by_message {
            let msg = stamp(InterruptRequest {}.into());
            if let Err(e) = self.control.send(msg).await {
                self.warnings.push(format!("interrupt_request failed: {e}"));
            }
        } else {
            self.signal(libc::SIGINT);
        }
    }

    fn signal(&mut self, sig: libc::c_int) {
        #[cfg(unix)]
        if let Some(pid) = self.pid {
            if !self.is_dead() {
                // SAFETY: plain kill(2) on the process group this runner created.
                unsafe {
                    libc::kill(-pid, sig);
                }
            }
        }
    }

    /// Kills the kernel and its process group now.
    pub async fn kill(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.pid {
            // SAFETY: kill(2) on the group this runner created (the group outlives its
            // leader while children of the kernel are still in it).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.child.start_kill();
        if let Ok(status) = self.child.wait().await {
            self.exit.get_or_insert(status);
        }
    }

    /// Back to the normal CPU priority (nice 0) for the kernel's whole process group, after
    /// [`Kernel::start_in_background`]. Lowering a process's niceness needs privilege
    /// (root, CAP_SYS_NICE or RLIMIT_NICE): without it the kernel stays at nice 19, which
    /// slows it only while something else wants the CPU. Returns whether it took effect.
    pub fn normal_priority(&self) -> bool {
        #[cfg(unix)]
        if let Some(pid) = self.pid {
            // SAFETY: setpriority(2) on the process group this runner created for the kernel.
            return unsafe { libc::setpriority(libc::PRIO_PGRP, pid as libc::id_t, 0) } == 0;
        }
        false
    }

    /// `shutdown_request` on control, a few seconds to exit, then a kill.
    pub async fn shutdown(mut self) {
        if !self.is_dead() {
            let msg = stamp(ShutdownRequest { restart: false }.into());
            if self.control.send(msg).await.is_ok() {
                tokio::select! {
                    _ = self.child.wait() => {}
                    _ = sleep(SHUTDOWN_GRACE) => {}
                }
            }
        }
        self.kill().await;
        for r in self.readers.drain(..) {
            r.abort();
        }
    }

    fn exit_description(&mut self) -> String {
        self.is_dead();
        match &self.exit {
            Some(s) => describe_status(s),
            None => "it stopped answering".into(),
        }
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        for r in self.readers.drain(..) {
            r.abort();
        }
        #[cfg(unix)]
        if let (Some(pid), None) = (self.pid, self.exit) {
            if let Ok(None) = self.child.try_wait() {
                // SAFETY: kill(2) on the group this runner created.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// `2`, `0.5`, `600`.
pub fn fmt_secs(secs: f64) -> String {
    if secs.fract() == 0.0 {
        format!("{}", secs as u64)
    } else {
        format!("{secs}")
    }
}
