//! The command line: flags (clap), running a command, printing results and errors, and the exit code.
//! Exit codes: 0 success, 1 failure while running, 2 bad usage or bad lab file, 130 interrupted.

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
        let code = if matches!(e, orch::Error::Interrupted) {
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
        Failure {
            hint: e.hint(),
            message: chain(&e),
            code: EXIT_FAILURE,
        }
    }
}

impl From<libvirt::Error> for Failure {
    fn from(e: libvirt::Error) -> Self {
        Failure {
            hint: e.hint(),
            message: chain(&e),
            code: EXIT_FAILURE,
        }
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
        .init();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(run(args)) {
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

fn context(args: &Args, lab: Lab, hv: Shared, ui: Arc<Ui>) -> Result<Context, Failure> {
    let mirror = args.mirror.clone().or_else(|| lab.mirror.clone());
    Ok(Context {
        lab,
        hv,
        dirs: Dirs::from_env()?,
        ui,
        download: crate::download::Options {
            offline: args.offline,
            mirror,
            ..Default::default()
        },
    })
}

/// Runs `fut`, or stops at Ctrl-C with `Interrupted`.
async fn interruptible<T>(
    fut: impl std::future::Future<Output = orch::Result<T>>,
) -> orch::Result<T> {
    tokio::select! {
        r = fut => r,
        _ = tokio::signal::ctrl_c() => Err(orch::Error::Interrupted),
    }
}

async fn run(args: Args) -> Result<i32, Failure> {
    let lab = model::load(args.file.as_deref())?;
    let ui = Arc::new(Ui::new(args.quiet));
    match &args.command {
        Command::Validate { json } => {
            print_validated(&lab, *json);
            Ok(EXIT_OK)
        }
        Command::Fetch => {
            let dirs = Dirs::from_env()?;
            let ctx_dl = crate::download::Options {
                offline: args.offline,
                mirror: args.mirror.clone().or_else(|| lab.mirror.clone()),
                ..Default::default()
            };
            let cache = crate::download::Cache::new(dirs.cache.clone());
            let items = orch::up::download_items(&lab);
            let got = crate::download::fetch_all(&cache, &items, &ctx_dl, ui.as_ref())
                .await
                .map_err(|e| Failure::from(orch::Error::from(e)))?;
            ui.info(&format!(
                "{} file(s) in the cache {}",
                got.len(),
                dirs.cache.display()
            ));
            Ok(EXIT_OK)
        }
        Command::Plan { checkpoint } => match crate::render::plan::plan(&lab, checkpoint) {
            Some(text) => {
                print!("{text}");
                Ok(EXIT_OK)
            }
            None => Err(Failure {
                message: format!("the lab file defines no checkpoint `{checkpoint}`"),
                hint: Some("`lab checkpoints` lists them".into()),
                code: EXIT_USAGE,
            }),
        },
        Command::Mirror {
            command: MirrorCommand::Export { dir },
        } => {
            let dirs = Dirs::from_env()?;
            let cache = crate::download::Cache::new(dirs.cache.clone());
            let files = crate::download::export_mirror(&cache, dir)
                .map_err(|e| Failure::from(orch::Error::from(e)))?;
            ui.info(&format!(
                "{} file(s) written below {}; serve it and pass --mirror URL",
                files.len(),
                dir.display()
            ));
            Ok(EXIT_OK)
        }
        Command::Up {
            keep_on_failure,
            at,
        } => {
            let hv = connect(&args.connect)?;
            let ctx = context(&args, lab, hv, ui)?;
            let lock = LabLock::acquire(&ctx.dirs, &ctx.lab.name, Duration::from_secs(3600))?;
            let fresh = State::load(&ctx.lab_dir())?.is_none();
            let opts = UpOptions {
                accel: args.accel.clone(),
                keep_on_failure: *keep_on_failure,
            };
            let result = match interruptible(orch::up(&ctx, &opts)).await {
                Err(orch::Error::Interrupted) if fresh && !keep_on_failure => {
                    ctx.ui.warn("interrupted: removing what this `up` made");
                    let _ = orch::destroy(&ctx, false).await;
                    Err(orch::Error::Interrupted)
                }
                r => r,
            };
            if result.is_err() && State::load(&ctx.lab_dir()).ok().flatten().is_none() {
                // No lab was left behind, so no lock file and no empty folders either.
                lock.remove_file();
                ctx.dirs.remove_empty();
            }
            result.map_err(Failure::from)?;
            if let Some(at) = at {
                interruptible(orch::restore(&ctx, at, false))
                    .await
                    .map_err(Failure::from)?;
            }
            ctx.ui.info(&format!(
                "lab `{}` is up: `lab ssh {}` logs in",
                ctx.lab.name, ctx.lab.machines[0].name
            ));
            Ok(EXIT_OK)
        }
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
            let (ctx, _lock) = locked(&args, lab, ui)?;
            interruptible(orch::checkpoints::snapshot(
                &ctx, name, *disk_only, *force, None,
            ))
            .await
            .map_err(Failure::from)?;
            Ok(EXIT_OK)
        }
        Command::Restore { name, no_build } => {
            let (ctx, _lock) = locked(&args, lab, ui)?;
            interruptible(orch::restore(&ctx, name, *no_build))
                .await
                .map_err(Failure::from)?;
            Ok(EXIT_OK)
        }
        Command::Checkpoints { json } => {
            let hv = connect(&args.connect)?;
            let ctx = context(&args, lab, hv, ui)?;
            let list = orch::checkpoints::list(&ctx).await.map_err(Failure::from)?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).expect("serializes")
                );
            } else {
                print_checkpoints(&list);
            }
            Ok(EXIT_OK)
        }
        Command::Checkpoint {
            command: CheckpointCommand::Rm { name, recursive },
        } => {
            let (ctx, _lock) = locked(&args, lab, ui)?;
            let gone = orch::checkpoints::remove(&ctx, name, *recursive)
                .await
                .map_err(Failure::from)?;
            ctx.ui
                .info(&format!("removed checkpoint(s): {}", gone.join(", ")));
            Ok(EXIT_OK)
        }
        Command::Check { checkpoint, json } => {
            let (ctx, _lock) = locked(&args, lab, ui)?;
            let results = orch::check(&ctx, checkpoint.as_deref())
                .await
                .map_err(Failure::from)?;
            let failed = results.iter().filter(|r| !r.passed).count();
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&results).expect("serializes")
                );
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
        Command::Status { json } => {
            let hv = connect(&args.connect)?;
            let ctx = context(&args, lab, hv, ui)?;
            status(&ctx, *json).await.map_err(Failure::from)?;
            Ok(EXIT_OK)
        }
        Command::Ssh { machine, command } => {
            let hv = connect(&args.connect)?;
            let ctx = context(&args, lab, hv, ui)?;
            ctx.state().map_err(Failure::from)?;
            let t = ctx.target(machine).map_err(Failure::from)?;
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
        Command::Destroy { yes, purge_cache } => {
            let hv = connect(&args.connect)?;
            let ctx = context(&args, lab, hv, ui)?;
            if !yes
                && !confirm(&format!(
                    "Destroy lab `{}` and everything it made?",
                    ctx.lab.name
                ))?
            {
                return Ok(EXIT_FAILURE);
            }
            let lock = LabLock::acquire(&ctx.dirs, &ctx.lab.name, Duration::from_secs(3600))?;
            lock.remove_file();
            orch::destroy(&ctx, *purge_cache)
                .await
                .map_err(Failure::from)?;
            ctx.ui.info(&format!("lab `{}` destroyed", ctx.lab.name));
            Ok(EXIT_OK)
        }
    }
}

