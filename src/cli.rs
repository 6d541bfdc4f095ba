//! The command line: flags (clap), running a command, printing results and errors, and the exit code.
//! Exit codes: 0 success, 1 failure while running, 2 bad usage or bad lab file, 130 interrupted.

use crate::cancel::Cancel;
use crate::libvirt::{self, Shared, VirtHost};
use crate::model::{self, Lab};
use crate::orchestrator::{self as orch, Context, UpOptions};
use crate::state::{Dirs, LabLock, State};
use crate::ui::Ui;
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_INTERRUPTED: i32 = 130;

#[derive(Debug, Parser)]
#[command(
    name = "lab",
    version,
    about = "Identical Linux lab machines on libvirt, with whole-lab checkpoints"
)]
pub struct Args {
    /// The lab file (default: ./lab.toml, else the embedded course lab).
    #[arg(long, short = 'f', global = true, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// libvirt URI, e.g. qemu:///system or qemu+ssh://user@host/system.
    #[arg(
        long,
        global = true,
        env = "LAB_CONNECT",
        default_value = "qemu:///system"
    )]
    pub connect: String,
    /// Acceleration: auto (KVM where it works, else TCG), kvm or tcg.
    #[arg(long, global = true, env = "LAB_ACCEL", default_value = "auto")]
    pub accel: String,
    /// Use only the download cache; fail listing what is missing.
    #[arg(long, global = true)]
    pub offline: bool,
    /// Fetch every upstream URL from MIRROR/<host>/<path> instead.
    #[arg(long, global = true, env = "LAB_MIRROR", value_name = "URL")]
    pub mirror: Option<String>,
    /// No progress output (warnings and errors still show).
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and start the lab's machines (idempotent).
    Up {
        /// Keep what a failed first `up` made, for inspection.
        #[arg(long)]
        keep_on_failure: bool,
        /// Then restore (building it if needed) this checkpoint.
        #[arg(long, value_name = "CHECKPOINT")]
        at: Option<String>,
    },
    /// Stop every machine, freeing its memory; nothing is lost (`lab start` brings the lab back).
    Stop {
        /// Power the guests off (ACPI) instead of saving their memory.
        #[arg(long)]
        shutdown: bool,
    },
    /// Start a stopped lab: saved machines resume together with their clocks set; shut-off ones boot.
    Start,
    /// Save the whole lab (all machines at the same instant) as a named checkpoint.
    Snapshot {
        name: String,
        /// Disks only (machines boot when restored) instead of disks and memory.
        #[arg(long)]
        disk_only: bool,
        /// Replace an existing checkpoint of that name.
        #[arg(long)]
        force: bool,
    },
    /// Return every machine to a checkpoint; a lab-file checkpoint that is not built is built first.
    Restore {
        name: String,
        /// Fail instead of building a missing or stale lab-file checkpoint.
        #[arg(long)]
        no_build: bool,
    },
    /// The checkpoints: built, defined in the lab file, stale, current.
    Checkpoints {
        #[arg(long)]
        json: bool,
    },
    /// Manage checkpoints.
    Checkpoint {
        #[command(subcommand)]
        command: CheckpointCommand,
    },
    /// Run a checkpoint's declared checks against the running lab (default: the current checkpoint).
    Check {
        checkpoint: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Each machine's state and address, and the lab's current checkpoint.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Log in to a machine, or run a command there (returns its exit code).
    Ssh {
        machine: String,
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Remove every machine, volume, network, key and state file of the lab.
    Destroy {
        /// Do not ask.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Also remove the download cache.
        #[arg(long)]
        purge_cache: bool,
    },
    /// Download everything the lab needs into the cache (for offline use).
    Fetch,
    /// What building a lab-file checkpoint does: its chain, steps and checks.
    Plan { checkpoint: String },
    /// Write the download cache as a mirror folder (DIR/<host>/<path>) to serve to a classroom.
    Mirror {
        #[command(subcommand)]
        command: MirrorCommand,
    },
    /// The lab file as lab reads it, after defaults (no libvirt needed).
    Validate {
        #[arg(long)]
        json: bool,
    },
    /// What lab needs on this host, one row each with its fix; exit 1 when something blocks `lab up`.
    Doctor {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MirrorCommand {
    /// Export every cached file.
    Export { dir: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Remove a checkpoint's files.
    Rm {
        name: String,
        /// Also remove the checkpoints built on it.
        #[arg(long)]
        recursive: bool,
    },
}

/// A failure on its way to the user: a one-line message, an optional hint, an exit code.
pub struct Failure {
    pub message: String,
    pub hint: Option<String>,
    pub code: i32,
}

impl From<orch::Error> for Failure {
    fn from(e: orch::Error) -> Self {
        let code = if e.is_interrupted() {
            EXIT_INTERRUPTED
        } else {
            EXIT_FAILURE
        };
        Failure {
            hint: e.hint(),
            message: chain(&e),
            code,
        }
    }
}

impl From<model::LabFileError> for Failure {
    fn from(e: model::LabFileError) -> Self {
        Failure {
            message: e.to_string(),
            hint: None,
            code: EXIT_USAGE,
        }
    }
}

impl From<crate::state::StateError> for Failure {
    fn from(e: crate::state::StateError) -> Self {
        Failure::from(orch::Error::from(e))
    }
}

impl From<libvirt::Error> for Failure {
    fn from(e: libvirt::Error) -> Self {
        Failure::from(orch::Error::from(e))
    }
}

impl From<crate::download::Error> for Failure {
    fn from(e: crate::download::Error) -> Self {
        Failure::from(orch::Error::from(e))
    }
}

/// The error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

pub fn main() -> i32 {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("LAB_LOG"))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = rt.block_on(async {
        let cancel = Cancel::new();
        cancel.listen(|text| eprintln!("{text}"));
        run(args, cancel).await
    });
    match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {}", f.message);
            if let Some(h) = f.hint {
                eprintln!("  hint: {h}");
            }
            f.code
        }
    }
}

fn connect(uri: &str) -> Result<Shared, Failure> {
    Ok(Arc::new(VirtHost::connect(uri)?))
}

fn download_options(args: &Args, lab: &Lab) -> crate::download::Options {
    crate::download::Options {
        offline: args.offline,
        mirror: args.mirror.clone().or_else(|| lab.mirror.clone()),
        ..Default::default()
    }
}

/// How a command treats the lab's lock.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lock {
    /// Held for the whole command; another command on the lab is waited for.
    Hold,
    /// Only looked at: when no command holds it, what a killed one left is repaired first, then it is let go.
    Peek,
}

