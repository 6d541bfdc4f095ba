//! What each command does at the command line: names checked against the lab file first (exit 2 with "did you
//! mean"), then the lab opened (lock, repair) and the orchestrator called, then the result printed.

use super::args::{CheckpointCommand, Command, KitCommand, MirrorCommand};
use super::print::{self, out};
use super::{open, Args, Failure, Lock, EXIT_FAILURE, EXIT_OK};
use crate::cancel::Cancel;
use crate::model::{self, Lab};
use crate::orchestrator::{self as orch, Context, UpOptions};
use crate::state::{Dirs, State};
use crate::term::{paint, HEADER};
use crate::ui::Ui;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

pub async fn run(args: Args, cancel: Cancel) -> Result<i32, Failure> {
    let ui = Arc::new(Ui::new(args.global.quiet));
    // Commands that need no lab file.
    match &args.command {
        Command::Completions { shell } => return Ok(completions(*shell)),
        Command::Init { dir, force } => return init(dir, *force, &ui),
        Command::Import {
            source,
            dir,
            replace,
        } => return import(&args, &ui, &cancel, source, dir.clone(), *replace).await,
        Command::Kit {
            command: KitCommand::Verify { source },
        } => return kit_verify(&args, &ui, &cancel, source).await,
        _ => {}
    }
    let lab = model::load(args.global.file.as_deref())?;
    match &args.command {
        Command::Completions { .. }
        | Command::Init { .. }
        | Command::Import { .. }
        | Command::Kit { .. } => unreachable!("handled above"),
        Command::Export {
            dir,
            checkpoint,
            disk_only,
        } => {
            for c in checkpoint {
                known_checkpoint(&lab, c)?;
            }
            let s = open(&args, lab, ui, &cancel, Lock::Hold).await?;
            let m = crate::kit::export(
                &s.ctx,
                &crate::kit::ExportOptions {
                    dir: dir.clone(),
                    checkpoints: checkpoint.clone(),
                    disk_only: *disk_only,
                },
            )
            .await?;
            let bytes: u64 = m.files.iter().map(|f| f.size).sum();
            s.ctx.ui.info(&format!(
                "kit of lab `{}` written to {}: {} checkpoint(s) ({}), {} file(s), {}; serve the folder (e.g. \
                 `python3 -m http.server` in it) and students run `lab import URL`. It holds the lab's keys: share it \
                 like a password.",
                m.lab,
                dir.display(),
                m.checkpoints.len(),
                m.checkpoints
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                m.files.len(),
                model::format_size(bytes)
            ));
            Ok(EXIT_OK)
        }
        Command::Validate { json } => {
            validated(&lab, *json);
            Ok(EXIT_OK)
        }
        Command::Doctor { json } => doctor(&args, &lab, *json, &cancel).await,
        Command::Fetch => fetch(&args, &lab, &ui, &cancel).await,
        Command::Plan { checkpoint, json } => plan(&lab, checkpoint, *json),
        Command::Mirror {
            command: MirrorCommand::Export { dir },
        } => mirror_export(dir, &ui),
        Command::Up {
            keep_on_failure,
            at,
        } => {
            if let Some(at) = at {
                known_checkpoint(&lab, at)?;
            }
            let s = open(&args, lab, ui, &cancel, Lock::Hold).await?;
            let arrived = orch::up(
                &s.ctx,
                &UpOptions {
                    keep_on_failure: *keep_on_failure,
                    at: at.clone(),
                },
            )
            .await?;
            if let (Some(at), orch::up::Arrived::Up) = (at, arrived) {
                orch::restore(&s.ctx, at, false).await?;
            }
            s.ctx.ui.info(&format!(
                "lab `{}` is up: `lab ssh {}` logs in",
                s.ctx.lab.name, s.ctx.lab.machines[0].name
            ));
            Ok(EXIT_OK)
        }
        Command::Stop { shutdown } => {
            let s = open(&args, lab, ui, &cancel, Lock::Hold).await?;
            orch::power::stop(&s.ctx, *shutdown).await?;
            Ok(EXIT_OK)
        }
        Command::Start => {
            let s = open(&args, lab, ui, &cancel, Lock::Hold).await?;
            orch::power::start(&s.ctx).await?;
            Ok(EXIT_OK)
        }
        Command::Snapshot {
            name,
            disk_only,
            force,
        } => {
            if !model::is_checkpoint_name(name) {
                return Err(Failure::usage(
                    format!("`{name}` is not a checkpoint name"),
                    Some("use [a-z0-9][a-z0-9._-]{0,62}".into()),
                ));
            }
            let s = open(&args, lab, ui, &cancel, Lock::Hold).await?;
            orch::snapshot(&s.ctx, name, *disk_only, *force, None).await?;
            Ok(EXIT_OK)
        }
        Command::Restore { name, no_build } => {
            known_checkpoint(&lab, name)?;
            let s = open(&args, lab, ui, &cancel, Lock::Hold).await?;
            up_first(&s.ctx, name)?;
            orch::restore(&s.ctx, name, *no_build).await?;
            Ok(EXIT_OK)
        }
        Command::Checkpoints { json }
        | Command::Checkpoint {
            command: CheckpointCommand::Ls { json },
        } => {
            let s = open(&args, lab, ui, &cancel, Lock::Peek).await?;
            let list = orch::checkpoints::list(&s.ctx).await?;
            if *json {
                print::json(&list);
            } else {
                super::tree::checkpoints(&list, crate::term::width())
                    .iter()
                    .for_each(|l| out(l));
            }
            Ok(EXIT_OK)
        }
        Command::Checkpoint {
            command:
                CheckpointCommand::Rm {
                    name,
                    recursive,
                    yes,
                },
        } => {
            let s = open(&args, lab, ui, &cancel, Lock::Hold).await?;
            checkpoint_rm(&s.ctx, name, *recursive, *yes).await
        }
        Command::Check { checkpoint, json } => {
            if let Some(c) = checkpoint {
                known_checkpoint(&lab, c)?;
            }
            let s = open(&args, lab, ui, &cancel, Lock::Hold).await?;
            check(&s.ctx, checkpoint.as_deref(), *json).await
        }
        Command::Status { json } => {
            let s = open(&args, lab, ui, &cancel, Lock::Peek).await?;
            status(&s.ctx, *json).await
        }
        Command::Ssh { machine, command } => {
            known_machine(&lab, machine)?;
            let s = open(&args, lab, ui, &cancel, Lock::Peek).await?;
            ssh(&s.ctx, machine, command).await
        }
        Command::Cp {
            src,
            dst,
            recursive,
        } => {
            let (machine, to_machine) = copy_sides(&lab, src, dst)?;
            let s = open(&args, lab, ui, &cancel, Lock::Peek).await?;
            cp(&s.ctx, &machine, to_machine, src, dst, *recursive).await
        }
        Command::Console { machine } => {
            known_machine(&lab, machine)?;
            let s = open(&args, lab, ui, &cancel, Lock::Peek).await?;
            console(&s.ctx, machine).await
        }
        Command::SshConfig => {
            let s = open(&args, lab, ui, &cancel, Lock::Peek).await?;
            s.ctx.state()?;
            out(&ssh_config(&s.ctx));
            Ok(EXIT_OK)
        }
        Command::Destroy { yes, purge_cache } => {
            destroy(&args, lab, ui, &cancel, *yes, *purge_cache).await
        }
    }
}

