//! `lab up`: host checks, image and downloads, pool, network, then every machine in parallel until it answers SSH
//! and cloud-init is done, then the downloads placed in the machines, then the `base` checkpoint. Idempotent. A
//! first `up` that fails or is interrupted removes what it made; a later one stops where it is (the machines that
//! run keep running) and the next `lab up` goes on.
//!
//! Phases: `checks` → `keys` (the pending mark) → `downloads` → `pool` → `image` → `network` → `machines`
//! (defined and started) → `ready` → `placed` → `base`.

use super::guest::{boot_timeout, wait_ready, ConsoleWatch, Patience};
use super::phases::Phases;
use super::placement;
use super::{destroy, Context, Error, Result};
use crate::download::{self, Fetched, Item};
use crate::host;
use crate::libvirt::{call, DomainState};
use crate::model::{Checksum, Lab, Machine, BASE};
use crate::render::cloud_init::{self, SeedKeys};
use crate::render::names;
use crate::render::xml::{self, Accel, MachinePaths};
use crate::ssh::Keys;
use crate::state::{Pending, State};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Keep what a failed first `up` made, for inspection.
    pub keep_on_failure: bool,
    /// `--at`: the checkpoint the lab should end at.
    pub at: Option<String>,
}

/// Where `up` left the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrived {
    /// Machines up as the lab file describes them (and `base` taken); `--at` still to restore.
    Up,
    /// The machines were made on a built checkpoint (an imported kit): this one.
    At(String),
}

/// The items to download for a lab: its machines' images, then its `[[download]]` assets.
pub fn download_items(lab: &Lab) -> Vec<Item> {
    let images = lab.used_images().into_iter().map(|i| Item {
        name: i.name.clone(),
        url: i.url.clone(),
        checksum: i.checksum.clone(),
    });
    let assets = lab.downloads.iter().map(|d| Item {
        name: d.name.clone(),
        url: d.url.clone(),
        checksum: d.checksum.clone(),
    });
    images.chain(assets).collect()
}

pub async fn up(ctx: &Context, opts: &UpOptions) -> Result<Arrived> {
    let existed = State::load(&ctx.lab_dir())?;
    if existed.is_some() {
        ctx.state()?; // same URI
    }
    let fresh = existed.is_none();
    if !fresh && super::power::all_stopped(ctx).await? {
        // A stopped lab: bring it back as `lab start` does (memory resumed at one instant, clocks set).
        super::power::start(ctx).await?;
        return Ok(Arrived::Up);
    }
    if let Some(state) = existed.as_ref().filter(|s| !s.checkpoints.is_empty()) {
        if super::power::power_states(ctx)
            .await?
            .iter()
            .all(|(_, p)| *p == super::power::Power::Absent)
        {
            // Built checkpoints and no machines (an imported kit): the machines are made on a checkpoint.
            let target = opts
                .at
                .clone()
                .or_else(|| state.current.clone())
                .unwrap_or_else(|| BASE.to_string());
            on_checkpoint(ctx, &target).await?;
            return Ok(Arrived::At(target));
        }
    }
    let result = up_phases(ctx, existed).await;
    let Err(e) = result else {
        return Ok(Arrived::Up);
    };
    // The user's Ctrl-C is the command's token; the error may be a child's reaction to the same signal.
    let interrupted = ctx.cancel.is_interrupted() || e.is_interrupted();
    if fresh && !opts.keep_on_failure && !matches!(e, Error::NameTaken { .. } | Error::Host(_)) {
        if interrupted {
            ctx.ui.warn("interrupted: removing what this `up` made");
        } else {
            ctx.ui
                .warn("`up` failed (the error follows); removing what it made (--keep-on-failure keeps it)");
        }
        if let Err(d) = destroy(ctx, false).await {
            ctx.ui.warn(&format!("could not remove everything: {d}"));
        }
        if interrupted {
            return Err(Error::Interrupted(
                "nothing is left of this first `lab up`".into(),
            ));
        }
        return Err(e);
    }
    if let Ok(Some(mut s)) = State::load(&ctx.lab_dir()) {
        // Nothing half-made is left (each phase finished or undid itself): the lab is as far as it got.
        if matches!(s.pending, Some(Pending::Up { .. })) {
            s.pending = None;
            let _ = ctx.save(&s);
        }
    }
    Err(e)
}

