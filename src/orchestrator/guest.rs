//! Talking to a running guest: waiting until it is ready, reading its console, running commands as root.

use super::{Context, Error, Result};
use crate::libvirt::{call, DomainState};
use crate::render::names;
use crate::ssh::{self, Target};
use std::time::{Duration, Instant};

/// How long `up` waits for a machine to answer SSH and finish cloud-init (`LAB_BOOT_TIMEOUT` seconds).
pub fn boot_timeout() -> Duration {
    let secs = std::env::var("LAB_BOOT_TIMEOUT").ok().and_then(|s| s.parse().ok()).unwrap_or(900);
    Duration::from_secs(secs)
}

/// The last lines of a machine's serial console, formatted to follow an error message ("" when unreadable).
pub async fn console_tail(ctx: &Context, machine: &str, lines: usize) -> String {
    let pool = ctx.pool();
    let vol = names::vol::console_log(machine);
    let bytes = call(&ctx.hv, move |hv| hv.read_volume_tail(&pool, &vol, 16 << 10)).await;
    match bytes {
        Ok(b) if !b.is_empty() => {
            let text = String::from_utf8_lossy(&b);
            let clean: String = text.chars().filter(|c| *c == '\n' || !c.is_control()).collect();
            let tail: Vec<&str> = clean.lines().filter(|l| !l.trim().is_empty()).collect();
            let start = tail.len().saturating_sub(lines);
            format!(
                "\n--- last {} lines of {machine}'s console ---\n{}",
                tail.len() - start,
                tail[start..].join("\n")
            )
        }
        _ => String::new(),
    }
}

/// Waits until the machine answers SSH and cloud-init is done, failing early when the domain stops.
pub async fn wait_ready(ctx: &Context, t: &Target, deadline: Instant) -> Result<()> {
    let keys = ctx.keys();
    let dom = names::domain(&ctx.lab.name, &t.machine);
    let total = boot_timeout();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::BootTimeout {
                machine: t.machine.clone(),
                secs: total.as_secs(),
                console: console_tail(ctx, &t.machine, 25).await,
            });
        }
        match ssh::run(t, &keys, "true", None, left.min(Duration::from_secs(20))).await {
            Ok(o) if o.code == 0 => break,
            _ => {}
        }
        let d = dom.clone();
        let state = call(&ctx.hv, move |hv| hv.domain_state(&d)).await?;
        if !matches!(state, Some(DomainState::Running)) {
            return Err(Error::Died {
                machine: t.machine.clone(),
                state: state.map_or("undefined".into(), |s| s.to_string()),
                console: console_tail(ctx, &t.machine, 25).await,
            });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(30));
    let out = ssh::run(t, &keys, "cloud-init status --wait >/dev/null 2>&1; rc=$?; cloud-init status --long 2>&1; exit $rc", None, left).await?;
    // 0: done; 2: done with recoverable errors (e.g. deprecated keys, cloud-init 23.4+).
    match out.code {
        0 | 2 => Ok(()),
        _ => Err(Error::CloudInit {
            machine: t.machine.clone(),
            detail: out.stdout_text().lines().filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join("; "),
        }),
    }
}

/// Runs a shell script as root on a machine, with `input` as the script text (bash -s).
pub async fn run_root(ctx: &Context, machine: &str, script: &str, limit: Duration) -> Result<ssh::Output> {
    let t = ctx.target(machine)?;
    Ok(ssh::run(&t, &ctx.keys(), "sudo -n bash -s", Some(script.as_bytes()), limit).await?)
}