/// Fails (exit 2, before any work) unless `name` is a checkpoint the lab file defines, `base`, or one built.
fn known_checkpoint(lab: &Lab, name: &str) -> Result<(), Failure> {
    if name == model::BASE || lab.checkpoint(name).is_some() {
        return Ok(());
    }
    let dirs = Dirs::from_env()?;
    let state = State::load(&dirs.lab(&lab.name))?;
    if state
        .as_ref()
        .is_some_and(|s| s.checkpoints.contains_key(name))
    {
        return Ok(());
    }
    let mut known = vec![model::BASE.to_string()];
    for c in &lab.checkpoints {
        known.push(c.name.clone());
        known.extend(c.aliases.iter().cloned());
    }
    if let Some(s) = &state {
        known.extend(s.checkpoints.keys().cloned());
    }
    Err(orch::Error::NoCheckpoint {
        name: name.into(),
        suggestion: orch::checkpoints::suggest(name, known),
    }
    .into())
}

/// Fails (exit 2, before any work) unless the lab file names this machine.
fn known_machine(lab: &Lab, machine: &str) -> Result<(), Failure> {
    if lab.machine(machine).is_some() {
        return Ok(());
    }
    let known: Vec<String> = lab.machines.iter().map(|m| m.name.clone()).collect();
    Err(orch::Error::UnknownMachine {
        lab: lab.name.clone(),
        machine: machine.into(),
        known: known.join(", "),
        suggestion: orch::checkpoints::suggest(machine, known),
    }
    .into())
}

