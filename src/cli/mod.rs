//! The command line: arguments (`args.rs`), what each command does (`commands.rs`), how results are printed
//! (`print.rs`), and here the run itself: connecting, the lab's lock and the repair of what a killed command left,
//! errors as one line with a hint, and the exit code.
//! Exit codes: 0 success, 1 failure while running, 2 bad usage or bad lab file, 130 interrupted.

mod args;
mod commands;
mod print;
mod tree;

pub use args::{Args, Command};

use crate::cancel::Cancel;
use crate::libvirt::{self, Shared};
use crate::model::{self, Lab};
use crate::orchestrator::{self as orch, Context};
use crate::state::{Dirs, LabLock};
use crate::ui::Ui;
use clap::Parser;
use std::sync::Arc;
use std::time::Duration;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_INTERRUPTED: i32 = 130;

/// A failure on its way to the user: a one-line message, an optional hint, an exit code.
pub struct Failure {
    pub message: String,
    pub hint: Option<String>,
    pub code: i32,
}

impl Failure {
    pub fn usage(message: String, hint: Option<String>) -> Failure {
        Failure {
            message,
            hint,
            code: EXIT_USAGE,
        }
    }
}

impl From<orch::Error> for Failure {
    fn from(e: orch::Error) -> Self {
        let code = if e.is_interrupted() {
            EXIT_INTERRUPTED
        } else if e.is_usage() {
            EXIT_USAGE
        } else {
            EXIT_FAILURE
        };
        Failure {
            hint: e.hint(),
            message: chain(&e),
            code,
        }
    }
}

impl From<model::LabFileError> for Failure {
    fn from(e: model::LabFileError) -> Self {
        // `{:#}`: the annotated source in colour (stripped again where colour is not wanted).
        Failure::usage(format!("{e:#}"), None)
    }
}

impl From<crate::state::StateError> for Failure {
    fn from(e: crate::state::StateError) -> Self {
        Failure::from(orch::Error::from(e))
    }
}

impl From<libvirt::Error> for Failure {
    fn from(e: libvirt::Error) -> Self {
        Failure::from(orch::Error::from(e))
    }
}

impl From<crate::download::Error> for Failure {
    fn from(e: crate::download::Error) -> Self {
        Failure::from(orch::Error::from(e))
    }
}

/// The error and its causes on one line, as `lab` prints them: a cause already in the text is skipped.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

pub fn main() -> i32 {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        }
    };
    let filter = std::env::var("LAB_LOG").unwrap_or_else(|_| {
        match args.global.verbose {
            0 => "warn",
            1 => "lab=debug",
            _ => "lab=trace",
        }
        .to_string()
    });
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(crate::term::stderr_has_colour())
        .init();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let cancel = Cancel::new();
    let result = rt.block_on(async {
        cancel.listen(print::err);
        commands::run(args, cancel.clone()).await
    });
    if libvirt::abandoned() {
        // A libvirt call that was given up on (a host that never answered) must not hold the exit: its thread
        // stays blocked in a read while the process ends.
        rt.shutdown_timeout(Duration::from_millis(500));
    } else {
        // Every other blocking task has finished; the pool's threads are joined before the process exits, so no
        // thread is still tearing down libvirt's per-thread state while exit runs.
        drop(rt);
    }
    match result {
        Ok(code) => code,
        Err(f) => {
            print::error(&f.message);
            if let Some(h) = f.hint {
                print::err(&format!(
                    "  {}",
                    crate::term::tagged(crate::term::HINT, "hint", &h)
                ));
            }
            // Interrupted is a fact of the command, not of the error that came back: a Ctrl-C typed at a terminal
            // also reaches child processes, whose failure is then an ordinary error.
            if f.code == EXIT_FAILURE && cancel.is_interrupted() {
                EXIT_INTERRUPTED
            } else {
                f.code
            }
        }
    }
}

/// Opens the libvirt connection. A remote host says so first; a host that does not answer fails within
/// `LAB_CONNECT_TIMEOUT` with a hint (libvirt's own ssh transport would wait for minutes), and Ctrl-C ends the wait.
async fn connect(uri: &str, ui: &Ui, cancel: &Cancel) -> Result<Shared, Failure> {
    if let Some(j) = crate::ssh::jump_host(uri) {
        ui.info(&format!("connecting to {} ({uri})", j.destination));
    }
    match libvirt::connect(uri, cancel).await {
        Ok(host) => Ok(Arc::new(host?)),
        Err(_) => Err(Failure::from(orch::Error::Interrupted(format!(
            "stopped while connecting to {uri}; nothing was changed"
        )))),
    }
}

fn download_options(args: &Args, lab: &Lab) -> crate::download::Options {
    crate::download::Options {
        offline: args.global.offline,
        mirror: args.global.mirror.clone().or_else(|| lab.mirror.clone()),
        ..Default::default()
    }
}

/// How a command treats the lab's lock.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lock {
    /// Held for the whole command; another command on the lab is waited for.
    Hold,
    /// Only looked at: when no command holds it, what a killed one left is repaired first, then it is let go.
    Peek,
}

/// A command's context, with the lab's lock when it holds it, after repairing what a killed command left.
struct Session {
    ctx: Context,
    lock: Option<LabLock>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // A command that leaves no lab (it never existed, failed on its first `up`, or was destroyed) leaves no
        // lock file and no empty folders either.
        if let Some(l) = &self.lock {
            if !self.ctx.lab_dir().exists() {
                l.remove_file();
                self.ctx.dirs.remove_empty();
            }
        }
    }
}

async fn open(
    args: &Args,
    lab: Lab,
    ui: Arc<Ui>,
    cancel: &Cancel,
    lock: Lock,
) -> Result<Session, Failure> {
    let hv = connect(&args.global.connect, &ui, cancel).await?;
    let ctx = Context {
        download: download_options(args, &lab),
        lab,
        hv,
        dirs: Dirs::from_env()?,
        ui,
        accel: args.global.accel.as_str().to_string(),
        cancel: cancel.clone(),
    };
    let held = match lock {
        Lock::Hold => {
            let ui = ctx.ui.clone();
            let name = ctx.lab.name.clone();
            Some(
                LabLock::acquire_async(
                    &ctx.dirs,
                    &ctx.lab.name,
                    Duration::from_secs(3600),
                    move |pid| {
                        ui.warn(&format!(
                            "waiting for another lab command on lab `{name}`{} to finish",
                            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
                        ))
                    },
                )
                .await?,
            )
        }
        Lock::Peek => LabLock::try_acquire(&ctx.dirs, &ctx.lab.name)?,
    };
    if held.is_some() {
        orch::repair_if_pending(&ctx).await?;
    }
    let session = Session { ctx, lock: held };
    Ok(if lock == Lock::Peek {
        // Let go at once (the Drop above tidies up when there is no lab).
        Session {
            ctx: session.ctx.clone(),
            lock: None,
        }
    } else {
        session
    })
}
