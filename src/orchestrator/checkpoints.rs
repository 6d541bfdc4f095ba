//! Whole-lab checkpoints on libvirt: every machine paused, saved at the same instant and resumed; restored all at
//! once. A checkpoint's disk is a frozen qcow2 layer (the machine's active overlay at that instant) and its memory
//! a save-image file, both volumes in the lab's pool. Restoring puts a fresh empty overlay on the layer and loads
//! the memory file with the domain pointing at that overlay. libvirt keeps no snapshot metadata, so this works on
//! libvirt versions without external-snapshot revert and on UEFI guests alike.

use super::guest::{self, boot_timeout, wait_ready};
use super::{Context, Error, Result};
use crate::checkpoint::{self, MachineRecord, Record, UNDO};
use crate::libvirt::{call, DomainState};
use crate::model::BASE;
use crate::render::names;
use crate::render::xml;
use crate::state::State;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Says what an interrupted earlier command left, and clears the mark.
pub fn report_pending(ctx: &Context, state: &mut State) {
    if let Some(p) = state.pending.take() {
        ctx.ui.warn(&format!(
            "an earlier `lab {p}` did not finish (interrupted?); every checkpoint is intact, and `lab restore NAME` \
             returns the lab to one"
        ));
    }
}

async fn for_each_machine<F, Fut, T>(ctx: &Context, f: F) -> Result<Vec<(String, T)>>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let work = ctx.lab.machines.iter().map(|m| {
        let name = m.name.clone();
        let fut = f(name.clone());
        async move { (name, fut.await) }
    });
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for (name, r) in futures_util::future::join_all(work).await {
        match r {
            Ok(v) => ok.push((name, v)),
            Err(e) => errors.push(e),
        }
    }
    Error::many("working on the machines", errors)?;
    Ok(ok)
}

/// Per machine: the generation of the disk the domain runs on now (read from libvirt, so an interrupted command
/// cannot mislead it) and a free generation for the next disk (above every `*.active-N.qcow2` in the pool).
async fn generations(ctx: &Context, state: &State) -> Result<BTreeMap<String, (u64, u64)>> {
    let lab = ctx.lab.clone();
    let pool = ctx.pool();
    let known = state.active.clone();
    Ok(call(&ctx.hv, move |hv| {
        let vols: Vec<String> = hv.volumes(&pool)?.into_iter().map(|v| v.name).collect();
        let mut out = BTreeMap::new();
        for m in &lab.machines {
            let gen_of = |file: &str| -> Option<u64> {
                file.rsplit('/')
                    .next()?
                    .strip_prefix(&format!("{}.active-", m.name))?
                    .strip_suffix(".qcow2")?
                    .parse()
                    .ok()
            };
            let d = names::domain(&lab.name, &m.name);
            let current = match hv.domain_state(&d)? {
                Some(_) => disk_source(&hv.domain_xml(&d)?).and_then(gen_of),
                None => None,
            }
            .or_else(|| known.get(&m.name).copied())
            .unwrap_or(0);
            let highest = vols.iter().filter_map(|v| gen_of(v)).max().unwrap_or(0);
            out.insert(m.name.clone(), (current, highest.max(current) + 1));
        }
        Ok(out)
    })
    .await?)
}

/// The file behind the domain's first disk (vda).
fn disk_source(domain_xml: &str) -> Option<&str> {
    let vda = domain_xml
        .find("dev='vda'")
        .or_else(|| domain_xml.find("dev=\"vda\""))?;
    let disk = domain_xml[..vda].rfind("<disk")?;
    let src = domain_xml[disk..vda].find("<source file=")? + disk + "<source file=".len();
    let quote = domain_xml[src..].chars().next()?;
    let body = &domain_xml[src + 1..];
    Some(&body[..body.find(quote)?])
}

/// How long one machine's step of a restore took (`LAB_LOG=lab=debug`).
fn debug_step(machine: &str, step: &str, since: Instant) {
    tracing::debug!(
        machine,
        step,
        ms = since.elapsed().as_millis() as u64,
        "restore step"
    );
}

fn dom(ctx: &Context, machine: &str) -> String {
    names::domain(&ctx.lab.name, machine)
}

