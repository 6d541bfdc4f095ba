//! Repair after a command that died (`kill -9`, a power cut, a crash): every command that changes a lab writes a
//! pending mark into the state before its first change and clears it after its last. The next command that finds
//! a mark while holding the lab's lock knows nobody is working on it any more, and makes the lab consistent again
//! before it goes on:
//! - machines are never left paused or with frozen file systems (resumed, thawed);
//! - an interrupted restore is finished (the machines move to its checkpoint, its `undo` is recorded); a build
//!   goes back to the checkpoint it started from; a first `up` is removed; a destroy is finished;
//! - volumes the dead command made and nothing uses (half-uploaded images, memory files of an unrecorded snapshot,
//!   overlays of an unfinished restore) are deleted.
//!
//! It says what it did in one line.

use super::build::rollback;
use super::checkpoints::{collect_garbage, remove_volumes};
use super::machines::{is_frozen, thaw_restored};
use super::restore::{restore_built, Undo};
use super::{destroy, lab_domains, Context, Result};
use crate::cancel::Cancel;
use crate::libvirt::{call, DomainState};
use crate::render::names;
use crate::state::{Pending, State};

/// Repairs what a dead command left, if the state carries its mark. Call with the lab's lock held. A repair that
/// fails does not stop the command that found it (a broken checkpoint must not block `destroy` or another
/// `restore`): it says so, wakes what it can and clears the mark.
pub async fn repair_if_pending(ctx: &Context) -> Result<()> {
    let Err(e) = repair(ctx).await else {
        return Ok(());
    };
    ctx.ui.warn(&format!(
        "could not repair the lab: {e}; `lab restore NAME` puts the machines on one checkpoint again, `lab \
         destroy` removes the lab"
    ));
    let calm = Context {
        cancel: Cancel::new(),
        ..ctx.clone()
    };
    let _ = wake(&calm).await;
    if let Ok(Some(mut state)) = State::load(&ctx.lab_dir()) {
        state.pending = None;
        ctx.save(&state)?;
    }
    Ok(())
}

async fn repair(ctx: &Context) -> Result<()> {
    let Some(state) = State::load(&ctx.lab_dir())? else {
        return Ok(());
    };
    let Some(pending) = state.pending.clone() else {
        return Ok(());
    };
    if state.uri != ctx.hv.uri() {
        return Ok(()); // the command refuses a lab on another URI anyway
    }
    ctx.ui.warn(&format!(
        "an earlier `{pending}` did not finish (the process was killed?); repairing the lab first"
    ));
    // The repair runs to its end: stopped half-way it would leave the lab as unsure as it found it.
    let calm = Context {
        cancel: Cancel::new(),
        ..ctx.clone()
    };
    let said = match pending {
        Pending::Up { fresh: true } => {
            destroy(&calm, false).await?;
            return say(
                ctx,
                "removed what the interrupted first `lab up` had made".into(),
            );
        }
        Pending::Destroy => {
            destroy(&calm, false).await?;
            return say(ctx, format!("finished destroying lab `{}`", ctx.lab.name));
        }
        Pending::Restore {
            name,
            undo,
            discard,
        } => {
            restore_built(
                &calm,
                &name,
                Undo::Planned {
                    undo: undo.map(Box::new),
                    discard,
                },
            )
            .await?;
            format!("finished `lab restore {name}`")
        }
        Pending::Build { from, .. } => {
            wake(&calm).await?;
            rollback(&calm, &from).await?;
            format!("the unfinished build was undone; the lab is back at `{from}`")
        }
        Pending::Remove { volumes } => {
            remove_volumes(&calm, &volumes).await;
            "finished removing checkpoint files".to_string()
        }
        Pending::Stop => {
            super::power::stop(&calm, false).await?;
            "finished `lab stop`: the machines are stopped, their memory saved".to_string()
        }
        Pending::Start => {
            super::power::start(&calm).await?;
            "finished `lab start`".to_string()
        }
        Pending::Snapshot { name } => {
            let woke = wake(&calm).await?;
            format!("`lab snapshot {name}` was not taken{woke}")
        }
        other => {
            let woke = wake(&calm).await?;
            format!("`{other}` did not finish{woke}")
        }
    };
    let mut state = ctx.state()?;
    state.pending = None;
    ctx.save(&state)?;
    let removed = collect_garbage(&calm, &state).await?;
    say(
        ctx,
        if removed.is_empty() {
            said
        } else {
            format!(
                "{said}; removed {} unfinished file(s): {}",
                removed.len(),
                removed.join(", ")
            )
        },
    )
}

fn say(ctx: &Context, what: String) -> Result<()> {
    ctx.ui.warn(&format!("repaired: {what}"));
    Ok(())
}

/// Resumes paused machines and thaws frozen ones; says what it did ("" when nothing).
async fn wake(ctx: &Context) -> Result<String> {
    let mut done = Vec::new();
    for d in lab_domains(ctx).await? {
        let d2 = d.clone();
        let st = call(&ctx.hv, move |hv| hv.domain_state(&d2)).await?;
        if st == Some(DomainState::Paused) {
            let d2 = d.clone();
            call(&ctx.hv, move |hv| hv.resume_domain(&d2)).await?;
            done.push(format!("resumed {d}"));
        }
        if matches!(st, Some(DomainState::Paused | DomainState::Running))
            && is_frozen(ctx, &d).await
        {
            let machine = d
                .strip_prefix(&names::domain(&ctx.lab.name, ""))
                .unwrap_or(&d)
                .to_string();
            thaw_restored(ctx, &machine).await?;
            done.push(format!("thawed {d}"));
        }
    }
    Ok(if done.is_empty() {
        String::new()
    } else {
        format!(" ({})", done.join(", "))
    })
}
