//! The one error type of the download manager: every variant displays as one
//! line naming the item and its URL, and [`Error::hint`] says what to do next.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// An item that offline mode could not find in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The item's name in the lab file.
    pub name: String,
    /// Its upstream URL.
    pub url: String,
}

/// Why an item could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status (404, 403, 500 after retries, ...).
    #[error("{name}: HTTP {status} fetching {url}")]
    Http {
        name: String,
        url: String,
        status: u16,
    },
    /// The content does not match the expected digest; the file was discarded.
    #[error("{name}: checksum mismatch for {url}: expected {algorithm} {expected}, got {got}")]
    Mismatch {
        name: String,
        url: String,
        algorithm: &'static str,
        expected: String,
        got: String,
    },
    /// Connecting or reading stalled for longer than the time-out, on every try.
    #[error("{name}: timed out after {}s without data fetching {url}", after.as_secs_f32())]
    Timeout {
        name: String,
        url: String,
        after: Duration,
    },
    /// Connection refused, reset, TLS failure, too many redirects, ... on every try.
    #[error("{name}: network error fetching {url}: {message}")]
    Network {
        name: String,
        url: String,
        message: String,
    },
    /// The disk holding the cache filled up (ENOSPC).
    #[error("{name}: disk full while writing {} (fetching {url})", path.display())]
    DiskFull {
        name: String,
        url: String,
        path: PathBuf,
    },
    /// The checksum file has no line for the item's file name.
    #[error("{name}: checksum file {checksum_url} has no entry for `{file}` (fetching {url})")]
    MissingChecksumEntry {
        name: String,
        url: String,
        checksum_url: String,
        file: String,
    },
    /// Offline mode, and these items are not in the cache.
    #[error("offline and not cached: {}", list(missing))]
    Offline { missing: Vec<Missing> },
    /// A URL this downloader cannot fetch (unknown scheme, unparsable).
    #[error("{name}: unsupported URL {url}: {reason}")]
    BadUrl {
        name: String,
        url: String,
        reason: String,
    },
    /// Any other I/O error on the cache or a `file://` source.
    #[error("{name}: I/O error on {} (fetching {url}): {source}", path.display())]
    Io {
        name: String,
        url: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn list(missing: &[Missing]) -> String {
    missing
        .iter()
        .map(|m| format!("{} ({})", m.name, m.url))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Error {
    /// An actionable hint for the user, if there is one.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::Http { status: 404, .. } => {
                "check the URL in the lab file: the version or architecture may not exist upstream"
                    .into()
            }
            Error::Http { status: 401 | 403, .. } => {
                "the server refused access; check the URL, or fetch through a mirror with --mirror"
                    .into()
            }
            Error::Http { status, .. } if *status >= 500 => {
                "the server is failing; try again later, or use a mirror with --mirror".into()
            }
            Error::Http { .. } => "check the URL in the lab file".into(),
            Error::Mismatch { .. } => {
                "the upstream file changed or the download was tampered with; check the lab file's sha256"
                    .into()
            }
            Error::Timeout { .. } => {
                "the server stopped sending data; check the network (or use --mirror) and run again"
                    .into()
            }
            Error::Network { .. } => {
                "check the network connection and proxy settings, or use a mirror with --mirror"
                    .into()
            }
            Error::DiskFull { path, .. } => format!(
                "free some space on the disk holding {} and run again",
                path.parent().unwrap_or(path).display()
            ),
            Error::MissingChecksumEntry { file, .. } => format!(
                "the checksum file does not list `{file}`; check checksum_url, or pin sha256 in the lab file"
            ),
            Error::Offline { .. } => {
                "run `lab fetch` while online (or with --mirror) to fill the cache".into()
            }
            Error::BadUrl { .. } => "use an http://, https:// or file:// URL".into(),
            Error::Io { path, .. } => format!(
                "check that {} is writable and the cache folder is intact",
                path.display()
            ),
        })
    }

    /// Whether trying again might help (time-outs, connection errors, 5xx).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Error::Http { status, .. } => *status >= 500,
            Error::Timeout { .. } | Error::Network { .. } => true,
            _ => false,
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
            "img: disk full while writing /c/tmp-v1/a.part (fetching https://x/y)"
        );
        assert!(e.hint().unwrap().contains("/c/tmp-v1"));
        let e = Error::io("img", "u", "/p", io::Error::from_raw_os_error(13));
        assert!(matches!(e, Error::Io { .. }));
    }

    #[test]
    fn every_variant_is_one_line_with_a_hint() {
        let n = || "web".to_string();
        let u = || "https://h/f".to_string();
        let all = [
            Error::Http {
                name: n(),
                url: u(),
                status: 404,
            },
            Error::Http {
                name: n(),
                url: u(),
                status: 503,
            },
            Error::Mismatch {
                name: n(),
                url: u(),
                algorithm: "sha256",
                expected: "aa".into(),
                got: "bb".into(),
            },
            Error::Timeout {
                name: n(),
                url: u(),
                after: Duration::from_secs(30),
            },
            Error::Network {
                name: n(),
                url: u(),
                message: "refused".into(),
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
            assert!(s.contains("web") && s.contains("https://h/f"), "{s}");
            assert!(e.hint().is_some());
        }
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
            "offline and not cached: a (https://h/a), b (https://h/b)"
        );
        assert!(off.hint().unwrap().contains("lab fetch"));
    }
}