async fn up_phases(ctx: &Context, existed: Option<State>) -> Result<()> {
    let lab = &ctx.lab;
    let mut phases = Phases::new("up", &ctx.cancel);
    let fresh = existed.is_none();
    let stopped = if fresh {
        "nothing was made"
    } else {
        "the machines that run keep running; `lab up` again goes on"
    };
    let accel = host_checks(ctx, fresh).await?;
    phases.done("checks");
    ctx.check_cancel(stopped)?;

    // What lab keeps locally: keys and the state file (first, so `destroy` finds a half-made lab).
    let (keys, seeds) = Keys::ensure(&ctx.lab_dir(), lab)?;
    let mut state = existed.unwrap_or_else(|| State::new(ctx.hv.uri()));
    state.pending = Some(Pending::Up { fresh });
    ctx.save(&state)?;
    phases.done("keys");
    ctx.check_cancel(stopped)?;

    let fetched = fetch(ctx).await?;
    phases.done("downloads");
    ctx.check_cancel(stopped)?;

    // The pool, with each base image uploaded once.
    let pool = ctx.pool();
    let pool_xml = xml::pool(lab, &format!("{}/{pool}", pool_root(ctx.hv.uri())));
    let p = pool.clone();
    let pool_path = call(&ctx.hv, move |hv| hv.ensure_pool(&p, &pool_xml)).await?;
    phases.done("pool");
    ctx.check_cancel(stopped)?;
    let mut image_paths = BTreeMap::new();
    for img in lab.used_images() {
        let f = &fetched[&img.name];
        let vol = names::vol::image(&f.sha256, img.format.as_str());
        image_paths.insert(
            img.name.clone(),
            (format!("{pool_path}/{vol}"), img.format.as_str()),
        );
        upload_image(ctx, &mut state, &vol, f, img.format.as_str()).await?;
    }
    phases.done("image");
    ctx.check_cancel(stopped)?;

    let (net, net_xml) = (names::network(&lab.name), xml::network(lab));
    call(&ctx.hv, move |hv| hv.ensure_network(&net, &net_xml)).await?;
    phases.done("network");
    ctx.check_cancel(stopped)?;

    let started = start_machines(ctx, &mut state, accel, &pool_path, &image_paths, seeds).await?;
    phases.done("machines");
    ctx.check_cancel(stopped)?;
    wait_all_ready(ctx, started).await?;
    phases.done("ready");
    ctx.check_cancel(stopped)?;

    placement::place_all(ctx, &keys, &fetched).await?;
    phases.done("placed");
    ctx.check_cancel(stopped)?;

    state.pending = None;
    ctx.save(&state)?;
    // `base`: the lab right after `up`, so any lesson can be rebuilt and the lab reset.
    if !state.checkpoints.contains_key(BASE) {
        super::snapshot(
            ctx,
            BASE,
            false,
            false,
            Some(crate::checkpoint::base_key(lab)),
        )
        .await?;
    }
    phases.done("base");
    Ok(())
}