/// Takes a checkpoint of the whole lab. `key` marks checkpoints built from the lab file.
pub async fn snapshot(
    ctx: &Context,
    name: &str,
    disk_only: bool,
    force: bool,
    key: Option<String>,
) -> Result<Record> {
    let mut state = ctx.state()?;
    report_pending(ctx, &mut state);
    if let Some(old) = state.checkpoints.get(name) {
        if !force {
            return Err(Error::Failed(format!(
                "checkpoint `{name}` exists (taken {}); --force replaces it",
                old.created
            )));
        }
        if state
            .checkpoints
            .values()
            .any(|r| r.parent.as_deref() == Some(name))
            || state.current.as_deref() == Some(name)
        {
            return Err(Error::Failed(format!(
                "checkpoint `{name}` cannot be replaced: other checkpoints or the running machines are built on it; \
                 take a new name"
            )));
        }
        remove_record(ctx, &mut state, name).await?;
    }
    for (m, st) in super::machine_states(ctx).await? {
        if st != Some(DomainState::Running) {
            return Err(Error::Failed(format!("{m} is not running; `lab up` first")));
        }
    }
    let pool = ctx.pool();
    let pool_path = {
        let p = pool.clone();
        call(&ctx.hv, move |hv| hv.pool_path(&p))
            .await?
            .ok_or_else(|| Error::NotUp(ctx.lab.name.clone()))?
    };
    state.pending = Some(format!("snapshot {name}"));
    ctx.save(&state)?;

    // Pause everything first, so all machines are saved at the same instant of the lab's life.
    let paused_at = Instant::now();
    for_each_machine(ctx, |m| {
        let d = dom(ctx, &m);
        async move { Ok(call(&ctx.hv, move |hv| hv.suspend_domain(&d)).await?) }
    })
    .await?;
    let gens = generations(ctx, &state).await?;
    let result = for_each_machine(ctx, |m| {
        let d = dom(ctx, &m);
        let (gen, next_gen) = gens[&m];
        let layer = names::vol::active(&m, gen);
        let next = format!("{pool_path}/{}", names::vol::active(&m, next_gen));
        let memory = (!disk_only).then(|| format!("{m}.mem-{}", gen));
        let mem_path = memory.as_ref().map(|v| format!("{pool_path}/{v}"));
        let snap = xml::external_snapshot(&format!("lab-{gen}"), mem_path.as_deref(), &next);
        async move {
            call(&ctx.hv, move |hv| {
                hv.external_snapshot(&d, &snap, disk_only)
            })
            .await?;
            Ok(MachineRecord { layer, memory })
        }
    })
    .await;
    // Resume all, whatever happened, so a failure never leaves the lab paused.
    let _ = for_each_machine(ctx, |m| {
        let d = dom(ctx, &m);
        async move {
            let d2 = d.clone();
            if call(&ctx.hv, move |hv| hv.domain_state(&d2)).await? == Some(DomainState::Paused) {
                call(&ctx.hv, move |hv| hv.resume_domain(&d)).await?;
            }
            Ok(())
        }
    })
    .await;
    let machines: BTreeMap<String, MachineRecord> = match result {
        Ok(r) => {
            for (m, (_, next)) in &gens {
                state.active.insert(m.clone(), *next);
            }
            r.into_iter().collect()
        }
        Err(e) => {
            // Nothing was recorded; the machines run on as before. Only a killed process leaves `pending` set.
            state.pending = None;
            ctx.save(&state)?;
            return Err(e);
        }
    };
    let paused_for = paused_at.elapsed();
    let record = Record {
        name: name.to_string(),
        parent: state.current.clone().filter(|c| c != name),
        created: now_rfc3339(),
        memory: !disk_only,
        key,
        machines,
    };
    state.checkpoints.insert(name.to_string(), record.clone());
    state.current = Some(name.to_string());
    state.pending = None;
    ctx.save(&state)?;
    ctx.ui.info(&format!(
        "checkpoint `{name}` taken ({}; machines paused {:.2} s)",
        if disk_only {
            "disks"
        } else {
            "disks and memory"
        },
        paused_for.as_secs_f64()
    ));
    Ok(record)
}

