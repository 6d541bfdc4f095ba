//! The seam between `lab` and libvirt: a narrow [`Hypervisor`] trait in lab's own words, with no `virt` types
//! crossing it. [`VirtHost`] is the one implementation that talks to libvirt. All host-side file work goes through
//! storage volumes here, so a lab runs the same on `qemu:///system` and on `qemu+ssh://host/system`.

mod virt_host;

pub use virt_host::VirtHost;

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
    pub fn hint(&self) -> Option<String> {
        match self.kind {
            ErrorKind::Unreachable => Some(
                "is libvirtd running? Start it with `sudo systemctl start libvirtd` (or `sudo libvirtd -d` without \
                 systemd), or point LAB_CONNECT/--connect at a reachable URI"
                    .into(),
            ),
            ErrorKind::PermissionDenied => Some(
                "add yourself to the libvirt group (`sudo usermod -aG libvirt $USER`, then log in again) or run lab \
                 as root"
                    .into(),
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
    /// Bytes the volume really takes on the host.
    pub allocation: u64,
}

pub trait Hypervisor: Send + Sync {
    /// The connection URI, e.g. `qemu:///system`.
    fn uri(&self) -> &str;
    /// Whether the hypervisor runs on this machine (so its addresses and files are this machine's).
    fn is_local(&self) -> bool;
    /// Whether libvirt offers KVM domains for this architecture.
    fn kvm_available(&self, arch: &str) -> Result<bool>;

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
    /// Up to `max` bytes from the end of the volume.
    fn read_volume_tail(&self, pool: &str, name: &str, max: u64) -> Result<Vec<u8>>;
    fn delete_volume(&self, pool: &str, name: &str) -> Result<bool>;

    /// Domain names that start with `prefix`.
    fn domains(&self, prefix: &str) -> Result<Vec<String>>;
    fn domain_state(&self, name: &str) -> Result<Option<DomainState>>;
    fn domain_xml(&self, name: &str) -> Result<String>;
    /// Defines or redefines a persistent domain.
    fn define_domain(&self, xml: &str) -> Result<()>;
    fn start_domain(&self, name: &str) -> Result<()>;
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
