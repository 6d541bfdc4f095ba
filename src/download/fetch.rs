//! One item from cache or network: look up, resolve the expected digest,
//! lock the entry, download to a temp file, verify, rename into place, index.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::cache::{EntryLock, IndexEntry, Recorded};
use super::checksum::{file_name_of, find_in_checksum_file, Expected};
use super::mirror::rewrite;
use super::resolve::SystemResolver;
use super::sink::TempFile;
use super::transfer::{self, Job};
use super::{Cache, Error, Fetched, Item, Options, Reporter};
use crate::model::Checksum;

/// Checksum files larger than this are not parsed.
const MAX_CHECKSUM_FILE: u64 = 64 << 20;
/// How often a locked cache entry is tried again.
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Shared state of one `fetch_all` call.
pub struct Fetcher<'a> {
    cache: &'a Cache,
    opts: &'a Options,
    reporter: &'a dyn Reporter,
    client: reqwest::Client,
    /// Checksum files fetched during this call, by upstream URL.
    sums: Mutex<HashMap<String, Arc<OnceCell<Fetched>>>>,
}

/// Runs a blocking closure off the async threads, re-raising its panics.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// [`Cache::lookup`] on a blocking thread (it re-hashes the blob).
pub async fn lookup(cache: &Cache, item: &Item) -> Option<Fetched> {
    let (cache, item) = (cache.clone(), item.clone());
    blocking(move || cache.lookup(&item)).await
}