/// Makes the machines of a lab that has built checkpoints and no machines (an imported kit) directly on one: the
/// network and the seeds, then the checkpoint restored (its memory loaded, or its disks booted; a lab-file
/// checkpoint that is not built is built from the nearest one that is). No cold boot, no download.
async fn on_checkpoint(ctx: &Context, target: &str) -> Result<()> {
    let mut phases = Phases::new("up", &ctx.cancel);
    let accel = host_checks(ctx, false).await?;
    phases.done("checks");
    let (_, seeds) = Keys::ensure(&ctx.lab_dir(), &ctx.lab)?;
    let pool = ctx.pool();
    let pool_xml = xml::pool(&ctx.lab, &format!("{}/{pool}", pool_root(ctx.hv.uri())));
    call(&ctx.hv, move |hv| hv.ensure_pool(&pool, &pool_xml)).await?;
    let (net, net_xml) = (names::network(&ctx.lab.name), xml::network(&ctx.lab));
    call(&ctx.hv, move |hv| hv.ensure_network(&net, &net_xml)).await?;
    phases.done("network");
    for (m, seed) in ctx.lab.machines.iter().zip(seeds) {
        make_seed(ctx, m, &seed).await?;
    }
    phases.done("seeds");
    ctx.ui.info(&format!(
        "making the machines on checkpoint `{target}` ({accel})"
    ));
    super::restore(ctx, target, false).await
}

/// Writes a machine's cloud-init seed volume (made again every time: a partial one left by a killed `lab` goes).
async fn make_seed(ctx: &Context, m: &Machine, seed: &SeedKeys) -> Result<()> {
    let docs = cloud_init::documents(&ctx.lab, m, seed);
    let image = cloud_init::seed_image(&docs).map_err(|e| Error::Seed {
        machine: m.name.clone(),
        message: e.to_string(),
    })?;
    let (pool, seed_vol) = (ctx.pool(), names::vol::seed(&m.name));
    call(&ctx.hv, move |hv| {
        hv.delete_volume(&pool, &seed_vol)?;
        hv.create_volume(&pool, &xml::volume(&seed_vol, image.len() as u64, "raw"))?;
        hv.upload_volume(
            &pool,
            &seed_vol,
            &mut image.as_slice(),
            image.len() as u64,
            &|_| {},
        )
    })
    .await?;
    Ok(())
}

/// Nothing is created until these pass: acceleration, /dev/kvm, names free, subnet free.
async fn host_checks(ctx: &Context, fresh: bool) -> Result<Accel> {
    if ctx.hv.is_local() {
        if let Some(w) = host::kvm_permission_warning() {
            ctx.ui.warn(&w);
        }
    }
    let (arch, setting) = (ctx.lab.arch.qemu().to_string(), ctx.accel.clone());
    let (accel, warning) = call(&ctx.hv, move |hv| {
        Ok(host::choose_accel(hv, &arch, &setting))
    })
    .await??;
    if let Some(w) = warning {
        ctx.ui.warn(&w);
    }
    if fresh {
        check_names_free(ctx).await?;
    }
    let l = ctx.lab.clone();
    call(&ctx.hv, move |hv| Ok(host::check_subnet(&l, hv))).await??;
    Ok(accel)
}

/// Images and downloads, once, on this machine (interrupted, the transfers stop; the cache keeps only verified
/// files, and the partial ones for the next run to resume).
async fn fetch(ctx: &Context) -> Result<BTreeMap<String, Fetched>> {
    let unchecked = unverified(&ctx.lab);
    if !unchecked.is_empty() {
        ctx.ui.warn(&format!(
            "no checksum to verify (insecure_no_checksum): {}",
            unchecked.join(", ")
        ));
    }
    let cache = download::Cache::new(ctx.dirs.cache.clone());
    let items = download_items(&ctx.lab);
    let opts = download::Options {
        cancel: ctx.cancel.clone(),
        ..ctx.download.clone()
    };
    let fetched = match download::fetch_all(&cache, &items, &opts, ctx.ui.as_ref()).await {
        Err(e) if e.is_interrupted() => {
            return Err(Error::Interrupted(
                "the downloads were stopped; their partial files are kept and `lab up` again resumes them".into(),
            ))
        }
        r => r?,
    };
    Ok(fetched.into_iter().map(|f| (f.name.clone(), f)).collect())
}

