//! `lab import SOURCE [DIR]` and `lab kit verify SOURCE`. A kit is read from a folder or from any static web server.
//! Every file goes through the download manager (progress, resume, retries, bounded parallelism, sha256 against
//! the manifest, the content-addressed cache: importing the same kit again transfers nothing) before anything is
//! installed; then the lab file goes into DIR and the lab into this host's libvirt, its checkpoints registered
//! as built. A kit that fails a check installs nothing, and an install that fails half-way is removed.

use super::qcow2;
use super::{Kind, KitError, KitFile, Manifest, FORMAT, MANIFEST};
use crate::download::{self, Cache, Fetched, Item};
use crate::libvirt::Shared;
use crate::model::{self, Checksum, Lab};
use crate::orchestrator::{self as orch, Context, Error, Result};
use crate::state::{Dirs, LabLock, Pending, State};
use crate::ui::Ui;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where a kit is: a folder, or the `http(s)://` URL of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Dir(PathBuf),
    Url(String),
}

impl Source {
    pub fn parse(s: &str) -> Source {
        if s.starts_with("http://") || s.starts_with("https://") {
            Source::Url(s.trim_end_matches('/').to_string())
        } else {
            Source::Dir(PathBuf::from(s.strip_prefix("file://").unwrap_or(s)))
        }
    }

    /// The URL of one file of the kit.
    fn url(&self, path: &str) -> String {
        match self {
            Source::Url(base) => format!("{base}/{path}"),
            Source::Dir(dir) => {
                let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
                format!("file://{}/{path}", abs.display())
            }
        }
    }

    fn name(&self) -> String {
        match self {
            Source::Url(u) => u.clone(),
            Source::Dir(d) => d.display().to_string(),
        }
    }
}

/// Reads and checks the manifest: its format first (a newer kit is refused with its own error, whatever else it
/// holds), then the rest. The wait for a server ends when `cancel` is interrupted.
pub async fn manifest(source: &Source, cancel: &crate::cancel::Cancel) -> Result<Manifest> {
    tokio::select! {
        m = read_manifest(source) => Ok(m?),
        _ = cancel.interrupted() => Err(Error::Interrupted(
            "stopped while reading the kit's manifest; nothing was changed".into(),
        )),
    }
}

async fn read_manifest(source: &Source) -> std::result::Result<Manifest, KitError> {
    let bad = |why: String| KitError::Manifest {
        source_name: source.name(),
        why,
    };
    let text = match source {
        Source::Dir(d) => {
            fs_err::read_to_string(d.join(MANIFEST)).map_err(|e| bad(e.to_string()))?
        }
        Source::Url(_) => {
            let client = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(30))
                .timeout(Duration::from_secs(120))
                .build()
                .map_err(|e| bad(e.to_string()))?;
            let r = client
                .get(source.url(MANIFEST))
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| bad(e.to_string()))?;
            r.text().await.map_err(|e| bad(e.to_string()))?
        }
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    match v["format"].as_u64() {
        Some(f) if f == u64::from(FORMAT) => {}
        Some(f) => {
            return Err(KitError::Format {
                source_name: source.name(),
                found: f as u32,
            })
        }
        None => return Err(bad("no format version".into())),
    }
    serde_json::from_value(v).map_err(|e| bad(e.to_string()))
}

/// Every file of the kit into the cache, verified against the manifest (nothing else changes).
async fn fetch(
    source: &Source,
    m: &Manifest,
    cache: &Cache,
    opts: &download::Options,
    ui: &Ui,
) -> Result<BTreeMap<String, Fetched>> {
    let items: Vec<Item> = m
        .files
        .iter()
        .map(|f| Item {
            name: f.path.clone(),
            url: source.url(&f.path),
            checksum: Checksum::Sha256(f.sha256.clone()),
        })
        .collect();
    let opts = download::Options {
        offline: false,
        mirror: None,
        ..opts.clone()
    };
    let got = download::fetch_all(cache, &items, &opts, ui).await?;
    Ok(got.into_iter().map(|f| (f.name.clone(), f)).collect())
}