/// Returns every machine to a built checkpoint, all machines at once. The state it replaces is kept as the
/// disk-only checkpoint `undo` (its disks become a layer; nothing is copied).
pub async fn restore_built(ctx: &Context, name: &str) -> Result<()> {
    let mut phases = super::Phases::new("restore");
    let mut state = ctx.state()?;
    report_pending(ctx, &mut state);
    let record = state
        .checkpoints
        .get(name)
        .cloned()
        .ok_or_else(|| Error::Failed(format!("no built checkpoint `{name}`")))?;
    let pool = ctx.pool();
    let vols: BTreeMap<String, u64> = {
        let p = pool.clone();
        call(&ctx.hv, move |hv| hv.volumes(&p))
            .await?
            .into_iter()
            .map(|v| (v.name, v.allocation))
            .collect()
    };
    for (m, mr) in &record.machines {
        for v in std::iter::once(&mr.layer).chain(mr.memory.iter()) {
            if !vols.contains_key(v) {
                return Err(Error::Failed(format!(
                    "checkpoint `{name}` is damaged: {m}'s file {v} is missing; nothing was changed"
                )));
            }
        }
    }
    let pool_path = {
        let p = pool.clone();
        call(&ctx.hv, move |hv| hv.pool_path(&p))
            .await?
            .ok_or_else(|| Error::NotUp(ctx.lab.name.clone()))?
    };
    state.pending = Some(format!("restore {name}"));
    ctx.save(&state)?;
    phases.done("check files");

    // The replaced disks become the `undo` checkpoint (unless we are restoring `undo` itself).
    let keep_undo = name != UNDO;
    let gens = generations(ctx, &state).await?;
    let old_gens: BTreeMap<String, u64> =
        gens.iter().map(|(m, (cur, _))| (m.clone(), *cur)).collect();
    phases.done("generations");
    if keep_undo {
        retire_undo(ctx, &mut state).await?;
        ctx.save(&state)?;
        phases.done("retire undo");
    }
    let start = Instant::now();
    let lab = ctx.lab.clone();
    let accel = current_accel(ctx).await?;
    // Each machine on its own: new overlay and flush (the old disk becomes `undo`), power off, memory loaded paused.
    let agents = for_each_machine(ctx, |m| {
        let d = dom(ctx, &m);
        let mr = record.machines.get(&m).cloned();
        let disk_vol = names::vol::active(&m, gens[&m].1);
        let machine = lab.machine(&m).cloned().expect("lab machine");
        let paths = xml::MachinePaths {
            disk: format!("{pool_path}/{disk_vol}"),
            seed: format!("{pool_path}/{}", names::vol::seed(&m)),
            console_log: format!("{pool_path}/{}", names::vol::console_log(&m)),
        };
        let domain_xml = xml::domain(&lab, &machine, accel, &paths);
        let pool = pool.clone();
        let pool_path = pool_path.clone();
        async move {
            let mr = mr.ok_or_else(|| Error::Failed(format!("checkpoint has no disk for {m}")))?;
            // The new disk (an empty overlay on the checkpoint's frozen layer) is made while the guest flushes:
            // neither touches the running machine's disk. `generations` picked a name above every disk in the
            // pool, so there is nothing to clear first.
            let overlay = xml::overlay(
                &disk_vol,
                machine.disk,
                &format!("{pool_path}/{}", mr.layer),
                "qcow2",
            );
            let make_overlay = async {
                let t = Instant::now();
                call(&ctx.hv, move |hv| hv.create_volume(&pool, &overlay)).await?;
                debug_step(&m, "overlay", t);
                Ok::<_, Error>(())
            };
            let flush = async {
                let t = Instant::now();
                let agent = keep_undo && guest::flush_for_power_off(ctx, &m).await;
                debug_step(&m, "flush", t);
                agent
            };
            let (made, agent) = tokio::join!(make_overlay, flush);
            let d2 = d.clone();
            let stopped = async {
                made?;
                call(&ctx.hv, move |hv| {
                    let t = Instant::now();
                    if hv.domain_state(&d2)?.is_some() {
                        hv.stop_domain(&d2)?;
                    }
                    debug_step(&d2, "stop", t);
                    Ok(())
                })
                .await?;
                Ok::<_, Error>(())
            };
            if let Err(e) = stopped.await {
                // The machine runs on: let it write again.
                if agent {
                    let d = d.clone();
                    let _ = call(&ctx.hv, move |hv| hv.agent(&d, guest::THAW, 5)).await;
                }
                return Err(e);
            }
            call(&ctx.hv, move |hv| {
                let t = Instant::now();
                hv.define_domain(&domain_xml)?;
                match &mr.memory {
                    Some(mem) => {
                        hv.restore_memory(&format!("{pool_path}/{mem}"), &domain_xml, true)?
                    }
                    None => hv.start_domain(&d)?,
                }
                debug_step(
                    &d,
                    if mr.memory.is_some() {
                        "define, memory"
                    } else {
                        "define, start"
                    },
                    t,
                );
                Ok(())
            })
            .await?;
            Ok(agent)
        }
    })
    .await?
    .into_iter()
    .collect::<BTreeMap<String, bool>>();
    // All memory-restored machines resume together: the lab goes on from one instant, as it was saved (a
    // machine woken earlier than its peers could, say, call an election its cluster did not need).
    if record.memory {
        for_each_machine(ctx, |m| {
            let d = dom(ctx, &m);
            async move { Ok(call(&ctx.hv, move |hv| hv.resume_domain(&d)).await?) }
        })
        .await?;
    }
    let resumed = start.elapsed();
    phases.done("machines restored and resumed");
    for (m, (_, next)) in &gens {
        state.active.insert(m.clone(), *next);
    }
    if keep_undo {
        let machines = old_gens
            .iter()
            .map(|(m, g)| {
                (
                    m.clone(),
                    MachineRecord {
                        layer: names::vol::active(m, *g),
                        memory: None,
                    },
                )
            })
            .collect();
        state.checkpoints.insert(
            UNDO.into(),
            Record {
                name: UNDO.into(),
                parent: state.current.clone(),
                created: now_rfc3339(),
                memory: false,
                key: None,
                machines,
            },
        );
    } else {
        // Restoring `undo` consumes nothing: its layer stays as the base of the new disks.
        for (m, g) in &old_gens {
            let (p, v) = (pool.clone(), names::vol::active(m, *g));
            if !state
                .checkpoints
                .values()
                .any(|r| r.machines.values().any(|x| x.layer == v))
            {
                let _ = call(&ctx.hv, move |hv| hv.delete_volume(&p, &v)).await;
            }
        }
    }
    state.current = Some(name.to_string());
    state.pending = None;
    ctx.save(&state)?;
    phases.done("state saved");

    // Done when every machine answers SSH. A resumed guest gets the host's time, then its network is checked
    // (sshd's greeting); a booted one is waited for like `up` does.
    let deadline = Instant::now() + boot_timeout();
    let memory = record.memory;
    let agents = &agents;
    for_each_machine(ctx, |m| async move {
        let t = ctx.target(&m)?;
        if memory {
            let agent_wait = Duration::from_secs(if agents[&m] { 10 } else { 1 });
            let (clock, sshd) = tokio::join!(
                guest::set_clock(ctx, &m, agent_wait),
                guest::wait_sshd(ctx, &t, deadline)
            );
            clock.and(sshd)
        } else {
            wait_ready(ctx, &t, deadline).await
        }
    })
    .await?;
    phases.done("clocks and ssh");
    ctx.ui.info(&format!(
        "restored `{name}` on {} machine(s) in {:.1} s{}",
        record.machines.len(),
        resumed.as_secs_f64(),
        if keep_undo {
            "; your previous state is kept as `undo` (`lab restore undo` brings it back)"
        } else {
            ""
        }
    ));
    Ok(())
}

