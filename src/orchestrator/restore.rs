//! `lab restore NAME` for a built checkpoint: every machine moves to it at once. Phases:
//! - `plan`: every check before any change (each machine's layer and memory file present, free space); the old
//!   `undo` retired; the pending mark written.
//! - `prepared`: a new empty overlay on the checkpoint's layer for each machine, made while the running guests
//!   flush their file systems (frozen through the guest agent, or synced), so the disks they leave are whole.
//!   Interrupted up to here, the overlays go, the guests thaw, and nothing has changed.
//! - `loaded`: each machine powered off and started from the checkpoint (its memory file loaded paused, or booted
//!   for a disk-only one). From here the restore is finished even if interrupted.
//! - `resumed` (all together: the lab goes on from one instant), `thawed` (guests saved with frozen file systems),
//!   `recorded` (the replaced disks become the disk-only checkpoint `undo`), `ready` (clocks set, sshd answering;
//!   a second Ctrl-C skips this wait).

use super::checkpoints::{generations, remove_volumes, used_by_records};
use super::guest::{boot_timeout, set_clock, wait_ready, wait_sshd, ConsoleWatch, Patience};
use super::machines::{ensure_space, thaw_restored, FreezeGuard, PauseGuard};
use super::phases::Phases;
use super::{each_machine, for_each_machine, now_rfc3339, Context, Error, Result};
use crate::checkpoint::{Flush, MachineRecord, Record, UNDO};
use crate::libvirt::{call, DomainState};
use crate::render::names;
use crate::render::xml::{self, Hardware};
use crate::state::{Pending, State};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What becomes of the state a restore replaces.
#[derive(Debug, Clone)]
pub enum Undo {
    /// Kept as the disk-only checkpoint `undo` (a user's restore).
    Keep,
    /// Deleted (restoring `undo` itself, or throwing away a half-built checkpoint).
    Discard,
    /// As an interrupted restore planned it (finishing that restore).
    Planned {
        undo: Option<Box<Record>>,
        discard: Vec<String>,
    },
}

/// One machine's part of a restore.
struct Move {
    machine: String,
    dom: String,
    /// The domain exists and runs (its guest can be flushed); it exists at all.
    running: bool,
    defined: bool,
    /// The disk it runs on now, if that volume exists.
    old_disk: Option<String>,
    new_disk: String,
    overlay_xml: String,
    domain_xml: String,
    memory: Option<String>,
    /// Its memory state holds frozen file systems: thaw after the resume.
    thaw: bool,
}

struct Plan {
    name: String,
    memory: bool,
    moves: Vec<Move>,
    /// The replaced disks are kept as `undo` (else deleted, unless a record uses them).
    keep_undo: bool,
    /// Set when finishing an interrupted restore.
    planned_undo: Option<Option<Record>>,
    discard: Vec<String>,
}

/// Returns every machine to a built checkpoint, all machines at once.
pub async fn restore_built(ctx: &Context, name: &str, undo: Undo) -> Result<()> {
    let mut phases = Phases::new("restore", &ctx.cancel);
    let original = ctx.state()?;
    let mut state = original.clone();
    let plan = plan(ctx, &mut state, name, undo).await?;
    state.pending = Some(Pending::Restore {
        name: name.into(),
        undo: plan.planned_undo.clone().flatten(),
        discard: plan.discard.clone(),
    });
    ctx.save(&state)?;
    phases.done("plan");
    if let Err(e) = ctx.check_cancel("nothing was changed") {
        ctx.save(&original)?;
        return Err(e);
    }
    let undo_record = prepare(ctx, &plan, &original).await?;
    if let Some(Pending::Restore { undo, .. }) = &mut state.pending {
        undo.clone_from(&undo_record);
    }
    ctx.save(&state)?;
    phases.done("prepared");

    // From here on the restore is finished, interrupted or not: half the machines moved is no state at all.
    let started = Instant::now();
    let (loaded, mut errors) = each_machine(ctx, |m| load(ctx, plan.mv(&m))).await;
    phases.done("loaded");
    let loaded: BTreeMap<String, Loaded> = loaded.into_iter().collect();
    errors.extend(resume(ctx, &plan, &loaded).await.err());
    let resumed = started.elapsed();
    phases.done("resumed");
    errors.extend(thaw(ctx, &plan, &loaded).await);
    phases.done("thawed");
    if let Some(e) = Error::all("restoring the machines", errors) {
        // The pending mark stays: the next command finishes this restore.
        return Err(e);
    }
    record(ctx, &mut state, &plan, undo_record).await?;
    phases.done("recorded");
    wait(ctx, &plan, &loaded).await?;
    phases.done("ready");
    ctx.ui.info(&format!(
        "restored `{name}` on {} machine(s) in {:.1} s{}",
        plan.moves.len(),
        resumed.as_secs_f64(),
        if plan.keep_undo {
            "; your previous state is kept as `undo` (`lab restore undo` brings it back)"
        } else {
            ""
        }
    ));
    ctx.check_cancel(&format!(
        "the restore was finished first; the lab runs on `{name}`"
    ))
}

