//! Moving bytes from a URL into a new file through a hashing [`Sink`]:
//! HTTP(S) with time-outs, retries with backoff and Range resumption;
//! `file://` by copying.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::{Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::time::timeout;

use super::checksum::{percent_decode, Digests};
use super::resolve::unresolved_host;
use super::sink::Sink;
use super::{Error, Options, Reporter};

/// Report progress after at least this many new bytes.
const REPORT_EVERY: u64 = 64 * 1024;
/// Longest pause between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Read size for `file://` sources.
const FILE_CHUNK: u64 = 1 << 20;

/// What is being fetched, for messages and errors.
pub struct Job<'a> {
    /// The item's name.
    pub name: &'a str,
    /// The upstream URL (named in errors and reports).
    pub url: &'a str,
    /// The URL actually requested (the mirror's, when one is set).
    pub fetch_url: &'a str,
    /// Also compute a sha512.
    pub with_sha512: bool,
    /// Go on from what the file at the path already holds (an item's partial file, see [`super::Cache::partial_path`]).
    pub resume: bool,
}

impl Job<'_> {
    fn io(&self, path: &Path, e: std::io::Error) -> Error {
        Error::io(self.name, self.url, path, e)
    }

    /// The URL requested instead of the upstream one, when a mirror is used.
    fn mirror_url(&self) -> Option<String> {
        (self.fetch_url != self.url).then(|| self.fetch_url.to_owned())
    }

    /// `host[:port]` of the URL requested.
    fn authority(&self) -> String {
        match url::Url::parse(self.fetch_url) {
            Ok(u) => match (u.host_str(), u.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_owned(),
                (None, _) => self.fetch_url.to_owned(),
            },
            Err(_) => self.fetch_url.to_owned(),
        }
    }

    /// Classifies a client error by its type and its sources' types: time-out, unusable URL, name not
    /// resolved, no connection, or a broken one.
    fn network(&self, e: reqwest::Error, after: Duration) -> Error {
        if e.is_timeout() {
            return self.timeout(after);
        }
        if e.is_builder() || e.is_redirect() {
            return Error::BadUrl {
                name: self.name.into(),
                url: self.url.into(),
                reason: chain(&e.without_url()),
            };
        }
        if let Some(host) = unresolved_host(&e) {
            return Error::Resolve {
                name: self.name.into(),
                url: self.url.into(),
                mirror_url: self.mirror_url(),
                host: host.to_owned(),
            };
        }
        if e.is_connect() {
            return Error::Connect {
                name: self.name.into(),
                url: self.url.into(),
                mirror_url: self.mirror_url(),
                host: self.authority(),
                reason: connect_reason(&e),
            };
        }
        self.broken(chain(&e.without_url()))
    }

    fn timeout(&self, after: Duration) -> Error {
        Error::Timeout {
            name: self.name.into(),
            url: self.url.into(),
            mirror_url: self.mirror_url(),
            after,
        }
    }

    fn broken(&self, message: String) -> Error {
        Error::Network {
            name: self.name.into(),
            url: self.url.into(),
            mirror_url: self.mirror_url(),
            message,
        }
    }
}

/// Why a connection could not be made, in a few words: from the OS error's kind when there is one.
fn connect_reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = Some(e);
    let mut last = e;
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            return match io.kind() {
                K::ConnectionRefused => "connection refused".into(),
                K::NetworkUnreachable => "network unreachable".into(),
                K::HostUnreachable => "host unreachable".into(),
                K::ConnectionReset => "connection reset".into(),
                K::TimedOut => "timed out".into(),
                _ => io.to_string(),
            };
        }
        last = c;
        cur = c.source();
    }
    last.to_string()
}

/// `err: source: source ...` on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}