/// Uploads a base image into the pool unless a complete copy is there. A volume is complete only once its whole
/// upload is verified and recorded in the state: one left by a killed `lab` is deleted and uploaded again.
async fn upload_image(
    ctx: &Context,
    state: &mut State,
    vol: &str,
    f: &Fetched,
    format: &str,
) -> Result<()> {
    let (pool, v) = (ctx.pool(), vol.to_string());
    let existing = call(&ctx.hv, move |hv| {
        Ok(hv.volumes(&pool)?.into_iter().find(|x| x.name == v))
    })
    .await?;
    match existing {
        Some(x) if state.upload_complete(vol) != Some(false) && x.physical == f.size => {
            return Ok(())
        }
        Some(_) => {
            ctx.ui.warn(&format!(
                "{vol} is an incomplete upload (interrupted?); uploading it again"
            ));
            let (pool, v) = (ctx.pool(), vol.to_string());
            call(&ctx.hv, move |hv| hv.delete_volume(&pool, &v)).await?;
        }
        None => {}
    }
    state.set_upload_complete(vol, false);
    ctx.save(state)?;
    let path = f.path.clone();
    upload_volume_from(
        ctx,
        vol,
        format,
        f.size,
        Some(("up", "image-half")),
        move || Ok(Box::new(std::fs::File::open(&path)?)),
    )
    .await?;
    state.set_upload_complete(vol, true);
    ctx.save(state)?;
    Ok(())
}

/// What an upload reads from.
pub(crate) type UploadSource = Box<dyn std::io::Read + Send>;

/// Uploads `size` bytes from what `open` gives into a new volume `vol` of `format`, with a progress bar; the volume
/// counts only once the pool holds exactly `size` bytes of it: a failed or interrupted upload deletes it. `half`
/// names the fault point half-way through (for the fault tests).
pub(crate) async fn upload_volume_from(
    ctx: &Context,
    vol: &str,
    format: &str,
    size: u64,
    half: Option<(&'static str, &'static str)>,
    open: impl FnOnce() -> std::io::Result<UploadSource> + Send + 'static,
) -> Result<()> {
    let ui = ctx.ui.clone();
    let label = format!("upload {vol}");
    ui.bytes_start(&label, Some(size));
    let (pool, v, fmt, l) = (
        ctx.pool(),
        vol.to_string(),
        format.to_string(),
        label.clone(),
    );
    let cancel = ctx.cancel.clone();
    let r = call(&ctx.hv, move |hv| {
        let inner = open().map_err(|e| crate::libvirt::Error::other("read data for", &v, e))?;
        let mut data = crate::cancel::Reader {
            inner,
            cancel: cancel.clone(),
        };
        hv.create_volume(&pool, &xml::volume(&v, size, &fmt))?;
        let halfway = std::sync::atomic::AtomicBool::new(false);
        let sent = hv.upload_volume(&pool, &v, &mut data, size, &|n| {
            ui.bytes_set(&l, n);
            if let Some((command, phase)) = half {
                if n >= size / 2 && !halfway.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    super::phases::point(command, phase, &cancel);
                }
            }
        });
        let verified = sent.and_then(|()| {
            let got = hv
                .volumes(&pool)?
                .into_iter()
                .find(|x| x.name == v)
                .map_or(0, |x| x.physical);
            if got == size {
                Ok(())
            } else {
                Err(crate::libvirt::Error::other(
                    "verify upload of",
                    &v,
                    format!("{got} bytes in the pool, {size} sent"),
                ))
            }
        });
        if verified.is_err() {
            let _ = hv.delete_volume(&pool, &v);
        }
        verified
    })
    .await;
    ctx.ui
        .bytes_done(&label, if r.is_ok() { "uploaded" } else { "failed" });
    if ctx.cancel.is_interrupted() && r.is_err() {
        return Err(Error::Interrupted(format!(
            "the upload of {vol} was stopped"
        )));
    }
    Ok(r?)
}

