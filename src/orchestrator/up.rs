//! `lab up`: host checks, image and downloads, pool, network, then every machine in parallel until it answers SSH
//! and cloud-init is done, then the downloads placed in the machines. Idempotent; a failed first `up` removes what
//! it made.

use super::guest::{boot_timeout, wait_ready};
use super::placement;
use super::{destroy, owned_by, Context, Error, Result};
use crate::download::{self, Fetched, Item};
use crate::host;
use crate::libvirt::{call, DomainState};
use crate::model::{Checksum, Lab, Machine, BASE};
use crate::render::cloud_init::{self, SeedKeys};
use crate::render::names;
use crate::render::xml::{self, Accel, MachinePaths};
use crate::ssh::Keys;
use crate::state::State;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// `auto`, `kvm` or `tcg`.
    pub accel: String,
    /// Keep what a failed first `up` made, for inspection.
    pub keep_on_failure: bool,
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

pub async fn up(ctx: &Context, opts: &UpOptions) -> Result<()> {
    let dir = ctx.lab_dir();
    let existed = State::load(&dir)?;
    if existed.is_some() {
        ctx.state()?; // same URI
    }
    let fresh = existed.is_none();
    match up_inner(ctx, opts, existed).await {
        Ok(()) => Ok(()),
        Err(e)
            if fresh
                && !opts.keep_on_failure
                && !matches!(e, Error::NameTaken { .. } | Error::Host(_)) =>
        {
            ctx.ui.warn(&format!(
                "`up` failed; removing what it made (--keep-on-failure keeps it): {e}"
            ));
            if let Err(d) = destroy(ctx, false).await {
                ctx.ui.warn(&format!("could not remove everything: {d}"));
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

async fn up_inner(ctx: &Context, opts: &UpOptions, existed: Option<State>) -> Result<()> {
    let lab = &ctx.lab;
    let ui = &ctx.ui;
    let dir = ctx.lab_dir();

    // 1. The host: nothing is created until these pass.
    if ctx.hv.is_local() {
        if let Some(w) = host::kvm_permission_warning() {
            ui.warn(&w);
        }
    }
    let (arch, setting) = (lab.arch.qemu().to_string(), opts.accel.clone());
    let (accel, warning) = call(&ctx.hv, move |hv| {
        Ok(host::choose_accel(hv, &arch, &setting))
    })
    .await??;
    if let Some(w) = warning {
        ui.warn(&w);
    }
    if existed.is_none() {
        check_names_free(ctx).await?;
    }
    let l = lab.clone();
    call(&ctx.hv, move |hv| Ok(host::check_subnet(&l, hv))).await??;

    // 2. What lab keeps locally: keys and the state file (first, so `destroy` finds a half-made lab).
    let (keys, seeds) = Keys::ensure(&dir, lab)?;
    let mut state = existed.unwrap_or_else(|| State::new(ctx.hv.uri()));
    ctx.save(&state)?;

    // 3. Images and downloads, once, on this machine.
    let unchecked = unverified(lab);
    if !unchecked.is_empty() {
        ui.warn(&format!(
            "no checksum to verify (insecure_no_checksum): {}",
            unchecked.join(", ")
        ));
    }
    let cache = download::Cache::new(ctx.dirs.cache.clone());
    let items = download_items(lab);
    let fetched = download::fetch_all(&cache, &items, &ctx.download, ui.as_ref()).await?;
    let by_name: BTreeMap<String, Fetched> =
        fetched.into_iter().map(|f| (f.name.clone(), f)).collect();

    // 4. The pool, with each base image uploaded once.
    let pool = ctx.pool();
    let pool_root = pool_root(ctx.hv.uri());
    let pool_xml = xml::pool(lab, &format!("{pool_root}/{pool}"));
    let p = pool.clone();
    let pool_path = call(&ctx.hv, move |hv| hv.ensure_pool(&p, &pool_xml)).await?;
    let mut image_paths = BTreeMap::new();
    for img in lab.used_images() {
        let f = &by_name[&img.name];
        let vol = names::vol::image(&f.sha256, img.format.as_str());
        image_paths.insert(
            img.name.clone(),
            (format!("{pool_path}/{vol}"), img.format.as_str()),
        );
        upload_if_missing(ctx, &vol, &f.path, f.size, img.format.as_str()).await?;
    }

    // 5. The network.
    let (net, net_xml) = (names::network(&lab.name), xml::network(lab));
    call(&ctx.hv, move |hv| hv.ensure_network(&net, &net_xml)).await?;

    // 6. Every machine, in parallel.
    let deadline = Instant::now() + boot_timeout();
    let mut tasks = tokio::task::JoinSet::new();
    let shared = Arc::new(ctx.clone());
    for (m, seed) in lab.machines.iter().zip(seeds) {
        let generation = *state.active.entry(m.name.clone()).or_insert(0);
        let paths = MachinePaths {
            disk: format!("{pool_path}/{}", names::vol::active(&m.name, generation)),
            seed: format!("{pool_path}/{}", names::vol::seed(&m.name)),
            console_log: format!("{pool_path}/{}", names::vol::console_log(&m.name)),
        };
        let (backing, backing_format) = image_paths[&m.image].clone();
        let c = shared.clone();
        let m = m.clone();
        tasks.spawn(async move {
            let r = machine_up(
                &c,
                &m,
                accel,
                &paths,
                &seed,
                &backing,
                backing_format,
                deadline,
            )
            .await;
            (m.name.clone(), r)
        });
    }
    ctx.save(&state)?;
    let mut errors = Vec::new();
    while let Some(res) = tasks.join_next().await {
        let Ok((name, r)) = res else { continue }; // aborted after another machine failed
        match r {
            Ok(()) => ui.done(&name, "ready"),
            Err(e) => {
                ui.done(&name, "failed");
                errors.push(e);
                // One machine failed: the others' work is wasted (a first `up` is rolled back), stop them now.
                tasks.abort_all();
            }
        }
    }
    Error::many("starting the machines", errors)?;

    // 7. The downloads, in every machine that needs them.
    placement::place_all(ctx, &keys, &by_name).await?;

    ctx.save(&state)?;
    // `base`: the lab right after `up`, so any lesson can be rebuilt and the lab reset.
    if !state.checkpoints.contains_key(BASE) {
        super::checkpoints::snapshot(
            ctx,
            BASE,
            false,
            false,
            Some(crate::checkpoint::base_key(lab)),
        )
        .await?;
    }
    Ok(())
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

/// Refuses to take over libvirt objects of the lab's names that lab did not make.
async fn check_names_free(ctx: &Context) -> Result<()> {
    let lab = ctx.lab.clone();
    call(&ctx.hv, move |hv| {
        for m in &lab.machines {
            let d = names::domain(&lab.name, &m.name);
            if hv.domain_state(&d)?.is_some() && !owned_by(&hv.domain_xml(&d)?, &lab.name) {
                return Ok(Err(Error::NameTaken {
                    lab: lab.name.clone(),
                    name: d,
                }));
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

async fn upload_if_missing(
    ctx: &Context,
    vol: &str,
    file: &std::path::Path,
    size: u64,
    format: &str,
) -> Result<()> {
    let pool = ctx.pool();
    let (p, v) = (pool.clone(), vol.to_string());
    let exists = call(&ctx.hv, move |hv| {
        Ok(hv.volumes(&p)?.iter().any(|x| x.name == v))
    })
    .await?;
    if exists {
        return Ok(());
    }
    let ui = ctx.ui.clone();
    let label = format!("upload {vol}");
    ui.bytes_start(&label, Some(size));
    let (v, fmt, path, l) = (
        vol.to_string(),
        format.to_string(),
        file.to_path_buf(),
        label.clone(),
    );
    let r = call(&ctx.hv, move |hv| {
        let mut f = std::fs::File::open(&path).map_err(|e| crate::libvirt::Error {
            kind: crate::libvirt::ErrorKind::Other,
            op: "read",
            object: path.display().to_string(),
            message: e.to_string(),
        })?;
        hv.create_volume(&pool, &xml::volume(&v, size, &fmt))?;
        let r = hv.upload_volume(&pool, &v, &mut f, size, &|n| ui.bytes_set(&l, n));
        if r.is_err() {
            let _ = hv.delete_volume(&pool, &v);
        }
        r
    })
    .await;
    ctx.ui
        .bytes_done(&label, if r.is_ok() { "uploaded" } else { "failed" });
    Ok(r?)
}

#[allow(clippy::too_many_arguments)]
async fn machine_up(
    ctx: &Context,
    m: &Machine,
    accel: Accel,
    paths: &MachinePaths,
    seed: &SeedKeys,
    backing: &str,
    backing_format: &str,
    deadline: Instant,
) -> Result<()> {
    let lab = &ctx.lab;
    let ui = &ctx.ui;
    let dom = names::domain(&lab.name, &m.name);
    let d = dom.clone();
    let state = call(&ctx.hv, move |hv| hv.domain_state(&d)).await?;
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
            let docs = cloud_init::documents(lab, m, seed);
            let image = cloud_init::seed_image(&docs).map_err(|e| {
                Error::Failed(format!("{}: cannot pack the cloud-init seed: {e}", m.name))
            })?;
            let pool = ctx.pool();
            let (seed_vol, disk_vol) = (names::vol::seed(&m.name), file_name(&paths.disk));
            let overlay = xml::overlay(&disk_vol, m.disk, backing, backing_format);
            let domain_xml = xml::domain(lab, m, accel, paths);
            call(&ctx.hv, move |hv| {
                hv.delete_volume(&pool, &seed_vol)?;
                hv.create_volume(&pool, &xml::volume(&seed_vol, image.len() as u64, "raw"))?;
                hv.upload_volume(
                    &pool,
                    &seed_vol,
                    &mut image.as_slice(),
                    image.len() as u64,
                    &|_| {},
                )?;
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
    ui.status(&m.name, "booting: waiting for SSH and cloud-init");
    let t = ctx.target(&m.name)?;
    wait_ready(ctx, &t, deadline).await
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
