//! `lab destroy`: every domain, volume, the pool, the network, the keys and state of the lab, also of a half-made
//! lab, and nothing else. Goes on past errors and reports them all. Phases: `domains` → `network` → `pool` →
//! `files`. It writes its pending mark first, so a destroy that was killed is finished by the next command; an
//! interrupted one finishes first (it takes seconds, and half a lab is of no use).

use super::phases::Phases;
use super::{lab_domains, Context, Error, Result};
use crate::libvirt::call;
use crate::render::names;
use crate::state::{Pending, State};

pub async fn destroy(ctx: &Context, purge_cache: bool) -> Result<()> {
    let mut phases = Phases::new("destroy", &ctx.cancel);
    let lab = ctx.lab.name.clone();
    let mut errors = Vec::new();
    if let Ok(Some(mut s)) = State::load(&ctx.lab_dir()) {
        s.pending = Some(Pending::Destroy);
        ctx.save(&s)?;
    }

    let domains = lab_domains(ctx).await?;
    let work = domains
        .into_iter()
        .map(|d| async move { call(&ctx.hv, move |hv| hv.remove_domain(&d).map(|_| d)).await });
    for r in futures_util::future::join_all(work).await {
        match r {
            Ok(d) => ctx.ui.info(&format!("removed machine {d}")),
            Err(e) => errors.push(Error::from(e)),
        }
    }
    phases.done("domains");
    let net = names::network(&lab);
    match call(&ctx.hv, move |hv| hv.remove_network(&net)).await {
        Ok(true) => ctx
            .ui
            .info(&format!("removed network {}", names::network(&lab))),
        Ok(false) => {}
        Err(e) => errors.push(e.into()),
    }
    phases.done("network");
    let pool = names::pool(&lab);
    match call(&ctx.hv, move |hv| hv.remove_pool(&pool)).await {
        Ok(true) => ctx.ui.info(&format!(
            "removed pool {} and its volumes",
            names::pool(&lab)
        )),
        Ok(false) => {}
        Err(e) => errors.push(e.into()),
    }
    phases.done("pool");
    if errors.is_empty() {
        // The state goes last: until everything in libvirt is gone it marks this lab as one to destroy.
        let dir = ctx.lab_dir();
        if dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                errors.push(Error::Remove {
                    path: dir.display().to_string(),
                    source: e,
                });
            }
        }
        // The folders lab made to hold labs go too once empty, so the host is left as it was.
        ctx.dirs.remove_empty();
    }
    if purge_cache && ctx.dirs.cache.exists() {
        match std::fs::remove_dir_all(&ctx.dirs.cache) {
            Ok(()) => ctx.ui.info(&format!(
                "removed the download cache {}",
                ctx.dirs.cache.display()
            )),
            Err(e) => errors.push(Error::Remove {
                path: ctx.dirs.cache.display().to_string(),
                source: e,
            }),
        }
    }
    phases.done("files");
    Error::many("destroying the lab", errors)?;
    ctx.check_cancel(&format!("the destroy finished first: lab `{lab}` is gone"))
}
