//! Checkpoints built from the lab file: `lab restore NAME` for a checkpoint that was never built (or is stale)
//! restores the nearest fresh ancestor, runs each missing checkpoint's steps in order (machines of one step in
//! parallel, output streamed with the machine's name), and saves every checkpoint on the way. Also `lab check`.

use super::checkpoints::{restore_built, snapshot};
use super::guest::run_root_streaming;
use super::placement::shell_quote;
use super::{Context, Error, Result};
use crate::checkpoint::{self, is_stale};
use crate::model::{Checkpoint, Step, StepAction, BASE};
use crate::ssh;
use crate::state::State;
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

/// `lab restore NAME`: a built checkpoint is restored; a lab-file checkpoint that is missing or stale is built
/// (unless `no_build`).
pub async fn restore(ctx: &Context, name: &str, no_build: bool) -> Result<()> {
    let state = ctx.state()?;
    let canonical = ctx
        .lab
        .checkpoint(name)
        .map_or(name.to_string(), |c| c.name.clone());
    if let Some(r) = state.checkpoints.get(&canonical) {
        if !is_stale(&ctx.lab, r) {
            return restore_built(ctx, &canonical).await;
        }
        if no_build {
            return Err(Error::Failed(format!("checkpoint `{canonical}` is stale (the lab file changed it); without --no-build lab rebuilds it")));
        }
    }
    let Some(chain) = ctx.lab.checkpoint_chain(&canonical) else {
        let built: Vec<&str> = state.checkpoints.keys().map(String::as_str).collect();
        return Err(Error::Failed(format!(
            "no checkpoint `{name}` (built: {}; `lab checkpoints` lists all)",
            if built.is_empty() {
                "none".into()
            } else {
                built.join(", ")
            }
        )));
    };
    if no_build {
        return Err(Error::Failed(format!(
            "checkpoint `{canonical}` is not built; without --no-build lab builds it"
        )));
    }
    // The deepest fresh checkpoint on the way, else base.
    let fresh = |n: &str, s: &State| s.checkpoints.get(n).is_some_and(|r| !is_stale(&ctx.lab, r));
    let start = chain.iter().rposition(|c| fresh(&c.name, &state));
    let (from, todo): (String, Vec<&Checkpoint>) = match start {
        Some(i) => (chain[i].name.clone(), chain[i + 1..].to_vec()),
        None => (BASE.to_string(), chain.clone()),
    };
    if !state.checkpoints.contains_key(&from) {
        return Err(Error::Failed(
            "the lab has no `base` checkpoint; `lab destroy` and `lab up` make a new one".into(),
        ));
    }
    ctx.ui.info(&format!(
        "building {} from `{from}`: {}",
        canonical,
        todo.iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(" → ")
    ));
    restore_built(ctx, &from).await?;
    for c in todo {
        build_one(ctx, c).await?;
    }
    Ok(())
}

/// Runs a checkpoint's steps on the running lab and saves it.
async fn build_one(ctx: &Context, c: &Checkpoint) -> Result<()> {
    set_aside_stale(ctx, &c.name).await?;
    for (i, step) in c.steps.iter().enumerate() {
        ctx.ui.info(&format!(
            "{}: step {} of {} on {}",
            c.name,
            i + 1,
            c.steps.len(),
            step.machines.join(", ")
        ));
        run_step(ctx, &c.name, i + 1, step).await?;
    }
    snapshot(
        ctx,
        &c.name,
        false,
        false,
        Some(checkpoint::key(&ctx.lab, c)),
    )
    .await?;
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
    for c in state.checkpoints.values_mut() {
        if c.parent.as_deref() == Some(name) {
            c.parent = Some(new.clone());
        }
    }
    state.checkpoints.insert(new.clone(), r);
    ctx.save(&state)?;
    if !state
        .checkpoints
        .values()
        .any(|c| c.parent.as_deref() == Some(new.as_str()))
    {
        super::checkpoints::remove(ctx, &new, false).await?;
    } else {
        ctx.ui.info(&format!(
            "the stale `{name}` has checkpoints built on it; it is kept as `{new}`"
        ));
    }
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
                let src = ctx.target(&c.from_machine)?;
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
                let dest = shell_quote(&c.to_path);
                let cmd = format!(
                    "set -e; sudo -n mkdir -p \"$(dirname {dest})\"; sudo -n tee {dest}.lab-tmp >/dev/null; \
                     sudo -n chmod {:o} {dest}.lab-tmp; sudo -n mv -f {dest}.lab-tmp {dest}",
                    c.mode
                );
                for m in &step.machines {
                    let t = ctx.target(m)?;
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
        None => state
            .current
            .clone()
            .ok_or_else(|| Error::Failed("the lab has no current checkpoint; name one".into()))?,
    };
    let c = ctx.lab.checkpoint(&wanted).ok_or_else(|| {
        Error::Failed(format!(
            "`{wanted}` is not a checkpoint of the lab file, so it declares no checks; name one"
        ))
    })?;
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
    let t = ctx.target(machine)?;
    Ok(ssh::run(
        &t,
        &ctx.keys(),
        "sudo -n bash -s",
        Some(script.as_bytes()),
        Duration::from_secs(300),
    )
    .await?)
}