/// A lab that is not up: going to a lab-file checkpoint is what `lab up --at` does.
fn up_first(ctx: &Context, name: &str) -> Result<(), Failure> {
    match ctx.state() {
        Err(orch::Error::NotUp(lab)) => Err(orch::Error::NotUpFor {
            lab,
            checkpoint: name.into(),
        }
        .into()),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// `lab doctor`: exit 1 when a row fails; interrupted, it stops waiting at once (exit 130, no rows).
async fn doctor(args: &Args, lab: &Lab, json: bool, cancel: &Cancel) -> Result<i32, Failure> {
    let uri = &args.global.connect;
    let rows = crate::doctor::diagnose(lab, uri, args.global.accel.as_str(), cancel)
        .await
        .map_err(|_| {
            orch::Error::Interrupted(format!("stopped while checking {uri}; nothing was changed"))
        })?;
    if json {
        print::json(&rows);
    } else {
        for l in crate::doctor::table(&rows).lines() {
            out(l);
        }
    }
    Ok(
        if rows.iter().any(|r| r.status == crate::doctor::Status::Fail) {
            EXIT_FAILURE
        } else {
            EXIT_OK
        },
    )
}

/// `lab fetch`: every image and download into the cache. Interrupted, the transfers stop and keep their partial
/// files; the next `lab fetch` resumes them.
async fn fetch(args: &Args, lab: &Lab, ui: &Arc<Ui>, cancel: &Cancel) -> Result<i32, Failure> {
    let dirs = Dirs::from_env()?;
    let cache = crate::download::Cache::new(dirs.cache.clone());
    let items = orch::up::download_items(lab);
    let opts = crate::download::Options {
        cancel: cancel.clone(),
        ..super::download_options(args, lab)
    };
    let got = crate::download::fetch_all(&cache, &items, &opts, ui.as_ref()).await?;
    ui.info(&format!(
        "{} file(s) in the cache {}",
        got.len(),
        dirs.cache.display()
    ));
    Ok(EXIT_OK)
}

fn plan(lab: &Lab, checkpoint: &str, json: bool) -> Result<i32, Failure> {
    known_checkpoint(lab, checkpoint)?;
    let rendered = if json {
        crate::render::plan::plan_json(lab, checkpoint)
            .map(|v| serde_json::to_string_pretty(&v).expect("serializes"))
    } else {
        crate::render::plan::plan(lab, checkpoint)
    };
    match rendered {
        Some(text) => {
            out(text.trim_end());
            Ok(EXIT_OK)
        }
        None => Err(Failure::usage(
            format!("`{checkpoint}` is not defined in the lab file, so it has no plan"),
            Some("`lab checkpoints` lists the lab file's checkpoints".into()),
        )),
    }
}

fn mirror_export(dir: &Path, ui: &Ui) -> Result<i32, Failure> {
    let dirs = Dirs::from_env()?;
    let cache = crate::download::Cache::new(dirs.cache.clone());
    let files = crate::download::export_mirror(&cache, dir)?;
    ui.info(&format!(
        "{} file(s) written below {}; serve it and pass --mirror URL",
        files.len(),
        dir.display()
    ));
    Ok(EXIT_OK)
}

async fn checkpoint_rm(
    ctx: &Context,
    name: &str,
    recursive: bool,
    yes: bool,
) -> Result<i32, Failure> {
    if recursive && !yes {
        let state = ctx.state()?;
        if state.checkpoints.contains_key(name) {
            let all = orch::checkpoints::subtree(&state, name);
            if all.len() > 1
                && !confirm(&format!(
                    "Remove checkpoint `{name}` and the {} built on it ({})?",
                    all.len() - 1,
                    all[1..].join(", ")
                ))?
            {
                return Ok(EXIT_FAILURE);
            }
        }
    }
    let gone = orch::checkpoints::remove(ctx, name, recursive).await?;
    ctx.ui
        .info(&format!("removed checkpoint(s): {}", gone.join(", ")));
    Ok(EXIT_OK)
}

async fn check(ctx: &Context, checkpoint: Option<&str>, json: bool) -> Result<i32, Failure> {
    let results = orch::check(ctx, checkpoint).await?;
    let failed = results.iter().filter(|r| !r.passed).count();
    if json {
        print::json(&results);
    } else {
        out(&header(&format!(
            "{:<58} {:<14} RESULT",
            "CHECK", "MACHINE"
        )));
        for r in &results {
            out(&format!(
                "{:<58} {:<14} {}",
                print::fit(&r.check, 58),
                print::fit(&r.machine, 14),
                print::verdict(r.passed)
            ));
            if !r.passed && !r.output.is_empty() {
                for l in r.output.lines().take(5) {
                    out(&print::fit(&format!("    {l}"), 80));
                }
            }
        }
        out(&format!(
            "{} passed, {} failed",
            results.len() - failed,
            failed
        ));
    }
    Ok(if failed == 0 { EXIT_OK } else { EXIT_FAILURE })
}

async fn ssh(ctx: &Context, machine: &str, command: &[String]) -> Result<i32, Failure> {
    ctx.state()?;
    let t = orch::power::reach(ctx, machine).await?;
    let mut c = std::process::Command::new("ssh");
    c.args(t.args(&ctx.keys(), 10));
    if !command.is_empty() {
        c.arg("--").args(command);
    }
    let status = c
        .status()
        .map_err(|e| Failure::from(orch::Error::from(crate::ssh::SshError::Spawn(e))))?;
    Ok(status.code().unwrap_or(EXIT_FAILURE))
}

/// Which side of `lab cp SRC DST` is `MACHINE:PATH`: exactly one must be (checked against the lab file).
fn copy_sides(lab: &Lab, src: &str, dst: &str) -> Result<(String, bool), Failure> {
    let machine_of = |s: &str| {
        s.split_once(':')
            .filter(|(m, _)| lab.machine(m).is_some())
            .map(|(m, _)| m.to_string())
    };
    match (machine_of(src), machine_of(dst)) {
        (Some(m), None) => Ok((m, false)),
        (None, Some(m)) => Ok((m, true)),
        (Some(_), Some(_)) => Err(Failure::usage(
            "copying between two machines is not supported".into(),
            Some("copy through this host: `lab cp a:/f /tmp/f && lab cp /tmp/f b:/f`".into()),
        )),
        (None, None) => Err(Failure::usage(
            format!("neither `{src}` nor `{dst}` names a machine (MACHINE:PATH)"),
            Some(format!(
                "the lab's machines: {}",
                lab.machines
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        )),
    }
}

/// `lab cp`: scp with the lab's keys and pinned host keys, as the machine's user.
async fn cp(
    ctx: &Context,
    machine: &str,
    to_machine: bool,
    src: &str,
    dst: &str,
    recursive: bool,
) -> Result<i32, Failure> {
    ctx.state()?;
    let t = orch::power::reach(ctx, machine).await?;
    let mut ssh_args = t.args(&ctx.keys(), 10);
    let destination = ssh_args.pop().expect("ssh args end with the destination");
    let remote = |side: &str| {
        let path = side.split_once(':').map_or(side, |(_, p)| p);
        format!("{destination}:{path}")
    };
    let (from, to) = if to_machine {
        (src.to_string(), remote(dst))
    } else {
        (remote(src), dst.to_string())
    };
    let mut c = std::process::Command::new("scp");
    c.arg("-q").args(&ssh_args);
    if recursive {
        c.arg("-r");
    }
    c.arg("--").arg(from).arg(to);
    let status = c
        .status()
        .map_err(|e| Failure::from(orch::Error::from(crate::ssh::SshError::Spawn(e))))?;
    Ok(status.code().unwrap_or(EXIT_FAILURE))
}

/// `lab console`: libvirt's own serial console client (virsh), which knows every transport.
async fn console(ctx: &Context, machine: &str) -> Result<i32, Failure> {
    ctx.state()?;
    orch::power::require_running_machine(ctx, machine).await?;
    print::err(&format!(
        "{machine}'s serial console: press Enter for a prompt, Ctrl-] to leave"
    ));
    let status = std::process::Command::new("virsh")
        .args(["-c", ctx.hv.uri(), "console", "--force", &ctx.dom(machine)])
        .status()
        .map_err(|e| Failure {
            message: format!("cannot run virsh: {e}"),
            hint: Some("install libvirt-clients (`apt-get install libvirt-clients`)".into()),
            code: EXIT_FAILURE,
        })?;
    Ok(status.code().unwrap_or(EXIT_FAILURE))
}

/// An OpenSSH config with one `Host` per machine (by its name and by its libvirt name).
fn ssh_config(ctx: &Context) -> String {
    let keys = ctx.keys();
    let mut s = format!(
        "# lab `{}` on {}: `ssh -F FILE MACHINE`, or Include FILE from ~/.ssh/config\n",
        ctx.lab.name,
        ctx.hv.uri()
    );
    for m in &ctx.lab.machines {
        let t = crate::ssh::Target::new(&ctx.lab, m, ctx.hv.uri());
        s.push_str(&format!(
            "\nHost {} {}\n  HostName {}\n  User {}\n  IdentityFile {}\n  IdentitiesOnly yes\n  \
             UserKnownHostsFile {}\n  HostKeyAlias {}\n  StrictHostKeyChecking yes\n",
            m.name,
            ctx.dom(&m.name),
            m.ip,
            m.user,
            keys.identity().display(),
            keys.known_hosts().display(),
            crate::ssh::host_alias(&ctx.lab.name, &m.name),
        ));
        if let Some(j) = &t.jump {
            s.push_str(&format!("  ProxyCommand {}\n", j.proxy_command()));
        }
    }
    s
}

async fn destroy(
    args: &Args,
    lab: Lab,
    ui: Arc<Ui>,
    cancel: &Cancel,
    yes: bool,
    purge_cache: bool,
) -> Result<i32, Failure> {
    if !yes
        && !confirm(&format!(
            "Destroy lab `{}` and everything it made?",
            lab.name
        ))?
    {
        return Ok(EXIT_FAILURE);
    }
    let s = open(args, lab, ui, cancel, Lock::Hold).await?;
    if let Some(l) = &s.lock {
        l.remove_file();
    }
    orch::destroy(&s.ctx, purge_cache).await?;
    s.ctx
        .ui
        .info(&format!("lab `{}` destroyed", s.ctx.lab.name));
    Ok(EXIT_OK)
}

fn confirm(question: &str) -> Result<bool, Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::usage(
            format!("{question} (no terminal to ask on)"),
            Some("pass --yes".into()),
        ));
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).ok();
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

#[derive(serde::Serialize)]
struct MachineStatus {
    name: String,
    /// running, paused, saved (stopped with its memory), shut-off, absent.
    state: orch::power::Power,
    ip: String,
}

#[derive(serde::Serialize)]
struct LabStatus {
    name: String,
    uri: String,
    /// running, stopped, partly-running, not-up, broken (state without machines: a first `up` that died).
    state: &'static str,
    checkpoint: Option<String>,
    machines: Vec<MachineStatus>,
}

/// `lab status`: exit 0 when the lab exists (whatever its machines do), 1 when it is not up.
async fn status(ctx: &Context, json: bool) -> Result<i32, Failure> {
    use orch::power::Power;
    let state = State::load(&ctx.lab_dir())?;
    let powers = orch::power::power_states(ctx).await?;
    let all = |f: &dyn Fn(Power) -> bool| powers.iter().all(|(_, p)| f(*p));
    let lab_state = match &state {
        _ if all(&|p| p == Power::Running) => "running",
        None if all(&|p| p == Power::Absent) => "not-up",
        Some(_) if all(&|p| p == Power::Absent) => "broken",
        _ if all(&|p| matches!(p, Power::Saved | Power::ShutOff)) => "stopped",
        _ => "partly-running",
    };
    let s = LabStatus {
        name: ctx.lab.name.clone(),
        uri: ctx.hv.uri().to_string(),
        state: lab_state,
        checkpoint: state.and_then(|s| s.current),
        machines: ctx
            .lab
            .machines
            .iter()
            .zip(powers)
            .map(|(m, (_, p))| MachineStatus {
                name: m.name.clone(),
                state: p,
                ip: m.ip.to_string(),
            })
            .collect(),
    };
    if json {
        print::json(&s);
    } else {
        out(&format!(
            "lab {} on {}: {}, checkpoint: {}",
            s.name,
            s.uri,
            print::power(s.state, 0),
            s.checkpoint.as_deref().unwrap_or("-")
        ));
        out(&header(&format!(
            "{:<20} {:<24} ADDRESS",
            "MACHINE", "STATE"
        )));
        for m in &s.machines {
            out(&format!(
                "{:<20} {} {}",
                m.name,
                print::power(&m.state.to_string(), 24),
                m.ip
            ));
        }
        let hint = match lab_state {
            "not-up" => Some("`lab up` creates it"),
            "broken" => Some("a `lab up` stopped before its machines were made: `lab up` again, or `lab destroy`"),
            "stopped" => Some("`lab start` brings it back"),
            "partly-running" => Some(
                "`lab start` starts the others; `lab restore NAME` puts every machine on one checkpoint",
            ),
            _ => None,
        };
        if let Some(h) = hint {
            print::hint(h);
        }
    }
    Ok(if matches!(lab_state, "not-up" | "broken") {
        EXIT_FAILURE
    } else {
        EXIT_OK
    })
}

fn header(text: &str) -> String {
    paint(HEADER, text)
}

fn validated(lab: &Lab, json: bool) {
    #[derive(serde::Serialize)]
    struct M<'a> {
        name: &'a str,
        ip: String,
        cpus: u32,
        memory: u64,
        disk: u64,
        image: &'a str,
        user: &'a str,
    }
    let machines: Vec<M> = lab
        .machines
        .iter()
        .map(|m| M {
            name: &m.name,
            ip: m.ip.to_string(),
            cpus: m.cpus,
            memory: m.memory,
            disk: m.disk,
            image: &m.image,
            user: &m.user,
        })
        .collect();
    if json {
        print::json(&serde_json::json!({
            "name": lab.name,
            "source": lab.source.to_string(),
            "subnet": lab.network.subnet.to_string(),
            "gateway": lab.network.gateway.to_string(),
            "mode": lab.network.mode,
            "machines": machines,
            "downloads": lab.downloads.iter().map(|d| &d.name).collect::<Vec<_>>(),
            "checkpoints": lab.checkpoints.iter().map(|c| &c.name).collect::<Vec<_>>(),
        }));
        return;
    }
    out(&format!(
        "lab {} ({}): {} on {}",
        lab.name, lab.source, lab.network.subnet, lab.network.gateway
    ));
    for m in machines {
        out(&format!(
            "  {:<16} {:<15} {} cpu, {} memory, {} disk, {}, user {}",
            m.name,
            m.ip,
            m.cpus,
            model::format_size(m.memory),
            model::format_size(m.disk),
            m.image,
            m.user
        ));
    }
    out(&format!(
        "  {} download(s), {} checkpoint(s)",
        lab.downloads.len(),
        lab.checkpoints.len()
    ));
}

fn completions(shell: clap_complete::Shell) -> i32 {
    use clap::CommandFactory;
    let mut cmd = Args::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "lab", &mut buf);
    out(String::from_utf8_lossy(&buf).trim_end());
    EXIT_OK
}

