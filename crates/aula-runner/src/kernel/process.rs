//! The kernel as an operating-system process: the registry of live kernels (so a runner
//! stopped by a signal still kills them), process-group kills, the private connection
//! file, exit statuses and the tail of the kernel's own log.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;

/// Lines of the kernel's own stdout/stderr shown when it fails.
const LOG_TAIL_LINES: usize = 30;

/// The kernels this process has started and not yet dropped: their runtime folders
/// (connection file with the HMAC key, log) and process groups. A runner stopped by a
/// signal runs no destructor, so the handler calls [`abandon_all`] instead.
pub(super) static LIVE: std::sync::Mutex<Vec<(PathBuf, Option<i32>)>> =
    std::sync::Mutex::new(Vec::new());

pub(super) fn live() -> std::sync::MutexGuard<'static, Vec<(PathBuf, Option<i32>)>> {
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A kernel's entry in [`LIVE`], removed when the kernel (or a failed start) is dropped.
pub(super) struct LiveKernel(PathBuf);

impl LiveKernel {
    pub(super) fn register(dir: &Path) -> LiveKernel {
        live().push((dir.to_path_buf(), None));
        LiveKernel(dir.to_path_buf())
    }

    pub(super) fn set_group(&self, pid: Option<i32>) {
        if let Some(entry) = live().iter_mut().find(|(d, _)| *d == self.0) {
            entry.1 = pid;
        }
    }
}

impl Drop for LiveKernel {
    fn drop(&mut self) {
        live().retain(|(d, _)| *d != self.0);
    }
}

/// For a runner stopped by SIGINT/SIGTERM/SIGHUP: kills every kernel's process group
/// and removes its runtime folder, which its destructor would have done.
pub fn abandon_all() {
    for (dir, pid) in live().drain(..) {
        #[cfg(unix)]
        if let Some(pid) = pid {
            // SAFETY: kill(2) on a process group this runner created and still owns.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

pub(super) fn log_tail(dir: &Path) -> String {
    let text = std::fs::read(dir.join("kernel.log"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let text = crate::ansi::strip(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

pub(super) fn log_tail_block(dir: &Path) -> String {
    let tail = log_tail(dir);
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("\nThe kernel's output (last lines):\n{tail}")
    }
}

pub(super) fn kill_group(pid: Option<i32>) {
    #[cfg(unix)]
    if let Some(pid) = pid {
        // SAFETY: kill(2) on the process group this runner created for the kernel.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

pub(super) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// "exit status: 1", "signal 9 (SIGKILL)".
pub fn describe_status(status: &ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let name = match sig {
                libc::SIGKILL => " (SIGKILL; out of memory?)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGINT => " (SIGINT)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGBUS => " (SIGBUS)",
                _ => "",
            };
            return format!("killed by signal {sig}{name}");
        }
    }
    match status.code() {
        Some(code) => format!("exit status: {code}"),
        None => status.to_string(),
    }
}

/// Where a kernel should run: the notebook's folder, as Jupyter does.
pub fn working_dir(notebook: &Path) -> PathBuf {
    match notebook.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
