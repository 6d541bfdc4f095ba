//! What the user sees while lab works: one progress line per machine, one bar per download, warnings. Only this
//! module knows indicatif. On a terminal it draws bars; elsewhere (logs, CI) it prints one plain line per change.
//! Everything goes to stderr; results (`--json`) go to stdout.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Ui {
    multi: MultiProgress,
    fancy: bool,
    quiet: bool,
    bars: Mutex<HashMap<String, ProgressBar>>,
    started: Instant,
}

/// One line on stderr, its colour kept only where it is wanted (`crate::term`); a reader that went away (`lab fetch 2>&1 | head -1`) is not an error: the line is dropped
/// and the work goes on.
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(anstream::stderr().lock(), "{line}");
}

/// `warning: TEXT`, the tag in colour.
pub fn warning(text: &str) -> String {
    crate::term::tagged(crate::term::WARNING, "warning", text)
}

impl Ui {
    pub fn new(quiet: bool) -> Ui {
        let fancy = !quiet && std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if fancy {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        Ui {
            multi,
            fancy,
            quiet,
            bars: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }

    fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        if self.fancy {
            self.multi.suspend(|| say(text));
        } else {
            say(&format!(
                "[{:>6.1}s] {text}",
                self.started.elapsed().as_secs_f64()
            ));
        }
    }

    pub fn info(&self, text: &str) {
        self.line(text);
    }

    /// Warnings show even with `--quiet`.
    pub fn warn(&self, text: &str) {
        if self.fancy {
            self.multi.suspend(|| say(&warning(text)));
        } else {
            say(&warning(text));
        }
    }

    /// Sets the status line of one machine (or other named task).
    pub fn status(&self, who: &str, text: &str) {
        if !self.fancy {
            self.line(&format!("{who}: {text}"));
            return;
        }
        let mut bars = self.bars.lock().expect("ui lock");
        let bar = bars.entry(who.to_string()).or_insert_with(|| {
            let b = self.multi.add(ProgressBar::new_spinner());
            b.set_style(
                ProgressStyle::with_template("{spinner} {prefix:<16} {wide_msg} {elapsed:>4}")
                    .expect("style"),
            );
            b.set_prefix(who.to_string());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        bar.set_message(text.to_string());
    }

    /// Ends a machine's line with a final word.
    pub fn done(&self, who: &str, text: &str) {
        if !self.fancy {
            self.line(&format!("{who}: {text}"));
            return;
        }
        if let Some(b) = self.bars.lock().expect("ui lock").remove(who) {
            b.set_style(ProgressStyle::with_template("  {prefix:<16} {wide_msg}").expect("style"));
            b.finish_with_message(text.to_string());
        }
    }

    /// A byte-progress bar (downloads, uploads).
    pub fn bytes_start(&self, who: &str, total: Option<u64>) {
        if !self.fancy {
            self.line(&format!("{who}: started"));
            return;
        }
        let b = self.multi.add(match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::no_length(),
        });
        b.set_style(
            ProgressStyle::with_template(
                "  {prefix:<28!} {bar:30} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta:>4}",
            )
            .expect("style"),
        );
        b.set_prefix(who.to_string());
        self.bars
            .lock()
            .expect("ui lock")
            .insert(format!("bytes:{who}"), b);
    }

    pub fn bytes_set(&self, who: &str, done: u64) {
        if let Some(b) = self
            .bars
            .lock()
            .expect("ui lock")
            .get(&format!("bytes:{who}"))
        {
            b.set_position(done);
        }
    }

    pub fn bytes_done(&self, who: &str, text: &str) {
        match self
            .bars
            .lock()
            .expect("ui lock")
            .remove(&format!("bytes:{who}"))
        {
            Some(b) => {
                b.set_style(
                    ProgressStyle::with_template("  {prefix:<28!} {wide_msg}").expect("style"),
                );
                b.finish_with_message(text.to_string());
            }
            None => self.line(&format!("{who}: {text}")),
        }
    }
}

impl crate::download::Reporter for Ui {
    fn start(&self, name: &str, total: Option<u64>) {
        self.bytes_start(name, total);
    }
    fn advance(&self, name: &str, bytes: u64) {
        self.bytes_set(name, bytes);
    }
    fn finish(&self, name: &str, cached: bool) {
        self.bytes_done(
            name,
            if cached {
                "cached"
            } else {
                "downloaded, verified"
            },
        );
    }
    fn message(&self, text: &str) {
        self.info(text);
    }
}
