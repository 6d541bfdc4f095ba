//! A temp file fed from async code: chunks go over a bounded channel to a
//! blocking thread that hashes and writes them, so hashing runs on its own
//! core while the network is read. The running hash state survives across
//! HTTP attempts, which is what makes Range resumption cheap. A partial file
//! kept by an interrupted run is re-hashed once ([`Sink::resume`]) and then
//! grows like a new one.

use std::fs::File;
use std::io::{self, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::checksum::{Digests, Hashes};
use crate::cancel::Cancel;

/// A chunk of any byte container (`Bytes` from the network, `Vec` from a file).
type Chunk = Box<dyn AsRef<[u8]> + Send>;

enum Cmd {
    Data(Chunk),
    Reset,
}

/// Hashing writer to a new file (see [`TempFile`] for its removal).
pub struct Sink {
    tx: Option<mpsc::Sender<Cmd>>,
    worker: Option<JoinHandle<io::Result<Digests>>>,
    written: u64,
    resets: u32,
    path: PathBuf,
}

impl Sink {
    /// Creates `path` (which must not exist) and starts the writer thread.
    pub fn create(path: &Path, with_sha512: bool) -> io::Result<Self> {
        let file = fs_err::File::create_new(path)?.into_parts().0;
        Ok(Sink::start(file, 0, with_sha512, None, path))
    }

    /// Opens `path`, creating it when absent; what it holds counts as written: the writer thread hashes it first
    /// (stopping when `cancel` is interrupted), then appends.
    pub fn resume(path: &Path, with_sha512: bool, cancel: Cancel) -> io::Result<Self> {
        let file = fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?
            .into_parts()
            .0;
        let held = file.metadata()?.len();
        Ok(Sink::start(file, held, with_sha512, Some(cancel), path))
    }

    fn start(
        file: File,
        held: u64,
        with_sha512: bool,
        prefix: Option<Cancel>,
        path: &Path,
    ) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let worker = tokio::task::spawn_blocking(move || {
            let mut hashes = Hashes::new(with_sha512);
            let file = match prefix {
                Some(cancel) => hash_prefix(file, &mut hashes, cancel)?,
                None => file,
            };
            run(file, hashes, rx)
        });
        Sink {
            tx: Some(tx),
            worker: Some(worker),
            written: held,
            resets: 0,
            path: path.to_owned(),
        }
    }

    /// Bytes accepted so far (they will all be written unless an error is returned).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Queues a chunk; returns the writer's error if it failed.
    pub async fn write(&mut self, chunk: impl AsRef<[u8]> + Send + 'static) -> io::Result<()> {
        let len = chunk.as_ref().len() as u64;
        self.send(Cmd::Data(Box::new(chunk))).await?;
        self.written += len;
        Ok(())
    }

    /// Truncates the file and restarts the hashes (the server ignored Range).
    pub async fn reset(&mut self) -> io::Result<()> {
        self.send(Cmd::Reset).await?;
        self.written = 0;
        self.resets += 1;
        Ok(())
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many times [`Sink::reset`] was called.
    pub fn resets(&self) -> u32 {
        self.resets
    }

    /// Waits for every chunk to be written and returns the digests and size.
    pub async fn finish(mut self) -> io::Result<(Digests, u64)> {
        self.tx = None;
        let digests = self.join().await?;
        Ok((digests, self.written))
    }

    async fn send(&mut self, cmd: Cmd) -> io::Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(cmd).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The worker stopped: it hit an error; surface it.
        self.tx = None;
        match self.join().await {
            Err(e) => Err(e),
            Ok(_) => Err(io::Error::other("writer already finished")),
        }
    }

    async fn join(&mut self) -> io::Result<Digests> {
        let worker = self
            .worker
            .take()
            .ok_or_else(|| io::Error::other("writer already finished"))?;
        match worker.await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// Hashes what `file` holds and leaves it positioned at its end.
fn hash_prefix(file: File, hashes: &mut Hashes, cancel: Cancel) -> io::Result<File> {
    let mut reader = crate::cancel::Reader {
        inner: io::BufReader::with_capacity(1 << 20, file),
        cancel,
    };
    io::copy(&mut reader, &mut HashWriter(hashes))?;
    Ok(reader.inner.into_inner())
}

/// Feeds what is written to the hashers.
struct HashWriter<'a>(&'a mut Hashes);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn run(file: File, mut hashes: Hashes, mut rx: mpsc::Receiver<Cmd>) -> io::Result<Digests> {
    let mut out = BufWriter::with_capacity(1 << 20, file);
    while let Some(cmd) = rx.blocking_recv() {
        match cmd {
            Cmd::Data(chunk) => {
                let chunk = (*chunk).as_ref();
                hashes.update(chunk);
                out.write_all(chunk)?;
            }
            Cmd::Reset => {
                out.flush()?;
                let file = out.get_mut();
                file.set_len(0)?;
                file.rewind()?;
                hashes.reset();
            }
        }
    }
    out.flush()?;
    Ok(hashes.finish())
}

/// A temp file's path, removed on drop unless [`TempFile::keep`] was called.
pub struct TempFile(Option<PathBuf>);

impl TempFile {
    /// Guards `path` (which need not exist yet).
    pub fn new(path: PathBuf) -> Self {
        TempFile(Some(path))
    }

    /// The guarded path.
    pub fn path(&self) -> &Path {
        self.0.as_deref().expect("set until kept")
    }

    /// Stops guarding: the file was renamed into place, or is kept for a later run to resume.
    pub fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}
