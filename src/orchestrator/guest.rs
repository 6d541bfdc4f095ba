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

/// Waits until sshd on the machine takes connections (see `ssh::port_open`): after a memory restore the guest is
/// already up, and this proves its network path is back without the seconds a login costs under emulation.
pub async fn wait_sshd(ctx: &Context, t: &Target, deadline: Instant) -> Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let err = match ssh::port_open(t, left.min(Duration::from_secs(5))).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(Error::Failed(format!(
                "{}: SSH did not answer after the restore ({err}){}",
                t.machine,
                console_tail(ctx, &t.machine, 15).await
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The guest agent command that undoes `flush_for_power_off`, for when the power-off does not happen after all.
pub const THAW: &str = r#"{"execute":"guest-fsfreeze-thaw"}"#;

/// Writes a running guest's cached data to its disks, so a disk kept after a hard power-off holds the student's
/// last work. Through the guest agent the file systems are frozen, and left frozen: the machine is powered off
/// next (send `THAW` if it is not). Best effort and bounded: a machine that does not answer is skipped with a
/// warning. Says whether the machine's guest agent answered.
pub async fn flush_for_power_off(ctx: &Context, machine: &str) -> bool {
    let d = names::domain(&ctx.lab.name, machine);
    let d2 = d.clone();
    if !matches!(
        call(&ctx.hv, move |hv| hv.domain_state(&d2)).await,
        Ok(Some(DomainState::Running))
    ) {
        return false;
    }
    // The guest agent, where the image has one: freezing writes every file system's dirty data out.
    let frozen = call(&ctx.hv, move |hv| {
        hv.agent(&d, r#"{"execute":"guest-fsfreeze-freeze"}"#, 10)
    })
    .await;
    if frozen.is_ok() {
        return true;
    }
    let synced = match ctx.target(machine) {
        Ok(t) => matches!(
            ssh::run(&t, &ctx.keys(), "sudo -n sync", None, Duration::from_secs(30)).await,
            Ok(o) if o.code == 0
        ),
        Err(_) => false,
    };
    if !synced {
        ctx.ui.warn(&format!(
            "{machine}: could not flush its disks; `undo` keeps what was on disk"
        ));
    }
    false
}

/// Sets the guest's clock to the host's (a restored guest wakes with its checkpoint's time). Through the guest
/// agent where the image has one, else over SSH. Right after a memory restore libvirt reconnects to the agent
/// only once QEMU reports the guest's end of the channel open, so an unavailable agent is retried for up to
/// `agent_wait` (long when the agent is known to be there).
pub async fn set_clock(ctx: &Context, machine: &str, agent_wait: Duration) -> Result<()> {
    let started = Instant::now();
    let d = names::domain(&ctx.lab.name, machine);
    let by_agent = call(&ctx.hv, move |hv| {
        let until = Instant::now() + agent_wait;
        let agent = |command: &str| hv.agent(&d, command, 5);
        loop {
            match agent_set_clock(&agent) {
                Err(ClockError::Agent(e))
                    if e.kind == crate::libvirt::ErrorKind::AgentUnavailable
                        && Instant::now() < until =>
                {
                    std::thread::sleep(Duration::from_millis(50))
                }
                r => return Ok(r),
            }
        }
    })
    .await?;
    let how = match by_agent {
        Ok(()) => "agent".to_string(),
        Err(agent_err) => {
            let t = ctx.target(machine)?;
            let keys = ctx.keys();
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                match ssh_set_clock(&t, &keys).await {
                    Ok(()) => break format!("ssh (agent: {agent_err})"),
                    Err(e) if Instant::now() > deadline => {
                        return Err(Error::Failed(format!(
                            "{machine}: could not set the clock after the restore: {e}"
                        )))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        }
    };
    tracing::debug!(
        machine,
        how,
        ms = started.elapsed().as_millis() as u64,
        "clock set"
    );
    Ok(())
}

/// Why the agent could not set a clock: the agent itself failed, or the guest did something unexpected.
#[derive(Debug, thiserror::Error)]
enum ClockError {
    #[error(transparent)]
    Agent(#[from] crate::libvirt::Error),
    #[error("{0}")]
    Guest(String),
}

/// One guest agent command (JSON) and its answer.
type Agent<'a> = dyn Fn(&str) -> crate::libvirt::Result<String> + 'a;

/// Seconds since the Unix epoch, now.
fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Sets the guest's clock through the guest agent. The agent reads the guest's clock in its own process
/// (milliseconds), which gives the offset to the host's; `date -s '+OFFSET seconds'` then moves the clock by that
/// offset, relative to itself, so however long the command takes to start (a second, on a guest emulated without
/// KVM that has just been restored) adds no error. The result is read back and checked. The agent's own
/// guest-set-time is not used: it also writes the hardware clock, which waits for the next second's edge.
fn agent_set_clock(agent: &Agent) -> std::result::Result<(), ClockError> {
    // Good enough: a guest emulated without KVM loses that much while it wakes up anyway.
    const CLOSE: f64 = 0.5;
    let mut offset = agent_clock_offset(agent)?;
    // A correction can land off when the guest is busy waking up; another one, rarely needed, fixes it.
    for _ in 0..3 {
        tracing::debug!(offset, "guest clock offset");
        if offset.abs() < CLOSE {
            return Ok(());
        }
        agent_shift_clock(agent, offset)?;
        offset = agent_clock_offset(agent)?;
    }
    if offset.abs() < CLOSE {
        Ok(())
    } else {
        Err(ClockError::Guest(format!(
            "the guest clock is still {offset:+.3} s off after setting it"
        )))
    }
}

/// Moves the guest's clock by `offset` seconds with `date -s`, started by the agent; waits until it has run.
fn agent_shift_clock(agent: &Agent, offset: f64) -> std::result::Result<(), ClockError> {
    let exec = serde_json::json!({
        "execute": "guest-exec",
        "arguments": {"path": "date", "arg": ["-u", "-s", format!("{offset:+.6} seconds")]},
    });
    let answer = agent(&exec.to_string())?;
    let pid = serde_json::from_str::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| v["return"]["pid"].as_i64())
        .ok_or_else(|| ClockError::Guest(format!("guest-exec answered {answer}")))?;
    let status =
        serde_json::json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}).to_string();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let v: serde_json::Value = serde_json::from_str(&agent(&status)?).unwrap_or_default();
        if v["return"]["exited"].as_bool() == Some(true) {
            return match v["return"]["exitcode"].as_i64() {
                Some(0) => Ok(()),
                code => Err(ClockError::Guest(format!("date -s exited with {code:?}"))),
            };
        }
        if Instant::now() > until {
            return Err(ClockError::Guest(
                "date -s did not finish within 10 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Host time minus guest time in seconds, read through the agent (the host time taken halfway through the call).
fn agent_clock_offset(agent: &Agent) -> std::result::Result<f64, ClockError> {
    let before = unix_now().as_secs_f64();
    let answer = agent(r#"{"execute":"guest-get-time"}"#)?;
    let after = unix_now().as_secs_f64();
    let guest_ns = serde_json::from_str::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| v["return"].as_i64())
        .ok_or_else(|| ClockError::Guest(format!("guest-get-time answered {answer}")))?;
    Ok((before + after) / 2.0 - guest_ns as f64 / 1e9)
}

/// Sets one guest's clock over SSH. The session is opened first and the guest says when it is ready to read;
/// only then is the host's time taken and sent, so the slow SSH handshake (seconds under emulation) adds no error.
async fn ssh_set_clock(t: &Target, keys: &ssh::Keys) -> std::result::Result<(), String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut c = t.command(
        keys,
        "sudo -n bash -c 'echo ready; read -r t; date -u -s \"@$t\" >/dev/null'",
    );
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = c.spawn().map_err(|e| e.to_string())?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let talk = async {
        match lines.next_line().await {
            Ok(Some(l)) if l.trim() == "ready" => {}
            other => return Err(format!("unexpected answer {other:?}")),
        }
        let now = unix_now();
        stdin
            .write_all(format!("{}.{:06}\n", now.as_secs(), now.subsec_micros()).as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        drop(stdin);
        let status = child.wait().await.map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("date exited with {status}"))
        }
    };
    tokio::time::timeout(Duration::from_secs(30), talk)
        .await
        .map_err(|_| "timed out".to_string())?
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
    use std::sync::Mutex;

    /// A guest clock behind the agent protocol: `offset` is host time minus guest time; the first
    /// `date -s +X seconds` lands `short` seconds short of X (a guest busy waking up), later ones exactly; a `stuck`
    /// clock does not move at all; `exit` is date's exit code.
    struct Clock {
        offset: Mutex<f64>,
        short: f64,
        stuck: bool,
        exit: i64,
        execs: Mutex<u32>,
    }

    impl Clock {
        fn new(offset: f64, short: f64) -> Clock {
            Clock {
                offset: Mutex::new(offset),
                short,
                stuck: false,
                exit: 0,
                execs: Mutex::new(0),
            }
        }

        /// The guest agent's answer to one command.
        fn agent(&self, command: &str) -> crate::libvirt::Result<String> {
            let v: serde_json::Value = serde_json::from_str(command).unwrap();
            Ok(match v["execute"].as_str().unwrap() {
                "guest-get-time" => {
                    let guest = unix_now().as_secs_f64() - *self.offset.lock().unwrap();
                    format!(r#"{{"return":{}}}"#, (guest * 1e9) as i64)
                }
                "guest-exec" => {
                    let args = &v["arguments"]["arg"];
                    assert_eq!(args[0], "-u");
                    assert_eq!(args[1], "-s");
                    let shift: f64 = args[2]
                        .as_str()
                        .unwrap()
                        .strip_suffix(" seconds")
                        .unwrap()
                        .parse()
                        .unwrap();
                    let mut execs = self.execs.lock().unwrap();
                    if self.exit == 0 && !self.stuck {
                        let short = if *execs == 0 { self.short } else { 0.0 };
                        *self.offset.lock().unwrap() -= shift - short;
                    }
                    *execs += 1;
                    r#"{"return":{"pid":42}}"#.to_string()
                }
                "guest-exec-status" => {
                    format!(r#"{{"return":{{"exited":true,"exitcode":{}}}}}"#, self.exit)
                }
                other => panic!("unexpected agent command {other}"),
            })
        }

        fn set(&self) -> std::result::Result<(), String> {
            agent_set_clock(&|c: &str| self.agent(c)).map_err(|e| e.to_string())
        }
    }

    #[test]
    fn moves_a_stale_guest_clock_by_its_offset() {
        let g = Clock::new(3600.0, 0.0);
        g.set().unwrap();
        assert_eq!(*g.execs.lock().unwrap(), 1);
        assert!(g.offset.lock().unwrap().abs() < 0.1);
    }

    #[test]
    fn leaves_a_close_clock_alone() {
        let g = Clock::new(0.2, 0.0);
        g.set().unwrap();
        assert_eq!(*g.execs.lock().unwrap(), 0);
    }

    #[test]
    fn corrects_again_when_the_first_shift_lands_short() {
        // Guest behind the host: a negative offset is moved the other way.
        let g = Clock::new(-500.0, -0.8);
        g.set().unwrap();
        assert_eq!(*g.execs.lock().unwrap(), 2);
        assert!(g.offset.lock().unwrap().abs() < 0.5);
    }

    #[test]
    fn fails_when_the_clock_does_not_move() {
        let g = Clock {
            stuck: true,
            ..Clock::new(100.0, 0.0)
        };
        let e = g.set().unwrap_err();
        assert!(e.contains("still"), "{e}");
        assert_eq!(*g.execs.lock().unwrap(), 3);
        let g = Clock {
            exit: 1,
            ..Clock::new(100.0, 0.0)
        };
        let e = g.set().unwrap_err();
        assert!(e.contains("exited with Some(1)"), "{e}");
    }

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