/// New disks on the checkpoint's layers, made while the running guests flush the disks they leave (frozen ones
/// stay frozen: they are powered off next). Returns the `undo` record to keep. Its own undo: on a failure or an
/// interruption the overlays go, the guests thaw, and the state is put back as it was.
async fn prepare(ctx: &Context, plan: &Plan, original: &State) -> Result<Option<Record>> {
    let flush_these: Vec<String> = plan
        .moves
        .iter()
        .filter(|m| m.running && plan.keep_undo && plan.planned_undo.is_none())
        .map(|m| m.machine.clone())
        .collect();
    let (made, (frozen, flushed)) = tokio::join!(
        make_overlays(ctx, plan),
        FreezeGuard::flush(ctx, &flush_these)
    );
    let stop = match made {
        Err(e) => Some(e),
        Ok(()) => ctx.check_cancel("nothing was changed").err(),
    };
    if let Some(e) = stop {
        frozen.thaw().await?;
        let overlays: Vec<String> = plan.moves.iter().map(|m| m.new_disk.clone()).collect();
        remove_volumes(ctx, &overlays).await;
        ctx.save(original)?;
        return Err(e);
    }
    frozen.keep_frozen();
    Ok(match &plan.planned_undo {
        Some(u) => u.clone(),
        None if plan.keep_undo => undo_record(plan, original, &flushed),
        None => None,
    })
}

/// Memory-restored machines resume together: the lab goes on from one instant, as it was saved (a machine woken
/// before its peers could, say, call an election its cluster did not need).
async fn resume(ctx: &Context, plan: &Plan, loaded: &BTreeMap<String, Loaded>) -> Result<()> {
    if !plan.memory {
        return Ok(());
    }
    // libvirt loaded them paused; resuming through the guard reports failures.
    PauseGuard::adopt(ctx, loaded.keys().map(|m| ctx.dom(m)).collect())
        .resume()
        .await
}

/// Thaws the guests whose memory state was saved with frozen file systems.
async fn thaw(ctx: &Context, plan: &Plan, loaded: &BTreeMap<String, Loaded>) -> Vec<Error> {
    let thaws = plan
        .moves
        .iter()
        .filter(|mv| mv.thaw && loaded.get(&mv.machine).is_some_and(|l| !l.booted))
        .map(|mv| thaw_restored(ctx, &mv.machine));
    futures_util::future::join_all(thaws)
        .await
        .into_iter()
        .filter_map(|r| r.err())
        .collect()
}

