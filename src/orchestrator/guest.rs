//! Talking to a running guest: waiting until it is ready, reading its console, running commands as root.

use super::{Context, Error, Result};
use crate::libvirt::{call, DomainState};
use crate::render::names;
use crate::ssh::{self, Target};
use std::time::{Duration, Instant};

/// How long `up` waits for a machine to answer SSH and finish cloud-init (`LAB_BOOT_TIMEOUT` seconds).
pub fn boot_timeout() -> Duration {
    let secs = std::env::var("LAB_BOOT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(900);
    Duration::from_secs(secs)
}

/// The last lines of a machine's serial console, formatted to follow an error message ("" when unreadable).
pub async fn console_tail(ctx: &Context, machine: &str, lines: usize) -> String {
    let pool = ctx.pool();
    let vol = names::vol::console_log(machine);
    let bytes = call(&ctx.hv, move |hv| {
        hv.read_volume_tail(&pool, &vol, 16 << 10)
    })
    .await;
    match bytes {
        Ok(b) if !b.is_empty() => {
            let text = String::from_utf8_lossy(&b);
            let clean: String = text
                .chars()
                .filter(|c| *c == '\n' || !c.is_control())
                .collect();
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

/// The guest side of readiness: cloud-init writes boot-finished at the end of its last stage, and its result.
/// Reading two files is far cheaper than `cloud-init status`, which starts Python (slow under emulation).
const READY_PROBE: &str =
    "test -f /var/lib/cloud/instance/boot-finished && cat /run/cloud-init/result.json";

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
        if let Ok(o) = ssh::run(
            t,
            &keys,
            READY_PROBE,
            None,
            left.min(Duration::from_secs(30)),
        )
        .await
        {
            if o.code == 0 {
                return cloud_init_result(&t.machine, &o.stdout_text());
            }
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
}

/// Reads cloud-init's result.json: `{"v1": {"errors": [...]}}`.
fn cloud_init_result(machine: &str, json: &str) -> Result<()> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let errors: Vec<String> = v["v1"]["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::CloudInit {
            machine: machine.into(),
            detail: errors.join("; "),
        })
    }
}

/// Runs a script as root on a machine, streaming its output line by line with the machine's name in front.
/// Returns the script's exit code.
pub async fn run_root_streaming(
    ctx: &Context,
    machine: &str,
    script: &str,
    limit: Duration,
) -> Result<i32> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let t = ctx.target(machine)?;
    let mut c = t.command(&ctx.keys(), "sudo -n bash -s");
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().map_err(ssh::SshError::Spawn)?;
    let mut stdin = child.stdin.take().expect("piped");
    let text = script.as_bytes().to_vec();
    tokio::spawn(async move {
        let _ = stdin.write_all(&text).await;
        let _ = stdin.shutdown().await;
    });
    let pump = |r: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
        let ui = ctx.ui.clone();
        let who = machine.to_string();
        async move {
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                ui.info(&format!("{who} | {l}"));
            }
        }
    };
    let out = pump(Box::new(child.stdout.take().expect("piped")));
    let err = pump(Box::new(child.stderr.take().expect("piped")));
    let run = async {
        let (_, _, status) = tokio::join!(out, err, child.wait());
        status
    };
    match tokio::time::timeout(limit, run).await {
        Ok(status) => Ok(status.map_err(ssh::SshError::Spawn)?.code().unwrap_or(255)),
        Err(_) => Err(ssh::SshError::Timeout {
            machine: machine.into(),
            command: "step".into(),
            secs: limit.as_secs(),
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cloud_init_result() {
        assert!(
            cloud_init_result("m", r#"{"v1": {"datasource": "NoCloud", "errors": []}}"#).is_ok()
        );
        let e = cloud_init_result(
            "m",
            r#"{"v1": {"errors": ["('users_groups', KeyError('x'))"]}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("users_groups"), "{e}");
    }
}