/// Where lab's pools live on the hypervisor host (`LAB_POOL_ROOT` overrides).
pub fn pool_root(uri: &str) -> String {
    if let Ok(r) = std::env::var("LAB_POOL_ROOT") {
        return r.trim_end_matches('/').to_string();
    }
    if uri.contains("/session") {
        if let Some(d) = directories::BaseDirs::new() {
            return d.data_dir().join("lab/pools").display().to_string();
        }
    }
    "/var/lib/libvirt/images".into()
}

/// The acceleration of the lab's domains, or the one `LAB_ACCEL` chooses when none is defined yet.
pub async fn current_accel(ctx: &Context) -> Result<Accel> {
    let doms: Vec<String> = ctx.lab.machines.iter().map(|m| ctx.dom(&m.name)).collect();
    let (arch, setting) = (ctx.lab.arch.qemu().to_string(), ctx.accel.clone());
    Ok(call(&ctx.hv, move |hv| {
        for d in &doms {
            if let Some(i) = hv.domain_info(d)? {
                return Ok(Ok(if i.kvm { Accel::Kvm } else { Accel::Tcg }));
            }
        }
        Ok(host::choose_accel(hv, &arch, &setting).map(|(a, _)| a))
    })
    .await??)
}

/// Refuses to take over libvirt objects of the lab's names that lab did not make.
async fn check_names_free(ctx: &Context) -> Result<()> {
    let lab = ctx.lab.clone();
    call(&ctx.hv, move |hv| {
        for m in &lab.machines {
            let d = names::domain(&lab.name, &m.name);
            if let Some(info) = hv.domain_info(&d)? {
                if info.lab.as_deref() != Some(lab.name.as_str()) {
                    return Ok(Err(Error::NameTaken {
                        lab: lab.name.clone(),
                        name: d,
                    }));
                }
            }
        }
        let net = names::network(&lab.name);
        if hv.networks()?.iter().any(|n| n.name == net) {
            return Ok(Err(Error::NameTaken {
                lab: lab.name.clone(),
                name: format!("network {net}"),
            }));
        }
        let pool = names::pool(&lab.name);
        if hv.pool_names()?.contains(&pool) {
            return Ok(Err(Error::NameTaken {
                lab: lab.name.clone(),
                name: format!("pool {pool}"),
            }));
        }
        Ok(Ok(()))
    })
    .await?
}

