//! `lab destroy`: every domain, volume, the pool, the network, the keys and state of the lab, also of a half-made
//! lab, and nothing else. Goes on past errors and reports them all.

use super::{lab_domains, Context, Error, Result};
use crate::libvirt::call;
use crate::render::names;

pub async fn destroy(ctx: &Context, purge_cache: bool) -> Result<()> {
    let lab = ctx.lab.name.clone();
    let mut errors = Vec::new();

    let domains = lab_domains(ctx).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for d in domains {
        let hv = ctx.hv.clone();
        tasks.spawn(async move { call(&hv, move |hv| hv.remove_domain(&d).map(|_| d)).await });
    }
    while let Some(r) = tasks.join_next().await {
        match r.expect("destroy task panicked") {
            Ok(d) => ctx.ui.info(&format!("removed machine {d}")),
            Err(e) => errors.push(Error::from(e)),
        }
    }
    let net = names::network(&lab);
    match call(&ctx.hv, move |hv| hv.remove_network(&net)).await {
        Ok(true) => ctx
            .ui
            .info(&format!("removed network {}", names::network(&lab))),
        Ok(false) => {}
        Err(e) => errors.push(e.into()),
    }
    let pool = names::pool(&lab);
    match call(&ctx.hv, move |hv| hv.remove_pool(&pool)).await {
        Ok(true) => ctx.ui.info(&format!(
            "removed pool {} and its volumes",
            names::pool(&lab)
        )),
        Ok(false) => {}
        Err(e) => errors.push(e.into()),
    }
    let dir = ctx.lab_dir();
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            errors.push(Error::Failed(format!(
                "cannot remove {}: {e}",
                dir.display()
            )));
        }
    }
    // The folders lab made to hold labs go too once empty, so the host is left as it was.
    ctx.dirs.remove_empty();
    if purge_cache && ctx.dirs.cache.exists() {
        match std::fs::remove_dir_all(&ctx.dirs.cache) {
            Ok(()) => ctx.ui.info(&format!(
                "removed the download cache {}",
                ctx.dirs.cache.display()
            )),
            Err(e) => errors.push(Error::Failed(format!(
                "cannot remove {}: {e}",
                ctx.dirs.cache.display()
            ))),
        }
    }
    Error::many("destroying the lab", errors)
}
