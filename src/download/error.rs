//! The one error type of the download manager.
//!
//! An item's error is one line, `NAME: CAUSE (URL)`, naming each URL once: the URL requested, or through a
//! mirror `(via mirror MIRROR_URL for UPSTREAM_URL)`. Several failures are one [`Error::Many`]: a summary line
//! grouped by cause, then one indented line per item; [`Error::Offline`] has the same shape. [`Error::hint`] is the
//! one place that says what to do next, from the causes. No variant repeats its text in `source()`.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::checksum::{file_name_of, Algorithm};

/// An item that offline mode could not find in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The item's name in the lab file.
    pub name: String,
    /// Its upstream URL.
    pub url: String,
}

/// Why an item (or several) could not be fetched.
///
/// In the item variants, `url` is the upstream URL and `mirror_url` the URL requested instead when a mirror is
/// used.
#[derive(Debug)]
pub enum Error {
    /// The server answered with an error status (404, 403, 500 after retries, ...).
    Http {
        name: String,
        url: String,
        mirror_url: Option<String>,
        status: u16,
    },
    /// The content does not match the expected digest; the file was discarded.
    Mismatch {
        name: String,
        url: String,
        mirror_url: Option<String>,
        algorithm: Algorithm,
        /// Hex digests (boxed: they keep this error small).
        expected: Box<str>,
        got: Box<str>,
    },
    /// Connecting or reading stalled for longer than the time-out, on every try.
    Timeout {
        name: String,
        url: String,
        mirror_url: Option<String>,
        after: Duration,
    },
    /// The host name does not resolve (offline, or a typo). Not retried: it does not heal in seconds.
    Resolve {
        name: String,
        url: String,
        mirror_url: Option<String>,
        /// The name that did not resolve.
        host: String,
    },
    /// No connection could be made (refused, unreachable), on every try.
    Connect {
        name: String,
        url: String,
        mirror_url: Option<String>,
        /// `host[:port]` connected to.
        host: String,
        /// Short: `connection refused`, `network unreachable`, ...
        reason: String,
    },
    /// A connection broke (reset, cut short), a TLS failure, ... on every try.
    Network {
        name: String,
        url: String,
        mirror_url: Option<String>,
        message: String,
    },
    /// The disk holding the cache filled up (ENOSPC).
    DiskFull {
        name: String,
        url: String,
        path: PathBuf,
    },
    /// The checksum file has no line for the item's file name.
    MissingChecksumEntry {
        name: String,
        url: String,
        checksum_url: String,
        file: String,
    },
    /// A URL this downloader cannot fetch (unknown scheme, unparsable).
    BadUrl {
        name: String,
        url: String,
        reason: String,
    },
    /// Any other I/O error on the cache or a `file://` source.
    Io {
        name: String,
        url: String,
        path: PathBuf,
        source: io::Error,
    },
    /// Offline mode, and these items are not in the cache.
    Offline { missing: Vec<Missing> },
    /// The mirror setting is not a usable URL; nothing was fetched.
    BadMirror {
        /// The setting as given.
        mirror: String,
        /// What [`super::parse_mirror`] says about it.
        message: String,
    },
    /// Several items failed, each for its own reason (in item order; never nested).
    Many { failures: Vec<Error> },
    /// The command was interrupted: these items were stopped (or never started); each partial download is kept
    /// in the cache's temp folder, and the next fetch of the same URL resumes it with `Range`.
    Interrupted {
        /// The items' names, in item order.
        names: Vec<String>,
    },
}

