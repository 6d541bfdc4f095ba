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
        Ok(b) if !b.is_empty() => format_console(machine, &b, lines),
        _ => String::new(),
    }
}

fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| *c == '\n' || !c.is_control())
        .collect()
}

fn format_console(machine: &str, bytes: &[u8], lines: usize) -> String {
    let clean = printable(bytes);
    let tail: Vec<&str> = clean.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = tail.len().saturating_sub(lines);
    format!(
        "\n--- last {} lines of {machine}'s console ---\n{}",
        tail.len() - start,
        tail[start..].join("\n")
    )
}

/// What a serial console shows when a boot cannot succeed: the root disk failing, the initramfs or emergency
/// shell, a kernel panic, a boot loader that finds nothing.
const DEAD_BOOT: &[&str] = &[
    "Kernel panic - not syncing",
    "I/O error, dev vd",
    "Buffer I/O error on dev vd",
    "(initramfs)",
    "Dropping to a shell",
    "Gave up waiting for root file system device",
    "You are in emergency mode",
    "Give root password for maintenance",
    "Failed to mount /sysroot",
    "No bootable device",
    "grub rescue>",
];

/// The first line of `console` that says the boot cannot succeed, if any.
pub fn dead_boot(console: &str) -> Option<String> {
    console
        .lines()
        .find(|l| DEAD_BOOT.iter().any(|p| l.contains(p)))
        .map(|l| l.trim().to_string())
}

/// The console log as a machine boots: where it ended before the boot, to read only what this boot printed.
pub struct ConsoleWatch {
    machine: String,
    from: u64,
}

impl ConsoleWatch {
    /// Marks the console's current end (call before starting the machine).
    pub async fn start(ctx: &Context, machine: &str) -> ConsoleWatch {
        let (pool, vol) = (ctx.pool(), names::vol::console_log(machine));
        let from = call(&ctx.hv, move |hv| hv.read_volume(&pool, &vol, u64::MAX, 0))
            .await
            .map_or(0, |v| v.size);
        ConsoleWatch {
            machine: machine.into(),
            from,
        }
    }

    /// An error if what the console printed since `start` shows a boot that cannot succeed.
    async fn check(&self, ctx: &Context) -> Result<()> {
        let (pool, vol, from) = (
            ctx.pool(),
            names::vol::console_log(&self.machine),
            self.from,
        );
        let Ok(v) = call(&ctx.hv, move |hv| {
            hv.read_volume(&pool, &vol, from, 4 << 20)
        })
        .await
        else {
            return Ok(());
        };
        let text = printable(&v.bytes);
        match dead_boot(&text) {
            Some(why) => Err(Error::BootFailed {
                machine: self.machine.clone(),
                why,
                console: format_console(&self.machine, &v.bytes, 25),
            }),
            None => Ok(()),
        }
    }
}

/// The guest side of readiness: cloud-init writes boot-finished at the end of its last stage, and its result.
/// Reading two files is far cheaper than `cloud-init status`, which starts Python (slow under emulation).
const READY_PROBE: &str =
    "test -f /var/lib/cloud/instance/boot-finished && cat /run/cloud-init/result.json";

/// When a wait for a guest gives up early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// At the first Ctrl-C (Err(Interrupted)): the command is rolled back or stops where it is.
    UntilInterrupted,
    /// Only at the second (Ok): the command finishes, it only stops waiting to see the guest ready.
    UntilHurried,
}