/// A command's context, with the lab's lock when it holds it, after repairing what a killed command left.
struct Session {
    ctx: Context,
    lock: Option<LabLock>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // A command that leaves no lab (it never existed, failed on its first `up`, or was destroyed) leaves no
        // lock file and no empty folders either.
        if let Some(l) = &self.lock {
            if !self.ctx.lab_dir().exists() {
                l.remove_file();
                self.ctx.dirs.remove_empty();
            }
        }
    }
}

async fn open(
    args: &Args,
    lab: Lab,
    ui: Arc<Ui>,
    cancel: &Cancel,
    lock: Lock,
) -> Result<Session, Failure> {
    let hv = connect(&args.connect)?;
    let ctx = Context {
        download: download_options(args, &lab),
        lab,
        hv,
        dirs: Dirs::from_env()?,
        ui,
        accel: args.accel.clone(),
        cancel: cancel.clone(),
    };
    let held = match lock {
        Lock::Hold => {
            let ui = ctx.ui.clone();
            let name = ctx.lab.name.clone();
            Some(
                LabLock::acquire_async(
                    &ctx.dirs,
                    &ctx.lab.name,
                    Duration::from_secs(3600),
                    move |pid| {
                        ui.warn(&format!(
                            "waiting for another lab command on lab `{name}`{} to finish",
                            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
                        ))
                    },
                )
                .await?,
            )
        }
        Lock::Peek => LabLock::try_acquire(&ctx.dirs, &ctx.lab.name)?,
    };
    if held.is_some() {
        orch::repair_if_pending(&ctx).await?;
    }
    let session = Session { ctx, lock: held };
    Ok(if lock == Lock::Peek {
        // Let go at once (the Drop above tidies up when there is no lab).
        Session {
            ctx: session.ctx.clone(),
            lock: None,
        }
    } else {
        session
    })
}