impl<'a> Fetcher<'a> {
    /// Builds the HTTP client (redirects followed, connect time-out).
    pub fn new(cache: &'a Cache, opts: &'a Options, reporter: &'a dyn Reporter) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(opts.timeout)
            .redirect(reqwest::redirect::Policy::limited(10))
            .user_agent(concat!("lab/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(SystemResolver))
            .build()
            .expect("a TLS backend is compiled in");
        Fetcher {
            cache,
            opts,
            reporter,
            client,
            sums: Mutex::default(),
        }
    }

    /// The verified file for `item`, from the cache or the network; a failure is also told to
    /// [`Reporter::failed`].
    pub async fn item(&self, item: &Item) -> Result<Fetched, Error> {
        let result = self.fetch_item(item).await;
        if let Err(e) = &result {
            self.reporter.failed(&item.name, &e.cause());
        }
        result
    }

    async fn fetch_item(&self, item: &Item) -> Result<Fetched, Error> {
        if self.opts.cancel.is_interrupted() {
            return Err(Error::stopped(&item.name));
        }
        if let Some(hit) = lookup(self.cache, item).await {
            self.index_pinned_hit(item, &hit).await;
            return Ok(self.cached(hit));
        }
        let (expected, recorded) = self.expected(item).await?;
        let lock = self.lock(item).await?;
        // Another task or process may have filled it while we waited.
        if let Some(hit) = lookup(self.cache, item).await {
            return Ok(self.cached(hit));
        }
        let fetched = self
            .download(
                &item.name,
                &item.url,
                expected,
                recorded,
                self.reporter,
                true,
            )
            .await?;
        drop(lock);
        self.reporter.finish(&item.name, false);
        Ok(fetched)
    }

    /// The lock of `item`'s entry, waiting (and polling) while another task or process holds it; the wait ends
    /// when the command is interrupted.
    async fn lock(&self, item: &Item) -> Result<EntryLock, Error> {
        loop {
            let (cache, url) = (self.cache.clone(), item.url.clone());
            match blocking(move || cache.try_lock(&url)).await {
                Ok(Some(lock)) => return Ok(lock),
                Ok(None) => {}
                Err(e) => return Err(Error::io(&item.name, &item.url, self.cache.root(), e)),
            }
            self.opts
                .cancel
                .sleep(LOCK_POLL)
                .await
                .map_err(|_| Error::stopped(&item.name))?;
        }
    }

    /// A pinned item found by hash under another URL gets its own index
    /// entry, so [`super::export_mirror`] serves it at this URL too.
    async fn index_pinned_hit(&self, item: &Item, hit: &Fetched) {
        if !matches!(item.checksum, Checksum::Sha256(_)) {
            return;
        }
        let cache = self.cache.clone();
        let entry = IndexEntry {
            url: hit.url.clone(),
            sha256: hit.sha256.clone(),
            size: hit.size,
            checksum: Recorded::Pinned {
                sha256: hit.sha256.clone(),
            },
        };
        blocking(move || {
            if cache.read_index(&entry.url).is_none() {
                // Best effort: the blob is there either way.
                let _ = cache.write_index(&entry);
            }
        })
        .await;
    }

    fn cached(&self, hit: Fetched) -> Fetched {
        self.reporter.start(&hit.name, Some(hit.size));
        self.reporter.finish(&hit.name, true);
        hit
    }

    /// The digest to check against, and how to record it in the index.
    async fn expected(&self, item: &Item) -> Result<(Option<Expected>, Recorded), Error> {
        Ok(match &item.checksum {
            Checksum::Sha256(hex) => {
                let exp = Expected::parse(hex).ok_or_else(|| Error::BadUrl {
                    name: item.name.clone(),
                    url: item.url.clone(),
                    reason: format!("`{hex}` is not a sha256"),
                })?;
                let recorded = Recorded::Pinned {
                    sha256: exp.hex.clone(),
                };
                (Some(exp), recorded)
            }
            Checksum::Url(sums_url) => {
                let exp = self.expected_from_checksum_file(item, sums_url).await?;
                let recorded = Recorded::ChecksumUrl {
                    url: sums_url.clone(),
                    algorithm: exp.algorithm,
                    value: exp.hex.clone(),
                };
                (Some(exp), recorded)
            }
            Checksum::None => (None, Recorded::None),
        })
    }

    /// Fetches the checksum file (once per call, always fresh from the
    /// network, cached under its own URL for mirrors) and finds the item.
    async fn expected_from_checksum_file(
        &self,
        item: &Item,
        sums_url: &str,
    ) -> Result<Expected, Error> {
        let cell = self
            .sums
            .lock()
            .expect("sums lock")
            .entry(sums_url.to_owned())
            .or_default()
            .clone();
        let notices = Notices(self.reporter);
        let sums = cell
            .get_or_try_init(|| {
                self.download(&item.name, sums_url, None, Recorded::None, &notices, false)
            })
            .await?;
        let text = if sums.size <= MAX_CHECKSUM_FILE {
            std::fs::read(&sums.path).map_err(|e| Error::io(&item.name, sums_url, &sums.path, e))?
        } else {
            Vec::new()
        };
        let file = file_name_of(&item.url);
        find_in_checksum_file(&String::from_utf8_lossy(&text), &file).ok_or_else(|| {
            Error::MissingChecksumEntry {
                name: item.name.clone(),
                url: item.url.clone(),
                checksum_url: sums_url.to_owned(),
                file,
            }
        })
    }

    /// Downloads `url` (through the mirror, if set) to a temp file, checks
    /// it, renames it into the blob store and records it in the index. With
    /// `resume` (the entry's lock held) the temp file is the URL's partial
    /// file: what a stopped run left is resumed, and an interruption keeps it.
    async fn download(
        &self,
        name: &str,
        url: &str,
        expected: Option<Expected>,
        recorded: Recorded,
        reporter: &dyn Reporter,
        resume: bool,
    ) -> Result<Fetched, Error> {
        let io = |path: &std::path::Path, e| Error::io(name, url, path, e);
        let path = if resume {
            self.cache.partial_path(url)
        } else {
            self.cache.temp_path("blob")
        };
        let temp = TempFile::new(path.map_err(|e| io(self.cache.root(), e))?);
        let fetch_url = rewrite(self.opts.mirror.as_deref(), url);
        let job = Job {
            name,
            url,
            fetch_url: &fetch_url,
            with_sha512: expected
                .as_ref()
                .is_some_and(|e| e.algorithm == super::checksum::Algorithm::Sha512),
            resume,
        };
        let (digests, size) =
            match transfer::fetch(&self.client, self.opts, &job, temp.path(), reporter).await {
                Err(e) if e.is_interrupted() && resume => {
                    temp.keep();
                    return Err(e);
                }
                r => r?,
            };
        if let Some(exp) = &expected {
            let got = digests.get(exp.algorithm).unwrap_or_default();
            if got != exp.hex {
                return Err(Error::Mismatch {
                    name: name.into(),
                    url: url.into(),
                    mirror_url: (fetch_url != url).then(|| fetch_url.clone()),
                    algorithm: exp.algorithm,
                    expected: exp.hex.as_str().into(),
                    got: got.into(),
                });
            }
        }
        let entry = IndexEntry {
            url: url.into(),
            sha256: digests.sha256.clone(),
            size,
            checksum: recorded,
        };
        let cache = self.cache.clone();
        let tmp_path = temp.path().to_owned();
        let path = blocking(move || -> Result<_, (std::path::PathBuf, std::io::Error)> {
            let path = cache
                .commit_blob(&tmp_path, &entry.sha256)
                .map_err(|e| (tmp_path.clone(), e))?;
            cache
                .write_index(&entry)
                .map_err(|e| (cache.root().join("index-v1"), e))?;
            Ok(path)
        })
        .await
        .map_err(|(p, e)| io(&p, e))?;
        temp.keep();
        Ok(Fetched {
            name: name.into(),
            url: url.into(),
            path,
            sha256: digests.sha256,
            size,
        })
    }
}

/// Passes on a checksum file's notices (its retries) under the item's name, but not its progress: the item's
/// own progress follows.
struct Notices<'a>(&'a dyn Reporter);

impl Reporter for Notices<'_> {
    fn start(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: &str, _: u64) {}
    fn finish(&self, _: &str, _: bool) {}
    fn message(&self, text: &str) {
        self.0.message(text);
    }
}