/// Every machine defined (disk, seed, domain) and started, in parallel. Returns each one's console mark.
async fn start_machines(
    ctx: &Context,
    state: &mut State,
    accel: Accel,
    pool_path: &str,
    images: &BTreeMap<String, (String, &'static str)>,
    seeds: Vec<SeedKeys>,
) -> Result<Vec<(String, ConsoleWatch)>> {
    let mut work = Vec::new();
    for (m, seed) in ctx.lab.machines.iter().zip(seeds) {
        let generation = *state.active.entry(m.name.clone()).or_insert(0);
        let paths = MachinePaths {
            disk: format!("{pool_path}/{}", names::vol::active(&m.name, generation)),
            seed: format!("{pool_path}/{}", names::vol::seed(&m.name)),
            console_log: format!("{pool_path}/{}", names::vol::console_log(&m.name)),
        };
        let (backing, backing_format) = images[&m.image].clone();
        work.push(async move {
            let r = machine_start(ctx, m, accel, &paths, &seed, &backing, backing_format).await;
            (m.name.clone(), r)
        });
    }
    ctx.save(state)?;
    let mut started = Vec::new();
    let mut errors = Vec::new();
    for (name, r) in futures_util::future::join_all(work).await {
        match r {
            Ok(c) => started.push((name, c)),
            Err(e) => {
                ctx.ui.done(&name, "failed");
                errors.push(e);
            }
        }
    }
    Error::many("starting the machines", errors)?;
    Ok(started)
}

/// Waits for every started machine; one that fails stops the others' waits (a first `up` is rolled back).
async fn wait_all_ready(ctx: &Context, started: Vec<(String, ConsoleWatch)>) -> Result<()> {
    let deadline = Instant::now() + boot_timeout();
    let group = Arc::new(Context {
        cancel: ctx.cancel.child(),
        ..ctx.clone()
    });
    let work = started.into_iter().map(|(name, console)| {
        let c = group.clone();
        async move {
            let r = async {
                let t = c.target(&name)?;
                c.ui.status(&name, "booting: waiting for SSH and cloud-init");
                wait_ready(&c, &t, deadline, &console, Patience::UntilInterrupted).await
            }
            .await;
            match &r {
                Ok(()) => c.ui.done(&name, "ready"),
                Err(e) if e.is_interrupted() => c.ui.done(&name, "stopped waiting"),
                Err(_) => {
                    c.ui.done(&name, "failed");
                    // The others' work is wasted now: stop waiting for them.
                    c.cancel.interrupt();
                }
            }
            r
        }
    });
    let results = futures_util::future::join_all(work).await;
    if ctx.cancel.is_interrupted() {
        ctx.check_cancel("the machines were still booting")?;
    }
    // The machine that failed says why; the others only stopped waiting because of it.
    let errors: Vec<Error> = results
        .into_iter()
        .filter_map(|r| r.err())
        .filter(|e| !e.is_interrupted())
        .collect();
    Error::many("starting the machines", errors)
}

/// One machine: made (disk, seed, domain) if missing, started if stopped, resumed if paused.
async fn machine_start(
    ctx: &Context,
    m: &Machine,
    accel: Accel,
    paths: &MachinePaths,
    seed: &SeedKeys,
    backing: &str,
    backing_format: &str,
) -> Result<ConsoleWatch> {
    let lab = &ctx.lab;
    let ui = &ctx.ui;
    let dom = ctx.dom(&m.name);
    let d = dom.clone();
    let state = call(&ctx.hv, move |hv| hv.domain_state(&d)).await?;
    let console = ConsoleWatch::start(ctx, &m.name).await;
    match state {
        Some(DomainState::Running) => ui.status(&m.name, "running; checking"),
        Some(DomainState::Paused) => {
            ui.status(&m.name, "resuming");
            let d = dom.clone();
            call(&ctx.hv, move |hv| hv.resume_domain(&d)).await?;
        }
        Some(_) => {
            ui.status(&m.name, "starting");
            let d = dom.clone();
            call(&ctx.hv, move |hv| hv.start_domain(&d)).await?;
        }
        None => {
            ui.status(&m.name, "creating disk and seed");
            make_seed(ctx, m, seed).await?;
            let pool = ctx.pool();
            let disk_vol = file_name(&paths.disk);
            let overlay = xml::overlay(&disk_vol, m.disk, backing, backing_format);
            let domain_xml = xml::domain(lab, m, &xml::Hardware::new(accel), paths);
            // The disk is an empty overlay, made in one call.
            call(&ctx.hv, move |hv| {
                if !hv.volumes(&pool)?.iter().any(|v| v.name == disk_vol) {
                    hv.create_volume(&pool, &overlay)?;
                }
                hv.define_domain(&domain_xml)
            })
            .await?;
            ui.status(&m.name, "starting");
            let d = dom.clone();
            call(&ctx.hv, move |hv| hv.start_domain(&d)).await?;
        }
    }
    Ok(console)
}

fn file_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

/// Whether any checksum is unverifiable (used for a warning at `up`).
pub fn unverified(lab: &Lab) -> Vec<String> {
    lab.downloads
        .iter()
        .filter(|d| d.checksum == Checksum::None)
        .map(|d| d.name.clone())
        .collect()
}
