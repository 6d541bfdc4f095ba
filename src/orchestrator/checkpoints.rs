//! Checkpoint records on disk and in libvirt: which disk generation each machine runs on, listing, and removal.
//! Taking and restoring checkpoints live in `snapshot.rs` and `restore.rs`.
//!
//! A checkpoint's disk is a frozen qcow2 layer (the machine's active overlay at that instant) and its memory a
//! save-image file, both volumes in the lab's pool. libvirt keeps no snapshot metadata, so this works on libvirt
//! versions without external-snapshot revert and on UEFI guests alike.

use super::phases::Phases;
use super::{Context, Error, Result};
use crate::checkpoint::{self, Record, UNDO};
use crate::libvirt::call;
use crate::model::BASE;
use crate::render::names;
use crate::state::{Pending, State};
use std::collections::{BTreeMap, BTreeSet};

/// The generation in a machine's disk volume name (`MACHINE.active-N.qcow2`), from a name or a path.
pub(crate) fn generation_of(machine: &str, file: &str) -> Option<u64> {
    file.rsplit('/')
        .next()?
        .strip_prefix(&format!("{machine}.active-"))?
        .strip_suffix(".qcow2")?
        .parse()
        .ok()
}

/// Per machine: the generation of the disk the domain runs on now (read from libvirt, so an interrupted command
/// cannot mislead it) and a free generation for the next disk (above every `*.active-N.qcow2` in the pool).
pub(crate) async fn generations(
    ctx: &Context,
    state: &State,
) -> Result<BTreeMap<String, (u64, u64)>> {
    let lab = ctx.lab.clone();
    let pool = ctx.pool();
    let known = state.active.clone();
    Ok(call(&ctx.hv, move |hv| {
        let vols: Vec<String> = hv.volumes(&pool)?.into_iter().map(|v| v.name).collect();
        let mut out = BTreeMap::new();
        for m in &lab.machines {
            let d = names::domain(&lab.name, &m.name);
            let current = hv
                .domain_info(&d)?
                .and_then(|i| i.disk)
                .and_then(|disk| generation_of(&m.name, &disk))
                .or_else(|| known.get(&m.name).copied())
                .unwrap_or(0);
            let highest = vols
                .iter()
                .filter_map(|v| generation_of(&m.name, v))
                .max()
                .unwrap_or(0);
            out.insert(m.name.clone(), (current, highest.max(current) + 1));
        }
        Ok(out)
    })
    .await?)
}

/// Every volume a checkpoint record holds.
pub(crate) fn record_volumes(r: &Record) -> Vec<String> {
    r.machines
        .values()
        .flat_map(|m| std::iter::once(m.layer.clone()).chain(m.memory.clone()))
        .collect()
}

/// Whether some record other than `except` uses volume `v` (as its layer or memory).
pub(crate) fn used_by_records(state: &State, v: &str, except: &[&str]) -> bool {
    state
        .checkpoints
        .values()
        .filter(|r| !except.contains(&r.name.as_str()))
        .any(|r| {
            r.machines
                .values()
                .any(|m| m.layer == v || m.memory.as_deref() == Some(v))
        })
}

/// Deletes volumes, best effort (a failure leaves an orphan that the next repair removes).
pub(crate) async fn remove_volumes(ctx: &Context, vols: &[String]) {
    if vols.is_empty() {
        return;
    }
    let (p, vols) = (ctx.pool(), vols.to_vec());
    let r = call(&ctx.hv, move |hv| {
        for v in &vols {
            if let Err(e) = hv.delete_volume(&p, v) {
                tracing::warn!(volume = v, error = %e, "could not delete");
            }
        }
        Ok(())
    })
    .await;
    if let Err(e) = r {
        ctx.ui
            .warn(&format!("could not delete old checkpoint files: {e}"));
    }
}

/// The checkpoint a name or alias means: a built one, or one the lab file defines. Names nothing else.
pub fn resolve(ctx: &Context, state: &State, name: &str) -> Result<String> {
    if state.checkpoints.contains_key(name) {
        return Ok(name.into());
    }
    if let Some(c) = ctx.lab.checkpoint(name) {
        return Ok(c.name.clone());
    }
    if name == BASE {
        return Ok(BASE.into());
    }
    Err(Error::NoCheckpoint {
        name: name.into(),
        suggestion: suggest(name, known_names(ctx, Some(state))),
    })
}

