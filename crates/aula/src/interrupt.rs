//! Stopping a long loop cleanly when the student interrupts (Keras's Ctrl-C
//! during `fit`): training, feature extraction and prediction look at a flag
//! at every batch boundary and, when it is up, return an [`Interrupted`]
//! error whose text says where they stopped and what is kept. The model keeps
//! the weights of that moment and its [`history`](crate::model::Sequential::history)
//! the complete epochs.
//!
//! In the "Rust · aula" Jupyter kernel the flag is a file, `$AULA_INTERRUPT_FILE`,
//! that the kernel's proxy creates when Jupyter asks for an interrupt and
//! removes when the cell ends (kernel/README.md). A file and not a signal or a
//! static: evcxr links every cell with its own copy of this crate, so a static
//! set by one cell's code would not be the one another cell's loop reads; the
//! file is the same for all of them. Looking costs one `stat` per batch
//! (microseconds against a batch's tens of milliseconds or more).
//!
//! Outside the kernel, [`request`] raises the same flag in-process.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);
/// Polls left before a test's stop arrives (0: none scheduled).
static COUNTDOWN: AtomicUsize = AtomicUsize::new(0);

/// The variable naming the kernel's flag file.
pub const FLAG_FILE_VAR: &str = "AULA_INTERRUPT_FILE";

/// Asks the running loop (any thread of this process) to stop at its next batch.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Schedules a stop at the `polls`-th look at the flag from now, as if the
/// user interrupted exactly then: tests use it to stop at a chosen batch.
#[doc(hidden)]
pub fn request_after_polls(polls: usize) {
    COUNTDOWN.store(polls, Ordering::SeqCst);
}

/// Whether a stop was asked for (in-process, or through the kernel's flag file).
pub fn requested() -> bool {
    if REQUESTED.load(Ordering::Relaxed) {
        return true;
    }
    if COUNTDOWN.load(Ordering::Relaxed) > 0 && COUNTDOWN.fetch_sub(1, Ordering::SeqCst) == 1 {
        return true;
    }
    std::env::var_os(FLAG_FILE_VAR).is_some_and(|path| std::path::Path::new(&path).exists())
}

/// Lowers the flag: one interrupt stops one loop.
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
    COUNTDOWN.store(0, Ordering::SeqCst);
    if let Some(path) = std::env::var_os(FLAG_FILE_VAR) {
        let _ = std::fs::remove_file(path);
    }
}

/// At a batch boundary: when a stop was asked for, lowers the flag and
/// returns [`Interrupted`] with `message()` (in Spanish: the student reads it).
pub(crate) fn check(message: impl FnOnce() -> String) -> anyhow::Result<()> {
    if !requested() {
        return Ok(());
    }
    clear();
    Err(Interrupted { message: message() }.into())
}

/// Held while one of aula's loops runs: in the kernel, the file
/// `$AULA_INTERRUPT_FILE.loop` exists meanwhile, so the proxy knows the cell
/// will stop by itself at the next batch boundary (however long a batch takes
/// on this machine) and does not fall back to killing it after a few seconds.
pub(crate) struct Running(());

static DEPTH: AtomicUsize = AtomicUsize::new(0);

fn loop_marker() -> Option<std::ffi::OsString> {
    std::env::var_os(FLAG_FILE_VAR).map(|mut path| {
        path.push(".loop");
        path
    })
}

impl Running {
    pub(crate) fn start() -> Running {
        if DEPTH.fetch_add(1, Ordering::SeqCst) == 0 {
            if let Some(marker) = loop_marker() {
                let _ = std::fs::write(marker, b"");
            }
        }
        Running(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if DEPTH.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Some(marker) = loop_marker() {
                let _ = std::fs::remove_file(marker);
            }
        }
    }
}

/// A loop stopped by an interrupt (see the module). `downcast_ref::<Interrupted>()`
/// tells it from other errors.
#[derive(Debug, Clone)]
pub struct Interrupted {
    pub message: String,
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Interrupted {}
