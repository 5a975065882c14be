//! Progress of apply and destroy, on stderr: a spinner per running action on a terminal
//! (indicatif), one plain line per event otherwise (CI logs, pipes).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Reporter {
    multi: Option<MultiProgress>,
}

pub struct Task {
    address: String,
    bar: Option<ProgressBar>,
    multi: Option<MultiProgress>,
    started: Instant,
}

impl Reporter {
    pub fn new() -> Self {
        let multi = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self { multi }
    }

    /// Starts one action: `verb` is `Creating`, `Modifying`, `Replacing`, `Destroying`.
    pub fn start(&self, address: &str, verb: &str) -> Task {
        let bar = self.multi.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new_spinner());
            bar.set_style(ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]").unwrap());
            bar.set_prefix(address.to_string());
            bar.set_message(format!("{verb}..."));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if bar.is_none() {
            eprintln!("{address}: {verb}...");
        }
        Task { address: address.to_string(), bar, multi: self.multi.clone(), started: Instant::now() }
    }

    pub fn line(&self, text: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None => eprintln!("{text}"),
        }
    }
}

impl Default for Reporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Task {
    /// A status while the action waits (a compute environment turning VALID).
    pub fn status(&self, text: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(text.to_string());
        }
    }

    /// The action ended: `outcome` is `Creation complete`, `Destruction failed: ...`.
    pub fn finish(self, outcome: &str) {
        let line = format!("{}: {outcome} after {}s", self.address, self.started.elapsed().as_secs());
        match (&self.bar, &self.multi) {
            (Some(bar), Some(m)) => {
                bar.finish_and_clear();
                m.remove(bar);
                let _ = m.println(line);
            }
            _ => eprintln!("{line}"),
        }
    }
}
