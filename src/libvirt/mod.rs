//! The seam between `lab` and libvirt: a narrow [`Hypervisor`] trait in lab's own words, with no `virt` types
//! crossing it. [`VirtHost`] is the one implementation that talks to libvirt. All host-side file work goes through
//! storage volumes here, so a lab runs the same on `qemu:///system` and on `qemu+ssh://host/system`.

mod classify;
mod connect;
mod virt_host;
pub mod xml_read;

pub use connect::{abandoned, bounded, connect, connect_timeout, timeout_hint};
pub use virt_host::VirtHost;
pub use xml_read::DomainInfo;

use ipnet::Ipv4Net;
use std::io::Read;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// libvirtd is not running or not reachable at the URI.
    Unreachable,
    /// The user may not use the connection (not in the libvirt group, polkit, …).
    PermissionDenied,
    /// The object does not exist.
    NotFound,
    /// An object of that name exists already.
    Exists,
    /// The domain's guest agent does not answer (none in the image, or not connected yet after a restore).
    AgentUnavailable,
    /// The hypervisor host's disk is full (ENOSPC, or EDQUOT for a quota) where libvirt wrote.
    NoSpace,
    /// The host did not answer within the time given (see [`bounded`]); the object is the URI for a connect.
    TimedOut,
    Other,
}

#[derive(Debug, thiserror::Error)]
#[error("libvirt: {op} {object}: {message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub op: &'static str,
    pub object: String,
    pub message: String,
}

impl Error {
    /// An error of kind [`ErrorKind::Other`] for work around libvirt calls (reading a local file for an upload, …).
    pub fn other(
        op: &'static str,
        object: impl Into<String>,
        message: impl std::fmt::Display,
    ) -> Error {
        Error {
            kind: ErrorKind::Other,
            op,
            object: object.into(),
            message: message.to_string(),
        }
    }

    /// What the user can do about it; the one place for libvirt hints.
    pub fn hint(&self) -> Option<String> {
        match self.kind {
            ErrorKind::Unreachable => Some(
                "is libvirtd running? Start it with `sudo systemctl start libvirtd` (or `sudo libvirtd -d` without \
                 systemd), or point LAB_CONNECT/--connect at a reachable URI (`lab doctor` checks the host)"
                    .into(),
            ),
            ErrorKind::PermissionDenied => Some(
                "add yourself to the libvirt group (`sudo usermod -aG libvirt $USER`, then log in again) or run lab \
                 as root (`lab doctor` checks the host)"
                    .into(),
            ),
            ErrorKind::TimedOut if self.op == "connect to" => Some(format!(
                "{} (`lab doctor --connect {}` checks the host)",
                timeout_hint(&self.object),
                self.object
            )),
            // The error's object names the pool's folder (see `VirtHost`).
            ErrorKind::NoSpace => Some(
                "free space in the pool's folder named above or point LAB_POOL_ROOT elsewhere".into(),
            ),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainState {
    Running,
    Paused,
    Shutoff,
    Crashed,
    Other,
}

impl std::fmt::Display for DomainState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DomainState::Running => "running",
            DomainState::Paused => "paused",
            DomainState::Shutoff => "shutoff",
            DomainState::Crashed => "crashed",
            DomainState::Other => "other",
        })
    }
}

#[derive(Debug, Clone)]
pub struct NetworkInfo {
    pub name: String,
    pub active: bool,
    pub subnets: Vec<Ipv4Net>,
}

#[derive(Debug, Clone)]
pub struct VolumeInfo {
    pub name: String,
    pub path: String,
    /// Bytes the volume really takes on the host (blocks allocated).
    pub allocation: u64,
    /// The size the guest sees (a qcow2's virtual size; a raw file's length).
    pub capacity: u64,
    /// Bytes of the file on the host (its length); the allocation where the driver cannot tell.
    pub physical: u64,
}

/// libvirt's and the hypervisor's versions, e.g. ("9.0.0", "QEMU 7.2.0").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostVersion {
    /// The version of libvirt on the hypervisor host (the daemon's, for a remote URI).
    pub libvirt: String,
    /// The driver's hypervisor and its version, e.g. `QEMU 7.2.22`.
    pub hypervisor: String,
}

/// Bytes read from a volume, and its size on the host when they were read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeBytes {
    pub size: u64,
    pub bytes: Vec<u8>,
}

pub trait Hypervisor: Send + Sync {
    /// The connection URI, e.g. `qemu:///system`.
    fn uri(&self) -> &str;
    /// libvirt's and the hypervisor's versions, e.g. ("9.0.0", "QEMU 7.2.0").
    fn version(&self) -> Result<HostVersion>;
    /// Whether the hypervisor runs on this machine (so its addresses and files are this machine's).
    fn is_local(&self) -> bool;
    /// Whether libvirt offers KVM domains for this architecture.
    fn kvm_available(&self, arch: &str) -> Result<bool>;
    /// The machine types the host's QEMU offers for this architecture (versioned names and aliases).
    fn machine_types(&self, arch: &str) -> Result<Vec<String>>;
    /// The named CPU models this host can run for `arch` under `virt_type` (`kvm` or `qemu`); empty when libvirt
    /// cannot say.
    fn cpu_models(&self, arch: &str, virt_type: &str) -> Result<Vec<String>>;

    fn networks(&self) -> Result<Vec<NetworkInfo>>;
    /// Defines (if missing) and starts (if inactive) a persistent network.
    fn ensure_network(&self, name: &str, xml: &str) -> Result<()>;
    /// Stops and undefines; Ok if it did not exist.
    fn remove_network(&self, name: &str) -> Result<bool>;

