//! `lab stop` and `lab start`: free the machines' memory without losing anything, like closing a laptop, and bring
//! the whole lab back at one instant.
//! - `stop`: every machine paused together (one instant of the lab's life), then each one's memory saved where
//!   libvirt keeps it for the domain (managed save) and its QEMU process gone. `--shutdown` asks the guests to
//!   power off instead (ACPI), and powers off those that do not within the time-out.
//! - `start`: machines with saved memory are loaded paused and resumed together, their clocks set to now; machines
//!   without are booted.
//!
//! Phases: stop `plan` → `paused` → `saved` (or `shut-down`); start `plan` → `loaded` → `resumed` → `ready`.
//! Interrupted before `paused`, nothing changed; after, the command finishes first.

use super::guest::{boot_timeout, set_clock, wait_ready, wait_sshd, ConsoleWatch, Patience};
use super::machines::PauseGuard;
use super::phases::Phases;
use super::{each_machine, for_each_machine, machine_states, Context, Error, Result};
use crate::libvirt::{call, DomainState};
use crate::state::Pending;
use std::time::{Duration, Instant};

/// How long `stop --shutdown` waits for the guests to power off before it pulls the plug.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(180);

/// Where each machine of a lab stands, for `status` and for `up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Power {
    Running,
    Paused,
    /// Off with its memory saved: `lab start` resumes it.
    Saved,
    /// Off: `lab start` boots it.
    ShutOff,
    /// No domain.
    Absent,
}

impl std::fmt::Display for Power {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Power::Running => "running",
            Power::Paused => "paused",
            Power::Saved => "stopped (memory saved)",
            Power::ShutOff => "shut off",
            Power::Absent => "absent",
        })
    }
}

/// Every machine's power state, in lab order.
pub async fn power_states(ctx: &Context) -> Result<Vec<(String, Power)>> {
    let doms: Vec<(String, String)> = ctx
        .lab
        .machines
        .iter()
        .map(|m| (m.name.clone(), ctx.dom(&m.name)))
        .collect();
    Ok(call(&ctx.hv, move |hv| {
        doms.into_iter()
            .map(|(m, d)| {
                let p = match hv.domain_state(&d)? {
                    None => Power::Absent,
                    Some(DomainState::Running) => Power::Running,
                    Some(DomainState::Paused) => Power::Paused,
                    Some(_) if hv.has_saved_memory(&d)? => Power::Saved,
                    Some(_) => Power::ShutOff,
                };
                Ok((m, p))
            })
            .collect()
    })
    .await?)
}

/// `lab stop [--shutdown]`.
pub async fn stop(ctx: &Context, shutdown: bool) -> Result<()> {
    let mut phases = Phases::new("stop", &ctx.cancel);
    let mut state = ctx.state()?;
    let powers = power_states(ctx).await?;
    let on: Vec<String> = powers
        .iter()
        .filter(|(_, p)| matches!(p, Power::Running | Power::Paused))
        .map(|(m, _)| m.clone())
        .collect();
    if on.is_empty() {
        ctx.ui
            .info(&format!("lab `{}` is already stopped", ctx.lab.name));
        return Ok(());
    }
    state.pending = Some(Pending::Stop);
    ctx.save(&state)?;
    phases.done("plan");
    if let Err(e) = ctx.check_cancel("nothing was changed") {
        state.pending = None;
        ctx.save(&state)?;
        return Err(e);
    }
    let started = Instant::now();
    if shutdown {
        shut_down(ctx, &on).await?;
        phases.done("shut-down");
    } else {
        save(ctx, &on).await?;
        phases.done("saved");
    }
    state.pending = None;
    ctx.save(&state)?;
    ctx.ui.info(&format!(
        "lab `{}` stopped in {:.1} s ({}); `lab start` brings it back",
        ctx.lab.name,
        started.elapsed().as_secs_f64(),
        if shutdown {
            "guests powered off"
        } else {
            "memory saved, nothing lost"
        }
    ));
    ctx.check_cancel(&format!(
        "the stop finished first: lab `{}` is stopped",
        ctx.lab.name
    ))
}