/// The acceleration the lab's domains were defined with.
async fn current_accel(ctx: &Context) -> Result<xml::Accel> {
    let d = dom(ctx, &ctx.lab.machines[0].name);
    let x = call(&ctx.hv, move |hv| hv.domain_xml(&d)).await?;
    Ok(if x.contains("type='kvm'") || x.contains("type=\"kvm\"") {
        xml::Accel::Kvm
    } else {
        xml::Accel::Tcg
    })
}

/// Makes room for a new `undo`: the old one goes, unless something is built on it (then it is kept under a
/// dated name).
async fn retire_undo(ctx: &Context, state: &mut State) -> Result<()> {
    if !state.checkpoints.contains_key(UNDO) {
        return Ok(());
    }
    let used = state.current.as_deref() == Some(UNDO)
        || state
            .checkpoints
            .values()
            .any(|r| r.parent.as_deref() == Some(UNDO));
    if used {
        let mut r = state.checkpoints.remove(UNDO).expect("present");
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
        Ok(())
    } else {
        remove_record(ctx, state, UNDO).await
    }
}

/// Deletes a checkpoint's files and record. Layers that running disks sit on stay until `destroy`.
async fn remove_record(ctx: &Context, state: &mut State, name: &str) -> Result<()> {
    let Some(r) = state.checkpoints.remove(name) else {
        return Ok(());
    };
    for (m, mr) in r.machines {
        let active_parent = state.current.as_deref() == Some(name);
        let mut vols: Vec<String> = mr.memory.into_iter().collect();
        if !active_parent {
            vols.push(mr.layer);
        }
        let _ = m;
        for v in vols {
            let p = ctx.pool();
            call(&ctx.hv, move |hv| hv.delete_volume(&p, &v)).await?;
        }
    }
    Ok(())
}

