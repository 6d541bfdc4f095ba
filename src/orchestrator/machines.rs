//! Work on all machines at once that must never be left half done: pausing (a guard resumes on every exit path)
//! and making disks whole before they are kept (freezing the guests' file systems through the guest agent, or
//! `sync` over SSH; a guard thaws). Also the free-space check that comes before a checkpoint's files are made.

use super::{Context, Error, Result};
use crate::checkpoint::Flush;
use crate::libvirt::{call, DomainState, Shared};
use crate::model::format_size;
use crate::ssh;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub const FREEZE: &str = r#"{"execute":"guest-fsfreeze-freeze"}"#;
pub const THAW: &str = r#"{"execute":"guest-fsfreeze-thaw"}"#;
const FREEZE_STATUS: &str = r#"{"execute":"guest-fsfreeze-status"}"#;

/// Machines paused together. `resume` resumes them and reports failures; if the guard is dropped without it (an
/// error path, a panic), it resumes them itself, so no path leaves a machine paused.
pub struct PauseGuard {
    hv: Shared,
    doms: Vec<String>,
}

impl PauseGuard {
    /// Pauses every running domain in `doms` (all at once). If one cannot be paused, the others are resumed and
    /// the error returned.
    pub async fn pause(ctx: &Context, doms: &[String]) -> Result<PauseGuard> {
        let mut guard = PauseGuard {
            hv: ctx.hv.clone(),
            doms: Vec::new(),
        };
        let work = doms.iter().map(|d| {
            let d = d.clone();
            async move {
                let d2 = d.clone();
                let r = call(&ctx.hv, move |hv| hv.suspend_domain(&d2)).await;
                (d, r)
            }
        });
        let mut errors = Vec::new();
        for (d, r) in futures_util::future::join_all(work).await {
            match r {
                Ok(()) => guard.doms.push(d),
                Err(e) => errors.push(Error::from(e)),
            }
        }
        if errors.is_empty() {
            return Ok(guard);
        }
        errors.extend(guard.resume().await.err());
        Err(Error::all("pausing the machines", errors).expect("errors"))
    }

    /// A guard for domains something else left paused (a memory state loaded paused).
    pub fn adopt(ctx: &Context, doms: Vec<String>) -> PauseGuard {
        PauseGuard {
            hv: ctx.hv.clone(),
            doms,
        }
    }

    /// Resumes every machine this guard paused; says which could not be resumed.
    pub async fn resume(mut self) -> Result<()> {
        let doms = std::mem::take(&mut self.doms);
        let hv = self.hv.clone();
        let errors = call(&hv, move |hv| {
            Ok(doms
                .iter()
                .filter_map(|d| resume_if_paused(hv, d).err())
                .map(Error::from)
                .collect::<Vec<_>>())
        })
        .await?;
        Error::many("resuming the machines", errors)
    }
}

fn resume_if_paused(hv: &dyn crate::libvirt::Hypervisor, dom: &str) -> crate::libvirt::Result<()> {
    if hv.domain_state(dom)? == Some(DomainState::Paused) {
        hv.resume_domain(dom)?;
    }
    Ok(())
}

impl Drop for PauseGuard {
    fn drop(&mut self) {
        // Only on paths that skipped `resume`: blocking here is the lesser evil.
        for d in self.doms.drain(..) {
            if let Err(e) = resume_if_paused(self.hv.as_ref(), &d) {
                crate::ui::say(&crate::ui::warning(&format!("could not resume {d}: {e}")));
            }
        }
    }
}

/// Guests whose file systems were frozen through the guest agent. `thaw` thaws them and reports failures; a guard
/// dropped without it thaws them itself.
pub struct FreezeGuard {
    hv: Shared,
    doms: Vec<String>,
}

impl FreezeGuard {
    /// Makes the disks of the running machines among `machines` whole: frozen through the guest agent where
    /// there is one (they stay frozen until `thaw`), else synced over SSH; says which it could do neither for.
    pub async fn flush(
        ctx: &Context,
        machines: &[String],
    ) -> (FreezeGuard, BTreeMap<String, Flush>) {
        let work = machines
            .iter()
            .map(|m| async move { (m.clone(), flush_one(ctx, m).await) });
        let done = futures_util::future::join_all(work).await;
        let guard = FreezeGuard {
            hv: ctx.hv.clone(),
            doms: done
                .iter()
                .filter(|(_, f)| *f == Flush::Frozen)
                .map(|(m, _)| ctx.dom(m))
                .collect(),
        };
        (guard, done.into_iter().collect())
    }

    /// Leaves the guests frozen: they are powered off next, or saved frozen in a memory checkpoint (a restore
    /// thaws them).
    pub fn keep_frozen(mut self) {
        self.doms.clear();
    }

    pub async fn thaw(mut self) -> Result<()> {
        let doms = std::mem::take(&mut self.doms);
        let errors = call(&self.hv, move |hv| {
            Ok(doms
                .iter()
                .filter_map(|d| thaw_running(hv, d).err().map(|e| (d.clone(), e)))
                .collect::<Vec<_>>())
        })
        .await?;
        Error::many(
            "thawing file systems",
            errors
                .into_iter()
                .map(|(d, e)| Error::Thaw {
                    machine: d,
                    detail: e.to_string(),
                })
                .collect(),
        )
    }
}

