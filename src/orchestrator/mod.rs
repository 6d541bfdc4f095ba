//! Orchestration: plans each command, runs the machines in parallel (one task each, libvirt calls on the blocking
//! pool), and records what it made. `up`, `status`, `destroy` and the checkpoint commands live in their own files.

mod build;
pub mod checkpoints;
mod destroy;
mod guest;
mod placement;
pub mod up;

pub use build::{check, restore, CheckResult};
pub use destroy::destroy;
pub use guest::{console_tail, wait_ready};
pub use up::{up, UpOptions};

use crate::libvirt::{self, call, DomainState, Shared};
use crate::model::Lab;
use crate::render::{names, xml::METADATA_NS};
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
    #[error("no machine `{machine}` in lab `{lab}` (machines: {known})")]
    UnknownMachine {
        lab: String,
        machine: String,
        known: String,
    },
    #[error("{machine} did not answer SSH within {secs} s{console}")]
    BootTimeout {
        machine: String,
        secs: u64,
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
    #[error("{0}")]
    Failed(String),
    #[error("{count} problem(s) while {what}:\n  {list}")]
    Many {
        what: String,
        count: usize,
        list: String,
    },
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Libvirt(e) => e.hint(),
            Error::Host(e) => e.hint(),
            Error::State(e) => e.hint(),
            Error::Ssh(e) => e.hint(),
            Error::Download(e) => e.hint(),
            Error::NotUp(_) => Some("run `lab up` first".into()),
            Error::OtherUri { uri, .. } => Some(format!("use --connect {uri}, or `lab destroy` it there first")),
            Error::NameTaken { .. } => Some("rename the lab (name = … in the lab file) or remove that object".into()),
            Error::BootTimeout { .. } | Error::Died { .. } => {
                Some("the console log above shows how far the machine got; LAB_BOOT_TIMEOUT=SECONDS waits longer".into())
            }
            Error::CloudInit { machine, .. } => Some(format!("`lab ssh {machine} -- sudo cat /var/log/cloud-init.log` shows the details")),
            _ => None,
        }
    }

    /// Collects several errors into one (`destroy` and parallel work go on past failures).
    pub fn many(what: &str, errors: Vec<Error>) -> Result<()> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.into_iter().next().expect("one")),
            n => Err(Error::Many {
                what: what.into(),
                count: n,
                list: errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n  "),
            }),
        }
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
}

impl Context {
    pub fn lab_dir(&self) -> std::path::PathBuf {
        self.dirs.lab(&self.lab.name)
    }

    pub fn pool(&self) -> String {
        names::pool(&self.lab.name)
    }

    pub fn target(&self, machine: &str) -> Result<Target> {
        let m = self
            .lab
            .machine(machine)
            .ok_or_else(|| Error::UnknownMachine {
                lab: self.lab.name.clone(),
                machine: machine.into(),
                known: self
                    .lab
                    .machines
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
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
}

/// The domains that belong to this lab: stamped with its name in their metadata.
pub async fn lab_domains(ctx: &Context) -> Result<Vec<String>> {
    let lab = ctx.lab.name.clone();
    Ok(call(&ctx.hv, move |hv| {
        let mut mine = Vec::new();
        for d in hv.domains(&format!("{}{lab}-", names::PREFIX))? {
            if owned_by(&hv.domain_xml(&d)?, &lab) {
                mine.push(d);
            }
        }
        Ok(mine)
    })
    .await?)
}

/// Whether a domain's XML carries this lab's stamp.
pub fn owned_by(domain_xml: &str, lab: &str) -> bool {
    domain_xml.contains(METADATA_NS)
        && (domain_xml.contains(&format!("lab=\"{lab}\""))
            || domain_xml.contains(&format!("lab='{lab}'")))
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

/// Times the phases of one command; `LAB_LOG=lab=debug` prints each (how the benchmarks' figures are explained).
pub(crate) struct Phases {
    command: &'static str,
    start: std::time::Instant,
    last: std::time::Instant,
}

impl Phases {
    pub(crate) fn new(command: &'static str) -> Self {
        let now = std::time::Instant::now();
        Phases {
            command,
            start: now,
            last: now,
        }
    }

    /// Records that `phase` just ended.
    pub(crate) fn done(&mut self, phase: &str) {
        let now = std::time::Instant::now();
        tracing::debug!(
            command = self.command,
            phase,
            ms = (now - self.last).as_millis() as u64,
            total_ms = (now - self.start).as_millis() as u64,
            "phase done"
        );
        self.last = now;
    }
}
