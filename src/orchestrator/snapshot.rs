//! `lab snapshot NAME`: the whole lab saved at one instant. Phases: `plan` (every check, the pending mark) →
//! `flush` (file systems frozen through the guest agent, or synced) → `saved` (all paused, one external snapshot
//! each: the running disk becomes the checkpoint's layer, memory goes to a file, a new overlay takes the writes;
//! all resumed) → `thawed` → `recorded`. Interrupted before `flush` ends, nothing has changed; after, the snapshot
//! is finished first (a few seconds).

use super::checkpoints::{generations, remove_recorded, remove_volumes};
use super::machines::{drop_caches, ensure_space, FreezeGuard, PauseGuard};
use super::phases::Phases;
use super::{each_machine, now_rfc3339, Context, Error, Result};
use crate::checkpoint::{Flush, MachineRecord, Record};
use crate::libvirt::call;
use crate::render::{names, xml};
use crate::state::{Pending, State};
use std::collections::BTreeMap;
use std::time::Instant;

/// Room kept free beside each machine's memory file (its new overlay, the pool's own files).
const OVERLAY_ROOM: u64 = 64 << 20;

/// Takes a checkpoint of the whole lab. `key` marks checkpoints built from the lab file.
pub async fn snapshot(
    ctx: &Context,
    name: &str,
    disk_only: bool,
    force: bool,
    key: Option<String>,
) -> Result<Record> {
    let mut phases = Phases::new("snapshot", &ctx.cancel);
    let mut state = ctx.state()?;
    let replaced = plan(ctx, &state, name, disk_only, force).await?;
    // Inside a checkpoint build the build's mark stays: a killed build, its snapshot included, goes back to where
    // it started (the half-run steps are on the disks). Otherwise the snapshot's own mark.
    if !matches!(state.pending, Some(Pending::Build { .. })) {
        state.pending = Some(Pending::Snapshot { name: name.into() });
    }
    ctx.save(&state)?;
    phases.done("plan");
    if let Err(e) = ctx.check_cancel("nothing was changed") {
        return abandon(ctx, state, e);
    }
    let machines: Vec<String> = ctx.lab.machines.iter().map(|m| m.name.clone()).collect();
    let d = ctx.dom(&machines[0]);
    let hardware = call(&ctx.hv, move |hv| hv.domain_hardware(&d)).await?;
    if key.is_some() && !disk_only && hardware.as_ref().is_some_and(|h| h.balloon) {
        // A checkpoint built from the lab file is what instructors hand out: the guests first drop their clean
        // caches and the balloon returns free pages to the host, so the memory states skip them (in part:
        // benches/memory.sh measures how much).
        drop_caches(ctx, &machines).await;
        phases.done("compact");
    }
    let (frozen, flushed) = FreezeGuard::flush(ctx, &machines).await;
    phases.done("flush");
    if let Err(e) = ctx.check_cancel("nothing was changed") {
        frozen.thaw().await?;
        return abandon(ctx, state, e);
    }
    // From here the snapshot is finished even if interrupted: it takes seconds, and stopping half-way would leave
    // some machines saved and others not.
    let gens = generations(ctx, &state).await?;
    let saved = save(ctx, &gens, disk_only, &flushed).await;
    phases.done("saved");
    // The running guests thaw now; memory states hold their file systems frozen, and a restore thaws them.
    let thawed = frozen.thaw().await;
    phases.done("thawed");
    let (machines, paused_for) = match (saved, thawed) {
        (Ok(s), Ok(())) => s,
        (saved, thawed) => {
            // Nothing is recorded; the machines run on (those saved on their new overlay, which `generations`
            // reads back from libvirt). `save` removed the memory files it wrote.
            let errors = [saved.err(), thawed.err()].into_iter().flatten().collect();
            return abandon(
                ctx,
                state,
                Error::all("taking the snapshot", errors).expect("an error"),
            );
        }
    };
    for (m, (_, next)) in &gens {
        state.active.insert(m.clone(), *next);
    }
    let record = Record {
        name: name.to_string(),
        parent: state.current.clone().filter(|c| c != name),
        created: now_rfc3339(),
        memory: !disk_only,
        key,
        machines,
        hardware,
    };
    state.checkpoints.insert(name.to_string(), record.clone());
    state.current = Some(name.to_string());
    remove_recorded(ctx, &mut state, &replaced.unwrap_or_default()).await?;
    phases.done("recorded");
    ctx.ui.info(&format!(
        "checkpoint `{name}` taken ({}; machines paused {:.2} s)",
        if disk_only {
            "disks"
        } else {
            "disks and memory"
        },
        paused_for.as_secs_f64()
    ));
    ctx.check_cancel(&format!(
        "checkpoint `{name}` was taken first; the machines run on"
    ))?;
    Ok(record)
}