/// Every check before the first change, and the state's side of it: the old `undo` retired (renamed if something
/// is built on it, else its files go once the restore is done).
async fn plan(ctx: &Context, state: &mut State, name: &str, undo: Undo) -> Result<Plan> {
    let record = state
        .checkpoints
        .get(name)
        .cloned()
        .ok_or_else(|| Error::NotBuilt { name: name.into() })?;
    let pool = ctx.pool();
    let (vols, pool_path) = {
        let p = pool.clone();
        call(&ctx.hv, move |hv| Ok((hv.volumes(&p)?, hv.pool_path(&p)?))).await?
    };
    let pool_path = pool_path.ok_or_else(|| Error::NotUp(ctx.lab.name.clone()))?;
    let present: BTreeMap<String, u64> = vols.into_iter().map(|v| (v.name, v.physical)).collect();
    check_present(ctx, name, &record, &present)?;
    ensure_space(ctx, ctx.lab.machines.len() as u64 * (64 << 20)).await?;

    let gens = generations(ctx, state).await?;
    let host_accel = super::up::current_accel(ctx).await?;
    let saved_hw = record
        .hardware
        .clone()
        .unwrap_or_else(|| Hardware::legacy(host_accel));
    let memory = record.memory
        && match memory_fits(ctx, &saved_hw, host_accel).await? {
            Ok(()) => true,
            Err(why) => {
                ctx.ui.warn(&format!(
                    "checkpoint `{name}`'s memory cannot be loaded on this host ({why}): booting its disks \
                     instead, as they were at that instant"
                ));
                false
            }
        };
    if memory {
        check_memory_states(ctx, name, &record, &present, &pool_path).await?;
    }
    let hw = if memory {
        saved_hw
    } else {
        Hardware::new(host_accel)
    };
    let lab = ctx.lab.clone();
    let doms: Vec<(String, Option<DomainState>)> = super::machine_states(ctx).await?;
    let mut moves = Vec::new();
    for (m, st) in doms {
        let machine = lab.machine(&m).expect("lab machine");
        let mr = &record.machines[&m];
        let (old, next) = gens[&m];
        let new_disk = names::vol::active(&m, next);
        let paths = xml::MachinePaths {
            disk: format!("{pool_path}/{new_disk}"),
            seed: format!("{pool_path}/{}", names::vol::seed(&m)),
            console_log: format!("{pool_path}/{}", names::vol::console_log(&m)),
        };
        let old_disk = names::vol::active(&m, old);
        moves.push(Move {
            dom: ctx.dom(&m),
            running: st == Some(DomainState::Running),
            defined: st.is_some(),
            // A machine that has no domain runs on no disk (an imported kit's first `up`).
            old_disk: (st.is_some() && present.contains_key(&old_disk)).then_some(old_disk),
            overlay_xml: xml::overlay(
                &new_disk,
                machine.disk,
                &format!("{pool_path}/{}", mr.layer),
                "qcow2",
            ),
            domain_xml: xml::domain(&lab, machine, &hw, &paths),
            new_disk,
            memory: mr
                .memory
                .as_ref()
                .filter(|_| memory)
                .map(|v| format!("{pool_path}/{v}")),
            thaw: memory && mr.memory.is_some() && mr.flushed == Flush::Frozen,
            machine: m,
        });
    }

    let (keep_undo, planned_undo, mut discard) = match undo {
        Undo::Keep if name != UNDO => (true, None, Vec::new()),
        Undo::Keep | Undo::Discard => (false, None, Vec::new()),
        Undo::Planned { undo, discard } => (undo.is_some(), Some(undo.map(|u| *u)), discard),
    };
    if planned_undo.is_none() {
        if keep_undo {
            discard.extend(retire_undo(state));
        } else {
            // The replaced disks go, unless a checkpoint holds them.
            discard.extend(
                moves
                    .iter()
                    .filter_map(|m| m.old_disk.clone())
                    .filter(|v| !used_by_records(state, v, &[])),
            );
        }
    }
    Ok(Plan {
        name: name.into(),
        memory,
        moves,
        keep_undo,
        planned_undo,
        discard,
    })
}

/// Each machine's disk layer and memory file are in the pool.
fn check_present(
    ctx: &Context,
    name: &str,
    record: &Record,
    present: &BTreeMap<String, u64>,
) -> Result<()> {
    for m in &ctx.lab.machines {
        let mr = record.machines.get(&m.name).ok_or_else(|| Error::Damaged {
            name: name.into(),
            machine: m.name.clone(),
            what: "disk layer",
            volume: "(none recorded)".into(),
        })?;
        let files = std::iter::once(("disk layer", &mr.layer))
            .chain(mr.memory.iter().map(|v| ("memory file", v)));
        for (what, v) in files {
            if !present.contains_key(v) {
                return Err(Error::Damaged {
                    name: name.into(),
                    machine: m.name.clone(),
                    what,
                    volume: v.clone(),
                });
            }
        }
    }
    Ok(())
}

