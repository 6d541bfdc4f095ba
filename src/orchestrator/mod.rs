//! Orchestration: plans each command, runs the machines in parallel (one task each, libvirt calls on the blocking
//! pool), and records what it made. Every command is a list of phases (`phases.rs`); each either finishes or is
//! rolled back when the user interrupts, and writes a pending mark first so that a later command repairs what a
//! killed one left (`repair.rs`).

mod build;
pub mod checkpoints;
mod destroy;
mod guest;
mod machines;
pub(crate) mod phases;
mod placement;
pub mod power;
mod repair;
mod restore;
mod snapshot;
pub mod up;

pub use build::{check, restore, CheckResult};
pub use destroy::destroy;
pub use guest::{console_tail, dead_boot};
pub(crate) use machines::ensure_space;
pub use repair::repair_if_pending;
pub use snapshot::snapshot;
pub use up::{up, UpOptions};

use crate::cancel::{Cancel, Interrupted};
use crate::libvirt::{self, call, DomainState, Shared};
use crate::model::Lab;
use crate::render::names;
use crate::ssh::{self, Keys, Target};
use crate::state::{Dirs, State, StateError};
use crate::ui::Ui;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Libvirt(#[from] libvirt::Error),
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Ssh(#[from] ssh::SshError),
    #[error(transparent)]
    Download(#[from] crate::download::Error),
    #[error(transparent)]
    Kit(#[from] crate::kit::KitError),
    #[error("lab `{0}` is not up")]
    NotUp(String),
    #[error("lab `{lab}` lives on {uri}, not on {wanted}")]
    OtherUri {
        lab: String,
        uri: String,
        wanted: String,
    },
    #[error("`{name}` exists in libvirt but was not made by lab `{lab}`")]
    NameTaken { lab: String, name: String },
    #[error("no machine `{machine}` in lab `{lab}`{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownMachine {
        lab: String,
        machine: String,
        known: String,
        suggestion: Option<String>,
    },
    #[error("{machine} is not running ({state})")]
    NotRunning { machine: String, state: String },
    #[error("{machine} is not on the lab's network {network} (or that network is down)")]
    OffNetwork { machine: String, network: String },
    #[error("lab `{lab}` is not up")]
    NotUpFor { lab: String, checkpoint: String },
    #[error("{machine} did not answer SSH within {secs} s{console}")]
    BootTimeout {
        machine: String,
        secs: u64,
        console: String,
    },
    #[error("{machine} cannot boot: {why}{console}")]
    BootFailed {
        machine: String,
        why: String,
        console: String,
    },
    #[error("{machine} stopped while booting (state: {state}){console}")]
    Died {
        machine: String,
        state: String,
        console: String,
    },
    #[error("{machine}: cloud-init finished with errors: {detail}")]
    CloudInit { machine: String, detail: String },
    #[error("{machine}: {what} failed with exit code {code}{detail}")]
    Remote {
        machine: String,
        what: String,
        code: i32,
        detail: String,
    },
    #[error("{machine}: cannot pack the cloud-init seed: {message}")]
    Seed { machine: String, message: String },
    #[error("{machine}: {path} has sha256 {got} inside the machine, expected {want}")]
    PlacedMismatch {
        machine: String,
        path: String,
        got: String,
        want: String,
    },
    #[error("{machine}: SSH did not answer after the restore ({detail}){console}")]
    SshNotBack {
        machine: String,
        detail: String,
        console: String,
    },
    #[error("{machine}: could not set the clock after the restore: {detail}")]
    Clock { machine: String, detail: String },
    #[error("{machine}: the file systems frozen in the checkpoint could not be thawed: {detail}")]
    Thaw { machine: String, detail: String },
    #[error("checkpoint `{name}` exists (taken {created})")]
    CheckpointExists { name: String, created: String },
    #[error("checkpoint `{name}` cannot be replaced: {why}")]
    CheckpointInUse { name: String, why: String },
    #[error("no checkpoint `{name}`{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    NoCheckpoint {
        name: String,
        suggestion: Option<String>,
    },
    #[error("checkpoint `{name}` is not built")]
    NotBuilt { name: String },
    #[error("checkpoint `{name}` is stale (the lab file changed it)")]
    Stale { name: String },
    #[error("checkpoint `{name}` is damaged: {machine}'s {what} {volume} is missing")]
    Damaged {
        name: String,
        machine: String,
        what: &'static str,
        volume: String,
    },
    #[error(
        "checkpoint `{name}` is damaged: {machine}'s memory state {volume} is not whole: {why}"
    )]
    MemoryDamaged {
        name: String,
        machine: String,
        volume: String,
        why: String,
    },
    #[error("checkpoint `{name}` has children ({children})")]
    HasChildren { name: String, children: String },
    #[error("the machines run on checkpoint `{0}`")]
    InUse(String),
    #[error("the lab has no `base` checkpoint")]
    NoBase,
    #[error("the lab has no current checkpoint")]
    NoCurrent,
    #[error("`{0}` is not a checkpoint of the lab file, so it declares no checks")]
    NoChecks(String),
    #[error("not enough free space in the lab's pool ({path}): {need} needed, {free} free")]
    NoSpace {
        path: String,
        need: String,
        free: String,
    },
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Several machines (or items) failed at once; each error keeps its type.
    #[error("{} problem(s) while {what}:\n  {}", errors.len(), errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Many { what: String, errors: Vec<Error> },
    /// The user interrupted the command; the text says where the lab stands.
    #[error("interrupted: {0}")]
    Interrupted(String),
}