/// `lab init [DIR]`: the embedded course lab as files to edit (lab.toml, its step scripts, its README).
fn init(dir: &Path, force: bool, ui: &Ui) -> Result<i32, Failure> {
    let mut files = Vec::new();
    collect(&model::EMBEDDED_LAB, &mut files);
    let taken: Vec<String> = files
        .iter()
        .map(|(p, _)| dir.join(p))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !taken.is_empty() && !force {
        return Err(Failure::usage(
            format!("{} exists already", taken[0]),
            Some("--force overwrites the lab's files there".into()),
        ));
    }
    for (rel, data) in &files {
        let path = dir.join(rel);
        let mode = if rel.extension().is_some_and(|e| e == "sh") {
            0o755
        } else {
            0o644
        };
        crate::fsutil::write_atomic(&path, data, Some(mode)).map_err(|e| Failure {
            message: format!("cannot write {}: {e}", path.display()),
            hint: None,
            code: EXIT_FAILURE,
        })?;
    }
    ui.info(&format!(
        "wrote the course lab ({} files) to {}: edit lab.toml, then `lab up` there",
        files.len(),
        dir.display()
    ));
    Ok(EXIT_OK)
}

fn collect(d: &include_dir::Dir<'static>, out: &mut Vec<(std::path::PathBuf, &'static [u8])>) {
    for f in d.files() {
        out.push((f.path().to_path_buf(), f.contents()));
    }
    for sub in d.dirs() {
        collect(sub, out);
    }
}