pub struct ImportOptions {
    pub source: Source,
    /// Where the lab file goes (default: ./LAB-NAME).
    pub dir: Option<PathBuf>,
    /// Destroy a lab of the same name on this host first.
    pub replace: bool,
    /// The lab `--file` names, if given: the kit must be of that lab.
    pub file_lab: Option<String>,
}

/// What an import did.
pub struct Imported {
    pub lab: String,
    pub dir: PathBuf,
    pub checkpoints: Vec<String>,
}

/// `lab import`. Everything a host-side command needs besides the lab, which comes from the kit; `download_opts`
/// carries `cancel` too, so an interruption stops the downloads.
#[allow(clippy::too_many_arguments)]
pub async fn import(
    opts: &ImportOptions,
    hv: Shared,
    dirs: Dirs,
    ui: Arc<Ui>,
    download_opts: download::Options,
    accel: String,
    cancel: crate::cancel::Cancel,
) -> Result<Imported> {
    let m = manifest(&opts.source, &cancel).await?;
    if let Some(file_lab) = opts.file_lab.as_ref().filter(|l| **l != m.lab) {
        return Err(KitError::OtherLab {
            kit: m.lab.clone(),
            file: file_lab.clone(),
        }
        .into());
    }
    let dest = opts.dir.clone().unwrap_or_else(|| PathBuf::from(&m.lab));
    if std::fs::read_dir(&dest).is_ok_and(|mut d| d.next().is_some()) {
        return Err(KitError::NotEmpty { path: dest }.into());
    }
    let lock = LabLock::acquire_async(&dirs, &m.lab, Duration::from_secs(3600), {
        let ui = ui.clone();
        move |pid| {
            ui.warn(&format!(
                "waiting for another lab command{} to finish",
                pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
            ))
        }
    })
    .await?;
    let existing = State::load(&dirs.lab(&m.lab))?;
    // An import that stops before it installs anything leaves no lock file and no empty folders either.
    let forget_lock = |lock: LabLock, dirs: &Dirs, lab: &str| {
        if !dirs.lab(lab).exists() {
            lock.remove_file();
            dirs.remove_empty();
        }
    };
    if existing.is_some() && !opts.replace {
        return Err(KitError::LabExists { lab: m.lab.clone() }.into());
    }
    ui.info(&format!(
        "kit of lab `{}` ({} checkpoint(s), {} file(s)) from {}",
        m.lab,
        m.checkpoints.len(),
        m.files.len(),
        opts.source.name()
    ));
    let cache = Cache::new(dirs.cache.clone());
    let fetched = match fetch(&opts.source, &m, &cache, &download_opts, &ui).await {
        Ok(f) => f,
        Err(e) => {
            forget_lock(lock, &dirs, &m.lab);
            return Err(e);
        }
    };

    // The lab file and its scripts, into DIR.
    let made_dest = !dest.exists();
    let lab = match write_lab_files(&m, &fetched, &dest) {
        Ok(l) => l,
        Err(e) => {
            if made_dest {
                let _ = std::fs::remove_dir_all(&dest);
            }
            forget_lock(lock, &dirs, &m.lab);
            return Err(e);
        }
    };
    let ctx = Context {
        download: download_opts,
        lab,
        hv,
        dirs,
        ui,
        accel,
        cancel,
    };
    if existing.is_some() {
        ctx.ui
            .info(&format!("--replace: destroying lab `{}` first", m.lab));
        orch::destroy(&ctx, false).await?;
    }
    match install(&ctx, &m, &fetched, &cache).await {
        Ok(()) => {
            drop(lock);
            Ok(Imported {
                lab: m.lab.clone(),
                dir: dest,
                checkpoints: m.checkpoints.iter().map(|r| r.name.clone()).collect(),
            })
        }
        Err(e) => {
            ctx.ui
                .warn("the import did not finish; removing what it made");
            let _ = orch::destroy(&ctx, false).await;
            lock.remove_file();
            ctx.dirs.remove_empty();
            if made_dest {
                let _ = std::fs::remove_dir_all(&dest);
            }
            Err(e)
        }
    }
}

