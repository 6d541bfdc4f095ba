//! The download manager: fetches images and files named in a lab file into a
//! verified, content-addressed cache shared by every `lab` process.
//!
//! - Streaming downloads (reqwest), hashed while they stream (sha256, plus
//!   sha512 when the expected sum is one), at most [`Options::parallel`] at once.
//! - Retries with exponential backoff on time-outs, refused or broken
//!   connections and 5xx, the same for every item and checksum file; not on
//!   4xx, and not when a host name does not resolve (offline: it will not heal
//!   in seconds). A cut connection resumes with `Range: bytes=N-` and keeps
//!   the running hash; a server that ignores Range restarts cleanly.
//! - Every item runs to its end; the failures come back as one [`Error`]: a
//!   summary line grouped by cause, then one line per item with the URL
//!   requested (see [`Error::Many`]). Progress gets one short line, without
//!   URL, when an item (or its checksum file) is first retried; a failure is
//!   never only reported, so a quiet UI hides none.
//! - Interruption: every transfer, retry wait and lock wait selects on [`Options::cancel`]; a stopped item keeps
//!   what it received as a partial file named after its URL, and the next fetch of that URL re-hashes it and
//!   resumes with `Range`. The run then fails with one [`Error::Interrupted`].
//! - A cache hit makes no network request at all, not even for a checksum file.
//! - Per-entry lock files, unique temp names and rename-after-verify keep a
//!   cache filled by several processes intact.
//! - Mirrors: [`parse_mirror`] checks the setting before anything is fetched;
//!   [`mirror_url`] rewrites every upstream URL; [`export_mirror`] writes the
//!   matching static tree from the cache.
//!
//! See [`cache`] for the on-disk layout.

pub mod cache;
pub mod checksum;
mod error;
mod fetch;
mod mirror;
mod resolve;
mod sink;
mod transfer;

use std::path::PathBuf;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};

pub use cache::Cache;
pub use error::{Error, Missing};
pub use mirror::{export_mirror, mirror_url, parse_mirror};

use crate::cancel::Cancel;
use crate::model::Checksum;

/// Temp files older than this were left by a killed process.
const STALE_TEMP: Duration = Duration::from_secs(24 * 3600);

/// One file to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Name shown in progress and errors (the image or download name).
    pub name: String,
    /// Upstream URL: `https://`, `http://` or `file://`.
    pub url: String,
    /// How to verify the content.
    pub checksum: Checksum,
}

/// A verified file in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The item's name.
    pub name: String,
    /// The item's upstream URL.
    pub url: String,
    /// The verified blob in the cache (read it; do not modify it).
    pub path: PathBuf,
    /// Its sha256, lowercase hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// How to fetch.
#[derive(Debug, Clone)]
pub struct Options {
    /// Use only the cache; fail listing every missing item.
    pub offline: bool,
    /// Base URL of a mirror (see [`mirror_url`]); every HTTP(S) URL goes through it. Checked by
    /// [`parse_mirror`] when fetching starts: a bad one fails with [`Error::BadMirror`].
    pub mirror: Option<String>,
    /// Downloads at once (at least 1). Default 4.
    pub parallel: usize,
    /// Tries after the first failure, per file. Default 4.
    pub retries: u32,
    /// Longest wait for a connection or for the next bytes. Default 30 s.
    pub timeout: Duration,
    /// Pause before the first retry, doubled each time (capped at 30 s). Default 500 ms.
    pub backoff: Duration,
    /// The command's token: once interrupted, every transfer stops (see [`Error::Interrupted`]).
    pub cancel: Cancel,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            offline: false,
            mirror: None,
            parallel: 4,
            retries: 4,
            timeout: Duration::from_secs(30),
            backoff: Duration::from_millis(500),
            cancel: Cancel::new(),
        }
    }
}

/// Receives progress; called from the fetching task, so keep it cheap.
pub trait Reporter: Send + Sync {
    /// A file begins (`total` when known); called once per item, cached or not.
    fn start(&self, name: &str, total: Option<u64>);
    /// Bytes received so far for `name` (absolute; may go back to 0 when a
    /// server ignores Range). Called at most every 64 KiB or so.
    fn advance(&self, name: &str, bytes: u64);
    /// The file is verified and in the cache (`cached`: no download was needed).
    fn finish(&self, name: &str, cached: bool);
    /// A notice: a retry, a restart (one short line, no URL).
    fn message(&self, text: &str);
    /// `name` failed for good; `cause` is short and has no URL. The error [`fetch_all`] returns names it again
    /// with its URL, so this prints nothing by default; a UI may end the item's bar here.
    fn failed(&self, name: &str, cause: &str) {
        let _ = (name, cause);
    }
}

/// A [`Reporter`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReport;

impl Reporter for NoReport {
    fn start(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: &str, _: u64) {}
    fn finish(&self, _: &str, _: bool) {}
    fn message(&self, _: &str) {}
}

/// Fetches every item (at most `opts.parallel` at once) and returns their
/// cached files in the order of `items`.
///
/// Offline, fails with one [`Error::Offline`] listing every item not cached.
/// Online, a bad mirror setting fails first with [`Error::BadMirror`]; then
/// every item runs to its end, and the failures are returned together: the
/// item's own error when only one failed, else [`Error::Many`] in item order;
/// [`Error::Interrupted`] when `opts.cancel` stopped some.
pub async fn fetch_all(
    cache: &Cache,
    items: &[Item],
    opts: &Options,
    reporter: &dyn Reporter,
) -> Result<Vec<Fetched>, Error> {
    let parallel = opts.parallel.max(1);
    if opts.offline {
        return offline(cache, items, parallel, reporter).await;
    }
    let opts = &checked_mirror(opts)?;
    let stale = cache.clone();
    fetch::blocking(move || stale.clean_temps(STALE_TEMP)).await;
    let fetcher = fetch::Fetcher::new(cache, opts, reporter);
    // Futures collected first: a closure in the stream's type would make the
    // whole future fail to be `Send` (rust-lang/rust#102211).
    let jobs: Vec<_> = items.iter().map(|item| fetcher.item(item)).collect();
    let results: Vec<_> = stream::iter(jobs).buffered(parallel).collect().await;
    let mut failures = Vec::new();
    let mut out = Vec::with_capacity(items.len());
    for result in results {
        match result {
            Ok(f) => out.push(f),
            Err(e) => failures.push(e),
        }
    }
    match Error::from_failures(failures) {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// `opts` with its mirror checked and normalised by [`parse_mirror`].
fn checked_mirror(opts: &Options) -> Result<Options, Error> {
    let mirror = match &opts.mirror {
        Some(m) => Some(parse_mirror(m).map_err(|message| Error::BadMirror {
            mirror: m.clone(),
            message,
        })?),
        None => None,
    };
    Ok(Options {
        mirror,
        ..opts.clone()
    })
}

async fn offline(
    cache: &Cache,
    items: &[Item],
    parallel: usize,
    reporter: &dyn Reporter,
) -> Result<Vec<Fetched>, Error> {
    let jobs: Vec<_> = items
        .iter()
        .map(|item| fetch::lookup(cache, item))
        .collect();
    let found: Vec<_> = stream::iter(jobs).buffered(parallel).collect().await;
    let missing: Vec<_> = items
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(i, _)| Missing {
            name: i.name.clone(),
            url: i.url.clone(),
        })
        .collect();
    if !missing.is_empty() {
        return Err(Error::Offline { missing });
    }
    Ok(found
        .into_iter()
        .flatten()
        .inspect(|f| {
            reporter.start(&f.name, Some(f.size));
            reporter.finish(&f.name, true);
        })
        .collect())
}
