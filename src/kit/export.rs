//! `lab export DIR`: the lab as it stands on this host, written as a kit. It reads checkpoint files only (they never
//! change), works while the lab runs and changes nothing in it. A kit that cannot be finished (a full disk, an
//! interruption) is removed: `kit.json` is written last, so a folder with one is a whole kit.

use super::qcow2;
use super::{copy_hashing, Content, Kind, KitError, KitFile, MadeOn, Manifest, FORMAT, MANIFEST};
use crate::checkpoint::{Record, UNDO};
use crate::libvirt::{call, Hypervisor};
use crate::model::{Source, EMBEDDED_LAB};
use crate::orchestrator::{checkpoints::record_volumes, now_rfc3339, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub dir: PathBuf,
    /// The checkpoints to export (names or aliases); empty: every built one but `undo`.
    pub checkpoints: Vec<String>,
    /// Disks only: the checkpoints boot when restored, and the kit holds no memory states.
    pub disk_only: bool,
}

/// One file to write into the kit.
struct Planned {
    path: String,
    kind: Kind,
    from: Origin,
    compress: bool,
    /// A qcow2 layer's backing file, written as this relative name.
    backing: Option<String>,
    size: u64,
}

enum Origin {
    Local(PathBuf),
    Embedded(&'static [u8]),
    /// A volume of the lab's pool, read through libvirt (a remote host's pool).
    Volume {
        pool: String,
        name: String,
    },
}

pub async fn export(ctx: &Context, opts: &ExportOptions) -> Result<Manifest> {
    let state = ctx.state()?;
    let records = choose(ctx, &state, &opts.checkpoints, opts.disk_only)?;
    let plan = plan(ctx, &records).await?;
    let created = prepare_dir(&opts.dir)?;
    let version = {
        let v = call(&ctx.hv, |hv| hv.version()).await?;
        MadeOn {
            libvirt: v.libvirt,
            hypervisor: v.hypervisor,
        }
    };
    let written = write_all(ctx, &opts.dir, plan).await;
    let finished = written.and_then(|files| {
        let manifest = Manifest {
            format: FORMAT,
            lab: ctx.lab.name.clone(),
            lab_version: env!("CARGO_PKG_VERSION").into(),
            created: now_rfc3339(),
            made_on: version,
            memory_needs: records
                .iter()
                .filter(|r| r.memory)
                .find_map(|r| r.hardware.clone()),
            files,
            checkpoints: records,
            downloads: downloads_index(ctx)?,
        };
        let text = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        let path = opts.dir.join(MANIFEST);
        crate::fsutil::write_atomic(&path, &text, Some(0o644)).map_err(KitError::io(&path))?;
        Ok(manifest)
    });
    if finished.is_err() {
        remove_partial(&opts.dir, created);
    }
    finished
}

/// The records to export: the named ones (aliases resolved), else every built one but `undo` and stale leftovers;
/// with `disk_only`, without their memory.
fn choose(
    ctx: &Context,
    state: &crate::state::State,
    names: &[String],
    disk_only: bool,
) -> Result<Vec<Record>> {
    let mut out: Vec<Record> = if names.is_empty() {
        state
            .checkpoints
            .values()
            .filter(|r| !r.name.starts_with(UNDO) && !r.name.contains(".stale-"))
            .cloned()
            .collect()
    } else {
        let mut v = Vec::new();
        for n in names {
            let canonical = ctx
                .lab
                .checkpoint(n)
                .map_or(n.as_str(), |c| c.name.as_str());
            let r = state
                .checkpoints
                .get(canonical)
                .ok_or_else(|| KitError::NotBuilt { name: n.clone() })?;
            v.push(r.clone());
        }
        v
    };
    if disk_only {
        for r in &mut out {
            r.memory = false;
            for m in r.machines.values_mut() {
                m.memory = None;
            }
        }
    }
    Ok(out)
}

/// Every file of the kit: lab files, keys, images, assets, and each checkpoint's layers (down its backing chain)
/// and memory states.
async fn plan(ctx: &Context, records: &[Record]) -> Result<Vec<Planned>> {
    let mut plan = Vec::new();
    // The lab file and its scripts.
    let files = std::iter::once("lab.toml".to_string()).chain(ctx.lab.files.iter().cloned());
    for rel in files {
        let from = match &ctx.lab.source {
            Source::Embedded => Origin::Embedded(
                EMBEDDED_LAB
                    .get_file(&rel)
                    .map(|f| f.contents())
                    .ok_or_else(|| KitError::Corrupt {
                        file: rel.clone(),
                        why: "not in the embedded course lab".into(),
                    })?,
            ),
            Source::File(p) if rel == "lab.toml" => Origin::Local(p.clone()),
            Source::File(p) => Origin::Local(p.parent().unwrap_or(Path::new(".")).join(&rel)),
        };
        plan.push(Planned {
            path: format!("lab/{rel}"),
            kind: Kind::LabFile { name: rel },
            from,
            compress: false,
            backing: None,
            size: 0,
        });
    }
    // The keys the machines' disks trust.
    let dir = ctx.lab_dir();
    let keys = std::iter::once("id_ed25519".to_string()).chain(
        ctx.lab
            .machines
            .iter()
            .map(|m| format!("host-keys/{}", m.name)),
    );
    for k in keys {
        plan.push(Planned {
            path: format!("keys/{k}"),
            from: Origin::Local(dir.join(&k)),
            kind: Kind::Key { name: k },
            compress: false,
            backing: None,
            size: 0,
        });
    }
    // The downloads, from the cache.
    let cache = crate::download::Cache::new(ctx.dirs.cache.clone());
    for item in crate::orchestrator::up::download_items(&ctx.lab)
        .into_iter()
        .skip(ctx.lab.used_images().len())
    {
        let hit = cache.lookup(&item).ok_or_else(|| KitError::NotCached {
            name: item.name.clone(),
        })?;
        plan.push(Planned {
            path: format!("assets/{}", hit.sha256),
            kind: Kind::Asset,
            from: Origin::Local(hit.path),
            compress: false,
            backing: None,
            size: hit.size,
        });
    }
    // Volumes: every layer down to the image, and the memory states.
    let pool = ctx.pool();
    let wanted: BTreeSet<String> = records.iter().flat_map(record_volumes).collect();
    let p = pool.clone();
    let vols = call(&ctx.hv, move |hv| {
        let all: BTreeMap<String, crate::libvirt::VolumeInfo> = hv
            .volumes(&p)?
            .into_iter()
            .map(|v| (v.name.clone(), v))
            .collect();
        let mut out: BTreeMap<String, (crate::libvirt::VolumeInfo, Option<String>)> =
            BTreeMap::new();
        let mut todo: Vec<String> = wanted.into_iter().collect();
        while let Some(v) = todo.pop() {
            if out.contains_key(&v) {
                continue;
            }
            let info = all.get(&v).cloned().ok_or_else(|| {
                crate::libvirt::Error::other(
                    "find volume",
                    &v,
                    "a checkpoint needs it and the pool lacks it",
                )
            })?;
            let backing = if v.contains(".mem-") {
                None
            } else {
                hv.volume_backing(&p, &v)?
                    .map(|b| b.rsplit('/').next().unwrap_or(&b).to_string())
            };
            if let Some(b) = &backing {
                todo.push(b.clone());
            }
            out.insert(v, (info, backing));
        }
        Ok(out)
    })
    .await?;
    for (name, (info, backing)) in vols {
        let from = if ctx.hv.is_local() {
            Origin::Local(PathBuf::from(&info.path))
        } else {
            Origin::Volume {
                pool: pool.clone(),
                name: name.clone(),
            }
        };
        let size = info.physical;
        if name.starts_with("image-") {
            plan.push(Planned {
                path: format!("images/{name}"),
                kind: Kind::Image {
                    volume: name.clone(),
                    format: if name.ends_with(".raw") {
                        "raw"
                    } else {
                        "qcow2"
                    }
                    .into(),
                },
                from,
                compress: false,
                backing: None,
                size,
            });
        } else {
            let memory = name.contains(".mem-");
            plan.push(Planned {
                path: format!("volumes/{name}.zst"),
                kind: Kind::Volume {
                    volume: name.clone(),
                    format: if memory { "raw" } else { "qcow2" }.into(),
                    backing: backing.clone(),
                },
                from,
                compress: true,
                backing,
                size,
            });
        }
    }
    Ok(plan)
}

/// The folder must be new or empty; says whether this export made it.
fn prepare_dir(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(KitError::NotEmpty {
                    path: dir.to_path_buf(),
                }
                .into());
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs_err::create_dir_all(dir).map_err(KitError::io(dir))?;
            Ok(true)
        }
        Err(e) => Err(KitError::io(dir)(e).into()),
    }
}