/// The cheap checks that find a damaged memory state before anything changes: its length is the one recorded
/// when it was saved, and libvirt reads its header. A state that passes and still fails to load is one this
/// host's QEMU refuses: that machine boots the checkpoint's disk instead (`load`).
async fn check_memory_states(
    ctx: &Context,
    name: &str,
    record: &Record,
    present: &BTreeMap<String, u64>,
    pool_path: &str,
) -> Result<()> {
    for m in &ctx.lab.machines {
        let mr = &record.machines[&m.name];
        let Some(v) = &mr.memory else { continue };
        let damaged = |why: String| Error::MemoryDamaged {
            name: name.into(),
            machine: m.name.clone(),
            volume: v.clone(),
            why,
        };
        let length = present.get(v).copied().unwrap_or(0);
        if let Some(want) = mr.memory_bytes.filter(|w| *w != length) {
            return Err(damaged(format!(
                "it holds {length} bytes, and {want} were saved"
            )));
        }
        let file = format!("{pool_path}/{v}");
        if let Err(e) = call(&ctx.hv, move |hv| hv.memory_state_xml(&file)).await {
            return Err(damaged(format!("libvirt cannot read its header ({e})")));
        }
    }
    Ok(())
}

impl Plan {
    fn mv(&self, machine: &str) -> &Move {
        self.moves
            .iter()
            .find(|x| x.machine == machine)
            .expect("every machine is planned")
    }
}

/// Makes room for a new `undo`: the old one's record goes (its volumes are returned, to delete once the restore
/// is done), unless something is built on it or runs on it: then it is kept under a dated name.
fn retire_undo(state: &mut State) -> Vec<String> {
    let Some(mut r) = state.checkpoints.remove(UNDO) else {
        return Vec::new();
    };
    let used = state.current.as_deref() == Some(UNDO)
        || state
            .checkpoints
            .values()
            .any(|c| c.parent.as_deref() == Some(UNDO));
    if used {
        let new = format!("undo-{}", r.created.replace([':', '-'], "").to_lowercase());
        r.name = new.clone();
        for c in state.checkpoints.values_mut() {
            if c.parent.as_deref() == Some(UNDO) {
                c.parent = Some(new.clone());
            }
        }
        if state.current.as_deref() == Some(UNDO) {
            state.current = Some(new.clone());
        }
        state.checkpoints.insert(new, r);
        Vec::new()
    } else {
        super::checkpoints::record_volumes(&r)
            .into_iter()
            .filter(|v| !used_by_records(state, v, &[]))
            .collect()
    }
}

/// The disk-only checkpoint of the replaced state (None when no machine had a disk to keep).
fn undo_record(plan: &Plan, before: &State, flushed: &BTreeMap<String, Flush>) -> Option<Record> {
    let machines: BTreeMap<String, MachineRecord> = plan
        .moves
        .iter()
        .filter_map(|m| {
            Some((
                m.machine.clone(),
                MachineRecord {
                    layer: m.old_disk.clone()?,
                    memory: None,
                    memory_bytes: None,
                    flushed: flushed.get(&m.machine).copied().unwrap_or_default(),
                },
            ))
        })
        .collect();
    (!machines.is_empty()).then(|| Record {
        name: UNDO.into(),
        parent: before.current.clone(),
        created: now_rfc3339(),
        memory: false,
        key: None,
        machines,
        hardware: None,
    })
}

/// Every machine's new overlay, at once. On failure the ones made are deleted by the caller.
async fn make_overlays(ctx: &Context, plan: &Plan) -> Result<()> {
    for_each_machine(ctx, |m| {
        let (p, x) = (ctx.pool(), plan.mv(&m).overlay_xml.clone());
        async move {
            let t = Instant::now();
            call(&ctx.hv, move |hv| hv.create_volume(&p, &x)).await?;
            tracing::debug!(machine = m, ms = t.elapsed().as_millis() as u64, "overlay");
            Ok(())
        }
    })
    .await
    .map(drop)
}

