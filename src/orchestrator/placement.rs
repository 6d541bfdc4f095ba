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

/// The remote command that installs the bytes on its stdin at `dest` with `mode`, whole or not at all: written to
/// a temporary file beside it, checked against `sha256`, then renamed into place. A transfer cut short (the
/// connection dropped, `lab` killed) leaves neither a partial file at `dest` nor the temporary file.
pub fn install_command(dest: &str, mode: u32, sha256: &str) -> String {
    format!(
        "set -e; dest={dest}; sudo -n mkdir -p \"$(dirname \"$dest\")\"; tmp=$(sudo -n mktemp \"$dest.lab-XXXXXX\"); \
         trap 'sudo -n rm -f \"$tmp\"' EXIT HUP INT TERM; sudo -n tee \"$tmp\" >/dev/null; \
         echo \"{sha256}  $tmp\" | sudo -n sha256sum --check --status; sudo -n chmod {mode:o} \"$tmp\"; \
         sudo -n mv -f \"$tmp\" \"$dest\"",
        dest = shell_quote(dest)
    )
}

/// `sha256sum` of each path inside the machine (missing files are absent from the map).
async fn remote_sums(
    ctx: &Context,
    machine: &str,
    keys: &Keys,
    paths: &[&str],
) -> Result<BTreeMap<String, String>> {
    let t = super::power::reach(ctx, machine).await?;
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
    let t = super::power::reach(ctx, machine).await?;
    let mut sent = 0;
    for (d, f) in wanted {
        if have.get(&d.dest_path) == Some(&f.sha256) {
            continue;
        }
        ctx.ui.status(machine, &format!("placing {}", d.name));
        let cmd = install_command(&d.dest_path, d.mode, &f.sha256);
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
            return Err(Error::PlacedMismatch {
                machine: machine.into(),
                path: d.dest_path.clone(),
                got: got.into(),
                want: f.sha256.clone(),
            });
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

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    /// Runs `install_command` in a local shell whose `sudo -n` just runs the command, with `input` on its stdin.
    fn install(dir: &std::path::Path, dest: &str, sha: &str, input: &[u8]) -> bool {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(
            bin.join("sudo"),
            "#!/bin/sh\n[ \"$1\" = -n ] && shift\nexec \"$@\"\n",
        )
        .unwrap();
        std::fs::set_permissions(bin.join("sudo"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(install_command(dest, 0o640, sha))
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait().unwrap().success()
    }

    #[test]
    fn installs_whole_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("opt/it's here/tool");
        let dest_s = dest.display().to_string();
        let data = b"the whole file\n".repeat(1000);
        let sha = hex::encode(sha2::Sha256::digest(&data));
        assert!(install(dir.path(), &dest_s, &sha, &data));
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o640
        );
        // A transfer cut short: the old file stays, and no temporary file is left beside it.
        assert!(!install(dir.path(), &dest_s, &sha, &data[..100]));
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        let left: Vec<_> = std::fs::read_dir(dest.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["tool"]);
    }
}