impl Error {
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Libvirt(e) => e.hint(),
            Error::Host(e) => e.hint(),
            Error::State(e) => e.hint(),
            Error::Ssh(e) => e.hint(),
            Error::Download(e) => e.hint(),
            Error::Kit(e) => e.hint(),
            Error::NotUp(_) => Some("run `lab up` first".into()),
            Error::OtherUri { uri, .. } => Some(format!("use --connect {uri}, or `lab destroy` it there first")),
            Error::NameTaken { .. } => Some("rename the lab (name = … in the lab file) or remove that object".into()),
            Error::UnknownMachine { known, .. } => Some(format!("the lab's machines: {known}")),
            Error::OffNetwork { .. } => Some("`lab up` repairs the lab's network".into()),
            Error::NotUpFor { checkpoint, .. } => {
                Some(format!("`lab up --at {checkpoint}` makes the lab and goes there"))
            }
            Error::NotRunning { state, .. } if state == "absent" => Some("`lab up` makes and starts the lab".into()),
            Error::NotRunning { .. } => Some("`lab start` starts a stopped lab (`lab up` does too)".into()),
            Error::BootTimeout { .. } | Error::Died { .. } => {
                Some("the console log above shows how far the machine got; LAB_BOOT_TIMEOUT=SECONDS waits longer".into())
            }
            Error::BootFailed { .. } => Some(
                "the console lines above show why; a damaged image or disk is made again by `lab destroy` and `lab up`"
                    .into(),
            ),
            Error::CloudInit { machine, .. } => Some(format!("`lab ssh {machine} -- sudo cat /var/log/cloud-init.log` shows the details")),
            Error::SshNotBack { .. } | Error::Clock { .. } | Error::Thaw { .. } => {
                Some("`lab restore` of the same checkpoint again usually fixes it; `lab doctor` checks the host".into())
            }
            Error::CheckpointExists { .. } => Some("--force replaces it, or take another name".into()),
            Error::CheckpointInUse { .. } => Some("take a new name".into()),
            Error::NoCheckpoint { .. } => Some("`lab checkpoints` lists them".into()),
            Error::NotBuilt { .. } => Some("without --no-build lab builds it".into()),
            Error::Stale { .. } => Some("without --no-build lab rebuilds it".into()),
            Error::Damaged { .. } | Error::MemoryDamaged { .. } => {
                Some("nothing was changed; `lab checkpoint rm` removes the damaged checkpoint".into())
            }
            Error::HasChildren { .. } => Some("--recursive removes them too".into()),
            Error::InUse(_) => Some("restore another checkpoint first".into()),
            Error::NoBase => Some("`lab destroy` and `lab up` make a new one".into()),
            Error::NoCurrent | Error::NoChecks(_) => Some("name a checkpoint: `lab check NAME`".into()),
            Error::NoSpace { .. } => Some(
                "free space there, remove checkpoints (`lab checkpoint rm`), take a --disk-only snapshot, or set \
                 LAB_POOL_ROOT for new labs"
                    .into(),
            ),
            Error::Many { errors, .. } => {
                // The distinct hints of the errors, in order.
                let mut hints: Vec<String> = Vec::new();
                for h in errors.iter().filter_map(Error::hint) {
                    if !hints.contains(&h) {
                        hints.push(h);
                    }
                }
                (!hints.is_empty()).then(|| hints.join("; "))
            }
            _ => None,
        }
    }

    /// Collects several errors into one (`destroy` and parallel work go on past failures).
    pub fn many(what: &str, errors: Vec<Error>) -> Result<()> {
        match Error::all(what, errors) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// One error for several, or None when there are none.
    pub fn all(what: &str, errors: Vec<Error>) -> Option<Error> {
        match errors.len() {
            0 => None,
            1 => errors.into_iter().next(),
            _ => Some(Error::Many {
                what: what.into(),
                errors,
            }),
        }
    }

    /// The error says the command was interrupted (or one of several errors does). Whether to undo work is
    /// decided from the command's token (`Cancel::is_interrupted`), not from this: a Ctrl-C typed at a terminal
    /// may reach a child process first, and its failure is then an ordinary error.
    pub fn is_interrupted(&self) -> bool {
        match self {
            Error::Interrupted(_) => true,
            Error::Download(e) => e.is_interrupted(),
            Error::Many { errors, .. } => errors.iter().any(Error::is_interrupted),
            _ => false,
        }
    }

    /// A name the user typed that the lab file does not know: bad usage (exit 2), found before any work.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::UnknownMachine { .. } | Error::NoCheckpoint { .. } | Error::NoChecks(_)
        )
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Everything a command works with (cheap to clone: the hypervisor and UI are shared).
#[derive(Clone)]
pub struct Context {
    pub lab: Lab,
    pub hv: Shared,
    pub dirs: Dirs,
    pub ui: Arc<Ui>,
    pub download: crate::download::Options,
    /// `auto`, `kvm` or `tcg` (`--accel`, `LAB_ACCEL`): how new machines run.
    pub accel: String,
    pub cancel: Cancel,
}