/// Hosts named in a summary line before `and N more`.
const SUMMARY_HOSTS: usize = 4;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Offline { missing } => {
                let n = missing.len();
                write!(
                    f,
                    "{n} {} not in the cache (--offline)",
                    if n == 1 {
                        "download is"
                    } else {
                        "downloads are"
                    }
                )?;
                for m in missing {
                    write!(f, "\n  {} ({})", m.name, m.url)?;
                }
                Ok(())
            }
            Error::BadMirror { message, .. } => write!(f, "mirror {message}"),
            Error::Interrupted { names } => match names.as_slice() {
                [one] => write!(f, "interrupted: the download of {one} was stopped"),
                all => write!(
                    f,
                    "interrupted: {} downloads were stopped ({})",
                    all.len(),
                    all.join(", ")
                ),
            },
            Error::Many { failures } => {
                f.write_str(&summary(failures))?;
                for e in failures {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
            _ => {
                let (name, _, _) = self.item().expect("an item's error");
                write!(f, "{name}: {} ({})", self.cause(), self.location())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Also in the message; the CLI's chain skips a source already shown.
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `N downloads failed: GROUP; GROUP`, each group a cause with its hosts, counted when there are several.
fn summary(failures: &[Error]) -> String {
    let mut groups: Vec<(String, Vec<String>, usize)> = Vec::new();
    for e in failures {
        let (label, detail) = e.group();
        let i = match groups.iter().position(|g| g.0 == label) {
            Some(i) => i,
            None => {
                groups.push((label, Vec::new(), 0));
                groups.len() - 1
            }
        };
        let g = &mut groups[i];
        g.2 += 1;
        if let Some(d) = detail {
            if !g.1.contains(&d) {
                g.1.push(d);
            }
        }
    }
    let several = groups.len() > 1;
    let parts: Vec<String> = groups
        .into_iter()
        .map(|(label, details, count)| {
            let mut s = label;
            if !details.is_empty() {
                s.push(' ');
                s.push_str(&details[..details.len().min(SUMMARY_HOSTS)].join(", "));
                if details.len() > SUMMARY_HOSTS {
                    s.push_str(&format!(" and {} more", details.len() - SUMMARY_HOSTS));
                }
            }
            if several {
                s.push_str(&format!(" ({count})"));
            }
            s
        })
        .collect();
    let n = failures.len();
    format!(
        "{n} {} failed: {}",
        if n == 1 { "download" } else { "downloads" },
        parts.join("; ")
    )
}

impl Error {
    /// One error for the failures of a run: none, the one, or [`Error::Many`]; one [`Error::Interrupted`]
    /// naming every stopped item when the run was interrupted (the other failures are not the user's concern now).
    pub(crate) fn from_failures(mut failures: Vec<Error>) -> Option<Error> {
        let stopped: Vec<String> = failures
            .iter()
            .filter_map(|e| match e {
                Error::Interrupted { names } => Some(names.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        if !stopped.is_empty() {
            return Some(Error::Interrupted { names: stopped });
        }
        match failures.len() {
            0 => None,
            1 => failures.pop(),
            _ => Some(Error::Many { failures }),
        }
    }

    /// An actionable hint for the user, if there is one. For [`Error::Many`], the distinct hints of its
    /// failures, in order.
    pub fn hint(&self) -> Option<String> {
        let via = self.item().and_then(|(_, _, m)| m);
        Some(match self {
            Error::Many { failures } => {
                let mut hints: Vec<String> = Vec::new();
                for h in failures.iter().filter_map(Error::hint) {
                    if !hints.contains(&h) {
                        hints.push(h);
                    }
                }
                return (!hints.is_empty()).then(|| hints.join("; "));
            }
            Error::Http { status: 404, .. } if via.is_some() => {
                "the mirror lacks it: `lab mirror export DIR` on a machine whose cache has it, then serve DIR".into()
            }
            Error::Http { status: 404, .. } => {
                "check the version and architecture in the lab file's URL: they may not exist upstream".into()
            }
            Error::Http { status: 401 | 403, .. } => {
                "the server refused access; check the URL, or fetch through a mirror with --mirror".into()
            }
            Error::Http { status, .. } if *status >= 500 => {
                "the server is failing; try again later, or use a mirror with --mirror".into()
            }
            Error::Http { .. } => "check the URL in the lab file".into(),
            Error::Mismatch { .. } if via.is_some() => {
                "the mirror's copy differs: export the mirror again from a verified cache (`lab mirror export`)".into()
            }
            Error::Mismatch { .. } => {
                "the upstream file changed or the download was tampered with; check the lab file's sha256".into()
            }
            Error::Timeout { .. } => {
                "the server stopped sending data; check the network (or use --mirror) and run again".into()
            }
            Error::Resolve { .. } | Error::Connect { .. } if via.is_some() => {
                "is the mirror running and reachable? check --mirror (or LAB_MIRROR, or `mirror =` in the lab file)"
                    .into()
            }
            Error::Resolve { .. } | Error::Connect { .. } => {
                "offline? run `lab fetch` on a connected machine, or use --mirror URL".into()
            }
            Error::Network { .. } => {
                "check the network connection and proxy settings, or use a mirror with --mirror".into()
            }
            Error::DiskFull { path, .. } => format!(
                "free some space on the disk holding {} and run again",
                path.parent().unwrap_or(path).display()
            ),
            Error::MissingChecksumEntry { file, .. } => format!(
                "the checksum file does not list `{file}`; check checksum_url, or pin sha256 in the lab file"
            ),
            Error::Offline { .. } => "`lab fetch` on a connected machine, or drop --offline".into(),
            Error::Interrupted { .. } => {
                "the partial files are kept: run the command again to resume where it stopped".into()
            }
            Error::BadMirror { .. } => {
                "the mirror comes from --mirror, LAB_MIRROR or `mirror =` in the lab file".into()
            }
            Error::BadUrl { .. } => "use an http://, https:// or file:// URL".into(),
            Error::Io { path, .. } => format!(
                "check that {} is writable and the cache folder is intact",
                path.display()
            ),
        })
    }

    /// The item's name, upstream URL and mirror URL, for an item's error.
    fn item(&self) -> Option<(&str, &str, Option<&str>)> {
        Some(match self {
            Error::Http {
                name,
                url,
                mirror_url,
                ..
            }
            | Error::Mismatch {
                name,
                url,
                mirror_url,
                ..
            }
            | Error::Timeout {
                name,
                url,
                mirror_url,
                ..
            }
            | Error::Resolve {
                name,
                url,
                mirror_url,
                ..
            }
            | Error::Connect {
                name,
                url,
                mirror_url,
                ..
            }
            | Error::Network {
                name,
                url,
                mirror_url,
                ..
            } => (name.as_str(), url.as_str(), mirror_url.as_deref()),
            Error::DiskFull { name, url, .. }
            | Error::MissingChecksumEntry { name, url, .. }
            | Error::BadUrl { name, url, .. }
            | Error::Io { name, url, .. } => (name.as_str(), url.as_str(), None),
            Error::Offline { .. }
            | Error::BadMirror { .. }
            | Error::Many { .. }
            | Error::Interrupted { .. } => return None,
        })
    }

    /// `URL`, or `via mirror MIRROR_URL for URL`.
    fn location(&self) -> String {
        match self.item() {
            Some((_, url, Some(m))) => format!("via mirror {m} for {url}"),
            Some((_, url, None)) => url.to_owned(),
            None => String::new(),
        }
    }

    /// What went wrong, short, without the item's name or URL (for progress lines and the item's line).
    pub fn cause(&self) -> String {
        match self {
            Error::Http {
                status: 404,
                url,
                mirror_url: Some(_),
                ..
            } => format!("the mirror has no {}", file_name_of(url)),
            Error::Http { status, .. } => format!("HTTP {status}"),
            Error::Mismatch {
                algorithm,
                expected,
                got,
                ..
            } => format!(
                "checksum mismatch: expected {} {expected}, got {got}",
                algorithm.as_str()
            ),
            Error::Timeout { after, .. } => {
                format!("timed out after {}s without data", after.as_secs_f32())
            }
            Error::Resolve { host, .. } => format!("cannot resolve {host}"),
            Error::Connect { host, reason, .. } => format!("cannot connect to {host}: {reason}"),
            Error::Network { message, .. } => format!("network error: {message}"),
            Error::DiskFull { path, .. } => format!("disk full while writing {}", path.display()),
            Error::MissingChecksumEntry {
                checksum_url, file, ..
            } => format!("checksum file {checksum_url} has no entry for `{file}`"),
            Error::BadUrl { reason, .. } => format!("unsupported URL: {reason}"),
            Error::Io { path, source, .. } => format!("I/O error on {}: {source}", path.display()),
            Error::Offline { .. }
            | Error::BadMirror { .. }
            | Error::Many { .. }
            | Error::Interrupted { .. } => self
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        }
    }

    /// The cause a summary line groups by, and the host it names, if any.
    fn group(&self) -> (String, Option<String>) {
        match self {
            Error::Resolve { host, .. } => ("cannot resolve".into(), Some(host.clone())),
            Error::Connect { host, .. } => ("cannot connect to".into(), Some(host.clone())),
            Error::Http {
                status: 404,
                mirror_url: Some(_),
                ..
            } => ("not on the mirror".into(), None),
            Error::Http { status, .. } => (format!("HTTP {status}"), None),
            Error::Mismatch { .. } => ("checksum mismatch".into(), None),
            Error::Timeout { .. } => ("timed out".into(), None),
            Error::Network { .. } => ("network error".into(), None),
            Error::DiskFull { .. } => ("disk full".into(), None),
            Error::MissingChecksumEntry { .. } => ("not in the checksum file".into(), None),
            Error::BadUrl { .. } => ("unsupported URL".into(), None),
            Error::Io { .. } => ("I/O error".into(), None),
            Error::Offline { .. }
            | Error::BadMirror { .. }
            | Error::Many { .. }
            | Error::Interrupted { .. } => (self.cause(), None),
        }
    }

    /// Whether trying again might help: time-outs, refused or broken connections, 5xx. Not DNS failures (they do
    /// not heal in seconds) nor 4xx.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Error::Http { status, .. } => *status >= 500,
            Error::Timeout { .. } | Error::Connect { .. } | Error::Network { .. } => true,
            _ => false,
        }
    }

    /// Whether the command was interrupted (the user asked it to stop).
    pub fn is_interrupted(&self) -> bool {
        matches!(self, Error::Interrupted { .. })
    }

    /// An item stopped by the interruption.
    pub(crate) fn stopped(name: &str) -> Self {
        Error::Interrupted {
            names: vec![name.into()],
        }
    }

    /// Wraps an I/O error on `path`, recognising a full disk.
    pub(crate) fn io(name: &str, url: &str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.kind() == io::ErrorKind::StorageFull {
            Error::DiskFull {
                name: name.into(),
                url: url.into(),
                path,
            }
        } else {
            Error::Io {
                name: name.into(),
                url: url.into(),
                path,
                source,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n() -> String {
        "web".to_string()
    }

    fn u() -> String {
        "https://h/f".to_string()
    }

    fn resolve(name: &str, host: &str) -> Error {
        Error::Resolve {
            name: name.into(),
            url: format!("https://{host}/{name}"),
            mirror_url: None,
            host: host.into(),
        }
    }

    #[test]
    fn enospc_is_disk_full() {
        let e = Error::io(
            "img",
            "https://x/y",
            "/c/tmp-v1/a.part",
            io::Error::from_raw_os_error(28),
        );
        assert_eq!(
            e.to_string(),
            "img: disk full while writing /c/tmp-v1/a.part (https://x/y)"
        );
        assert!(e.hint().unwrap().contains("/c/tmp-v1"));
        let e = Error::io("img", "u", "/p", io::Error::from_raw_os_error(13));
        assert!(matches!(e, Error::Io { .. }));
    }

    #[test]
    fn every_item_variant_is_one_line_naming_its_url_once_with_a_hint() {
        let all = [
            Error::Http {
                name: n(),
                url: u(),
                mirror_url: None,
                status: 404,
            },
            Error::Http {
                name: n(),
                url: u(),
                mirror_url: None,
                status: 503,
            },
            Error::Mismatch {
                name: n(),
                url: u(),
                mirror_url: None,
                algorithm: Algorithm::Sha256,
                expected: "aa".into(),
                got: "bb".into(),
            },
            Error::Timeout {
                name: n(),
                url: u(),
                mirror_url: None,
                after: Duration::from_secs(30),
            },
            Error::Resolve {
                name: n(),
                url: u(),
                mirror_url: None,
                host: "h".into(),
            },
            Error::Connect {
                name: n(),
                url: u(),
                mirror_url: None,
                host: "h".into(),
                reason: "connection refused".into(),
            },
            Error::Network {
                name: n(),
                url: u(),
                mirror_url: None,
                message: "reset".into(),
            },
            Error::DiskFull {
                name: n(),
                url: u(),
                path: "/c/x".into(),
            },
            Error::MissingChecksumEntry {
                name: n(),
                url: u(),
                checksum_url: "https://h/SUMS".into(),
                file: "f".into(),
            },
            Error::BadUrl {
                name: n(),
                url: u(),
                reason: "ftp".into(),
            },
            Error::Io {
                name: n(),
                url: u(),
                path: "/c".into(),
                source: io::Error::other("boom"),
            },
        ];
        for e in &all {
            let s = e.to_string();
            assert!(!s.contains('\n'), "{s}");
            assert!(
                s.starts_with("web: ") && s.ends_with(" (https://h/f)"),
                "{s}"
            );
            assert_eq!(s.matches("https://h/f").count(), 1, "{s}");
            assert!(e.hint().is_some());
            assert!(!e.cause().contains("https://h/f"), "{}", e.cause());
        }
    }

    #[test]
    fn dns_failures_are_summarised_by_host_and_not_retried() {
        let hosts = [
            "github.com",
            "dl.k8s.io",
            "github.com",
            "dl.k8s.io",
            "storage.googleapis.com",
        ];
        let failures: Vec<_> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| resolve(&format!("item{i}"), h))
            .collect();
        assert!(failures.iter().all(|e| !e.is_transient()));
        let e = Error::from_failures(failures).unwrap();
        let text = e.to_string();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(
            lines[0],
            "5 downloads failed: cannot resolve github.com, dl.k8s.io, storage.googleapis.com"
        );
        assert_eq!(
            lines[1],
            "  item0: cannot resolve github.com (https://github.com/item0)"
        );
        assert_eq!(lines.len(), 6);
        assert_eq!(
            e.hint().unwrap(),
            "offline? run `lab fetch` on a connected machine, or use --mirror URL"
        );
        assert!(std::error::Error::source(&e).is_none());

        let many: Vec<_> = (0..7)
            .map(|i| resolve("x", &format!("h{i}.example")))
            .collect();
        let first = Error::from_failures(many).unwrap().to_string();
        assert_eq!(
            first.lines().next().unwrap(),
            "7 downloads failed: cannot resolve h0.example, h1.example, h2.example, h3.example and 3 more"
        );
    }

    #[test]
    fn mixed_causes_are_counted_and_hinted() {
        let e = Error::from_failures(vec![
            Error::Http {
                name: "a".into(),
                url: "https://h/a".into(),
                mirror_url: None,
                status: 404,
            },
            Error::Connect {
                name: "b".into(),
                url: "https://h/b".into(),
                mirror_url: None,
                host: "h".into(),
                reason: "connection refused".into(),
            },
            Error::Http {
                name: "c".into(),
                url: "https://h/c".into(),
                mirror_url: None,
                status: 404,
            },
        ])
        .unwrap();
        assert_eq!(
            e.to_string().lines().next().unwrap(),
            "3 downloads failed: HTTP 404 (2); cannot connect to h (1)"
        );
        let hint = e.hint().unwrap();
        assert!(
            hint.contains("version and architecture") && hint.contains("offline?"),
            "{hint}"
        );
        assert_eq!(hint.matches("version").count(), 1, "{hint}");
    }

    #[test]
    fn an_interruption_names_every_stopped_item_and_hides_the_rest() {
        let e = Error::from_failures(vec![
            resolve("a", "h"),
            Error::stopped("b"),
            Error::stopped("c"),
        ])
        .unwrap();
        assert!(e.is_interrupted());
        assert_eq!(
            e.to_string(),
            "interrupted: 2 downloads were stopped (b, c)"
        );
        assert!(e.hint().unwrap().contains("run the command again"));
        assert_eq!(
            Error::stopped("b").to_string(),
            "interrupted: the download of b was stopped"
        );
        assert!(!resolve("a", "h").is_interrupted());
    }

    #[test]
    fn one_failure_stays_itself() {
        assert!(Error::from_failures(Vec::new()).is_none());
        let e = Error::from_failures(vec![resolve("a", "h")]).unwrap();
        assert!(matches!(e, Error::Resolve { .. }));
    }

    #[test]
    fn mirror_failures_name_both_urls_once() {
        let e = Error::Http {
            name: "disk".into(),
            url: "https://up/v1/disk.img".into(),
            mirror_url: Some("http://m/up/v1/disk.img".into()),
            status: 404,
        };
        assert_eq!(
            e.to_string(),
            "disk: the mirror has no disk.img (via mirror http://m/up/v1/disk.img for https://up/v1/disk.img)"
        );
        assert!(e.hint().unwrap().contains("lab mirror export DIR"));
    }

    #[test]
    fn offline_lists_each_item_on_its_line() {
        let off = Error::Offline {
            missing: vec![
                Missing {
                    name: "a".into(),
                    url: "https://h/a".into(),
                },
                Missing {
                    name: "b".into(),
                    url: "https://h/b".into(),
                },
            ],
        };
        assert_eq!(
            off.to_string(),
            "2 downloads are not in the cache (--offline)\n  a (https://h/a)\n  b (https://h/b)"
        );
        assert_eq!(
            off.hint().unwrap(),
            "`lab fetch` on a connected machine, or drop --offline"
        );
        assert!(std::error::Error::source(&off).is_none());
    }
}