/// Fetches `job` into a new file at `path` (or, with `job.resume`, onto what it holds; the caller owns its
/// removal), hashing as it goes; returns the digests and the size. Once `opts.cancel` is interrupted it stops
/// within one chunk with [`Error::Interrupted`], after writing out what it received.
pub async fn fetch(
    client: &reqwest::Client,
    opts: &Options,
    job: &Job<'_>,
    path: &Path,
    reporter: &dyn Reporter,
) -> Result<(Digests, u64), Error> {
    let sink = if job.resume {
        Sink::resume(path, job.with_sha512, opts.cancel.clone())
    } else {
        Sink::create(path, job.with_sha512)
    };
    let mut sink = sink.map_err(|e| job.io(path, e))?;
    if sink.written() > 0 {
        reporter.message(&format!(
            "{}: resuming after the {} a stopped download left",
            job.name,
            crate::model::format_size(sink.written())
        ));
    }
    let mut progress = Progress::new(job.name, reporter);
    let moved = tokio::select! {
        biased;
        _ = opts.cancel.interrupted() => Err(Error::stopped(job.name)),
        r = source(client, opts, job, &mut sink, &mut progress) => r,
    };
    match moved {
        Ok(()) => {
            progress.report(sink.written());
            sink.finish().await.map_err(|e| job.io(path, e))
        }
        Err(_) if opts.cancel.is_interrupted() => {
            // What arrived is written out for the next run to resume.
            let _ = sink.finish().await;
            Err(Error::stopped(job.name))
        }
        Err(e) => Err(e),
    }
}

/// Moves the bytes of `job.fetch_url` into `sink`, from `sink.written()` on.
async fn source(
    client: &reqwest::Client,
    opts: &Options,
    job: &Job<'_>,
    sink: &mut Sink,
    progress: &mut Progress<'_>,
) -> Result<(), Error> {
    let url = job.fetch_url;
    if let Some(rest) = url.strip_prefix("file://") {
        let local = rest.strip_prefix("localhost").unwrap_or(rest);
        copy_file(&PathBuf::from(percent_decode(local)), sink, job, progress).await
    } else if url.starts_with("http://") || url.starts_with("https://") {
        download(client, opts, job, sink, progress).await
    } else {
        Err(Error::BadUrl {
            name: job.name.into(),
            url: job.fetch_url.into(),
            reason: "only http://, https:// and file:// URLs are supported".into(),
        })
    }
}

async fn copy_file(
    src: &Path,
    sink: &mut Sink,
    job: &Job<'_>,
    progress: &mut Progress<'_>,
) -> Result<(), Error> {
    let mut file = tokio::fs::File::open(src)
        .await
        .map_err(|e| job.io(src, e))?;
    let total = file.metadata().await.ok().map(|m| m.len());
    progress.start(total);
    file.seek(std::io::SeekFrom::Start(sink.written()))
        .await
        .map_err(|e| job.io(src, e))?;
    loop {
        let mut buf = Vec::with_capacity(FILE_CHUNK as usize);
        let n = (&mut file)
            .take(FILE_CHUNK)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| job.io(src, e))?;
        if n == 0 {
            return Ok(());
        }
        if let Err(e) = sink.write(buf).await {
            return Err(job.io(sink.path(), e));
        }
        progress.update(sink.written());
    }
}

/// Tries until the whole body is in `sink`: time-outs, refused or broken connections and 5xx are retried with
/// exponential backoff (an attempt that made progress is free); a cut connection resumes with `Range: bytes=N-`.
/// Every item and checksum file is retried the same way; the first retry is reported in one short line, later
/// ones are not (the final error, if any, is returned).
async fn download(
    client: &reqwest::Client,
    opts: &Options,
    job: &Job<'_>,
    sink: &mut Sink,
    progress: &mut Progress<'_>,
) -> Result<(), Error> {
    let mut failures = 0u32;
    let mut noticed = false;
    loop {
        let (before, resets) = (sink.written(), sink.resets());
        let err = match attempt(client, opts, job, sink, progress).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() => e,
            Err(e) => return Err(e),
        };
        if sink.written() <= before || sink.resets() != resets {
            failures += 1;
        }
        if failures > opts.retries {
            return Err(err);
        }
        if !noticed {
            noticed = true;
            progress.reporter.message(&format!(
                "{}: {}; retrying (up to {} times)",
                job.name,
                err.cause(),
                opts.retries
            ));
        }
        tokio::time::sleep(backoff(opts.backoff, failures)).await;
    }
}

