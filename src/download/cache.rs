//! The on-disk cache: content-addressed blobs, a per-URL index, lock files
//! and temp files, all under one root.
//!
//! ```text
//! <root>/blobs-v1/sha256/<hex>            verified content, named by its sha256
//! <root>/index-v1/<sha256(url)>.json      what URL gave which blob, checked how
//! <root>/locks-v1/<sha256(url)>.lock      held while one process fills the entry
//! <root>/tmp-v1/<unique>.part             downloads in progress (checksum files)
//! <root>/tmp-v1/<sha256(url)>.partial      an item's download, in progress or stopped: resumed by the next fetch
//! ```
//!
//! Blobs and index entries only appear by atomic rename, so a reader sees
//! either nothing or a complete file; lookups re-hash the blob anyway, and a
//! blob that no longer matches its name is removed.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fs4::fs_std::FileExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::checksum::{is_sha256_hex, Algorithm};
use super::{Fetched, Item};
use crate::model::Checksum;

/// The download cache rooted at one folder (created on first write).
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// How the content of an index entry was checked when it was downloaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Recorded {
    /// Against a sha256 pinned in the lab file.
    Pinned {
        /// The pinned value.
        sha256: String,
    },
    /// Against the value listed in a checksum file.
    ChecksumUrl {
        /// The checksum file's upstream URL.
        url: String,
        /// sha256 or sha512.
        algorithm: Algorithm,
        /// The listed value.
        value: String,
    },
    /// Not checked (`insecure_no_checksum`, or a checksum file itself).
    None,
}

/// One `index-v1/*.json` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// The upstream URL (never the mirror's).
    pub url: String,
    /// The blob's sha256.
    pub sha256: String,
    /// The blob's size in bytes.
    pub size: u64,
    /// The expected value and where it came from.
    pub checksum: Recorded,
}

/// An exclusive lock on one cache entry, released on drop.
#[derive(Debug)]
pub struct EntryLock {
    _file: File,
}

impl Cache {
    /// A cache rooted at `root`; nothing is created until something is stored.
    pub fn new(root: PathBuf) -> Self {
        Cache { root }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The verified cached file for `item`, without any network access.
    ///
    /// Pinned items are found by hash; checksum-file and unchecked items by
    /// the index entry of their URL (which must have been checked against the
    /// same checksum file). The blob is re-hashed; a corrupted one is removed.
    pub fn lookup(&self, item: &Item) -> Option<Fetched> {
        let sha256 = match &item.checksum {
            Checksum::Sha256(hex) => hex.to_ascii_lowercase(),
            Checksum::Url(checksum_url) => {
                let entry = self.read_index(&item.url)?;
                match &entry.checksum {
                    Recorded::ChecksumUrl { url, .. } if url == checksum_url => entry.sha256,
                    _ => return None,
                }
            }
            Checksum::None => self.read_index(&item.url)?.sha256,
        };
        let size = self.verified_blob(&sha256)?;
        Some(Fetched {
            name: item.name.clone(),
            url: item.url.clone(),
            path: self.blob_path(&sha256),
            sha256,
            size,
        })
    }

    /// Where the blob with this sha256 lives (whether or not it exists).
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs-v1").join("sha256").join(sha256)
    }

    /// The size of the blob named `sha256` if it exists and still hashes to
    /// its name; a blob that does not is removed.
    pub fn verified_blob(&self, sha256: &str) -> Option<u64> {
        if !is_sha256_hex(sha256) {
            return None;
        }
        let path = self.blob_path(sha256);
        let (actual, size) = hash_file(&path).ok()?;
        if actual == sha256 {
            Some(size)
        } else {
            let _ = std::fs::remove_file(&path);
            None
        }
    }

    /// The index entry recorded for `url`, if any.
    pub fn read_index(&self, url: &str) -> Option<IndexEntry> {
        let text = std::fs::read(self.index_path(url)).ok()?;
        serde_json::from_slice::<IndexEntry>(&text)
            .ok()
            .filter(|e| e.url == url && is_sha256_hex(&e.sha256))
    }

    /// Every readable index entry.
    pub fn index_entries(&self) -> io::Result<Vec<IndexEntry>> {
        let dir = self.root.join("index-v1");
        let mut out = Vec::new();
        let read = match fs_err::read_dir(&dir) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for ent in read {
            let path = ent?.path();
            if path.extension().is_some_and(|e| e == "json") {
                if let Some(e) = std::fs::read(&path)
                    .ok()
                    .and_then(|t| serde_json::from_slice::<IndexEntry>(&t).ok())
                    .filter(|e| is_sha256_hex(&e.sha256))
                {
                    out.push(e);
                }
            }
        }
        out.sort_by(|a, b| a.url.cmp(&b.url));
        Ok(out)
    }

    /// Records `entry` atomically.
    pub fn write_index(&self, entry: &IndexEntry) -> io::Result<()> {
        let path = self.index_path(&entry.url);
        let json = serde_json::to_vec_pretty(entry).map_err(io::Error::other)?;
        crate::fsutil::write_atomic(&path, &json, None)
    }

    /// Moves a verified temp file into place as the blob `sha256`.
    pub fn commit_blob(&self, tmp: &Path, sha256: &str) -> io::Result<PathBuf> {
        let path = self.blob_path(sha256);
        fs_err::create_dir_all(path.parent().expect("blob path has a parent"))?;
        crate::fsutil::persist(tmp, &path)?;
        Ok(path)
    }

    /// A fresh, unique path under `tmp-v1/` (the folder is created).
    pub fn temp_path(&self, tag: &str) -> io::Result<PathBuf> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = self.root.join("tmp-v1");
        fs_err::create_dir_all(&dir)?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Ok(dir.join(format!("{tag}-{}-{n}-{nanos:x}.part", std::process::id())))
    }

    /// Where the download of `url` is kept while in progress, and after an interruption until the next fetch of
    /// `url` resumes it (only while holding [`Cache::try_lock`] of `url`). The folder is created.
    pub fn partial_path(&self, url: &str) -> io::Result<PathBuf> {
        let dir = self.root.join("tmp-v1");
        fs_err::create_dir_all(&dir)?;
        Ok(dir.join(format!("{}.partial", url_key(url))))
    }

    /// Removes temp files older than `max_age` (left by killed processes, or stopped downloads not resumed).
    pub fn clean_temps(&self, max_age: Duration) {
        let Ok(read) = std::fs::read_dir(self.root.join("tmp-v1")) else {
            return;
        };
        for ent in read.flatten() {
            let old = ent
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > max_age);
            if old {
                let _ = std::fs::remove_file(ent.path());
            }
        }
    }

    /// The lock of `url`'s entry, or None while another task or process holds it.
    pub fn try_lock(&self, url: &str) -> io::Result<Option<EntryLock>> {
        let dir = self.root.join("locks-v1");
        fs_err::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.lock", url_key(url)));
        let file = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?
            .into_parts()
            .0;
        let got = FileExt::try_lock_exclusive(&file)
            .map_err(|e| io::Error::new(e.kind(), format!("locking {}: {e}", path.display())))?;
        Ok(got.then_some(EntryLock { _file: file }))
    }

    fn index_path(&self, url: &str) -> PathBuf {
        self.root
            .join("index-v1")
            .join(format!("{}.json", url_key(url)))
    }
}

/// The hex sha256 of a URL: the name of its index entry and lock.
pub fn url_key(url: &str) -> String {
    hex::encode(Sha256::digest(url.as_bytes()))
}

/// sha256 (hex) and size of a file, read in 1 MiB blocks.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}
