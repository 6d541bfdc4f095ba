//! Bounded libvirt calls: a host that accepts the connection and never answers would keep libvirt's own
//! transports (ssh, tcp) waiting for minutes, and Ctrl-C could not end the wait. [`bounded`] runs a blocking call on
//! its own thread and gives up after a time or when the command is interrupted; [`connect`] is how every command
//! (and `lab doctor`) opens the connection, within `LAB_CONNECT_TIMEOUT`.

use super::{Error, ErrorKind, Result, VirtHost};
use crate::cancel::{Cancel, Interrupted};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set when a call was given up on: its thread may never return.
static ABANDONED: AtomicBool = AtomicBool::new(false);

/// Whether a call was given up on: its thread may stay blocked in a read, so the process must not wait for it
/// when it exits.
pub fn abandoned() -> bool {
    ABANDONED.load(Ordering::SeqCst)
}

/// How long connecting to a libvirt host may take (`LAB_CONNECT_TIMEOUT` seconds, default 30); `lab doctor`
/// gives its questions to the host as long again.
pub fn connect_timeout() -> Duration {
    Duration::from_secs(
        std::env::var("LAB_CONNECT_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    )
}

/// Opens the connection to `uri` within [`connect_timeout`]; Err(Interrupted) as soon as `cancel` is. A host that
/// does not answer in time is an error of kind [`ErrorKind::TimedOut`].
pub async fn connect(
    uri: &str,
    cancel: &Cancel,
) -> std::result::Result<Result<VirtHost>, Interrupted> {
    let u = uri.to_string();
    bounded(connect_timeout(), cancel, "connect to", uri, move || {
        VirtHost::connect(&u)
    })
    .await
}

/// Runs the blocking call `f` on its own thread and waits at most `limit` for it (an error of kind
/// [`ErrorKind::TimedOut`] about `op` `object`), and no longer than `cancel` lets it (Err(Interrupted)). A call
/// given up on is left to its thread (see [`abandoned`]).
pub async fn bounded<T: Send + 'static>(
    limit: Duration,
    cancel: &Cancel,
    op: &'static str,
    object: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::result::Result<Result<T>, Interrupted> {
    let task = tokio::task::spawn_blocking(f);
    tokio::select! {
        r = tokio::time::timeout(limit, task) => match r {
            Ok(joined) => match joined {
                Ok(done) => Ok(done),
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            },
            Err(_) => {
                ABANDONED.store(true, Ordering::SeqCst);
                Ok(Err(Error {
                    kind: ErrorKind::TimedOut,
                    op,
                    object: object.into(),
                    message: format!("did not finish within {} s", limit.as_secs()),
                }))
            }
        },
        _ = cancel.interrupted() => {
            ABANDONED.store(true, Ordering::SeqCst);
            Err(Interrupted)
        }
    }
}

/// What to do about a host that did not answer in time at `uri`: for `qemu+ssh://`, the ssh command to try.
pub fn timeout_hint(uri: &str) -> String {
    let check = match crate::ssh::jump_host(uri) {
        Some(j) => format!(
            "check that `ssh {}{} true` works without a prompt, and that libvirtd runs there",
            j.port.map(|p| format!("-p {p} ")).unwrap_or_default(),
            j.destination
        ),
        None => "check that libvirtd runs there and answers".into(),
    };
    format!("{check}; LAB_CONNECT_TIMEOUT=SECONDS waits longer")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_that_never_returns_times_out_or_is_interrupted() {
        // A call that returns only when `release` is dropped, at the end of the test.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = std::sync::Arc::new(std::sync::Mutex::new(held));
        let never = || {
            let held = held.clone();
            move || -> Result<()> {
                let _ = held.lock().unwrap().recv();
                Ok(())
            }
        };
        let c = Cancel::new();
        let e = bounded(
            Duration::from_millis(10),
            &c,
            "connect to",
            "test:///x",
            never(),
        )
        .await
        .unwrap()
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::TimedOut);
        assert_eq!(
            e.to_string(),
            "libvirt: connect to test:///x: did not finish within 0 s"
        );
        assert!(abandoned());
        c.interrupt();
        assert!(
            bounded(Duration::from_secs(3600), &c, "query", "x", never())
                .await
                .is_err()
        );
        let fresh = Cancel::new();
        let quick = bounded(Duration::from_secs(3600), &fresh, "query", "x", || Ok(7));
        assert_eq!(quick.await.unwrap().unwrap(), 7);
        drop(release);
    }

    #[test]
    fn the_hint_names_the_ssh_command_for_ssh_uris() {
        assert!(timeout_hint("qemu+ssh://root@h:2222/system").contains("`ssh -p 2222 root@h true`"));
        assert!(timeout_hint("qemu+tcp://h/system").starts_with("check that libvirtd runs there"));
    }
}