/// `lab import SOURCE [DIR]`: the kit's lab file into DIR, the lab into this host, its checkpoints built.
async fn import(
    args: &Args,
    ui: &Arc<Ui>,
    cancel: &Cancel,
    source: &str,
    dir: Option<std::path::PathBuf>,
    replace: bool,
) -> Result<i32, Failure> {
    // A `--file` (or ./lab.toml) names the lab the kit must be of.
    let file_lab = match &args.global.file {
        Some(_) => Some(model::load(args.global.file.as_deref())?.name),
        None => None,
    };
    let hv = super::connect(&args.global.connect, ui, cancel).await?;
    let dirs = Dirs::from_env()?;
    let opts = crate::kit::ImportOptions {
        source: crate::kit::Source::parse(source),
        dir,
        replace,
        file_lab,
    };
    let done = crate::kit::import(
        &opts,
        hv,
        dirs,
        ui.clone(),
        crate::download::Options {
            cancel: cancel.clone(),
            ..Default::default()
        },
        args.global.accel.as_str().into(),
        cancel.clone(),
    )
    .await?;
    let first = done
        .checkpoints
        .iter()
        .find(|c| *c != model::BASE)
        .cloned()
        .unwrap_or_else(|| model::BASE.into());
    ui.info(&format!(
        "imported lab `{}` with checkpoint(s) {} into {}: `cd {} && lab up --at {first}`",
        done.lab,
        done.checkpoints.join(", "),
        done.dir.display(),
        done.dir.display()
    ));
    Ok(EXIT_OK)
}

/// `lab kit verify SOURCE`.
async fn kit_verify(
    args: &Args,
    ui: &Arc<Ui>,
    cancel: &Cancel,
    source: &str,
) -> Result<i32, Failure> {
    let v = crate::kit::verify(
        &crate::kit::Source::parse(source),
        ui,
        &crate::download::Options {
            offline: false,
            mirror: None,
            cancel: cancel.clone(),
            ..super::download_options(args, &model::load(None)?)
        },
    )
    .await?;
    out(&format!(
        "kit of lab `{}` is whole: {} file(s), {}, checkpoints {}",
        v.lab,
        v.files,
        model::format_size(v.bytes),
        v.checkpoints.join(", ")
    ));
    Ok(EXIT_OK)
}
