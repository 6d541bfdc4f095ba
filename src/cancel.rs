//! Cancellation by design: one token for the whole command. The first Ctrl-C (or SIGTERM) asks the command to stop
//! at the next safe point: each phase either finishes or rolls back, so machines are never left paused, frozen
//! or half-made. A second one also asks it to stop waiting for slow guests (clocks, SSH); the guarantees stay.
//! Blocking loops poll [`Cancel::is_interrupted`]; async waits select on [`Cancel::interrupted`].

use tokio_util::sync::CancellationToken;

#[derive(Clone, Default, Debug)]
pub struct Cancel {
    interrupt: CancellationToken,
    hurry: CancellationToken,
}

/// What a command says when it stopped because it was asked to.
#[derive(Debug, Clone, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// A token that is interrupted (and hurried) with this one, and can also be interrupted on its own: for a
    /// group of tasks that stop when one of them fails.
    pub fn child(&self) -> Cancel {
        Cancel {
            interrupt: self.interrupt.child_token(),
            hurry: self.hurry.child_token(),
        }
    }

    /// Asks the command to stop at its next safe point.
    pub fn interrupt(&self) {
        self.interrupt.cancel();
    }

    /// Asks it to skip waits for slow guests too (implies `interrupt`).
    pub fn hurry(&self) {
        self.interrupt.cancel();
        self.hurry.cancel();
    }

    pub fn is_interrupted(&self) -> bool {
        self.interrupt.is_cancelled()
    }

    pub fn is_hurried(&self) -> bool {
        self.hurry.is_cancelled()
    }

    /// Completes when the command has been asked to stop.
    pub async fn interrupted(&self) {
        self.interrupt.cancelled().await
    }

    /// Completes when the command has been asked to stop waiting.
    pub async fn hurried(&self) {
        self.hurry.cancelled().await
    }

    /// Err(Interrupted) once the command has been asked to stop: the check between phases that may be skipped.
    pub fn check(&self) -> Result<(), Interrupted> {
        if self.is_interrupted() {
            Err(Interrupted)
        } else {
            Ok(())
        }
    }

    /// Waits `d`, or less when the command is asked to stop: then Err(Interrupted).
    pub async fn sleep(&self, d: std::time::Duration) -> Result<(), Interrupted> {
        tokio::select! {
            _ = self.interrupted() => Err(Interrupted),
            _ = tokio::time::sleep(d) => Ok(()),
        }
    }

    /// Turns SIGINT and SIGTERM into this token: the first interrupts, the next ones hurry. `say` tells the user
    /// what happens (once per signal). Must be called inside the tokio runtime.
    pub fn listen(&self, say: impl Fn(&str) + Send + 'static) {
        use tokio::signal::unix::{signal, SignalKind};
        let me = self.clone();
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::spawn(async move {
            let mut seen = 0;
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                seen += 1;
                if seen == 1 {
                    me.interrupt();
                    say("interrupted: finishing or undoing the current step so the lab stays consistent \
                         (Ctrl-C again to stop waiting for slow machines)");
                } else {
                    me.hurry();
                    if seen == 2 {
                        say("interrupted again: no longer waiting for slow machines");
                    }
                }
            }
        });
    }
}

/// A reader for blocking loops that fails at its next read once the command is interrupted (an
/// [`std::io::ErrorKind::Other`] error: `io::copy` retries `ErrorKind::Interrupted`). Whoever gets the error asks
/// [`Cancel::is_interrupted`] to tell it from a read error.
pub struct Reader<R> {
    pub inner: R,
    pub cancel: Cancel,
}

impl<R: std::io::Read> std::io::Read for Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.is_interrupted() {
            return Err(std::io::Error::other(Interrupted));
        }
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn interrupt_then_hurry() {
        let c = Cancel::new();
        assert!(c.check().is_ok());
        c.interrupt();
        assert!(c.check().is_err());
        assert!(!c.is_hurried());
        c.interrupted().await;
        c.hurry();
        assert!(c.is_hurried());
        c.clone().hurried().await;
    }

    #[tokio::test]
    async fn sleep_ends_early_when_interrupted() {
        let c = Cancel::new();
        assert!(c.sleep(std::time::Duration::ZERO).await.is_ok());
        c.interrupt();
        assert!(c.sleep(std::time::Duration::from_secs(3600)).await.is_err());
    }

    #[test]
    fn reader_stops_at_the_next_read() {
        use std::io::Read;
        let c = Cancel::new();
        let mut r = Reader {
            inner: std::io::repeat(7),
            cancel: c.clone(),
        };
        let mut buf = [0u8; 4];
        assert_eq!(r.read(&mut buf).unwrap(), 4);
        c.interrupt();
        let e = std::io::copy(&mut r, &mut std::io::sink()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::Other);
        assert!(e.to_string().contains("interrupted"));
    }
}