/// Removes a kit that could not be finished: the folder if this export made it, else what it put there.
fn remove_partial(dir: &Path, created: bool) {
    if created {
        let _ = std::fs::remove_dir_all(dir);
    } else if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// Writes every planned file (on the blocking pool; one at a time, each compressing on two threads).
async fn write_all(ctx: &Context, dir: &Path, plan: Vec<Planned>) -> Result<Vec<KitFile>> {
    let mut files = Vec::new();
    for p in plan {
        ctx.check_cancel("the export stopped; the partial kit was removed")?;
        let label = p.path.clone();
        let big = p.size > (8 << 20);
        if big {
            ctx.ui.bytes_start(&label, Some(p.size));
        }
        let (hv, ui, dir) = (ctx.hv.clone(), ctx.ui.clone(), dir.to_path_buf());
        let l = label.clone();
        let written = tokio::task::spawn_blocking(move || {
            write_one(hv.as_ref(), &dir, p, &|n| ui.bytes_set(&l, n))
        })
        .await
        .expect("export task");
        if big {
            ctx.ui.bytes_done(
                &label,
                if written.is_ok() {
                    "exported"
                } else {
                    "failed"
                },
            );
        }
        files.push(written?);
        if files.len() == 1 {
            // Inside the phase: one file of the kit is written, the others are not.
            crate::orchestrator::phases::point("export", "file", &ctx.cancel);
        }
    }
    Ok(files)
}

fn write_one(
    hv: &dyn Hypervisor,
    dir: &Path,
    p: Planned,
    progress: &dyn Fn(u64),
) -> Result<KitFile> {
    let target = dir.join(&p.path);
    fs_err::create_dir_all(target.parent().expect("in the kit")).map_err(KitError::io(&target))?;
    let tmp = crate::fsutil::temp_beside(&target);
    let reader: Box<dyn Read> = match &p.from {
        Origin::Local(path) => Box::new(fs_err::File::open(path).map_err(KitError::io(path))?),
        Origin::Embedded(bytes) => Box::new(*bytes),
        Origin::Volume { pool, name } => Box::new(VolumeReader {
            hv,
            pool: pool.clone(),
            name: name.clone(),
            offset: 0,
        }),
    };
    let reader = Progress {
        inner: reader,
        done: 0,
        tell: progress,
    };
    let backing = p.backing.clone();
    let patch = move |head: &mut [u8]| {
        qcow2::set_backing(head, backing.as_deref().unwrap_or_default())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    };
    let out = {
        use std::os::unix::fs::OpenOptionsExt;
        // Keys stay readable by their owner only, in the kit as in the lab.
        let mode = if matches!(p.kind, Kind::Key { .. }) {
            0o600
        } else {
            0o644
        };
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(KitError::io(&tmp))?;
        fs_err::File::from_parts(f, &tmp)
    };
    let copied = copy_hashing(
        reader,
        std::io::BufWriter::with_capacity(1 << 20, out),
        p.compress,
        p.backing.as_ref().map(|_| &patch as super::Patch),
    )
    .and_then(|c| crate::fsutil::persist(&tmp, &target).map(|()| c))
    .map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        KitError::io(&target)(e)
    })?;
    Ok(KitFile {
        path: p.path,
        size: copied.stored.size,
        sha256: copied.stored.sha256,
        kind: p.kind,
        content: p.compress.then_some(Content {
            size: copied.content.size,
            sha256: copied.content.sha256,
        }),
    })
}

/// The cache's records of the lab's downloads, so an importing host finds them by their upstream URLs.
fn downloads_index(
    ctx: &Context,
) -> std::result::Result<Vec<crate::download::cache::IndexEntry>, KitError> {
    let cache = crate::download::Cache::new(ctx.dirs.cache.clone());
    Ok(ctx
        .lab
        .downloads
        .iter()
        .filter_map(|d| cache.read_index(&d.url))
        .collect())
}

/// A pool volume read through libvirt, in pieces (a remote host's pool).
struct VolumeReader<'a> {
    hv: &'a dyn Hypervisor,
    pool: String,
    name: String,
    offset: u64,
}

impl Read for VolumeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let got = self
            .hv
            .read_volume(&self.pool, &self.name, self.offset, buf.len() as u64)
            .map_err(std::io::Error::other)?;
        let n = got.bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&got.bytes[..n]);
        self.offset += n as u64;
        Ok(n)
    }
}

struct Progress<'a, R> {
    inner: R,
    done: u64,
    tell: &'a dyn Fn(u64),
}

impl<R: Read> Read for Progress<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.tell)(self.done);
        Ok(n)
    }
}