/// Thaws a guest's file systems if it runs (a stopped one has nothing to thaw).
fn thaw_running(hv: &dyn crate::libvirt::Hypervisor, dom: &str) -> crate::libvirt::Result<()> {
    if hv.domain_state(dom)? == Some(DomainState::Running) {
        hv.agent(dom, THAW, 10)?;
    }
    Ok(())
}

impl Drop for FreezeGuard {
    fn drop(&mut self) {
        for d in self.doms.drain(..) {
            if let Err(e) = thaw_running(self.hv.as_ref(), &d) {
                crate::ui::say(&crate::ui::warning(&format!(
                    "could not thaw the file systems of {d}: {e}"
                )));
            }
        }
    }
}

/// One machine's flush: the agent's freeze, else `sync` over SSH, else nothing (with a warning).
async fn flush_one(ctx: &Context, machine: &str) -> Flush {
    let d = ctx.dom(machine);
    let d2 = d.clone();
    if !matches!(
        call(&ctx.hv, move |hv| hv.domain_state(&d2)).await,
        Ok(Some(DomainState::Running))
    ) {
        return Flush::None;
    }
    // Freezing writes every file system's dirty data out, and holds new writes until the thaw.
    if call(&ctx.hv, move |hv| hv.agent(&d, FREEZE, 60))
        .await
        .is_ok()
    {
        return Flush::Frozen;
    }
    let synced = match ctx.target(machine) {
        Ok(t) => matches!(
            ssh::run(&t, &ctx.keys(), "sudo -n sync", None, Duration::from_secs(60)).await,
            Ok(o) if o.code == 0
        ),
        Err(_) => false,
    };
    if synced {
        Flush::Synced
    } else {
        ctx.ui.warn(&format!(
            "{machine}: could not flush its disks (no guest agent answered, and no SSH): what it has not yet \
             written back is not in the kept disk"
        ));
        Flush::None
    }
}

/// Thaws a guest restored from a memory state taken frozen. Right after a restore libvirt reconnects to the agent
/// only once the guest's end of the channel opens, so an unavailable agent is retried (bounded). Never skipped:
/// a guest left frozen cannot write.
pub async fn thaw_restored(ctx: &Context, machine: &str) -> Result<()> {
    let d = ctx.dom(machine);
    let started = Instant::now();
    let r = call(&ctx.hv, move |hv| {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            match hv.agent(&d, THAW, 10) {
                Err(e)
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
    tracing::debug!(machine, ms = started.elapsed().as_millis() as u64, "thawed");
    r.map(drop).map_err(|e| Error::Thaw {
        machine: machine.into(),
        detail: e.to_string(),
    })
}

/// Whether a running guest's file systems are frozen (false when its agent does not answer quickly).
pub async fn is_frozen(ctx: &Context, dom: &str) -> bool {
    let d = dom.to_string();
    call(&ctx.hv, move |hv| hv.agent(&d, FREEZE_STATUS, 3))
        .await
        .is_ok_and(|a| a.contains("\"frozen\""))
}

/// Fails before any change when the lab's pool has less than `need` bytes free.
pub async fn ensure_space(ctx: &Context, need: u64) -> Result<()> {
    let p = ctx.pool();
    let (free, path) = call(&ctx.hv, move |hv| {
        Ok((hv.pool_free(&p)?, hv.pool_path(&p)?))
    })
    .await?;
    if free < need {
        return Err(Error::NoSpace {
            path: path.unwrap_or_else(|| ctx.pool()),
            need: format_size(need),
            free: format_size(free),
        });
    }
    Ok(())
}

/// Has every guest drop its clean page cache, then waits for the balloon to report the freed pages to the host
/// (the guest reports free memory every two seconds): a memory state saved afterwards skips those pages. Best
/// effort: a guest whose agent does not answer keeps its caches.
pub async fn drop_caches(ctx: &Context, machines: &[String]) {
    let work = machines.iter().map(|m| {
        let d = ctx.dom(m);
        async move {
            let r = call(&ctx.hv, move |hv| {
                let exec = serde_json::json!({
                    "execute": "guest-exec",
                    "arguments": {"path": "/bin/sh", "arg": ["-c", "sync; echo 3 > /proc/sys/vm/drop_caches"]},
                });
                let answer = hv.agent(&d, &exec.to_string(), 10)?;
                let pid = serde_json::from_str::<serde_json::Value>(&answer)
                    .ok()
                    .and_then(|v| v["return"]["pid"].as_i64());
                let status = serde_json::json!({"execute": "guest-exec-status", "arguments": {"pid": pid}});
                let until = Instant::now() + Duration::from_secs(30);
                while Instant::now() < until {
                    let v: serde_json::Value =
                        serde_json::from_str(&hv.agent(&d, &status.to_string(), 10)?).unwrap_or_default();
                    if v["return"]["exited"].as_bool() == Some(true) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(())
            })
            .await;
            if let Err(e) = r {
                tracing::debug!(machine = m, error = %e, "caches not dropped");
            }
        }
    });
    futures_util::future::join_all(work).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
}