impl Context {
    pub fn lab_dir(&self) -> std::path::PathBuf {
        self.dirs.lab(&self.lab.name)
    }

    pub fn pool(&self) -> String {
        names::pool(&self.lab.name)
    }

    /// The libvirt domain of a machine.
    pub fn dom(&self, machine: &str) -> String {
        names::domain(&self.lab.name, machine)
    }

    pub fn target(&self, machine: &str) -> Result<Target> {
        let m = self.lab.machine(machine).ok_or_else(|| {
            let known: Vec<String> = self.lab.machines.iter().map(|m| m.name.clone()).collect();
            Error::UnknownMachine {
                lab: self.lab.name.clone(),
                machine: machine.into(),
                known: known.join(", "),
                suggestion: checkpoints::suggest(machine, known),
            }
        })?;
        Ok(Target::new(&self.lab, m, self.hv.uri()))
    }

    pub fn keys(&self) -> Keys {
        Keys::at(&self.lab_dir())
    }

    /// The lab's state, or NotUp.
    pub fn state(&self) -> Result<State> {
        let s = State::load(&self.lab_dir())?.ok_or_else(|| Error::NotUp(self.lab.name.clone()))?;
        if s.uri != self.hv.uri() {
            return Err(Error::OtherUri {
                lab: self.lab.name.clone(),
                uri: s.uri,
                wanted: self.hv.uri().into(),
            });
        }
        Ok(s)
    }

    pub fn save(&self, state: &State) -> Result<()> {
        Ok(state.save(&self.lab_dir())?)
    }

    /// Err(Interrupted(`then`)) once the user asked the command to stop.
    pub fn check_cancel(&self, then: &str) -> Result<()> {
        self.cancel
            .check()
            .map_err(|Interrupted| Error::Interrupted(then.to_string()))
    }
}

/// The domains that belong to this lab: stamped with its name in their metadata.
pub async fn lab_domains(ctx: &Context) -> Result<Vec<String>> {
    let lab = ctx.lab.name.clone();
    Ok(call(&ctx.hv, move |hv| {
        let mut mine = Vec::new();
        for d in hv.domains(&format!("{}{lab}-", names::PREFIX))? {
            if hv
                .domain_info(&d)?
                .is_some_and(|i| i.lab.as_deref() == Some(lab.as_str()))
            {
                mine.push(d);
            }
        }
        Ok(mine)
    })
    .await?)
}

/// The machines' states, in lab order (None: not defined).
pub async fn machine_states(ctx: &Context) -> Result<Vec<(String, Option<DomainState>)>> {
    let lab = ctx.lab.clone();
    Ok(call(&ctx.hv, move |hv| {
        lab.machines
            .iter()
            .map(|m| {
                Ok((
                    m.name.clone(),
                    hv.domain_state(&names::domain(&lab.name, &m.name))?,
                ))
            })
            .collect()
    })
    .await?)
}

/// Runs `f` for every machine of the lab at once; Ok with each machine's result when all succeeded, else every
/// error (the machines that succeeded keep their changes).
pub(crate) async fn for_each_machine<F, Fut, T>(ctx: &Context, f: F) -> Result<Vec<(String, T)>>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let (ok, errors) = each_machine(ctx, f).await;
    Error::many("working on the machines", errors)?;
    Ok(ok)
}

/// Like `for_each_machine`, but hands back the successes and the failures separately.
pub(crate) async fn each_machine<F, Fut, T>(ctx: &Context, f: F) -> (Vec<(String, T)>, Vec<Error>)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let work = ctx.lab.machines.iter().map(|m| {
        let name = m.name.clone();
        let fut = f(name.clone());
        async move { (name, fut.await) }
    });
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for (name, r) in futures_util::future::join_all(work).await {
        match r {
            Ok(v) => ok.push((name, v)),
            Err(e) => errors.push(e),
        }
    }
    (ok, errors)
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
