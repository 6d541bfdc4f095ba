//! The phases of a command. Each command is a short list of phases; `LAB_LOG=lab=debug` prints each as it ends
//! with its duration (how the benchmarks' figures are explained), and the test-only fault injection stops lab dead
//! at a phase's end.
//!
//! Fault injection (for tests only, documented in the README): `LAB_TEST_FAULT=COMMAND:PHASE:FAULT` makes `lab`
//! act on that fault right after PHASE of COMMAND ends: `kill` (SIGKILL to itself: sudden death, as a power cut
//! or `kill -9`), `int` (SIGINT, as one Ctrl-C) or `int2` (two: also skip waiting for slow guests).

use crate::cancel::Cancel;
use std::time::Instant;

pub(crate) struct Phases {
    command: &'static str,
    start: Instant,
    last: Instant,
    cancel: Cancel,
}

impl Phases {
    pub(crate) fn new(command: &'static str, cancel: &Cancel) -> Self {
        let now = Instant::now();
        Phases {
            command,
            start: now,
            last: now,
            cancel: cancel.clone(),
        }
    }

    /// Records that `phase` just ended.
    pub(crate) fn done(&mut self, phase: &'static str) {
        let now = Instant::now();
        tracing::debug!(
            command = self.command,
            phase,
            ms = (now - self.last).as_millis() as u64,
            total_ms = (now - self.start).as_millis() as u64,
            "phase done"
        );
        self.last = now;
        fault(self.command, phase, &self.cancel);
    }
}

/// A point inside a phase where a fault can be injected too (say, half-way through an upload), logged like a phase
/// end. Callable from a blocking thread.
pub(crate) fn point(command: &'static str, phase: &'static str, cancel: &Cancel) {
    tracing::debug!(command, phase, "phase done");
    fault(command, phase, cancel);
}

/// The fault `LAB_TEST_FAULT` asks for at this phase, if any.
fn wanted(command: &str, phase: &str) -> Option<String> {
    let spec = std::env::var("LAB_TEST_FAULT").ok()?;
    let mut parts = spec.splitn(3, ':');
    let (c, p, f) = (parts.next()?, parts.next()?, parts.next()?);
    (c == command && p == phase).then(|| f.to_string())
}

fn fault(command: &str, phase: &str, cancel: &Cancel) {
    let Some(f) = wanted(command, phase) else {
        return;
    };
    crate::ui::say(&format!("LAB_TEST_FAULT: {f} after {command}:{phase}"));
    match f.as_str() {
        // SAFETY: sending a signal to this process has no memory-safety preconditions.
        "kill" => unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        },
        "int" | "int2" => {
            let times = if f == "int2" { 2 } else { 1 };
            for _ in 0..times {
                // SAFETY: as above; the handler installed by `Cancel::listen` turns it into a token.
                unsafe {
                    libc::kill(libc::getpid(), libc::SIGINT);
                }
            }
            // The handler runs on the runtime; act on the interruption now, as a Ctrl-C that came at this
            // instant would, so the test is deterministic.
            if times == 2 {
                cancel.hurry();
            } else {
                cancel.interrupt();
            }
        }
        other => crate::ui::say(&format!(
            "LAB_TEST_FAULT: unknown fault `{other}` (kill, int, int2)"
        )),
    }
}
