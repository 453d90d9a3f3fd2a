//! `aula_runner`: runs Jupyter notebooks headless, cell by cell, through the real Jupyter
//! protocol, against any kernel installed with a kernelspec (the evcxr-based "Rust · aula"
//! kernel in the lesson; ipykernel in this crate's tests).
//!
//! - [`kernelspec`] finds a kernel's `kernel.json` in the standard Jupyter data dirs.
//! - [`kernel`] starts a kernel (connection file, free ports, random HMAC key), executes
//!   code over ZeroMQ, interrupts, detects its death and shuts it down.
//! - [`notebook`] reads nbformat 4 notebooks as JSON values (nothing unknown is lost),
//!   validates them and writes them atomically.
//! - [`runner`] the three modes (`clase`, `instructor`, `check`) and their reports.
//! - [`html`] the HTML rendering through `jupyter nbconvert`.

pub mod ansi;
pub mod html;
pub mod kernel;
pub mod kernelspec;
pub mod notebook;
pub mod runner;

pub use kernelspec::KernelSpec;
pub use runner::{
    run, CellFailure, FailureKind, InputError, Mode, NotebookReport, Observer, Options, Printer,
};