/// `lab checkpoint rm NAME [--recursive]`.
pub async fn remove(ctx: &Context, name: &str, recursive: bool) -> Result<Vec<String>> {
    let mut state = ctx.state()?;
    report_pending(ctx, &mut state);
    if !state.checkpoints.contains_key(name) {
        return Err(Error::Failed(format!("no built checkpoint `{name}`")));
    }
    // The checkpoint and, with --recursive, its descendants (children first).
    let mut order = vec![name.to_string()];
    let mut i = 0;
    while i < order.len() {
        let kids: Vec<String> = state
            .checkpoints
            .values()
            .filter(|r| r.parent.as_deref() == Some(order[i].as_str()))
            .map(|r| r.name.clone())
            .collect();
        if !kids.is_empty() && !recursive {
            return Err(Error::Failed(format!(
                "checkpoint `{name}` has children ({}); --recursive removes them too",
                kids.join(", ")
            )));
        }
        order.extend(kids);
        i += 1;
    }
    if state
        .current
        .as_deref()
        .is_some_and(|c| order.iter().any(|o| o == c))
    {
        return Err(Error::Failed(format!(
            "the machines run on checkpoint `{}`; restore another checkpoint first",
            state.current.clone().unwrap_or_default()
        )));
    }
    for n in order.iter().rev() {
        remove_record(ctx, &mut state, n).await?;
    }
    ctx.save(&state)?;
    Ok(order)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_first_disk_source() {
        let x = "<domain><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
                 <source file='/p/alpha.active-3.qcow2'/><target dev='vda' bus='virtio'/></disk>\
                 <disk type='file'><source file='/p/alpha.seed.img'/><target dev='vdb'/></disk></devices></domain>";
        assert_eq!(super::disk_source(x), Some("/p/alpha.active-3.qcow2"));
        let y = x.replace('\'', "\"");
        assert_eq!(super::disk_source(&y), Some("/p/alpha.active-3.qcow2"));
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    pub name: String,
    pub parent: Option<String>,
    pub created: Option<String>,
    pub size: u64,
    pub memory: bool,
    pub built: bool,
    pub stale: bool,
    pub defined_in_lab_file: bool,
    pub description: Option<String>,
    pub aliases: Vec<String>,
    pub current: bool,
}

/// Every checkpoint: built ones, and the lab file's ones not built yet, in tree order.
pub async fn list(ctx: &Context) -> Result<Vec<Listed>> {
    let state = State::load(&ctx.lab_dir())?.unwrap_or_else(|| State::new(ctx.hv.uri()));
    let sizes: BTreeMap<String, u64> = if state.checkpoints.is_empty() {
        BTreeMap::new()
    } else {
        let p = ctx.pool();
        call(&ctx.hv, move |hv| hv.volumes(&p))
            .await
            .map(|v| v.into_iter().map(|v| (v.name, v.allocation)).collect())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    let mut names: Vec<String> = Vec::new();
    names.push(BASE.into());
    names.extend(ctx.lab.checkpoints.iter().map(|c| c.name.clone()));
    let mut users: Vec<&Record> = state
        .checkpoints
        .values()
        .filter(|r| !names.contains(&r.name))
        .collect();
    users.sort_by(|a, b| a.created.cmp(&b.created));
    names.extend(users.iter().map(|r| r.name.clone()));
    for n in names {
        let def = ctx.lab.checkpoints.iter().find(|c| c.name == n);
        let rec = state.checkpoints.get(&n);
        if rec.is_none() && def.is_none() {
            continue;
        }
        out.push(Listed {
            parent: rec
                .and_then(|r| r.parent.clone())
                .or_else(|| def.map(|d| d.after.clone())),
            created: rec.map(|r| r.created.clone()),
            size: rec
                .map(|r| {
                    r.machines
                        .values()
                        .flat_map(|m| std::iter::once(&m.layer).chain(m.memory.iter()))
                        .filter_map(|v| sizes.get(v))
                        .sum()
                })
                .unwrap_or(0),
            memory: rec.is_some_and(|r| r.memory),
            built: rec.is_some(),
            stale: rec.is_some_and(|r| checkpoint::is_stale(&ctx.lab, r)),
            defined_in_lab_file: def.is_some() || n == BASE,
            description: def
                .and_then(|d| d.description.clone())
                .or_else(|| (n == BASE).then(|| "the machines right after `lab up`".into())),
            aliases: def.map(|d| d.aliases.clone()).unwrap_or_default(),
            current: state.current.as_deref() == Some(n.as_str()),
            name: n,
        });
    }
    Ok(out)
}