/// Every checkpoint name and alias a user may type: the lab file's, `base`, and the built ones.
pub fn known_names(ctx: &Context, state: Option<&State>) -> Vec<String> {
    let mut all = vec![BASE.to_string()];
    for c in &ctx.lab.checkpoints {
        all.push(c.name.clone());
        all.extend(c.aliases.iter().cloned());
    }
    if let Some(s) = state {
        all.extend(s.checkpoints.keys().cloned());
    }
    all.sort();
    all.dedup();
    all
}

/// The closest of `known` to a mistyped `name`, if one is close enough to be what was meant.
pub fn suggest(name: &str, known: Vec<String>) -> Option<String> {
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(name, &k), k))
        .filter(|(d, k)| *d <= (k.len().max(name.len()) / 3).max(1))
        .min()
        .map(|(_, k)| k)
}

/// `lab checkpoint rm NAME [--recursive]`: plans the whole removal first (children, the running machines'
/// checkpoint), then records it with the pending mark, then deletes the files.
pub async fn remove(ctx: &Context, name: &str, recursive: bool) -> Result<Vec<String>> {
    let mut phases = Phases::new("checkpoint-rm", &ctx.cancel);
    let mut state = ctx.state()?;
    if !state.checkpoints.contains_key(name) {
        return Err(match ctx.lab.checkpoint(name) {
            Some(_) => Error::NotBuilt { name: name.into() },
            None => Error::NoCheckpoint {
                name: name.into(),
                suggestion: suggest(name, state.checkpoints.keys().cloned().collect()),
            },
        });
    }
    let order = subtree(&state, name);
    if !recursive && order.len() > 1 {
        return Err(Error::HasChildren {
            name: name.into(),
            children: order[1..].join(", "),
        });
    }
    if let Some(c) = state
        .current
        .as_deref()
        .filter(|c| order.iter().any(|o| o == c))
    {
        return Err(Error::InUse(c.to_string()));
    }
    let volumes = forget(&mut state, &order);
    phases.done("plan");
    remove_recorded(ctx, &mut state, &volumes).await?;
    phases.done("removed");
    Ok(order)
}

/// Saves the state with these volumes marked for removal, deletes them, and clears the mark: a command killed
/// half-way leaves the mark, and the next command finishes the job.
pub(crate) async fn remove_recorded(
    ctx: &Context,
    state: &mut State,
    volumes: &[String],
) -> Result<()> {
    if !volumes.is_empty() {
        state.pending = Some(Pending::Remove {
            volumes: volumes.to_vec(),
        });
        ctx.save(state)?;
        remove_volumes(ctx, volumes).await;
        let more = collect_garbage(ctx, state).await?;
        if !more.is_empty() {
            tracing::debug!(?more, "no longer used");
        }
    }
    state.pending = None;
    ctx.save(state)
}

/// A checkpoint and its descendants, the checkpoint first.
pub(crate) fn subtree(state: &State, name: &str) -> Vec<String> {
    let mut order = vec![name.to_string()];
    let mut i = 0;
    while i < order.len() {
        let kids = state
            .checkpoints
            .values()
            .filter(|r| r.parent.as_deref() == Some(order[i].as_str()))
            .map(|r| r.name.clone());
        order.extend(kids.collect::<Vec<_>>());
        i += 1;
    }
    order
}

