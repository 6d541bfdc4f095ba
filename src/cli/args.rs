//! The command line's shape: every command, argument and option, with its help. What they do is in `commands.rs`.

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  lab up                        the course lab (or ./lab.toml): machines, network, binaries
  lab up --at worker-done       straight to the start of a lesson (built once, then restored)
  lab ssh worker-1              log in; `lab ssh worker-1 -- uname -a` runs a command
  lab snapshot mine             save the whole lab, all machines at one instant
  lab restore mine              back to it in seconds (`lab restore undo` undoes a restore)
  lab checkpoints               every checkpoint, as a tree
  lab stop / lab start          free the machines' memory, and bring them back
  lab destroy                   remove everything the lab made
  lab export /srv/kit           an instructor writes the built lab as a class kit
  lab import http://HOST:8000/  a student installs it; then `cd LAB && lab up --at NAME`

Environment:
  LAB_CONNECT, LAB_ACCEL, LAB_MIRROR   the same as --connect, --accel, --mirror
  LAB_BOOT_TIMEOUT=SECONDS             how long a machine may take to boot (default 900)
  LAB_STEP_TIMEOUT=SECONDS             how long a checkpoint step may run on a machine (default 1800)
  LAB_CONNECT_TIMEOUT=SECONDS          how long connecting to a libvirt host may take (default 30)
  LAB_POOL_ROOT=DIR                    where new labs keep their disks on the libvirt host
                                       (default /var/lib/libvirt/images)
  LAB_LOG=FILTER                       log filter, e.g. lab=debug (-v is lab=debug, -vv lab=trace)
  XDG_STATE_HOME, XDG_CACHE_HOME       where lab keeps keys and state, and downloads

Exit codes: 0 success, 1 failure, 2 bad usage or bad lab file, 130 interrupted.
";