/// One machine: powered off, redefined on its new disk, started from the checkpoint (memory loaded paused, or
/// booted). Returns the console mark of a boot.
async fn load(ctx: &Context, mv: &Move) -> Result<Loaded> {
    let console = ConsoleWatch::start(ctx, &mv.machine).await;
    let (d, x, mem, defined) = (
        mv.dom.clone(),
        mv.domain_xml.clone(),
        mv.memory.clone(),
        mv.defined,
    );
    let t = Instant::now();
    let booted = call(&ctx.hv, move |hv| {
        if defined {
            hv.stop_domain(&d)?;
            // A stopped lab's saved memory belongs to the state being replaced.
            hv.discard_saved_memory(&d)?;
        }
        hv.define_domain(&x)?;
        match &mem {
            Some(file) => match hv.restore_memory(file, &x, true) {
                Ok(()) => Ok(Ok(false)),
                // This host's QEMU would not take the memory state (another version, a CPU without the model's
                // features): its disk layer is whole on its own, so the machine boots from it.
                Err(e) => {
                    hv.start_domain(&d)?;
                    Ok(Err(e))
                }
            },
            None => hv.start_domain(&d).map(|()| Ok(true)),
        }
    })
    .await?;
    let booted = match booted {
        Ok(b) => b,
        Err(e) => {
            ctx.ui.warn(&format!(
                "{}: its memory state could not be loaded ({e}); it boots from the checkpoint's disk instead",
                mv.machine
            ));
            true
        }
    };
    tracing::debug!(
        machine = mv.machine,
        ms = t.elapsed().as_millis() as u64,
        booted,
        "stopped and loaded"
    );
    Ok(Loaded { console, booted })
}

/// A machine after `load`: booting from its disk, or paused with its memory loaded.
struct Loaded {
    console: ConsoleWatch,
    booted: bool,
}

/// Whether a memory state saved on `saved` hardware loads on this host: the same accelerator, a CPU that runs its
/// CPU model, and a QEMU that offers its machine type. Err says why not.
async fn memory_fits(
    ctx: &Context,
    saved: &Hardware,
    host: crate::render::xml::Accel,
) -> Result<std::result::Result<(), String>> {
    if saved.accel != host {
        return Ok(Err(format!(
            "it was saved under {}, and machines here run under {host}",
            saved.accel
        )));
    }
    let arch = ctx.lab.arch.qemu().to_string();
    if let Some(cpu) = saved.cpu.clone() {
        let (a, virt_type) = (
            arch.clone(),
            match host {
                crate::render::xml::Accel::Kvm => "kvm",
                crate::render::xml::Accel::Tcg => "qemu",
            },
        );
        let models = call(&ctx.hv, move |hv| hv.cpu_models(&a, virt_type)).await?;
        // An empty list: libvirt cannot say, and QEMU decides at the load.
        if !models.is_empty() && !models.contains(&cpu) {
            return Ok(Err(format!("this host cannot run its CPU model {cpu}")));
        }
    }
    if saved.machine == "q35" {
        return Ok(Ok(()));
    }
    let types = call(&ctx.hv, move |hv| hv.machine_types(&arch)).await?;
    Ok(if types.contains(&saved.machine) {
        Ok(())
    } else {
        Err(format!(
            "this host's QEMU has no machine type {}",
            saved.machine
        ))
    })
}

/// The state after a restore: the new disks, `undo`, the current checkpoint; then the files that went out of use.
async fn record(ctx: &Context, state: &mut State, plan: &Plan, undo: Option<Record>) -> Result<()> {
    for mv in &plan.moves {
        if let Some(g) = super::checkpoints::generation_of(&mv.machine, &mv.new_disk) {
            state.active.insert(mv.machine.clone(), g);
        }
    }
    if let Some(u) = undo {
        state.checkpoints.insert(UNDO.into(), u);
    }
    state.current = Some(plan.name.clone());
    super::checkpoints::remove_recorded(ctx, state, &plan.discard).await
}

/// Done when every machine answers: a resumed guest gets the host's time and its sshd is seen taking connections;
/// a booted one is waited for like `up` does.
async fn wait(ctx: &Context, plan: &Plan, loaded: &BTreeMap<String, Loaded>) -> Result<()> {
    let deadline = Instant::now() + boot_timeout();
    for_each_machine(ctx, |m| async move {
        let t = ctx.target(&m)?;
        let mv = plan.mv(&m);
        let l = &loaded[&m];
        if !l.booted {
            let agent_wait = Duration::from_secs(if mv.thaw { 10 } else { 1 });
            let (clock, sshd) =
                tokio::join!(set_clock(ctx, &m, agent_wait), wait_sshd(ctx, &t, deadline));
            clock.and(sshd)
        } else {
            wait_ready(ctx, &t, deadline, &l.console, Patience::UntilHurried).await
        }
    })
    .await
    .map(drop)
}