fn backoff(base: Duration, failures: u32) -> Duration {
    base.saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// One request: resumes from `sink.written()`, restarts from zero when the
/// server ignores Range, and streams the body into the sink.
async fn attempt(
    client: &reqwest::Client,
    opts: &Options,
    job: &Job<'_>,
    sink: &mut Sink,
    progress: &mut Progress<'_>,
) -> Result<(), Error> {
    let offset = sink.written();
    let mut req = client.get(job.fetch_url);
    if offset > 0 {
        req = req.header(RANGE, format!("bytes={offset}-"));
    }
    let resp = timeout(opts.timeout, req.send())
        .await
        .map_err(|_| job.timeout(opts.timeout))?
        .map_err(|e| job.network(e, opts.timeout))?;
    let total = match resp.status() {
        StatusCode::PARTIAL_CONTENT => match content_range(&resp) {
            Some((start, total)) if start == offset => total,
            _ => return restart(sink, job, progress, "answered Range with another range").await,
        },
        StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
            return restart(sink, job, progress, "refused Range").await;
        }
        s if s.is_success() => {
            if offset > 0 {
                progress.reporter.message(&format!(
                    "{}: server ignored Range; restarting from byte 0",
                    job.name
                ));
                sink.reset().await.map_err(|e| job.io(sink.path(), e))?;
            }
            resp.content_length()
        }
        s => {
            return Err(Error::Http {
                name: job.name.into(),
                url: job.url.into(),
                mirror_url: job.mirror_url(),
                status: s.as_u16(),
            })
        }
    };
    progress.start(total);
    let mut body = resp.bytes_stream();
    loop {
        let chunk = match timeout(opts.timeout, body.next()).await {
            Err(_) => return Err(job.timeout(opts.timeout)),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(job.network(e, opts.timeout)),
            Ok(Some(Ok(chunk))) => chunk,
        };
        if let Err(e) = sink.write(chunk).await {
            return Err(job.io(sink.path(), e));
        }
        progress.update(sink.written());
    }
    match total {
        Some(total) if sink.written() != total => Err(job.broken(format!(
            "connection closed after {} of {total} bytes",
            sink.written()
        ))),
        _ => Ok(()),
    }
}

/// Drops what was received and tries again from byte 0 (counts as a failure).
async fn restart(
    sink: &mut Sink,
    job: &Job<'_>,
    progress: &mut Progress<'_>,
    why: &str,
) -> Result<(), Error> {
    sink.reset().await.map_err(|e| job.io(sink.path(), e))?;
    progress.report(0);
    Err(job.broken(format!("server {why}; restarting from byte 0")))
}

/// `(start, total)` of a `Content-Range: bytes START-END/TOTAL` header.
fn content_range(resp: &Response) -> Option<(u64, Option<u64>)> {
    let v = resp.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    let (range, total) = v.strip_prefix("bytes ")?.split_once('/')?;
    let start = range.split_once('-')?.0.trim().parse().ok()?;
    Some((start, total.trim().parse().ok()))
}

/// Throttled calls to the reporter.
struct Progress<'a> {
    name: &'a str,
    reporter: &'a dyn Reporter,
    started: bool,
    last: u64,
}

impl<'a> Progress<'a> {
    fn new(name: &'a str, reporter: &'a dyn Reporter) -> Self {
        Progress {
            name,
            reporter,
            started: false,
            last: 0,
        }
    }

    fn start(&mut self, total: Option<u64>) {
        if !self.started {
            self.started = true;
            self.reporter.start(self.name, total);
        }
    }

    fn update(&mut self, bytes: u64) {
        if bytes < self.last || bytes - self.last >= REPORT_EVERY {
            self.report(bytes);
        }
    }

    fn report(&mut self, bytes: u64) {
        if self.started && bytes != self.last {
            self.last = bytes;
            self.reporter.advance(self.name, bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_millis(100);
        assert_eq!(backoff(b, 1), b);
        assert_eq!(backoff(b, 2), b * 2);
        assert_eq!(backoff(b, 4), b * 8);
        assert_eq!(backoff(b, 40), MAX_BACKOFF);
    }
}