    /// Defines, builds and starts (as needed) a dir pool; returns its folder on the hypervisor host.
    fn ensure_pool(&self, name: &str, xml: &str) -> Result<String>;
    /// The pool's folder, if the pool exists.
    fn pool_path(&self, name: &str) -> Result<Option<String>>;
    fn pool_names(&self) -> Result<Vec<String>>;
    /// Bytes free for new volumes in the pool.
    fn pool_free(&self, pool: &str) -> Result<u64>;
    /// Deletes every volume, then the folder and the pool; Ok(false) if it did not exist.
    fn remove_pool(&self, name: &str) -> Result<bool>;
    fn volumes(&self, pool: &str) -> Result<Vec<VolumeInfo>>;
    /// Creates a volume from XML; returns its path.
    fn create_volume(&self, pool: &str, xml: &str) -> Result<String>;
    /// Streams `len` bytes from `data` into the volume; `progress` gets the bytes sent so far.
    fn upload_volume(
        &self,
        pool: &str,
        name: &str,
        data: &mut dyn Read,
        len: u64,
        progress: &dyn Fn(u64),
    ) -> Result<()>;
    /// The volume's size on the host and up to `max` bytes from `offset` (clamped to the size). Works on files in
    /// the pool that libvirt did not create (console logs written by QEMU, which grow: remember the size and read
    /// from there next time; a size below the remembered one means the file was replaced or rotated).
    fn read_volume(&self, pool: &str, name: &str, offset: u64, max: u64) -> Result<VolumeBytes>;
    /// Up to `max` bytes from the end of the volume.
    fn read_volume_tail(&self, pool: &str, name: &str, max: u64) -> Result<Vec<u8>> {
        let size = self.read_volume(pool, name, 0, 0)?.size;
        Ok(self
            .read_volume(pool, name, size.saturating_sub(max), max)?
            .bytes)
    }
    /// The backing file of a volume (a qcow2 overlay's base), if any.
    fn volume_backing(&self, pool: &str, name: &str) -> Result<Option<String>>;
    fn delete_volume(&self, pool: &str, name: &str) -> Result<bool>;

    /// Domain names that start with `prefix`.
    fn domains(&self, prefix: &str) -> Result<Vec<String>>;
    fn domain_state(&self, name: &str) -> Result<Option<DomainState>>;
    fn domain_xml(&self, name: &str) -> Result<String>;
    /// The domain's definition read through [`xml_read::domain_info`] (None: no such domain). For a running
    /// domain this is the definition it runs with (its disk after snapshots and restores).
    fn domain_info(&self, name: &str) -> Result<Option<DomainInfo>>;
    /// The hardware the domain's guest sees now (read from its live definition; None: no such domain).
    fn domain_hardware(&self, name: &str) -> Result<Option<crate::render::xml::Hardware>>;
    /// Defines or redefines a persistent domain.
    fn define_domain(&self, xml: &str) -> Result<()>;
    fn start_domain(&self, name: &str) -> Result<()>;
    /// Starts a domain with its vCPUs paused (from its saved memory when it has one: see `save_domain`).
    fn start_domain_paused(&self, name: &str) -> Result<()>;
    /// Saves a running or paused domain's memory where libvirt keeps it for the domain, and stops it; the next
    /// start resumes from it (libvirt's managed save).
    fn save_domain(&self, name: &str) -> Result<()>;
    /// Whether the domain has memory saved by `save_domain`.
    fn has_saved_memory(&self, name: &str) -> Result<bool>;
    /// Forgets the memory saved by `save_domain` (Ok if there is none).
    fn discard_saved_memory(&self, name: &str) -> Result<()>;
    /// Asks the guest to power off (ACPI); returns at once.
    fn shutdown_domain(&self, name: &str) -> Result<()>;
    /// Hard power-off; Ok if it was not running.
    fn stop_domain(&self, name: &str) -> Result<()>;
    /// Stops and undefines; Ok(false) if it did not exist.
    fn remove_domain(&self, name: &str) -> Result<bool>;
    fn suspend_domain(&self, name: &str) -> Result<()>;
    fn resume_domain(&self, name: &str) -> Result<()>;
    /// An external snapshot (disk, and memory unless `disk_only`) that libvirt keeps no record of.
    fn external_snapshot(&self, name: &str, snapshot_xml: &str, disk_only: bool) -> Result<()>;
    /// Sends a QEMU guest agent command (JSON) and returns its answer; fails fast when no agent answers.
    fn agent(&self, name: &str, command: &str, timeout_secs: i32) -> Result<String>;
    /// The domain definition in a memory file's header (libvirt's save-image format): reading it checks the
    /// header without loading the state.
    fn memory_state_xml(&self, memory_file: &str) -> Result<String>;
    /// Starts a domain from a memory file written by an external snapshot, with `xml` as its definition.
    fn restore_memory(&self, memory_file: &str, xml: &str, paused: bool) -> Result<()>;
}

/// A hypervisor shared between tasks.
pub type Shared = Arc<dyn Hypervisor>;

/// Runs a blocking libvirt call on tokio's blocking pool.
pub async fn call<T, F>(hv: &Shared, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&dyn Hypervisor) -> Result<T> + Send + 'static,
{
    let hv = hv.clone();
    tokio::task::spawn_blocking(move || f(hv.as_ref()))
        .await
        .expect("libvirt call panicked")
}