async fn run(args: Args, cancel: Cancel) -> Result<i32, Failure> {
    let lab = model::load(args.file.as_deref())?;
    let ui = Arc::new(Ui::new(args.quiet));
    match &args.command {
        Command::Validate { json } => {
            print_validated(&lab, *json);
            Ok(EXIT_OK)
        }
        Command::Fetch => fetch(&args, &lab, &ui).await,
        Command::Plan { checkpoint } => plan(&lab, checkpoint),
        Command::Mirror {
            command: MirrorCommand::Export { dir },
        } => mirror_export(dir, &ui),
        Command::Up {
            keep_on_failure,
            at,
        } => up(&args, lab, ui, &cancel, *keep_on_failure, at.as_deref()).await,
        Command::Snapshot {
            name,
            disk_only,
            force,
        } => {
            if !model::is_checkpoint_name(name) {
                return Err(Failure {
                    message: format!("`{name}` is not a checkpoint name"),
                    hint: Some("use [a-z0-9][a-z0-9._-]{0,62}".into()),
                    code: EXIT_USAGE,
                });
            }
            let s = open(&args, lab, ui, &cancel, Lock::Hold).await?;
            orch::snapshot(&s.ctx, name, *disk_only, *force, None).await?;
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
        Command::Restore { name, no_build } => {
            let s = open(&args, lab, ui, &cancel, Lock::Hold).await?;
            orch::restore(&s.ctx, name, *no_build).await?;
            Ok(EXIT_OK)
        }
        Command::Checkpoints { json } => {
            let s = open(&args, lab, ui, &cancel, Lock::Peek).await?;
            let list = orch::checkpoints::list(&s.ctx).await?;
            if *json {
                print_json(&list);
            } else {
                print_checkpoints(&list);
            }
            Ok(EXIT_OK)
        }
        Command::Checkpoint {
            command: CheckpointCommand::Rm { name, recursive },
        } => {
            let s = open(&args, lab, ui, &cancel, Lock::Hold).await?;
            let gone = orch::checkpoints::remove(&s.ctx, name, *recursive).await?;
            s.ctx
                .ui
                .info(&format!("removed checkpoint(s): {}", gone.join(", ")));
            Ok(EXIT_OK)
        }
        Command::Check { checkpoint, json } => {
            let s = open(&args, lab, ui, &cancel, Lock::Hold).await?;
            check(&s.ctx, checkpoint.as_deref(), *json).await
        }
        Command::Status { json } => {
            let s = open(&args, lab, ui, &cancel, Lock::Peek).await?;
            status(&s.ctx, *json).await
        }
        Command::Ssh { machine, command } => {
            let s = open(&args, lab, ui, &cancel, Lock::Peek).await?;
            ssh(&s.ctx, machine, command)
        }
        Command::Destroy { yes, purge_cache } => {
            destroy(&args, lab, ui, &cancel, *yes, *purge_cache).await
        }
        Command::Doctor { json } => Ok(doctor(&args, &lab, *json).await),
    }
}

/// `lab doctor`: the host's rows as a table (or JSON); exit 1 when one fails.
async fn doctor(args: &Args, lab: &Lab, json: bool) -> i32 {
    let rows = crate::doctor::diagnose(lab, &args.connect, &args.accel).await;
    if json {
        print_json(&rows);
    } else {
        print!("{}", crate::doctor::table(&rows));
    }
    if rows.iter().any(|r| r.status == crate::doctor::Status::Fail) {
        EXIT_FAILURE
    } else {
        EXIT_OK
    }
}

async fn fetch(args: &Args, lab: &Lab, ui: &Arc<Ui>) -> Result<i32, Failure> {
    let dirs = Dirs::from_env()?;
    let cache = crate::download::Cache::new(dirs.cache.clone());
    let items = orch::up::download_items(lab);
    let got = crate::download::fetch_all(&cache, &items, &download_options(args, lab), ui.as_ref())
        .await?;
    ui.info(&format!(
        "{} file(s) in the cache {}",
        got.len(),
        dirs.cache.display()
    ));
    Ok(EXIT_OK)
}

fn plan(lab: &Lab, checkpoint: &str) -> Result<i32, Failure> {
    match crate::render::plan::plan(lab, checkpoint) {
        Some(text) => {
            print!("{text}");
            Ok(EXIT_OK)
        }
        None => Err(Failure {
            message: format!("the lab file defines no checkpoint `{checkpoint}`"),
            hint: Some("`lab checkpoints` lists them".into()),
            code: EXIT_USAGE,
        }),
    }
}

fn mirror_export(dir: &std::path::Path, ui: &Ui) -> Result<i32, Failure> {
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

async fn up(
    args: &Args,
    lab: Lab,
    ui: Arc<Ui>,
    cancel: &Cancel,
    keep_on_failure: bool,
    at: Option<&str>,
) -> Result<i32, Failure> {
    let s = open(args, lab, ui, cancel, Lock::Hold).await?;
    let ctx = &s.ctx;
    orch::up(ctx, &UpOptions { keep_on_failure }).await?;
    if let Some(at) = at {
        orch::restore(ctx, at, false).await?;
    }
    ctx.ui.info(&format!(
        "lab `{}` is up: `lab ssh {}` logs in",
        ctx.lab.name, ctx.lab.machines[0].name
    ));
    Ok(EXIT_OK)
}

async fn check(ctx: &Context, checkpoint: Option<&str>, json: bool) -> Result<i32, Failure> {
    let results = orch::check(ctx, checkpoint).await?;
    let failed = results.iter().filter(|r| !r.passed).count();
    if json {
        print_json(&results);
    } else {
        println!("{:<44} {:<16} RESULT", "CHECK", "MACHINE");
        for r in &results {
            println!(
                "{:<44} {:<16} {}",
                r.check,
                r.machine,
                if r.passed { "pass" } else { "FAIL" }
            );
            if !r.passed && !r.output.is_empty() {
                for l in r.output.lines().take(5) {
                    println!("    {l}");
                }
            }
        }
        println!("{} passed, {} failed", results.len() - failed, failed);
    }
    Ok(if failed == 0 { EXIT_OK } else { EXIT_FAILURE })
}

fn ssh(ctx: &Context, machine: &str, command: &[String]) -> Result<i32, Failure> {
    ctx.state()?;
    let t = ctx.target(machine)?;
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

fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializes"));
}

fn print_checkpoints(list: &[orch::checkpoints::Listed]) {
    println!(
        "{:<26} {:<22} {:<21} {:>10} {:<7} {:<7}",
        "CHECKPOINT", "PARENT", "CREATED", "SIZE", "MEMORY", "STATE"
    );
    for c in list {
        let state = match (c.built, c.stale) {
            (false, _) => "not built",
            (true, true) => "stale",
            (true, false) => "built",
        };
        let mut name = c.name.clone();
        if c.current {
            name.push_str(" *");
        }
        println!(
            "{:<26} {:<22} {:<21} {:>10} {:<7} {}{}",
            name,
            c.parent.as_deref().unwrap_or("-"),
            c.created.as_deref().unwrap_or("-"),
            if c.built {
                model::format_size(c.size)
            } else {
                "-".into()
            },
            if c.memory { "yes" } else { "no" },
            state,
            if c.aliases.is_empty() {
                String::new()
            } else {
                format!(" (also: {})", c.aliases.join(", "))
            }
        );
    }
    println!("* = the machines run on this checkpoint");
}

fn confirm(question: &str) -> Result<bool, Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure {
            message: "refusing to destroy without confirmation".into(),
            hint: Some("pass --yes".into()),
            code: EXIT_USAGE,
        });
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
        print_json(&s);
    } else {
        println!(
            "lab {} on {}: {}, checkpoint: {}",
            s.name,
            s.uri,
            s.state,
            s.checkpoint.as_deref().unwrap_or("-")
        );
        println!("{:<20} {:<24} ADDRESS", "MACHINE", "STATE");
        for m in &s.machines {
            println!("{:<20} {:<24} {}", m.name, m.state.to_string(), m.ip);
        }
    }
    let hint = match lab_state {
        "not-up" => Some("`lab up` creates it"),
        "broken" => Some("a `lab up` stopped before its machines were made: `lab up` again, or `lab destroy`"),
        "stopped" => Some("`lab start` brings it back"),
        "partly-running" => Some("`lab start` starts the others; `lab restore NAME` puts every machine on one checkpoint"),
        _ => None,
    };
    if let Some(h) = hint.filter(|_| !json) {
        eprintln!("hint: {h}");
    }
    Ok(if matches!(lab_state, "not-up" | "broken") {
        EXIT_FAILURE
    } else {
        EXIT_OK
    })
}

fn print_validated(lab: &Lab, json: bool) {
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
        let v = serde_json::json!({
            "name": lab.name,
            "source": lab.source.to_string(),
            "subnet": lab.network.subnet.to_string(),
            "gateway": lab.network.gateway.to_string(),
            "mode": lab.network.mode,
            "machines": machines,
            "downloads": lab.downloads.iter().map(|d| &d.name).collect::<Vec<_>>(),
            "checkpoints": lab.checkpoints.iter().map(|c| &c.name).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("serializes"));
    } else {
        println!(
            "lab {} ({}): {} on {}",
            lab.name, lab.source, lab.network.subnet, lab.network.gateway
        );
        for m in machines {
            println!(
                "  {:<16} {:<15} {} cpu, {} memory, {} disk, {}, user {}",
                m.name,
                m.ip,
                m.cpus,
                model::format_size(m.memory),
                model::format_size(m.disk),
                m.image,
                m.user
            );
        }
        println!(
            "  {} download(s), {} checkpoint(s)",
            lab.downloads.len(),
            lab.checkpoints.len()
        );
    }
}
