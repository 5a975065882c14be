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
    /// Without a terminal: the last status printed and when, so that a long wait shows as a
    /// line when it changes and every 10 s (as Terraform's "Still creating...").
    last: std::sync::Mutex<Option<(String, Instant)>>,
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
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]").unwrap(),
            );
            bar.set_prefix(address.to_string());
            bar.set_message(format!("{verb}..."));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if bar.is_none() {
            eprintln!("{address}: {verb}...");
        }
        Task {
            address: address.to_string(),
            bar,
            multi: self.multi.clone(),
            started: Instant::now(),
            last: std::sync::Mutex::new(None),
        }
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
            return;
        }
        // The status ends with its elapsed time, "(12s)": compare what comes before.
        let key = text
            .rsplit_once(" (")
            .map(|(head, _)| head)
            .unwrap_or(text)
            .to_string();
        let mut last = self.last.lock().unwrap();
        let due = match &*last {
            Some((previous, at)) => *previous != key || at.elapsed() >= Duration::from_secs(10),
            None => true,
        };
        if due {
            eprintln!("{}: {text}", self.address);
            *last = Some((key, Instant::now()));
        }
    }

    /// The action ended: `outcome` is `Creation complete`, `Destruction failed: ...`.
    pub fn finish(self, outcome: &str) {
        let line = format!(
            "{}: {outcome} after {}s",
            self.address,
            self.started.elapsed().as_secs()
        );
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
