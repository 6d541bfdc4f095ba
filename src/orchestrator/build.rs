//! Checkpoints built from the lab file: `lab restore NAME` for a checkpoint that was never built (or is stale)
//! restores the nearest fresh ancestor, runs each missing checkpoint's steps in order (machines of one step in
//! parallel, output streamed with the machine's name), and saves every checkpoint on the way. Also `lab check`.
//!
//! Interrupted (or killed) while running steps, the lab goes back to the last checkpoint it stands on (`from`, or
//! the last one built on the way): a half-run lesson is no state to leave a student in.

use super::checkpoints::{forget, remove_volumes, resolve};
use super::guest::run_root_streaming;
use super::machines::ensure_space;
use super::phases::Phases;
use super::placement::{install_command, shell_quote};
use super::restore::{restore_built, Undo};
use super::snapshot;
use super::{Context, Error, Result};
use crate::checkpoint::{self, is_stale};
use crate::model::{Checkpoint, Step, StepAction, BASE};
use crate::ssh;
use crate::state::{Pending, State};
use std::time::Duration;

/// How long one step may run on one machine (`LAB_STEP_TIMEOUT` seconds).
fn step_timeout() -> Duration {
    Duration::from_secs(
        std::env::var("LAB_STEP_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1800),
    )
}

/// What `lab restore NAME` will do: restore a built checkpoint, or build lab-file checkpoints from one.
pub struct RestorePlan {
    pub canonical: String,
    /// The built checkpoint restored first.
    pub from: String,
    /// The lab-file checkpoints built on it, in order (empty: a plain restore).
    pub todo: Vec<Checkpoint>,
}

/// Plans `lab restore NAME` from the lab file and the state alone, before anything changes: the name resolved (an
/// alias, or "did you mean"), what is stale, what is built from where.
pub fn plan_restore(
    ctx: &Context,
    state: &State,
    name: &str,
    no_build: bool,
) -> Result<RestorePlan> {
    let canonical = resolve(ctx, state, name)?;
    if let Some(r) = state.checkpoints.get(&canonical) {
        if !is_stale(&ctx.lab, r) {
            return Ok(RestorePlan {
                from: canonical.clone(),
                canonical,
                todo: Vec::new(),
            });
        }
        if no_build {
            return Err(Error::Stale { name: canonical });
        }
    }
    let Some(chain) = ctx.lab.checkpoint_chain(&canonical) else {
        // A name only the state knows, or `base`, that is not built.
        return Err(if canonical == BASE {
            Error::NoBase
        } else {
            Error::NotBuilt { name: canonical }
        });
    };
    if no_build {
        return Err(Error::NotBuilt { name: canonical });
    }
    // The deepest fresh checkpoint on the way, else base.
    let fresh = |n: &str| {
        state
            .checkpoints
            .get(n)
            .is_some_and(|r| !is_stale(&ctx.lab, r))
    };
    let start = chain.iter().rposition(|c| fresh(&c.name));
    let (from, todo): (String, Vec<Checkpoint>) = match start {
        Some(i) => (
            chain[i].name.clone(),
            chain[i + 1..].iter().map(|c| (*c).clone()).collect(),
        ),
        None => (
            BASE.to_string(),
            chain.iter().map(|c| (*c).clone()).collect(),
        ),
    };
    if !fresh(&from) {
        return Err(Error::NoBase);
    }
    Ok(RestorePlan {
        canonical,
        from,
        todo,
    })
}

/// `lab restore NAME`: a built checkpoint is restored; a lab-file checkpoint that is missing or stale is built
/// (unless `no_build`).
pub async fn restore(ctx: &Context, name: &str, no_build: bool) -> Result<()> {
    let state = ctx.state()?;
    let plan = plan_restore(ctx, &state, name, no_build)?;
    if plan.todo.is_empty() {
        return restore_built(ctx, &plan.canonical, Undo::Keep).await;
    }
    // Room for every checkpoint the build saves (a memory file per machine each).
    let per_checkpoint: u64 = ctx.lab.machines.iter().map(|m| m.memory + (64 << 20)).sum();
    ensure_space(ctx, per_checkpoint * plan.todo.len() as u64).await?;
    ctx.ui.info(&format!(
        "building {} from `{}`: {}",
        plan.canonical,
        plan.from,
        plan.todo
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(" → ")
    ));
    restore_built(ctx, &plan.from, Undo::Keep).await?;
    let mut at = plan.from.clone();
    for c in &plan.todo {
        mark_build(ctx, &plan.canonical, &at)?;
        match build_one(ctx, c).await {
            Ok(()) => at = c.name.clone(),
            Err(e) => return Err(give_up(ctx, &at, e).await),
        }
    }
    clear_build(ctx)?;
    Ok(())
}

fn mark_build(ctx: &Context, target: &str, from: &str) -> Result<()> {
    let mut state = ctx.state()?;
    state.pending = Some(Pending::Build {
        target: target.into(),
        from: from.into(),
    });
    ctx.save(&state)
}

fn clear_build(ctx: &Context) -> Result<()> {
    let mut state = ctx.state()?;
    if matches!(state.pending, Some(Pending::Build { .. })) {
        state.pending = None;
        ctx.save(&state)?;
    }
    Ok(())
}

/// A build that stopped (a failed step, or the user): the lab goes back to `at`, the last checkpoint it stood on,
/// and the half-built disks go. A failed step's error is passed on; an interruption says where the lab is.
/// Whether the user interrupted is the command's token, not the error that came back: a Ctrl-C typed at a terminal
/// reaches the whole process group, and a step's error may be another process's reaction to it.
async fn give_up(ctx: &Context, at: &str, e: Error) -> Error {
    let interrupted = ctx.cancel.is_interrupted() || e.is_interrupted();
    if !interrupted {
        clear_build(ctx).err().unwrap_or(e)
    } else {
        // Ctrl-C: finish going back before saying so (the rollback itself is a restore that is not interrupted).
        let calm = Context {
            cancel: crate::cancel::Cancel::new(),
            ..ctx.clone()
        };
        match rollback(&calm, at).await {
            Ok(()) => Error::Interrupted(format!("the build stopped; the lab is back at `{at}`")),
            Err(r) => r,
        }
    }
}

/// Returns the lab to `at` after a stopped build, deleting the disks of the half-run steps.
pub(crate) async fn rollback(ctx: &Context, at: &str) -> Result<()> {
    restore_built(ctx, at, Undo::Discard).await?;
    clear_build(ctx)
}

/// Runs a checkpoint's steps on the running lab and saves it.
async fn build_one(ctx: &Context, c: &Checkpoint) -> Result<()> {
    let mut phases = Phases::new("build", &ctx.cancel);
    set_aside_stale(ctx, &c.name).await?;
    for (i, step) in c.steps.iter().enumerate() {
        ctx.check_cancel("the build stopped")?;
        ctx.ui.info(&format!(
            "{}: step {} of {} on {}",
            c.name,
            i + 1,
            c.steps.len(),
            step.machines.join(", ")
        ));
        run_step(ctx, &c.name, i + 1, step).await?;
    }
    phases.done("steps");
    ctx.check_cancel("the build stopped")?;
    snapshot(
        ctx,
        &c.name,
        false,
        false,
        Some(checkpoint::key(&ctx.lab, c)),
    )
    .await?;
    phases.done("saved");
    Ok(())
}

/// A stale record of the same name is deleted, or renamed when something is built on it.
async fn set_aside_stale(ctx: &Context, name: &str) -> Result<()> {
    let mut state = ctx.state()?;
    let Some(mut r) = state.checkpoints.remove(name) else {
        return Ok(());
    };
    let new = format!(
        "{name}.stale-{}",
        r.created.replace([':', '-'], "").to_lowercase()
    );
    r.name = new.clone();
    let mut has_children = false;
    for c in state.checkpoints.values_mut() {
        if c.parent.as_deref() == Some(name) {
            c.parent = Some(new.clone());
            has_children = true;
        }
    }
    state.checkpoints.insert(new.clone(), r);
    if has_children {
        ctx.save(&state)?;
        ctx.ui.info(&format!(
            "the stale `{name}` has checkpoints built on it; it is kept as `{new}`"
        ));
        return Ok(());
    }
    let volumes = forget(&mut state, std::slice::from_ref(&new));
    ctx.save(&state)?;
    remove_volumes(ctx, &volumes).await;
    Ok(())
}

async fn run_step(ctx: &Context, checkpoint: &str, n: usize, step: &Step) -> Result<()> {
    let what = format!("{checkpoint} step {n}");
    let limit = step_timeout();
    match &step.action {
        StepAction::Script { text, .. } | StepAction::Run(text) => {
            let work = step
                .machines
                .iter()
                .map(|m| async move { (m.clone(), run_root_streaming(ctx, m, text, limit).await) });
            let mut errors = Vec::new();
            for (m, r) in futures_util::future::join_all(work).await {
                match r {
                    Ok(0) => {}
                    Ok(code) => errors.push(Error::Remote {
                        machine: m,
                        what: what.clone(),
                        code,
                        detail: String::new(),
                    }),
                    Err(e) => errors.push(e),
                }
            }
            Error::many(&what, errors)
        }
        StepAction::Copy(copies) => {
            for c in copies {
                let src = super::power::reach(ctx, &c.from_machine).await?;
                let out = ssh::run(
                    &src,
                    &ctx.keys(),
                    &format!("sudo -n cat {}", shell_quote(&c.from_path)),
                    None,
                    limit,
                )
                .await?;
                if out.code != 0 {
                    return Err(Error::Remote {
                        machine: c.from_machine.clone(),
                        what: format!("{what}: reading {}", c.from_path),
                        code: out.code,
                        detail: format!(": {}", out.stderr_text().trim()),
                    });
                }
                let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&out.stdout));
                let cmd = install_command(&c.to_path, c.mode, &sha);
                for m in &step.machines {
                    let t = super::power::reach(ctx, m).await?;
                    let o = ssh::run(&t, &ctx.keys(), &cmd, Some(&out.stdout), limit).await?;
                    if o.code != 0 {
                        return Err(Error::Remote {
                            machine: m.clone(),
                            what: format!("{what}: writing {}", c.to_path),
                            code: o.code,
                            detail: format!(": {}", o.stderr_text().trim()),
                        });
                    }
                }
                ctx.ui.info(&format!(
                    "{what}: copied {}:{} to {} on {}",
                    c.from_machine,
                    c.from_path,
                    c.to_path,
                    step.machines.join(", ")
                ));
            }
            Ok(())
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckResult {
    pub checkpoint: String,
    pub check: String,
    pub machine: String,
    pub passed: bool,
    pub output: String,
}

/// Runs a checkpoint's declared checks against the running lab (default: the current checkpoint's).
pub async fn check(ctx: &Context, name: Option<&str>) -> Result<Vec<CheckResult>> {
    let state = ctx.state()?;
    let wanted = match name {
        Some(n) => n.to_string(),
        None => state.current.clone().ok_or(Error::NoCurrent)?,
    };
    let canonical = resolve(ctx, &state, &wanted)?;
    let c = ctx
        .lab
        .checkpoint(&canonical)
        .ok_or_else(|| Error::NoChecks(canonical.clone()))?;
    let mut work = Vec::new();
    for k in &c.checks {
        for m in &k.machines {
            work.push(async move {
                let r = run_check(ctx, m, &k.run).await;
                let (passed, output) = match r {
                    Ok(o) => (
                        o.code == 0,
                        format!("{}{}", o.stdout_text(), o.stderr_text())
                            .trim()
                            .to_string(),
                    ),
                    Err(e) => (false, e.to_string()),
                };
                CheckResult {
                    checkpoint: c.name.clone(),
                    check: k.name.clone(),
                    machine: m.clone(),
                    passed,
                    output,
                }
            });
        }
    }
    Ok(futures_util::future::join_all(work).await)
}

async fn run_check(ctx: &Context, machine: &str, script: &str) -> Result<ssh::Output> {
    let t = super::power::reach(ctx, machine).await?;
    Ok(ssh::run(
        &t,
        &ctx.keys(),
        "sudo -n bash -s",
        Some(script.as_bytes()),
        Duration::from_secs(300),
    )
    .await?)
}