/// Drops the records of `names` from the state and returns the volumes that nothing else uses any more. The
/// layer the running disks sit on is kept (only `destroy` removes it).
pub(crate) fn forget(state: &mut State, names: &[String]) -> Vec<String> {
    let gone: Vec<Record> = names
        .iter()
        .filter_map(|n| state.checkpoints.remove(n))
        .collect();
    let mut volumes = BTreeSet::new();
    for r in &gone {
        for v in record_volumes(r) {
            if !used_by_records(state, &v, &[]) {
                volumes.insert(v);
            }
        }
    }
    volumes.into_iter().collect()
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
        if rec.is_none() && def.is_none() && n != BASE {
            continue;
        }
        out.push(Listed {
            parent: rec
                .and_then(|r| r.parent.clone())
                .or_else(|| def.map(|d| d.after.clone())),
            created: rec.map(|r| r.created.clone()),
            size: rec
                .map(|r| record_volumes(r).iter().filter_map(|v| sizes.get(v)).sum())
                .unwrap_or(0),
            memory: rec.is_some_and(|r| r.memory),
            built: rec.is_some(),
            stale: rec.is_some_and(|r| checkpoint::is_stale(&ctx.lab, r)),
            defined_in_lab_file: def.is_some() || n == BASE,
            description: def
                .and_then(|d| d.description.clone())
                .or_else(|| (n == BASE).then(|| "the machines right after `lab up`".into()))
                .or_else(|| {
                    (n == UNDO).then(|| "the state the last restore replaced (disks only)".into())
                }),
            aliases: def.map(|d| d.aliases.clone()).unwrap_or_default(),
            current: state.current.as_deref() == Some(n.as_str()),
            name: n,
        });
    }
    Ok(out)
}

/// Deletes the volumes lab makes (disks, memory files, images) that nothing uses: no checkpoint, no machine's
/// disk, no backing chain of either, no completed upload. Volumes of names lab does not make are never touched.
/// Returns the names deleted. Run after every removal (a layer left behind by a snapshot that was never recorded
/// is only found when the disk above it goes) and by the repair.
pub(crate) async fn collect_garbage(ctx: &Context, state: &State) -> Result<Vec<String>> {
    let pool = ctx.pool();
    let lab = ctx.lab.clone();
    let state = state.clone();
    let removed = call(&ctx.hv, move |hv| {
        if hv.pool_path(&pool)?.is_none() {
            return Ok(Vec::new());
        }
        let vols: Vec<String> = hv.volumes(&pool)?.into_iter().map(|v| v.name).collect();
        let file = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
        let mut roots: Vec<String> = Vec::new();
        for r in state.checkpoints.values() {
            for m in r.machines.values() {
                roots.push(m.layer.clone());
                roots.extend(m.memory.clone());
            }
        }
        for m in &lab.machines {
            if let Some(disk) = hv
                .domain_info(&names::domain(&lab.name, &m.name))?
                .and_then(|i| i.disk)
            {
                roots.push(file(&disk));
            }
        }
        let mut keep = BTreeSet::new();
        for root in roots {
            let mut at = Some(root);
            while let Some(v) = at.take() {
                if !keep.insert(v.clone()) || !vols.contains(&v) {
                    continue;
                }
                at = hv.volume_backing(&pool, &v)?.map(|b| file(&b));
            }
        }
        let ours = |v: &str| {
            v.starts_with("image-")
                || lab.machines.iter().any(|m| {
                    generation_of(&m.name, v).is_some()
                        || v.strip_prefix(&format!("{}.mem-", m.name))
                            .is_some_and(|g| g.parse::<u64>().is_ok())
                })
        };
        let mut removed = Vec::new();
        for v in vols.iter().filter(|v| ours(v) && !keep.contains(*v)) {
            // An image in no backing chain is only an orphan if its upload was never completed (an older lab
            // recorded no completion: leave its images be).
            if v.starts_with("image-") && state.upload_complete(v) != Some(false) {
                continue;
            }
            hv.delete_volume(&pool, v)?;
            removed.push(v.clone());
        }
        Ok(removed)
    })
    .await?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_generations_from_names_and_paths() {
        assert_eq!(generation_of("alpha", "/p/alpha.active-3.qcow2"), Some(3));
        assert_eq!(generation_of("alpha", "alpha.active-12.qcow2"), Some(12));
        assert_eq!(generation_of("alpha", "alphabet.active-1.qcow2"), None);
        assert_eq!(generation_of("alpha", "alpha.mem-3"), None);
    }

    #[test]
    fn suggests_close_names_only() {
        let known = vec![
            "worker-done".to_string(),
            "cluster-done".into(),
            "base".into(),
        ];
        assert_eq!(
            suggest("woker-done", known.clone()).as_deref(),
            Some("worker-done")
        );
        assert_eq!(suggest("bse", known.clone()).as_deref(), Some("base"));
        assert_eq!(suggest("nosuch", known), None);
    }
}
