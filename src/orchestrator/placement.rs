//! Placing the lab's downloads in the machines: each file streamed over SSH from the host's verified cache to its
//! destination, then its sha256 checked inside the machine. Files already there with the right sum are not sent.

use super::{Context, Error, Result};
use crate::download::Fetched;
use crate::model::Download;
use crate::ssh::{self, Keys};
use std::collections::BTreeMap;
use std::time::Duration;

/// Single-quotes a string for the remote shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `sha256sum` of each path inside the machine (missing files are absent from the map).
async fn remote_sums(
    ctx: &Context,
    machine: &str,
    keys: &Keys,
    paths: &[&str],
) -> Result<BTreeMap<String, String>> {
    let t = ctx.target(machine)?;
    let list: Vec<String> = paths.iter().map(|p| shell_quote(p)).collect();
    let cmd = format!("sudo -n sha256sum {} 2>/dev/null; true", list.join(" "));
    let out = ssh::run(&t, keys, &cmd, None, Duration::from_secs(300)).await?;
    Ok(out
        .stdout_text()
        .lines()
        .filter_map(|l| {
            l.split_once("  ")
                .map(|(h, p)| (p.to_string(), h.to_string()))
        })
        .collect())
}

async fn place_machine(
    ctx: &Context,
    machine: &str,
    keys: &Keys,
    wanted: &[(&Download, &Fetched)],
) -> Result<usize> {
    let paths: Vec<&str> = wanted.iter().map(|(d, _)| d.dest_path.as_str()).collect();
    let have = remote_sums(ctx, machine, keys, &paths).await?;
    let t = ctx.target(machine)?;
    let mut sent = 0;
    for (d, f) in wanted {
        if have.get(&d.dest_path) == Some(&f.sha256) {
            continue;
        }
        ctx.ui.status(machine, &format!("placing {}", d.name));
        let dest = shell_quote(&d.dest_path);
        let cmd = format!(
            "set -e; sudo -n mkdir -p \"$(dirname {dest})\"; tmp=$(sudo -n mktemp {dest}.XXXXXX); \
             sudo -n tee \"$tmp\" >/dev/null; sudo -n chmod {mode:o} \"$tmp\"; sudo -n mv -f \"$tmp\" {dest}",
            mode = d.mode
        );
        let out = ssh::run_with_file(&t, keys, &cmd, &f.path, Duration::from_secs(1800)).await?;
        if out.code != 0 {
            return Err(Error::Remote {
                machine: machine.into(),
                what: format!("placing {} at {}", d.name, d.dest_path),
                code: out.code,
                detail: format!(": {}", out.stderr_text().trim()),
            });
        }
        sent += 1;
    }
    let after = remote_sums(ctx, machine, keys, &paths).await?;
    for (d, f) in wanted {
        let got = after
            .get(&d.dest_path)
            .map(String::as_str)
            .unwrap_or("(missing)");
        if got != f.sha256 {
            return Err(Error::Failed(format!(
                "{machine}: {} has sha256 {got} inside the machine, expected {}",
                d.dest_path, f.sha256
            )));
        }
    }
    Ok(sent)
}

/// Places every download in the machines that need it, machines in parallel.
pub async fn place_all(
    ctx: &Context,
    keys: &Keys,
    fetched: &BTreeMap<String, Fetched>,
) -> Result<()> {
    let mut errors = Vec::new();
    let work = ctx.lab.machines.iter().map(|m| async move {
        let wanted: Vec<(&Download, &Fetched)> = ctx
            .lab
            .downloads_for(&m.name)
            .into_iter()
            .map(|d| (d, &fetched[&d.name]))
            .collect();
        if wanted.is_empty() {
            return (m.name.clone(), Ok(0));
        }
        (
            m.name.clone(),
            place_machine(ctx, &m.name, keys, &wanted).await,
        )
    });
    for (name, r) in futures_util::future::join_all(work).await {
        match r {
            Ok(0) => {}
            Ok(n) => ctx
                .ui
                .done(&name, &format!("{n} download(s) placed and verified")),
            Err(e) => errors.push(e),
        }
    }
    Error::many("placing downloads", errors)
}