/// Writes the kit's lab files into `dest` and loads the lab from there (it must be the kit's lab).
fn write_lab_files(m: &Manifest, fetched: &BTreeMap<String, Fetched>, dest: &Path) -> Result<Lab> {
    for f in &m.files {
        if let Kind::LabFile { name } = &f.kind {
            if name.starts_with('/') || name.split('/').any(|c| c == "..") {
                return Err(KitError::Corrupt {
                    file: f.path.clone(),
                    why: "a lab file's path leaves the lab's folder".into(),
                }
                .into());
            }
            let data = fs_err::read(&fetched[&f.path].path).map_err(KitError::io(&f.path))?;
            let mode = if name.ends_with(".sh") { 0o755 } else { 0o644 };
            let path = dest.join(name);
            crate::fsutil::write_atomic(&path, &data, Some(mode)).map_err(KitError::io(&path))?;
        }
    }
    let lab = model::load(Some(&dest.join("lab.toml"))).map_err(|e| KitError::Corrupt {
        file: "lab/lab.toml".into(),
        why: e.to_string(),
    })?;
    if lab.name != m.lab {
        return Err(KitError::Corrupt {
            file: "lab/lab.toml".into(),
            why: format!("it names lab `{}`, the manifest `{}`", lab.name, m.lab),
        }
        .into());
    }
    Ok(lab)
}

/// Keys, state, pool, images, checkpoint volumes and the download index: the lab as the kit has it, without
/// machines (`lab up --at NAME` makes them on a checkpoint).
async fn install(
    ctx: &Context,
    m: &Manifest,
    fetched: &BTreeMap<String, Fetched>,
    cache: &Cache,
) -> Result<()> {
    let dir = ctx.lab_dir();
    for f in &m.files {
        if let Kind::Key { name } = &f.kind {
            if name.split('/').any(|c| c == ".." || c.is_empty()) {
                return Err(KitError::Corrupt {
                    file: f.path.clone(),
                    why: "a key's path leaves the lab's folder".into(),
                }
                .into());
            }
            let data = fs_err::read(&fetched[&f.path].path).map_err(KitError::io(&f.path))?;
            let path = dir.join(name);
            crate::fsutil::write_atomic(&path, &data, Some(0o600)).map_err(KitError::io(&path))?;
        }
    }
    // The keys the disks trust, and the known_hosts lab pins them with.
    crate::ssh::Keys::ensure(&dir, &ctx.lab)?;
    let mut state = State::new(ctx.hv.uri());
    state.pending = Some(Pending::Up { fresh: true });
    ctx.save(&state)?;

    let pool = ctx.pool();
    let pool_xml = crate::render::xml::pool(
        &ctx.lab,
        &format!("{}/{pool}", orch::up::pool_root(ctx.hv.uri())),
    );
    let p = pool.clone();
    crate::libvirt::call(&ctx.hv, move |hv| hv.ensure_pool(&p, &pool_xml)).await?;
    let need: u64 = m
        .files
        .iter()
        .map(|f| f.content.as_ref().map_or(f.size, |c| c.size))
        .sum();
    orch::ensure_space(ctx, need).await?;
    // Base images first, then the layers on them.
    let mut files: Vec<&KitFile> = m.files.iter().collect();
    files.sort_by_key(|f| !matches!(f.kind, Kind::Image { .. }));
    for f in files {
        ctx.check_cancel("the import stopped; what it made was removed")?;
        let blob = fetched[&f.path].path.clone();
        match &f.kind {
            Kind::Image { volume, format } => {
                let size = f.size;
                orch::up::upload_volume_from(ctx, volume, format, size, None, move || {
                    Ok(Box::new(std::fs::File::open(&blob)?))
                })
                .await?;
                state.set_upload_complete(volume, true);
            }
            Kind::Volume {
                volume,
                format,
                backing,
            } => {
                let content = f.content.clone().ok_or_else(|| KitError::Corrupt {
                    file: f.path.clone(),
                    why: "a volume without its content's size and sha256".into(),
                })?;
                let check = Arc::new(std::sync::Mutex::new(None));
                let (c2, backing) = (check.clone(), backing.clone());
                let file_name = f.path.clone();
                orch::up::upload_volume_from(ctx, volume, format, content.size, None, move || {
                    let decoder = zstd::stream::read::Decoder::new(std::fs::File::open(&blob)?)?;
                    Ok(Box::new(Checked {
                        inner: decoder,
                        hash: <sha2::Sha256 as sha2::Digest>::new(),
                        head: Vec::new(),
                        done: c2,
                        backing,
                        file: file_name,
                    }))
                })
                .await?;
                let got = check.lock().expect("check").take();
                match got {
                    Some(Ok(sha)) if sha == content.sha256 => {}
                    other => {
                        let why = match other {
                            Some(Err(why)) => why,
                            Some(Ok(sha)) => format!(
                                "decompresses to sha256 {sha}, the manifest says {}",
                                content.sha256
                            ),
                            None => "was not read to its end".into(),
                        };
                        return Err(KitError::Corrupt {
                            file: f.path.clone(),
                            why,
                        }
                        .into());
                    }
                }
            }
            Kind::LabFile { .. } | Kind::Key { .. } | Kind::Asset => {}
        }
    }
    // The downloads, found by their upstream URLs from now on (`lab up --offline` rebuilds `base` from them).
    for entry in &m.downloads {
        if cache.verified_blob(&entry.sha256).is_some() {
            cache
                .write_index(entry)
                .map_err(KitError::io(cache.root()))?;
        }
    }
    state.checkpoints = m
        .checkpoints
        .iter()
        .map(|r| (r.name.clone(), r.clone()))
        .collect();
    state.pending = None;
    ctx.save(&state)?;
    Ok(())
}