/// A context for a command that changes the lab, with the lab's lock held.
fn locked(args: &Args, lab: Lab, ui: Arc<Ui>) -> Result<(Context, LabLock), Failure> {
    let hv = connect(&args.connect)?;
    let ctx = context(args, lab, hv, ui)?;
    let lock = LabLock::acquire(&ctx.dirs, &ctx.lab.name, Duration::from_secs(3600))?;
    Ok((ctx, lock))
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
    state: String,
    ip: String,
}

#[derive(serde::Serialize)]
struct LabStatus {
    name: String,
    uri: String,
    checkpoint: Option<String>,
    machines: Vec<MachineStatus>,
}

async fn status(ctx: &Context, json: bool) -> orch::Result<()> {
    let state = State::load(&ctx.lab_dir())?;
    let states = orch::machine_states(ctx).await?;
    let s = LabStatus {
        name: ctx.lab.name.clone(),
        uri: ctx.hv.uri().to_string(),
        checkpoint: state.and_then(|s| s.current),
        machines: ctx
            .lab
            .machines
            .iter()
            .zip(states)
            .map(|(m, (_, st))| MachineStatus {
                name: m.name.clone(),
                state: st.map_or("absent".into(), |s| s.to_string()),
                ip: m.ip.to_string(),
            })
            .collect(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&s).expect("serializes"));
    } else {
        println!(
            "lab {} on {}, checkpoint: {}",
            s.name,
            s.uri,
            s.checkpoint.as_deref().unwrap_or("-")
        );
        println!("{:<20} {:<10} ADDRESS", "MACHINE", "STATE");
        for m in &s.machines {
            println!("{:<20} {:<10} {}", m.name, m.state, m.ip);
        }
    }
    Ok(())
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