#[derive(Debug, Parser)]
#[command(
    name = "lab",
    version,
    about = "Identical Linux lab machines on libvirt, with whole-lab checkpoints",
    after_help = EXAMPLES
)]
pub struct Args {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, ClapArgs)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// The lab file (default: ./lab.toml, else the embedded course lab).
    #[arg(long, short = 'f', global = true, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// The libvirt host: a libvirt URI such as qemu:///system or qemu+ssh://user@host/system.
    #[arg(
        long,
        global = true,
        env = "LAB_CONNECT",
        default_value = "qemu:///system",
        value_name = "URI",
        value_parser = parse_uri
    )]
    pub connect: String,
    /// How machines run: KVM where it works (else emulation, with a warning), KVM only, or emulation (TCG).
    #[arg(
        long,
        global = true,
        env = "LAB_ACCEL",
        default_value = "auto",
        value_enum
    )]
    pub accel: Accel,
    /// Use only the download cache; fail listing what is missing.
    #[arg(long, global = true)]
    pub offline: bool,
    /// Fetch every upstream URL from URL/<host>/<path> instead (see `lab mirror export`).
    #[arg(
        long,
        global = true,
        env = "LAB_MIRROR",
        value_name = "URL",
        value_parser = crate::download::parse_mirror
    )]
    pub mirror: Option<String>,
    /// No progress output (warnings and errors still show).
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// More output: -v logs each phase and its duration, -vv everything (LAB_LOG overrides).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// A libvirt URI lab can use: DRIVER[+TRANSPORT]://[HOST]/PATH with driver qemu or test.
pub fn parse_uri(s: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "`{s}` is not a libvirt URI: use qemu:///system, qemu:///session or qemu+ssh://[USER@]HOST[:PORT]/system"
        )
    };
    let u = url::Url::parse(s).map_err(|_| bad())?;
    let (driver, transport) = match u.scheme().split_once('+') {
        Some((d, t)) => (d, Some(t)),
        None => (u.scheme(), None),
    };
    let transport_ok = transport.is_none_or(|t| {
        matches!(
            t,
            "unix" | "ssh" | "libssh" | "libssh2" | "tcp" | "tls" | "ext"
        )
    });
    if !matches!(driver, "qemu" | "test") || !transport_ok || u.path().len() <= 1 {
        return Err(bad());
    }
    if transport.is_some_and(|t| t != "unix") && u.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "`{s}` names no host: use {driver}+{}://HOST/system",
            transport.unwrap_or("")
        ));
    }
    Ok(s.to_string())
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and start the lab's machines; start a stopped lab (idempotent).
    Up {
        /// Keep what a failed first `up` made, for inspection.
        #[arg(long)]
        keep_on_failure: bool,
        /// Then restore this checkpoint (building it from the lab file if needed).
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
    /// Each machine's state and address, and the lab's current checkpoint; exit 1 when the lab is not up.
    Status {
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Log in to a machine, or run a command there (returns its exit code).
    Ssh {
        /// The machine, as the lab file names it.
        machine: String,
        /// A command to run instead of a login shell (after `--`).
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Copy files between this host and a machine: MACHINE:PATH on one side (directories with -r).
    Cp {
        /// The source: a local path or MACHINE:PATH.
        src: String,
        /// The destination: a local path or MACHINE:PATH.
        dst: String,
        /// Copy directories recursively.
        #[arg(short, long)]
        recursive: bool,
    },
    /// Attach to a machine's serial console (leave with Ctrl-]).
    Console {
        /// The machine, as the lab file names it.
        machine: String,
    },
    /// Print an OpenSSH config for the lab's machines (`lab ssh-config > f; ssh -F f worker-1`; VS Code).
    SshConfig,
    /// Save the whole lab (all machines at the same instant) as a named checkpoint.
    Snapshot {
        /// The checkpoint's name: [a-z0-9][a-z0-9._-]{0,62}.
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
        /// A checkpoint or alias (`lab checkpoints` lists them).
        name: String,
        /// Fail instead of building a missing or stale lab-file checkpoint.
        #[arg(long)]
        no_build: bool,
    },
    /// Every checkpoint as a tree: built or not, memory, size, the lesson it ends.
    Checkpoints {
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Manage checkpoints.
    Checkpoint {
        #[command(subcommand)]
        command: CheckpointCommand,
    },
    /// Run a checkpoint's checks against the running lab (default: the current checkpoint's).
    Check {
        /// A lab-file checkpoint or alias.
        checkpoint: Option<String>,
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// What building a lab-file checkpoint does: its chain, steps and checks.
    Plan {
        /// A lab-file checkpoint or alias.
        checkpoint: String,
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Remove every machine, volume, network, key and state file of the lab, and nothing else.
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
    /// Write the download cache as a mirror folder (DIR/<host>/<path>) to serve to a classroom.
    Mirror {
        #[command(subcommand)]
        command: MirrorCommand,
    },
    /// The lab file as lab reads it, after defaults (no libvirt needed).
    Validate {
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Write the course lab into a folder as an editable lab.toml with its step scripts.
    Init {
        /// The folder (default: the current one).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Overwrite files that are there.
        #[arg(long)]
        force: bool,
    },
    /// Write a class kit of the lab: lab file, images, downloads, checkpoints (layers and memory), keys.
    Export {
        /// A new or empty folder; serve it with any static web server.
        dir: PathBuf,
        /// Export these checkpoints (names or aliases; repeat it); default: every built one but `undo`.
        #[arg(long, value_name = "NAME")]
        checkpoint: Vec<String>,
        /// Leave the memory states out: the checkpoints boot when restored, and the kit is smaller.
        #[arg(long)]
        disk_only: bool,
    },
    /// Install a class kit (a folder, or the http(s) URL of one): its lab file into DIR, the lab into libvirt.
    Import {
        /// The kit: a folder, or http(s)://HOST[:PORT]/PATH.
        source: String,
        /// Where the lab file goes (default: ./LAB-NAME).
        dir: Option<PathBuf>,
        /// Destroy this host's lab of the same name first.
        #[arg(long)]
        replace: bool,
    },
    /// Class kits.
    Kit {
        #[command(subcommand)]
        command: KitCommand,
    },
    /// What lab needs on this host, one row each with its fix; exit 1 when something blocks `lab up`.
    Doctor {
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (e.g. `lab completions bash > /etc/bash_completion.d/lab`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum KitCommand {
    /// Check a kit end to end (every file, its sha256, what it decompresses to, its checkpoints) without
    /// installing anything.
    Verify {
        /// The kit: a folder, or http(s)://HOST[:PORT]/PATH.
        source: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum MirrorCommand {
    /// Export every cached file.
    Export {
        /// The folder to write (served as-is by any static web server).
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// List the checkpoints (the same as `lab checkpoints`).
    Ls {
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Remove a checkpoint's files.
    Rm {
        /// The checkpoint.
        name: String,
        /// Also remove the checkpoints built on it (asks first, unless --yes).
        #[arg(long)]
        recursive: bool,
        /// Do not ask.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[test]
    fn libvirt_uris() {
        for ok in [
            "qemu:///system",
            "qemu:///session",
            "test:///default",
            "qemu+ssh://root@[::1]:2222/system?keyfile=/k",
            "qemu+unix:///system",
            "qemu:///system?socket=/x",
        ] {
            assert!(parse_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "bogus",
            "qemu",
            "http://x/y",
            "qemu+ssh:///system",
            "xen:///system",
            "qemu://",
        ] {
            assert!(parse_uri(bad).is_err(), "{bad}");
        }
    }
}