/// Pauses the machines together, then saves each one's memory. If a save fails, the machines already saved are
/// started again and resumed with the others: the lab runs on as before, and the error says why.
async fn save(ctx: &Context, machines: &[String]) -> Result<()> {
    let doms: Vec<String> = machines.iter().map(|m| ctx.dom(m)).collect();
    let paused = PauseGuard::pause(ctx, &doms).await?;
    let (saved, errors) = each_machine(ctx, |m| {
        let d = ctx.dom(&m);
        let wanted = machines.contains(&m);
        async move {
            if wanted {
                call(&ctx.hv, move |hv| hv.save_domain(&d)).await?;
            }
            Ok(wanted)
        }
    })
    .await;
    let Some(e) = Error::all("saving the machines' memory", errors) else {
        // Saved domains are off: the guard has nothing left to resume.
        drop(paused);
        return Ok(());
    };
    for (m, was_saved) in saved {
        if was_saved {
            let d = ctx.dom(&m);
            // Loaded paused, so the guard's resume brings everyone back together.
            let _ = call(&ctx.hv, move |hv| hv.start_domain_paused(&d)).await;
        }
    }
    paused.resume().await?;
    Err(e)
}

/// Asks every guest to power off and waits (bounded); those still running are powered off hard, with a warning.
async fn shut_down(ctx: &Context, machines: &[String]) -> Result<()> {
    for_each_machine(ctx, |m| {
        let d = ctx.dom(&m);
        let wanted = machines.contains(&m);
        async move {
            if !wanted {
                return Ok(());
            }
            let d2 = d.clone();
            call(&ctx.hv, move |hv| {
                if hv.domain_state(&d2)? == Some(DomainState::Paused) {
                    hv.resume_domain(&d2)?;
                }
                hv.shutdown_domain(&d2)
            })
            .await?;
            let until = Instant::now() + SHUTDOWN_WAIT;
            loop {
                let d2 = d.clone();
                let st = call(&ctx.hv, move |hv| hv.domain_state(&d2)).await?;
                if !matches!(st, Some(DomainState::Running | DomainState::Paused)) {
                    return Ok(());
                }
                if Instant::now() > until || ctx.cancel.is_hurried() {
                    ctx.ui.warn(&format!(
                        "{m} did not power off within {} s; powering it off hard",
                        SHUTDOWN_WAIT.as_secs()
                    ));
                    return Ok(call(&ctx.hv, move |hv| hv.stop_domain(&d)).await?);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    })
    .await
    .map(drop)
}

/// `lab start`: every stopped machine back, the saved ones at one instant with their clocks set.
pub async fn start(ctx: &Context) -> Result<()> {
    let mut phases = Phases::new("start", &ctx.cancel);
    let mut state = ctx.state()?;
    let powers = power_states(ctx).await?;
    if let Some((m, _)) = powers.iter().find(|(_, p)| *p == Power::Absent) {
        return Err(Error::NotRunning {
            machine: m.clone(),
            state: "absent".into(),
        });
    }
    if powers.iter().all(|(_, p)| *p == Power::Running) {
        ctx.ui.info(&format!("lab `{}` is running", ctx.lab.name));
        return Ok(());
    }
    state.pending = Some(Pending::Start);
    ctx.save(&state)?;
    phases.done("plan");
    ctx.check_cancel("nothing was changed").inspect_err(|_| {
        state.pending = None;
        let _ = ctx.save(&state);
    })?;
    let started = Instant::now();
    let powers = &powers;
    // Saved and paused machines are loaded paused, to resume together; shut-off ones boot.
    let loaded = for_each_machine(ctx, |m| async move {
        let p = powers.iter().find(|(x, _)| *x == m).map(|(_, p)| *p);
        let d = ctx.dom(&m);
        let console = ConsoleWatch::start(ctx, &m).await;
        match p {
            Some(Power::Saved) => call(&ctx.hv, move |hv| hv.start_domain_paused(&d)).await?,
            Some(Power::ShutOff) => call(&ctx.hv, move |hv| hv.start_domain(&d)).await?,
            _ => {}
        }
        Ok(console)
    })
    .await?;
    phases.done("loaded");
    let to_resume: Vec<String> = powers
        .iter()
        .filter(|(_, p)| matches!(p, Power::Saved | Power::Paused))
        .map(|(m, _)| ctx.dom(m))
        .collect();
    PauseGuard::adopt(ctx, to_resume).resume().await?;
    let resumed = started.elapsed();
    phases.done("resumed");
    state.pending = None;
    ctx.save(&state)?;

    let deadline = Instant::now() + boot_timeout();
    let loaded = &loaded;
    for_each_machine(ctx, |m| async move {
        let p = powers.iter().find(|(x, _)| *x == m).map(|(_, p)| *p);
        let t = ctx.target(&m)?;
        match p {
            Some(Power::ShutOff) => {
                let console = &loaded.iter().find(|(x, _)| *x == m).expect("loaded").1;
                wait_ready(ctx, &t, deadline, console, Patience::UntilHurried).await
            }
            Some(Power::Saved | Power::Paused) => {
                let (clock, sshd) = tokio::join!(
                    set_clock(ctx, &m, Duration::from_secs(10)),
                    wait_sshd(ctx, &t, deadline)
                );
                clock.and(sshd)
            }
            _ => Ok(()),
        }
    })
    .await?;
    phases.done("ready");
    ctx.ui.info(&format!(
        "lab `{}` started in {:.1} s",
        ctx.lab.name,
        resumed.as_secs_f64()
    ));
    ctx.check_cancel(&format!(
        "the start finished first: lab `{}` runs",
        ctx.lab.name
    ))
}

/// Whether every machine of the lab is stopped (saved or shut off): `up` then starts it.
pub async fn all_stopped(ctx: &Context) -> Result<bool> {
    Ok(power_states(ctx)
        .await?
        .iter()
        .all(|(_, p)| matches!(p, Power::Saved | Power::ShutOff)))
}

/// Machines that are not running, for commands that need them up.
pub async fn require_running(ctx: &Context) -> Result<()> {
    for (m, st) in machine_states(ctx).await? {
        if st != Some(DomainState::Running) {
            return Err(Error::NotRunning {
                machine: m,
                state: st.map_or("absent".into(), |s| s.to_string()),
            });
        }
    }
    Ok(())
}

/// The machine's SSH target, once libvirt says the machine runs and is attached to the lab's network, which is up.
/// lab never connects to a machine's address otherwise: with no lab network, 172.16.x goes out the host's default
/// route to whoever answers there.
pub async fn reach(ctx: &Context, machine: &str) -> Result<crate::ssh::Target> {
    let t = ctx.target(machine)?;
    let (d, net) = (
        ctx.dom(machine),
        crate::render::names::network(&ctx.lab.name),
    );
    let (state, on_net) = call(&ctx.hv, move |hv| {
        let state = hv.domain_state(&d)?;
        let attached = hv
            .domain_info(&d)?
            .is_some_and(|i| i.networks.contains(&net));
        let up = hv.networks()?.iter().any(|n| n.name == net && n.active);
        Ok((state, attached && up))
    })
    .await?;
    if state != Some(DomainState::Running) {
        return Err(Error::NotRunning {
            machine: machine.into(),
            state: state.map_or("absent".into(), |s| s.to_string()),
        });
    }
    if !on_net {
        return Err(Error::OffNetwork {
            machine: machine.into(),
            network: crate::render::names::network(&ctx.lab.name),
        });
    }
    Ok(t)
}

/// Fails unless the machine runs (for the serial console, which needs no network).
pub async fn require_running_machine(ctx: &Context, machine: &str) -> Result<()> {
    ctx.target(machine)?;
    let d = ctx.dom(machine);
    let state = call(&ctx.hv, move |hv| hv.domain_state(&d)).await?;
    match state {
        Some(DomainState::Running | DomainState::Paused) => Ok(()),
        other => Err(Error::NotRunning {
            machine: machine.into(),
            state: other.map_or("absent".into(), |s| s.to_string()),
        }),
    }
}