/// A decompressing reader that hashes what it gives and checks a layer's backing file name at its start; at the
/// end it leaves the content's sha256 (or what was wrong) in `done`.
struct Checked<R> {
    inner: R,
    hash: sha2::Sha256,
    head: Vec<u8>,
    done: Arc<std::sync::Mutex<Option<std::result::Result<String, String>>>>,
    backing: Option<String>,
    file: String,
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        if self.head.len() < 64 << 10 {
            let take = n.min((64 << 10) - self.head.len());
            self.head.extend_from_slice(&buf[..take]);
            if self.head.len() >= 64 << 10 || n == 0 {
                self.check_head()?;
            }
        }
        if n == 0 {
            let sha = hex::encode(std::mem::take(&mut self.hash).finalize());
            *self.done.lock().expect("check") = Some(Ok(sha));
        }
        Ok(n)
    }
}

impl<R> Checked<R> {
    /// A layer must name its backing file as the manifest says, relative to its folder (never a path of the host
    /// that made it, nor one of the importing host's files).
    fn check_head(&mut self) -> std::io::Result<()> {
        let Some(want) = &self.backing else {
            return Ok(());
        };
        let got = qcow2::backing(&self.head).map_err(|e| std::io::Error::other(e.to_string()))?;
        if got.as_deref() != Some(want.as_str()) {
            let why = format!("its backing file is {got:?}, the manifest says {want}");
            *self.done.lock().expect("check") = Some(Err(why.clone()));
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {why}", self.file),
            ));
        }
        Ok(())
    }
}

/// Decompresses a stored volume and checks its size, sha256 and backing file against the manifest; stops at the
/// next chunk once `cancel` is interrupted.
fn check_volume(
    blob: &Path,
    want: &super::Content,
    backing: Option<String>,
    file: String,
    cancel: crate::cancel::Cancel,
) -> std::result::Result<(), String> {
    let done = Arc::new(std::sync::Mutex::new(None));
    let stored = std::fs::File::open(blob).map_err(|e| e.to_string())?;
    let dec = zstd::stream::read::Decoder::new(crate::cancel::Reader {
        inner: stored,
        cancel,
    })
    .map_err(|e| e.to_string())?;
    let mut r = Checked {
        inner: dec,
        hash: <sha2::Sha256 as sha2::Digest>::new(),
        head: Vec::new(),
        done: done.clone(),
        backing,
        file,
    };
    let n = std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| e.to_string())?;
    let sha = match done.lock().expect("check").take() {
        Some(Ok(s)) => s,
        Some(Err(why)) => return Err(why),
        None => return Err("not read to its end".into()),
    };
    if n != want.size || sha != want.sha256 {
        return Err(format!(
            "decompresses to {n} bytes with sha256 {sha}, the manifest says {} bytes, {}",
            want.size, want.sha256
        ));
    }
    Ok(())
}

