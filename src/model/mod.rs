//! The lab model: what a lab file says, resolved (node → defaults → built-in defaults) and validated once.
//! Everything after this module works on a [`Lab`] and never sees the raw TOML.

mod file;
mod size;
mod validate;

pub use size::{format_size, parse_size, SizeError};
pub use validate::{is_checkpoint_name, load, load_str, LabFileError, Problem};

use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The course lab compiled into the binary, with its step scripts.
pub static EMBEDDED_LAB: include_dir::Dir<'static> =
    include_dir::include_dir!("$CARGO_MANIFEST_DIR/labs/k8s-hard-way");
/// The image catalog compiled into the binary (`images/*.toml`).
pub static IMAGE_CATALOG: include_dir::Dir<'static> =
    include_dir::include_dir!("$CARGO_MANIFEST_DIR/images");

/// The checkpoint every lab has: the state right after `lab up`.
pub const BASE: &str = "base";

#[derive(Debug, Clone)]
pub struct Lab {
    pub name: String,
    /// Where the lab file came from (a path, or the embedded course lab).
    pub source: Source,
    /// sha256 of the lab file's text.
    pub file_digest: String,
    /// The lab's other files (step scripts and the files they source), relative to the lab file's folder.
    pub files: Vec<String>,
    pub network: Network,
    pub arch: Arch,
    pub mirror: Option<String>,
    pub machines: Vec<Machine>,
    /// Every image this lab may use: the embedded catalog plus the file's `[[image]]` tables.
    pub images: BTreeMap<String, Image>,
    pub downloads: Vec<Download>,
    /// In file order; every `after` names `base` or an earlier checkpoint.
    pub checkpoints: Vec<Checkpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Embedded,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Embedded => f.write_str("<embedded course lab>"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    Nat,
    Isolated,
}

#[derive(Debug, Clone)]
pub struct Network {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub mode: NetworkMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub fn host() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Arm64
        } else {
            Arch::Amd64
        }
    }
    /// The name used in download URLs (`{arch}`).
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
    /// The name libvirt and QEMU use.
    pub fn qemu(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub name: String,
    pub ip: Ipv4Addr,
    pub cpus: u32,
    /// Bytes.
    pub memory: u64,
    /// Bytes.
    pub disk: u64,
    pub image: String,
    pub user: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Qcow2,
    Raw,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Raw => "raw",
        }
    }
}

/// How a file's content is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// A pinned sha256 (lowercase hex).
    Sha256(String),
    /// A file listing sums (bare hash, or `HASH  NAME` lines; sha256 or sha512 by length).
    Url(String),
    /// `insecure_no_checksum = true`: nothing to verify against.
    None,
}

#[derive(Debug, Clone)]
pub struct Image {
    pub name: String,
    /// With `{arch}` already substituted.
    pub url: String,
    pub checksum: Checksum,
    pub format: ImageFormat,
}

#[derive(Debug, Clone)]
pub struct Download {
    pub name: String,
    pub version: Option<String>,
    /// With `{version}` and `{arch}` substituted.
    pub url: String,
    pub checksum: Checksum,
    /// Machines that receive it (all when the file names none).
    pub machines: Vec<String>,
    /// Absolute path of the file inside each machine.
    pub dest_path: String,
    /// Octal mode, e.g. 0o755.
    pub mode: u32,
}

#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub name: String,
    /// `base` or another checkpoint of the lab.
    pub after: String,
    pub description: Option<String>,
    pub aliases: Vec<String>,
    pub steps: Vec<Step>,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub machines: Vec<String>,
    pub action: StepAction,
}

#[derive(Debug, Clone)]
pub enum StepAction {
    /// A script from the lab's folder: its path as written and its text.
    Script { path: String, text: String },
    /// An inline shell command.
    Run(String),
    /// Files copied from one machine to the step's machines by the orchestrator.
    Copy(Vec<Copy>),
}

#[derive(Debug, Clone)]
pub struct Copy {
    pub from_machine: String,
    pub from_path: String,
    pub to_path: String,
    pub mode: u32,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub machines: Vec<String>,
    pub run: String,
}

impl Lab {
    pub fn machine(&self, name: &str) -> Option<&Machine> {
        self.machines.iter().find(|m| m.name == name)
    }

    pub fn image(&self, name: &str) -> &Image {
        // Validation guarantees every machine's image exists.
        &self.images[name]
    }

    /// Images that at least one machine uses, each once, in machine order.
    pub fn used_images(&self) -> Vec<&Image> {
        let mut seen = Vec::<&str>::new();
        for m in &self.machines {
            if !seen.contains(&m.image.as_str()) {
                seen.push(&m.image);
            }
        }
        seen.into_iter().map(|n| self.image(n)).collect()
    }

    /// A checkpoint by name or alias.
    pub fn checkpoint(&self, name: &str) -> Option<&Checkpoint> {
        self.checkpoints
            .iter()
            .find(|c| c.name == name || c.aliases.iter().any(|a| a == name))
    }

    /// The chain from the first checkpoint after `base` down to `name` (inclusive), or None if `name` is not
    /// defined in the lab file.
    pub fn checkpoint_chain(&self, name: &str) -> Option<Vec<&Checkpoint>> {
        let mut chain = vec![self.checkpoint(name)?];
        while chain.last()?.after != BASE {
            let parent = self.checkpoint(&chain.last()?.after)?;
            chain.push(parent);
        }
        chain.reverse();
        Some(chain)
    }

    pub fn downloads_for(&self, machine: &str) -> Vec<&Download> {
        self.downloads
            .iter()
            .filter(|d| d.machines.iter().any(|m| m == machine))
            .collect()
    }
}
