//! Class kits: an instructor builds the lab's checkpoints once, `lab export DIR` writes them with everything they
//! need into a folder, and every student's `lab import DIR-or-URL` puts exactly those machines on their own host,
//! offline, in minutes (`lab up --at NAME` then loads a checkpoint instead of booting and building).
//!
//! A kit is a folder any static web server can serve:
//! - `kit.json`: the manifest (format version, lab, the `lab` that wrote it, every file with its size and sha256,
//!   the checkpoint records, what their memory states need);
//! - `lab/`: the lab file and its step scripts;
//! - `keys/`: the lab's login key and the machines' host keys (the disks trust them: a kit is a class secret);
//! - `images/`: the base images, as in the pool; `assets/`: every `[[download]]`, by sha256;
//! - `volumes/`: checkpoint layers (qcow2, backing files named relative to their folder) and memory states, zstd.

mod export;
mod import;
pub mod qcow2;

pub use export::{export, ExportOptions};
pub use import::{import, verify, ImportOptions, Source};

use crate::checkpoint::Record;
use crate::download::cache::IndexEntry;
use crate::render::xml::Hardware;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::path::PathBuf;

/// The kit format this `lab` writes and reads.
pub const FORMAT: u32 = 1;
/// The manifest's file name.
pub const MANIFEST: &str = "kit.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The lab's name (`name =` in its lab file).
    pub lab: String,
    /// The version of `lab` that wrote the kit.
    pub lab_version: String,
    pub created: String,
    /// Where it was made: libvirt's and QEMU's versions.
    pub made_on: MadeOn,
    /// What its memory states need to be loaded: QEMU machine type, CPU model, devices and the accelerator they
    /// were saved under (a host that lacks one boots the checkpoints' disks instead).
    #[serde(default)]
    pub memory_needs: Option<Hardware>,
    pub files: Vec<KitFile>,
    /// The checkpoints, as the instructor's lab recorded them (volume names as in the kit).
    pub checkpoints: Vec<Record>,
    /// The cache's records of the lab's downloads (upstream URL → sha256), so a student's `lab up` finds them.
    pub downloads: Vec<IndexEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MadeOn {
    pub libvirt: String,
    pub hypervisor: String,
}

/// One file of a kit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KitFile {
    /// Its path in the kit.
    pub path: String,
    /// Bytes as stored in the kit, and their sha256.
    pub size: u64,
    pub sha256: String,
    pub kind: Kind,
    /// Stored compressed (zstd): the size and sha256 of what it decompresses to.
    #[serde(default)]
    pub content: Option<Content>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Content {
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Kind {
    /// The lab file (`lab.toml`) or one of its scripts, relative to the lab file's folder.
    LabFile { name: String },
    /// The login key (`id_ed25519`) or a machine's host key (`host-keys/MACHINE`).
    Key { name: String },
    /// A base image: the pool volume it becomes.
    Image { volume: String, format: String },
    /// A `[[download]]` asset (its sha256 is its name in the cache).
    Asset,
    /// A checkpoint layer (qcow2) or memory state (raw): the pool volume it becomes.
    Volume {
        volume: String,
        format: String,
        /// The volume this layer sits on (a file name in the same pool).
        #[serde(default)]
        backing: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("{path} exists and is not empty")]
    NotEmpty { path: PathBuf },
    #[error("no space left writing {path}")]
    NoSpace { path: PathBuf },
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{source_name}: {MANIFEST} cannot be read: {why}")]
    Manifest { source_name: String, why: String },
    #[error("{source_name} is a kit of format {found}; this lab reads format {FORMAT}")]
    Format { source_name: String, found: u32 },
    #[error("the kit is of lab `{kit}`, and --file names lab `{file}`")]
    OtherLab { kit: String, file: String },
    #[error("{file}: {why}")]
    Corrupt { file: String, why: String },
    #[error("lab `{lab}` exists on this host")]
    LabExists { lab: String },
    #[error("`{name}` is not in the download cache")]
    NotCached { name: String },
    #[error("no built checkpoint `{name}` to export")]
    NotBuilt { name: String },
}

impl KitError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            KitError::NotEmpty { .. } => "name a new or empty folder".into(),
            KitError::NoSpace { .. } => "free space there, or write the kit elsewhere; the partial kit was removed".into(),
            KitError::Manifest { .. } => "is it a kit folder or URL? (`lab export DIR` writes one)".into(),
            KitError::Format { .. } => "update lab to import it, or ask for a kit written by this lab".into(),
            KitError::OtherLab { .. } => "import without --file (the kit brings its own lab file)".into(),
            KitError::Corrupt { .. } => {
                "the kit is damaged or was changed: fetch it again, or ask for a new one (`lab kit verify` checks it)"
                    .into()
            }
            KitError::LabExists { .. } => "--replace destroys it first (its checkpoints too)".into(),
            KitError::NotCached { .. } => "`lab fetch` brings every download into the cache".into(),
            KitError::NotBuilt { .. } => "`lab checkpoints` lists the built ones".into(),
            KitError::Io { .. } => return None,
        })
    }

    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> KitError {
        let path = path.into();
        move |source| {
            if source.kind() == io::ErrorKind::StorageFull {
                KitError::NoSpace { path }
            } else {
                KitError::Io { path, source }
            }
        }
    }
}