/// What `lab kit verify` found.
pub struct Verified {
    pub lab: String,
    pub files: usize,
    pub bytes: u64,
    pub checkpoints: Vec<String>,
}

/// Checks a kit end to end without installing anything: every file fetched and checked against the manifest
/// (into a throwaway cache), every compressed one decompressed and hashed, every layer's backing inside the kit,
/// every checkpoint's files present, the lab file valid and of that lab, a key for every machine. Interrupted
/// (`opts.cancel`), it stops at the next chunk and leaves nothing behind.
pub async fn verify(source: &Source, ui: &Ui, opts: &download::Options) -> Result<Verified> {
    match verify_all(source, ui, opts).await {
        Err(_) if opts.cancel.is_interrupted() => Err(Error::Interrupted(
            "the check of the kit was stopped; nothing was changed".into(),
        )),
        r => r,
    }
}

async fn verify_all(source: &Source, ui: &Ui, opts: &download::Options) -> Result<Verified> {
    let m = manifest(source, &opts.cancel).await?;
    let tmp = tempfile::tempdir().map_err(KitError::io(std::env::temp_dir()))?;
    let cache = Cache::new(tmp.path().join("cache"));
    let fetched = fetch(source, &m, &cache, opts, ui).await?;
    let lab = write_lab_files(&m, &fetched, &tmp.path().join("lab"))?;
    let corrupt = |file: &str, why: String| -> Error {
        KitError::Corrupt {
            file: file.into(),
            why,
        }
        .into()
    };
    let volumes: BTreeMap<&str, &KitFile> = m
        .files
        .iter()
        .filter_map(|f| match &f.kind {
            Kind::Volume { volume, .. } | Kind::Image { volume, .. } => Some((volume.as_str(), f)),
            _ => None,
        })
        .collect();
    for f in &m.files {
        if let Kind::Volume { backing, .. } = &f.kind {
            let content = f
                .content
                .as_ref()
                .ok_or_else(|| corrupt(&f.path, "no content sizes".into()))?;
            if let Some(b) = backing {
                if !volumes.contains_key(b.as_str()) {
                    return Err(corrupt(
                        &f.path,
                        format!("it sits on {b}, which the kit lacks"),
                    ));
                }
            }
            let (blob, want, backing, file, cancel) = (
                fetched[&f.path].path.clone(),
                content.clone(),
                backing.clone(),
                f.path.clone(),
                opts.cancel.clone(),
            );
            let result = tokio::task::spawn_blocking(move || {
                check_volume(&blob, &want, backing, file, cancel)
            })
            .await
            .expect("verify task");
            result.map_err(|why| corrupt(&f.path, why))?;
        }
    }
    for r in &m.checkpoints {
        for (machine, mr) in &r.machines {
            for v in std::iter::once(&mr.layer).chain(mr.memory.iter()) {
                if !volumes.contains_key(v.as_str()) {
                    return Err(corrupt(
                        MANIFEST,
                        format!(
                            "checkpoint `{}` needs {v} for {machine}, which the kit lacks",
                            r.name
                        ),
                    ));
                }
            }
        }
    }
    for mach in &lab.machines {
        let key = format!("host-keys/{}", mach.name);
        if !m
            .files
            .iter()
            .any(|f| f.kind == Kind::Key { name: key.clone() })
        {
            return Err(corrupt(MANIFEST, format!("no host key for {}", mach.name)));
        }
    }
    Ok(Verified {
        lab: m.lab.clone(),
        files: m.files.len(),
        bytes: m.files.iter().map(|f| f.size).sum(),
        checkpoints: m.checkpoints.iter().map(|r| r.name.clone()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checking_a_volume_stops_once_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("v.zst");
        let content = vec![7u8; 1 << 20];
        std::fs::write(&blob, zstd::encode_all(&content[..], 3).unwrap()).unwrap();
        let want = super::super::Content {
            size: content.len() as u64,
            sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&content)),
        };
        let cancel = crate::cancel::Cancel::new();
        assert_eq!(
            check_volume(&blob, &want, None, "v".into(), cancel.clone()),
            Ok(())
        );
        cancel.interrupt();
        let why = check_volume(&blob, &want, None, "v".into(), cancel).unwrap_err();
        assert!(why.contains("interrupted"), "{why}");
    }
}