/// All machines paused, one external snapshot each, all resumed: the records and how long the lab was paused.
/// Its own undo: if any machine fails, the memory files written are removed (no checkpoint is recorded).
async fn save(
    ctx: &Context,
    gens: &BTreeMap<String, (u64, u64)>,
    disk_only: bool,
    flushed: &BTreeMap<String, Flush>,
) -> Result<(BTreeMap<String, MachineRecord>, std::time::Duration)> {
    let doms: Vec<String> = ctx.lab.machines.iter().map(|m| ctx.dom(&m.name)).collect();
    let paused_at = Instant::now();
    let paused = PauseGuard::pause(ctx, &doms).await?;
    let (taken, mut errors) = take(ctx, gens, disk_only, flushed).await;
    let paused_for = paused_at.elapsed();
    errors.extend(paused.resume().await.err());
    match Error::all("taking the snapshot", errors) {
        None => Ok((taken, paused_for)),
        Some(e) => {
            let made: Vec<String> = taken.into_values().filter_map(|r| r.memory).collect();
            remove_volumes(ctx, &made).await;
            Err(e)
        }
    }
}

/// Everything checked before the first change. Returns the volumes of a checkpoint that `--force` replaces (deleted
/// once the new one is recorded).
async fn plan(
    ctx: &Context,
    state: &State,
    name: &str,
    disk_only: bool,
    force: bool,
) -> Result<Option<Vec<String>>> {
    let replaced = match state.checkpoints.get(name) {
        None => None,
        Some(old) if !force => {
            return Err(Error::CheckpointExists {
                name: name.into(),
                created: old.created.clone(),
            })
        }
        Some(old) => {
            let children: Vec<&str> = state
                .checkpoints
                .values()
                .filter(|r| r.parent.as_deref() == Some(name))
                .map(|r| r.name.as_str())
                .collect();
            if !children.is_empty() || state.current.as_deref() == Some(name) {
                return Err(Error::CheckpointInUse {
                    name: name.into(),
                    why: if children.is_empty() {
                        "the running machines are built on it".into()
                    } else {
                        format!("{} built on it", children.join(", "))
                    },
                });
            }
            Some(
                old.machines
                    .values()
                    .flat_map(|m| std::iter::once(m.layer.clone()).chain(m.memory.clone()))
                    .collect(),
            )
        }
    };
    super::power::require_running(ctx).await?;
    let need: u64 = ctx
        .lab
        .machines
        .iter()
        .map(|m| if disk_only { 0 } else { m.memory } + OVERLAY_ROOM)
        .sum();
    ensure_space(ctx, need).await?;
    Ok(replaced)
}

/// Clears the pending mark of a snapshot that changed nothing (a build's mark stays: the build decides), and passes
/// the error on.
fn abandon<T>(ctx: &Context, mut state: State, e: Error) -> Result<T> {
    if matches!(state.pending, Some(Pending::Snapshot { .. })) {
        state.pending = None;
    }
    ctx.save(&state)?;
    Err(e)
}

/// One external snapshot per machine, all at once (the machines are paused): the records of those saved, and the
/// errors of the others.
async fn take(
    ctx: &Context,
    gens: &BTreeMap<String, (u64, u64)>,
    disk_only: bool,
    flushed: &BTreeMap<String, Flush>,
) -> (BTreeMap<String, MachineRecord>, Vec<Error>) {
    let p = ctx.pool();
    let pool_path = match call(&ctx.hv, move |hv| hv.pool_path(&p)).await {
        Ok(Some(p)) => p,
        Ok(None) => return (BTreeMap::new(), vec![Error::NotUp(ctx.lab.name.clone())]),
        Err(e) => return (BTreeMap::new(), vec![e.into()]),
    };
    let first = std::sync::atomic::AtomicBool::new(true);
    let first = &first;
    let (done, errors) = each_machine(ctx, |m| {
        let d = ctx.dom(&m);
        let (gen, next_gen) = gens[&m];
        let layer = names::vol::active(&m, gen);
        let next = format!("{pool_path}/{}", names::vol::active(&m, next_gen));
        let memory = (!disk_only).then(|| names::vol::memory(&m, gen));
        let mem_path = memory.as_ref().map(|v| format!("{pool_path}/{v}"));
        let snap = xml::external_snapshot(&format!("lab-{gen}"), mem_path.as_deref(), &next);
        let flushed = flushed.get(&m).copied().unwrap_or_default();
        let (pool, mem) = (ctx.pool(), memory.clone());
        async move {
            let memory_bytes = call(&ctx.hv, move |hv| {
                hv.external_snapshot(&d, &snap, disk_only)?;
                // Its length, which a restore compares before it changes anything.
                mem.map(|v| hv.read_volume(&pool, &v, 0, 0).map(|b| b.size))
                    .transpose()
            })
            .await?;
            if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                // Inside the phase: one machine's memory state is written, the others' may not be yet.
                super::phases::point("snapshot", "saving", &ctx.cancel);
            }
            Ok(MachineRecord {
                layer,
                memory,
                memory_bytes,
                flushed,
            })
        }
    })
    .await;
    (done.into_iter().collect(), errors)
}