/// Sizes and sha256 of a file copied into or out of a kit: what it holds, and the bytes as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Copied {
    pub content: Content,
    pub stored: Content,
}

struct Hashing<W> {
    inner: W,
    hash: sha2::Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Changes a file's first bytes as they are copied (a layer's backing file name).
pub(crate) type Patch<'a> = &'a dyn Fn(&mut [u8]) -> io::Result<()>;

/// Copies `from` to `to`, hashing what is read (the content) and what is written (the stored bytes); with
/// `compress` the stored bytes are zstd (level 3, two threads). `patch` may change the first bytes (at least the
/// first 64 KiB, when the content is that long) before anything else sees them.
pub(crate) fn copy_hashing(
    mut from: impl Read,
    to: impl Write,
    compress: bool,
    patch: Option<Patch>,
) -> io::Result<Copied> {
    use sha2::{Digest, Sha256};
    let mut stored = Hashing {
        inner: to,
        hash: Sha256::new(),
        bytes: 0,
    };
    let mut content = Sha256::new();
    let mut size = 0u64;
    {
        let mut pump = |sink: &mut dyn Write| -> io::Result<()> {
            let mut buf = vec![0u8; 4 << 20];
            let mut first = true;
            loop {
                let mut n = from.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                if first {
                    // Short reads happen: have the whole header before it is patched.
                    while n < 64 << 10 {
                        let m = from.read(&mut buf[n..64 << 10])?;
                        if m == 0 {
                            break;
                        }
                        n += m;
                    }
                    if let Some(p) = patch {
                        p(&mut buf[..n])?;
                    }
                    first = false;
                }
                content.update(&buf[..n]);
                size += n as u64;
                sink.write_all(&buf[..n])?;
            }
        };
        if compress {
            let mut enc = zstd::stream::write::Encoder::new(&mut stored, 3)?;
            enc.multithread(2)?;
            pump(&mut enc)?;
            enc.finish()?;
        } else {
            pump(&mut stored)?;
        }
    }
    stored.flush()?;
    Ok(Copied {
        content: Content {
            size,
            sha256: hex::encode(content.finalize()),
        },
        stored: Content {
            size: stored.bytes,
            sha256: hex::encode(stored.hash.finalize()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_compress_hash_and_patch() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        let patch = |b: &mut [u8]| {
            b[0] = b'X';
            Ok(())
        };
        let c = copy_hashing(&data[..], &mut out, true, Some(&patch)).unwrap();
        assert_eq!(c.stored.size, out.len() as u64);
        assert!(
            out.len() < data.len() / 10,
            "zstd: {} of {}",
            out.len(),
            data.len()
        );
        let back = zstd::decode_all(&out[..]).unwrap();
        assert_eq!(back[0], b'X');
        assert_eq!(&back[1..], &data[1..]);
        let again = copy_hashing(&back[..], std::io::sink(), false, None).unwrap();
        assert_eq!(
            again.content, c.content,
            "the content hash is of the patched bytes"
        );
        assert_eq!(again.stored, c.content);
    }
}