/// Waits until the machine answers SSH and cloud-init is done. Fails at once when the domain stops or its console
/// shows a boot that cannot succeed.
pub async fn wait_ready(
    ctx: &Context,
    t: &Target,
    deadline: Instant,
    console: &ConsoleWatch,
    patience: Patience,
) -> Result<()> {
    let keys = ctx.keys();
    let dom = ctx.dom(&t.machine);
    let total = boot_timeout();
    let give_up = || async {
        match patience {
            Patience::UntilInterrupted => ctx.cancel.interrupted().await,
            Patience::UntilHurried => ctx.cancel.hurried().await,
        }
    };
    loop {
        match patience {
            Patience::UntilInterrupted => {
                ctx.check_cancel(&format!("{} was still booting", t.machine))?
            }
            Patience::UntilHurried if ctx.cancel.is_hurried() => {
                ctx.ui
                    .warn(&format!("{}: not waiting for it to be ready", t.machine));
                return Ok(());
            }
            Patience::UntilHurried => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::BootTimeout {
                machine: t.machine.clone(),
                secs: total.as_secs(),
                console: console_tail(ctx, &t.machine, 25).await,
            });
        }
        let probe = ssh::run(
            t,
            &keys,
            READY_PROBE,
            None,
            left.min(Duration::from_secs(30)),
        );
        let answer = tokio::select! {
            r = probe => r.ok(),
            _ = give_up() => None,
        };
        if let Some(o) = answer.filter(|o| o.code == 0) {
            return cloud_init_result(&t.machine, &o.stdout_text());
        }
        console.check(ctx).await?;
        let d = dom.clone();
        let state = call(&ctx.hv, move |hv| hv.domain_state(&d)).await?;
        if !matches!(state, Some(DomainState::Running)) {
            return Err(Error::Died {
                machine: t.machine.clone(),
                state: state.map_or("undefined".into(), |s| s.to_string()),
                console: console_tail(ctx, &t.machine, 25).await,
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = give_up() => {}
        }
    }
}

/// Waits until sshd on the machine takes connections (see `ssh::port_open`): after a memory restore the guest is
/// already up, and this proves its network path is back without the seconds a login costs under emulation. A
/// second Ctrl-C stops the wait (Ok: the machine is restored, only not yet seen answering).
pub async fn wait_sshd(ctx: &Context, t: &Target, deadline: Instant) -> Result<()> {
    loop {
        if ctx.cancel.is_hurried() {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let err = match ssh::port_open(t, left.min(Duration::from_secs(5))).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(Error::SshNotBack {
                machine: t.machine.clone(),
                detail: err,
                console: console_tail(ctx, &t.machine, 15).await,
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = ctx.cancel.hurried() => {}
        }
    }
}

/// Sets the guest's clock to the host's (a restored guest wakes with its checkpoint's time). Through the guest
/// agent where the image has one, else over SSH. Right after a memory restore libvirt reconnects to the agent
/// only once QEMU reports the guest's end of the channel open, so an unavailable agent is retried for up to
/// `agent_wait` (long when the agent is known to be there).
pub async fn set_clock(ctx: &Context, machine: &str, agent_wait: Duration) -> Result<()> {
    let started = Instant::now();
    let d = ctx.dom(machine);
    let hurried = ctx.cancel.clone();
    let by_agent = call(&ctx.hv, move |hv| {
        let until = Instant::now() + agent_wait;
        let agent = |command: &str| hv.agent(&d, command, 5);
        loop {
            match agent_set_clock(&agent) {
                Err(ClockError::Agent(e))
                    if e.kind == crate::libvirt::ErrorKind::AgentUnavailable
                        && Instant::now() < until
                        && !hurried.is_hurried() =>
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
                if ctx.cancel.is_hurried() {
                    ctx.ui
                        .warn(&format!("{machine}: not waiting to set its clock"));
                    return Ok(());
                }
                match ssh_set_clock(&t, &keys).await {
                    Ok(()) => break format!("ssh (agent: {agent_err})"),
                    Err(e) if Instant::now() > deadline => {
                        return Err(Error::Clock {
                            machine: machine.into(),
                            detail: e,
                        })
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
    let t = super::power::reach(ctx, machine).await?;
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
    let stopped = tokio::select! {
        r = tokio::time::timeout(limit, run) => r,
        // Interrupted: the ssh process is killed when `child` goes (kill_on_drop); the remote shell gets SIGHUP.
        _ = ctx.cancel.interrupted() => {
            return Err(Error::Interrupted(format!("the step on {machine} was stopped")));
        }
    };
    match stopped {
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
    fn a_dead_boot_is_seen_on_the_console() {
        let fine = "[    1.2] EXT4-fs (vda1): mounted filesystem\n[  OK  ] Reached target Cloud-init target.\n\
                    [    3.0] blk_update_request: I/O error, dev sr0, sector 0\n";
        assert_eq!(dead_boot(fine), None, "an empty CD-ROM drive is no reason");
        let broken = "Begin: Mounting root file system ... done.\n\
                      [    2.1] I/O error, dev vda, sector 413696 op 0x0:(READ) flags 0x80700\n\
                      mount: mounting /dev/vda1 on /root failed: Input/output error\n(initramfs) ";
        assert_eq!(
            dead_boot(broken).as_deref(),
            Some("[    2.1] I/O error, dev vda, sector 413696 op 0x0:(READ) flags 0x80700")
        );
        assert!(
            dead_boot("[   4.0] Kernel panic - not syncing: VFS: Unable to mount root fs")
                .is_some()
        );
        assert!(dead_boot("You are in emergency mode. After logging in, type...").is_some());
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
