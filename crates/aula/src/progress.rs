//! Progress of long work (feature extraction, epochs): indicatif's bar on a
//! terminal; elsewhere (CI logs, `make run | tee`) a plain line every 10 %.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

pub struct Progress {
    bar: Option<ProgressBar>,
    what: String,
    len: u64,
    done: u64,
    next_report: u64,
    start: Instant,
}

impl Progress {
    pub fn new(len: u64, what: &str, unit: &str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let template = format!("{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{per_sec}}, ETA {{eta}})");
            ProgressBar::new(len)
                .with_style(ProgressStyle::with_template(&template).expect("valid template").progress_chars("=> "))
                .with_message(what.to_string())
        });
        Progress { bar, what: what.to_string(), len, done: 0, next_report: len / 10, start: Instant::now() }
    }

    pub fn inc(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(bar) => bar.inc(n),
            None if self.done >= self.next_report.max(1) && self.done < self.len => {
                let rate = self.done as f64 / self.start.elapsed().as_secs_f64();
                eprintln!("{}: {}/{} ({rate:.1}/s)", self.what, self.done, self.len);
                self.next_report += (self.len / 10).max(1);
            }
            None => {}
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
