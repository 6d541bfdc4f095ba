//! `lab doctor`: one row per thing `lab` needs on this host, each with its status and, when not ok, its fix.
//!
//! `fail` means `lab up` cannot work until it is fixed (libvirtd unreachable or refusing us, the lab's subnet taken,
//! no ssh client, not enough free space, dnsmasq or qemu-img missing for a local hypervisor, `LAB_ACCEL=kvm` without
//! KVM); `warn` means slower or unusual, or not checkable. When libvirtd cannot be reached, the rows that need it say
//! "skipped: needs libvirtd" as `warn` (the libvirtd row is the one that fails and carries the fix). Rows about this
//! machine (/dev/kvm, qemu-img, dnsmasq, subreaper, libvirt group, local free space) are `ok` with "not checked: the
//! hypervisor is remote (URI)" for a remote URI: nothing here needs fixing for it, and the libvirt rows (version,
//! acceleration, the pool's free space, subnet) are still asked of the remote host.
//!
//! The connection goes through [`libvirt::connect`] like every command's (within `LAB_CONNECT_TIMEOUT`), and the
//! questions to libvirt after it are bounded as long again: a host that accepts and never answers is a `fail` row
//! naming the cause, not a hang. Ctrl-C or SIGTERM ends the wait at once.
//!
//! Free space the lab needs: each machine's memory (the `base` checkpoint that `lab up` takes writes one memory file
//! of at most that size per machine) plus [`OVERLAY_HEADROOM`] per machine for its disk overlays, plus
//! [`IMAGE_ALLOWANCE`] per base image while the lab's pool does not exist yet (the images are uploaded into it).
//! Less than that is `fail`; less than that plus room for one more memory checkpoint is `warn`.

use crate::cancel::{Cancel, Interrupted};
use crate::host::HostError;
use crate::libvirt::{self, ErrorKind, Hypervisor};
use crate::model::{format_size, Lab, NetworkMode};
use crate::orchestrator::up::pool_root;
use crate::render::{names, Accel};
use crate::term::{paint, wrap, BAD, GOOD, HEADER, SO_SO};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Room per machine for its disk overlays to grow (cloud-init, packages, a few checkpoints' writes).
pub const OVERLAY_HEADROOM: u64 = 1 << 30;
/// Room per base image uploaded into a new pool (cloud images are 0.4-0.7 GB).
pub const IMAGE_ALLOWANCE: u64 = 1 << 30;
/// How long a `--version` probe may take before it counts as broken.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// PID 1 names that reap orphans at once.
const REAL_INITS: &[&str] = &[
    "systemd",
    "init",
    "runit",
    "s6-svscan",
    "openrc-init",
    "tini",
    "docker-init",
    "dumb-init",
    "catatonit",
];
/// Parents of libvirtd that reap its stopped QEMU processes at once.
const SUBREAPERS: &[&str] = &[
    "tini",
    "docker-init",
    "dumb-init",
    "catatonit",
    "s6-supervise",
    "s6-svscan",
    "runsv",
    "runsvdir",
    "runit",
    "systemd",
    "init",
];
const SUBREAPER_FIX: &str =
    "restart libvirtd under a subreaper: `sudo setsid tini -s -- libvirtd &` (README, Setup)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    pub name: String,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

fn row(name: &str, status: Status, detail: impl Into<String>, fix: Option<&str>) -> Row {
    Row {
        name: name.into(),
        status,
        detail: detail.into(),
        fix: fix.map(str::to_string),
    }
}

fn ok(name: &str, detail: impl Into<String>) -> Row {
    row(name, Status::Ok, detail, None)
}

/// Checks the host for `lab` (connecting to `uri` itself) and returns one row per need. The connection and the
/// questions to libvirt are bounded by `LAB_CONNECT_TIMEOUT` each (a host that does not answer is a `fail` row);
/// only an interruption (`cancel`) ends it without rows.
pub async fn diagnose(
    lab: &Lab,
    uri: &str,
    accel_setting: &str,
    cancel: &Cancel,
) -> Result<Vec<Row>, Interrupted> {
    let conn = libvirt::connect(uri, cancel).await?;
    let local = uri_is_local(uri);
    let denied = matches!(&conn, Err(e) if e.kind == ErrorKind::PermissionDenied);
    let (lab2, uri2) = (lab.clone(), uri.to_string());
    let here = libvirt::bounded(Duration::MAX, cancel, "check", "this host", move || {
        Ok(host_rows(&lab2, &uri2, local, denied))
    });
    let (lab2, uri2, setting) = (lab.clone(), uri.to_string(), accel_setting.to_string());
    let asked = libvirt::bounded(
        libvirt::connect_timeout(),
        cancel,
        "query",
        uri,
        move || {
            let hv = conn.as_ref().map(|h| h as &dyn Hypervisor);
            Ok(libvirt_rows(hv, &lab2, &uri2, &setting, local))
        },
    );
    let (here, asked) = tokio::join!(here, asked);
    let [kvm, qemu_img, dnsmasq, subreaper, group, ssh] = here?.expect("host rows do not fail");
    let [libvirtd, accel, space, subnet] = match asked? {
        Ok(rows) => rows,
        Err(e) => libvirt_rows(Err(&e), lab, uri, accel_setting, local),
    };
    Ok(vec![
        libvirtd, kvm, accel, qemu_img, dnsmasq, space, subnet, subreaper, group, ssh,
    ])
}

/// The rows that ask libvirt (with `hv`, or skipped without it): libvirtd, accel, free space, subnet.
fn libvirt_rows(
    hv: Result<&dyn Hypervisor, &libvirt::Error>,
    lab: &Lab,
    uri: &str,
    setting: &str,
    local: bool,
) -> [Row; 4] {
    [
        libvirtd_row(hv, uri),
        accel_check(hv, lab, setting),
        free_space_row(hv, lab, uri, local),
        subnet_check(hv, lab),
    ]
}

/// The rows about this machine (not checked for a remote hypervisor, but ssh): /dev/kvm, qemu-img, dnsmasq,
/// subreaper, libvirt group, ssh.
fn host_rows(lab: &Lab, uri: &str, local: bool, denied: bool) -> [Row; 6] {
    let remote = format!("not checked: the hypervisor is remote ({uri})");
    let here = |name: &str, check: &dyn Fn() -> Row| {
        if local {
            check()
        } else {
            ok(name, remote.clone())
        }
    };
    [
        here("/dev/kvm", &kvm_dev_row),
        here("qemu-img", &qemu_img_row),
        here("dnsmasq", &|| dnsmasq_row(lab)),
        here("subreaper", &subreaper_check),
        here("libvirt group", &|| group_check(uri, denied)),
        ssh_row(),
    ]
}

/// The same rule as the hypervisor's own `is_local`, for when libvirtd cannot be reached: no host and no remote
/// transport mean this machine.
fn uri_is_local(uri: &str) -> bool {
    let Ok(u) = url::Url::parse(uri) else {
        return true;
    };
    let transport = u.scheme().split_once('+').map(|(_, t)| t);
    u.host_str().is_none_or(str::is_empty) && transport.is_none_or(|t| t == "unix")
}

fn skipped(name: &str) -> Row {
    row(name, Status::Warn, "skipped: needs libvirtd", None)
}

fn libvirtd_row(hv: Result<&dyn Hypervisor, &libvirt::Error>, uri: &str) -> Row {
    const NAME: &str = "libvirtd";
    match hv {
        Ok(h) => match h.version() {
            Ok(v) => ok(
                NAME,
                format!("libvirt {}, {} at {uri}", v.libvirt, v.hypervisor),
            ),
            Err(e) => row(
                NAME,
                Status::Warn,
                format!("connected to {uri}, but {e}"),
                None,
            ),
        },
        Err(e) if e.kind == ErrorKind::TimedOut => row(
            NAME,
            Status::Fail,
            match e.op {
                "connect to" => format!("cannot connect to {uri}: {}", e.message),
                _ => format!("connected to {uri}, but its answers {}", e.message),
            },
            Some(&libvirt::timeout_hint(uri)),
        ),
        Err(e) => {
            let fix = match e.kind {
                ErrorKind::Unreachable => Some(
                    "start libvirtd (`sudo systemctl start libvirtd`; without systemd \
                     `sudo setsid tini -s -- libvirtd &`), or point --connect/LAB_CONNECT at a \
                     reachable URI"
                        .to_string(),
                ),
                ErrorKind::PermissionDenied => Some(
                    "`sudo usermod -aG libvirt $USER`, then log in again (or run lab as root)"
                        .to_string(),
                ),
                _ => e.hint(),
            };
            Row {
                name: NAME.into(),
                status: Status::Fail,
                detail: format!("cannot connect to {uri}: {}", e.message),
                fix,
            }
        }
    }
}

fn kvm_dev_row() -> Row {
    use std::os::unix::fs::MetadataExt;
    const NAME: &str = "/dev/kvm";
    match std::fs::metadata("/dev/kvm") {
        Ok(m) => {
            let etc_group = std::fs::read_to_string("/etc/group").unwrap_or_default();
            let group = group_by_gid(&etc_group, m.gid())
                .map_or_else(|| m.gid().to_string(), str::to_string);
            kvm_dev_status(m.mode() & 0o7777, &group)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => row(
            NAME,
            Status::Warn,
            "absent: no KVM on this host, machines run under emulation (TCG)",
            Some(
                "enable virtualization (VT-x/AMD-V, or nested virtualization in a VM) and load \
                 kvm_intel or kvm_amd",
            ),
        ),
        Err(e) => row(NAME, Status::Warn, format!("cannot read it: {e}"), None),
    }
}

/// /dev/kvm is fine when QEMU (user libvirt-qemu, in group kvm) may read and write it: group kvm with rw for the
/// group, or rw for everyone. Otherwise libvirt re-probes QEMU on every call (see platform notes): slow, not fatal.
pub fn kvm_dev_status(mode: u32, group: &str) -> Row {
    let detail = format!("group {group}, mode {mode:04o}");
    let usable = mode & 0o006 == 0o006 || (group == "kvm" && mode & 0o060 == 0o060);
    if usable {
        ok("/dev/kvm", detail)
    } else {
        row(
            "/dev/kvm",
            Status::Warn,
            format!(
                "{detail}: QEMU cannot use it and libvirt re-probes QEMU on every call \
                 (10-100x slower)"
            ),
            Some("`sudo chgrp kvm /dev/kvm && sudo chmod 0660 /dev/kvm` (what udev does)"),
        )
    }
}

fn accel_check(hv: Result<&dyn Hypervisor, &libvirt::Error>, lab: &Lab, setting: &str) -> Row {
    match hv {
        Ok(h) => accel_row(
            crate::host::choose_accel(h, lab.arch.qemu(), setting),
            lab.arch.qemu(),
        ),
        Err(_) => skipped("accel"),
    }
}

/// The acceleration row from `host::choose_accel`'s answer.
pub fn accel_row(choice: Result<(Accel, Option<String>), HostError>, arch: &str) -> Row {
    const NAME: &str = "accel";
    match choice {
        Ok((Accel::Kvm, _)) => ok(NAME, format!("KVM: libvirt offers it for {arch}")),
        Ok((Accel::Tcg, None)) => ok(NAME, "TCG (emulation), as LAB_ACCEL=tcg asks"),
        Ok((Accel::Tcg, Some(_))) => row(
            NAME,
            Status::Warn,
            format!(
                "TCG fallback: libvirt offers no KVM for {arch}; machines run several times slower"
            ),
            Some("check /dev/kvm and BIOS virtualization; LAB_ACCEL=tcg to silence"),
        ),
        Err(e @ HostError::NoKvm { .. }) => row(
            NAME,
            Status::Fail,
            e.to_string(),
            Some("check /dev/kvm and BIOS virtualization, or LAB_ACCEL=tcg to emulate"),
        ),
        Err(e @ HostError::BadAccel(_)) => row(
            NAME,
            Status::Fail,
            e.to_string(),
            Some("set LAB_ACCEL to auto, kvm or tcg"),
        ),
        Err(e) => row(
            NAME,
            Status::Warn,
            format!("could not ask libvirt: {e}"),
            None,
        ),
    }
}

fn qemu_img_row() -> Row {
    match probe(&["qemu-img", "/usr/bin/qemu-img"], "--version") {
        Ok(v) => ok("qemu-img", v),
        Err(e) => row(
            "qemu-img",
            Status::Fail,
            format!("{e}; libvirt needs it to make the machines' qcow2 disks"),
            Some("`sudo apt-get install qemu-utils`"),
        ),
    }
}

fn dnsmasq_row(lab: &Lab) -> Row {
    match probe(
        &["dnsmasq", "/usr/sbin/dnsmasq", "/sbin/dnsmasq"],
        "--version",
    ) {
        Ok(v) => ok("dnsmasq", v),
        Err(e) => row(
            "dnsmasq",
            Status::Fail,
            format!(
                "{e}; libvirt needs it for the lab's {} network (DHCP and DNS)",
                match lab.network.mode {
                    NetworkMode::Nat => "nat",
                    NetworkMode::Isolated => "isolated",
                }
            ),
            Some("`sudo apt-get install dnsmasq-base`, then restart libvirtd"),
        ),
    }
}

fn ssh_row() -> Row {
    match probe(&["ssh"], "-V") {
        Ok(v) => ok("ssh", v),
        Err(e) => row(
            "ssh",
            Status::Fail,
            format!("{e}; lab logs in to the machines with the system ssh"),
            Some("`sudo apt-get install openssh-client`"),
        ),
    }
}

/// Runs the first of `programs` that exists with `arg` and returns the first line it prints (stdout, else stderr).
fn probe(programs: &[&str], arg: &str) -> Result<String, String> {
    for p in programs {
        let out = match run_with_timeout(p, arg) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("`{p} {arg}` failed: {e}")),
            Ok(out) => out,
        };
        let first = |b: &[u8]| {
            let text = String::from_utf8_lossy(b);
            let line = text.lines().find(|l| !l.trim().is_empty())?;
            Some(line.split_whitespace().collect::<Vec<_>>().join(" "))
        };
        let line = first(&out.stdout)
            .or_else(|| first(&out.stderr))
            .unwrap_or_default();
        return if out.status.success() {
            Ok(line)
        } else {
            Err(format!("`{p} {arg}` failed ({}): {line}", out.status))
        };
    }
    Err(format!("not found (looked for {})", programs.join(", ")))
}

fn run_with_timeout(program: &str, arg: &str) -> std::io::Result<std::process::Output> {
    let mut child = Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    while child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer in {} s", PROBE_TIMEOUT.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The version text is small: it fits in the pipes, so reading after the exit cannot block.
    child.wait_with_output()
}

/// What a lab takes in its pool (see the module's notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// One memory file per machine for the `base` checkpoint.
    pub memory: u64,
    /// Overlay headroom for the machines, plus the base images when the pool is new.
    pub disks: u64,
}

impl Need {
    pub fn new(memories: &[u64], images: usize, pool_exists: bool) -> Need {
        let images = if pool_exists {
            0
        } else {
            images as u64 * IMAGE_ALLOWANCE
        };
        Need {
            memory: memories.iter().sum(),
            disks: memories.len() as u64 * OVERLAY_HEADROOM + images,
        }
    }

    pub fn for_lab(lab: &Lab, pool_exists: bool) -> Need {
        let memories: Vec<u64> = lab.machines.iter().map(|m| m.memory).collect();
        Need::new(&memories, lab.used_images().len(), pool_exists)
    }

    pub fn total(&self) -> u64 {
        self.memory + self.disks
    }
}

/// The free space row: `free` bytes at `place` against what the lab needs.
pub fn space_row(free: u64, place: &str, need: Need, pool_exists: bool) -> Row {
    const NAME: &str = "free space";
    let detail = format!(
        "{} free in {place}; the lab needs about {} ({} memory for checkpoints, {} disks)",
        format_size(free),
        format_size(need.total()),
        format_size(need.memory),
        format_size(need.disks)
    );
    let fix = if pool_exists {
        "free space there, or remove checkpoints (`lab checkpoint rm NAME`)"
    } else {
        "free space there, or set LAB_POOL_ROOT to a folder on a larger disk"
    };
    if free < need.total() {
        row(NAME, Status::Fail, detail, Some(fix))
    } else if free < need.total() + need.memory {
        row(
            NAME,
            Status::Warn,
            format!("{detail}: little room for more checkpoints"),
            Some(fix),
        )
    } else {
        ok(NAME, detail)
    }
}

fn free_space_row(
    hv: Result<&dyn Hypervisor, &libvirt::Error>,
    lab: &Lab,
    uri: &str,
    local: bool,
) -> Row {
    const NAME: &str = "free space";
    let pool = names::pool(&lab.name);
    let in_pool = match hv {
        Ok(h) => match h
            .pool_path(&pool)
            .and_then(|p| p.map(|p| h.pool_free(&pool).map(|f| (f, p))).transpose())
        {
            Ok(found) => found,
            Err(e) => {
                return row(
                    NAME,
                    Status::Warn,
                    format!("could not ask libvirt: {e}"),
                    None,
                )
            }
        },
        Err(_) if !local => return skipped(NAME),
        Err(_) => None,
    };
    if let Some((free, path)) = in_pool {
        return space_row(
            free,
            &format!("pool {pool} ({path})"),
            Need::for_lab(lab, true),
            true,
        );
    }
    if !local {
        return ok(
            NAME,
            format!("not checked: the hypervisor is remote ({uri}) and the lab has no pool yet"),
        );
    }
    let folder = existing_ancestor(&Path::new(&pool_root(uri)).join(&pool));
    match fs4::available_space(&folder) {
        Ok(free) => space_row(
            free,
            &folder.display().to_string(),
            Need::for_lab(lab, false),
            false,
        ),
        Err(e) => row(
            NAME,
            Status::Warn,
            format!("cannot measure {}: {e}", folder.display()),
            None,
        ),
    }
}

/// The path itself or its nearest parent that exists.
fn existing_ancestor(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

fn subnet_check(hv: Result<&dyn Hypervisor, &libvirt::Error>, lab: &Lab) -> Row {
    match hv {
        Ok(h) => subnet_row(
            &lab.network.subnet.to_string(),
            crate::host::check_subnet(lab, h),
        ),
        Err(_) => skipped("subnet"),
    }
}

/// The subnet row from `host::check_subnet`'s answer.
pub fn subnet_row(subnet: &str, checked: Result<(), HostError>) -> Row {
    const NAME: &str = "subnet";
    match checked {
        Ok(()) => ok(
            NAME,
            format!("{subnet} overlaps no other libvirt network or host route"),
        ),
        Err(e @ (HostError::NetworkClash { .. } | HostError::RouteClash { .. })) => row(
            NAME,
            Status::Fail,
            e.to_string(),
            Some("choose another [network] subnet in the lab file"),
        ),
        Err(e) => row(
            NAME,
            Status::Warn,
            format!("could not check {subnet}: {e}"),
            None,
        ),
    }
}

fn subreaper_check() -> Row {
    let comm = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|s| s.trim().to_string())
    };
    let pid1 = comm("1").unwrap_or_default();
    let daemon = find_daemon().and_then(|(name, pid)| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let parent = comm(&parse_ppid(&stat)?.to_string()).ok()?;
        Some((name, parent))
    });
    subreaper_row(
        &pid1,
        daemon.as_ref().map(|(d, p)| (d.as_str(), p.as_str())),
    )
}

/// The first libvirtd (or virtqemud, for libvirt's per-driver daemons) process: its name and pid.
fn find_daemon() -> Option<(String, u32)> {
    let mut found: Vec<(String, u32)> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let comm = comm.trim();
            matches!(comm, "libvirtd" | "virtqemud").then(|| (comm.to_string(), pid))
        })
        .collect();
    found.sort_by_key(|(name, pid)| (name != "libvirtd", *pid));
    found.into_iter().next()
}

/// The parent pid in /proc/PID/stat (the name in parentheses may hold spaces and parentheses).
pub fn parse_ppid(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Whether stopped QEMU processes are reaped at once: by PID 1 when it is a real init, else by libvirtd's parent
/// when it is a subreaper. `daemon` is libvirtd's name and its parent's name.
pub fn subreaper_row(pid1: &str, daemon: Option<(&str, &str)>) -> Row {
    const NAME: &str = "subreaper";
    if REAL_INITS.contains(&pid1) {
        return ok(NAME, format!("PID 1 is {pid1}"));
    }
    match daemon {
        Some((d, parent)) if SUBREAPERS.contains(&parent) => {
            ok(NAME, format!("{d} runs under {parent} (PID 1 is {pid1})"))
        }
        Some((d, parent)) => row(
            NAME,
            Status::Warn,
            format!(
                "PID 1 ({pid1}) is no init and {d}'s parent is {parent}: each stopped machine \
                 waits 1-4 s to be reaped"
            ),
            Some(SUBREAPER_FIX),
        ),
        None => row(
            NAME,
            Status::Warn,
            format!("PID 1 ({pid1}) is no init and no libvirtd process is visible here"),
            Some(SUBREAPER_FIX),
        ),
    }
}

fn group_check(uri: &str, denied: bool) -> Row {
    // SAFETY: getuid and getegid cannot fail; getgroups writes at most `n` entries into a buffer of that size.
    let (uid, egid) = unsafe { (libc::getuid(), libc::getegid()) };
    let mut gids = vec![egid];
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n > 0 {
        let mut buf = vec![0 as libc::gid_t; n as usize];
        let got = unsafe { libc::getgroups(n, buf.as_mut_ptr()) };
        buf.truncate(got.max(0) as usize);
        gids.extend(buf);
    }
    let user = std::env::var("USER").unwrap_or_else(|_| format!("uid {uid}"));
    let etc_group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    group_row(
        &Membership {
            uid,
            user: &user,
            gids: &gids,
            etc_group: &etc_group,
        },
        uri,
        denied,
    )
}

/// Who runs lab, as far as the libvirt group goes.
pub struct Membership<'a> {
    pub uid: u32,
    pub user: &'a str,
    /// The process's groups (this login's).
    pub gids: &'a [u32],
    /// The text of /etc/group.
    pub etc_group: &'a str,
}

/// Root and session URIs need no group; others need group `libvirt` in this login. Missing it is `fail` when
/// libvirtd refused the connection, else `warn` (polkit or another rule lets the user in).
pub fn group_row(m: &Membership, uri: &str, denied: bool) -> Row {
    const NAME: &str = "libvirt group";
    if m.uid == 0 {
        return ok(NAME, "running as root");
    }
    if uri.contains("/session") {
        return ok(NAME, "not needed for a session URI");
    }
    let status = if denied { Status::Fail } else { Status::Warn };
    let Some((gid, members)) = group_entry(m.etc_group, "libvirt") else {
        return row(
            NAME,
            status,
            "there is no group libvirt on this host",
            Some("install libvirt-daemon-system (it makes the group), or run lab as root"),
        );
    };
    if m.gids.contains(&gid) {
        return ok(NAME, format!("{} is in group libvirt", m.user));
    }
    if members.contains(&m.user) {
        return row(
            NAME,
            status,
            format!(
                "{} was added to group libvirt after this login began",
                m.user
            ),
            Some("log in again (or `newgrp libvirt`)"),
        );
    }
    Row {
        name: NAME.into(),
        status,
        detail: format!("{} is not in group libvirt", m.user),
        fix: Some(format!(
            "`sudo usermod -aG libvirt {}`, then log in again (or run lab as root)",
            m.user
        )),
    }
}

/// A group's gid and members in /etc/group text.
fn group_entry<'a>(etc_group: &'a str, name: &str) -> Option<(u32, Vec<&'a str>)> {
    etc_group.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| {
            let members = f[3]
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            f[2].parse().ok().map(|gid| (gid, members))
        })?
    })
}

/// A group's name by gid in /etc/group text.
fn group_by_gid(etc_group: &str, gid: u32) -> Option<&str> {
    etc_group.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[2].parse() == Ok(gid)).then_some(f[0])
    })
}

const NAME_WIDTH: usize = 14;
const STATUS_WIDTH: usize = 7;
const WIDTH: usize = 80;

/// The rows as a table for 80 columns: NAME, STATUS, DETAIL (wrapped), and the fix on its own line under each row
/// that is not ok.
pub fn table(rows: &[Row]) -> String {
    let indent = NAME_WIDTH + STATUS_WIDTH;
    let pad = " ".repeat(indent);
    let mut out = paint(
        HEADER,
        &format!("{:<NAME_WIDTH$}{:<STATUS_WIDTH$}DETAIL", "NAME", "STATUS"),
    ) + "\n";
    for r in rows {
        let (status, style) = match r.status {
            Status::Ok => ("ok", GOOD),
            Status::Warn => ("warn", SO_SO),
            Status::Fail => ("FAIL", BAD),
        };
        let status = paint(style, &format!("{status:<STATUS_WIDTH$}"));
        for (i, line) in wrap(&r.detail, WIDTH - indent).iter().enumerate() {
            if i == 0 {
                out.push_str(&format!("{:<NAME_WIDTH$}{status}{line}\n", r.name));
            } else {
                out.push_str(&format!("{pad}{line}\n"));
            }
        }
        if let (Some(fix), false) = (&r.fix, r.status == Status::Ok) {
            for (i, line) in wrap(fix, WIDTH - indent - 5).iter().enumerate() {
                let lead = if i == 0 { "fix: " } else { "     " };
                out.push_str(&format!("{pad}{lead}{line}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn dev_kvm_wants_group_kvm_rw_or_world_rw() {
        assert_eq!(kvm_dev_status(0o660, "kvm").status, Status::Ok);
        assert_eq!(kvm_dev_status(0o666, "root").status, Status::Ok);
        let r = kvm_dev_status(0o600, "root");
        assert_eq!(r.status, Status::Warn);
        assert!(r.detail.starts_with("group root, mode 0600"));
        assert!(r.fix.unwrap().contains("chmod 0660"));
        assert_eq!(kvm_dev_status(0o660, "root").status, Status::Warn);
        assert_eq!(kvm_dev_status(0o640, "kvm").status, Status::Warn);
    }

    #[test]
    fn accel_rows() {
        assert_eq!(
            accel_row(Ok((Accel::Kvm, None)), "x86_64").status,
            Status::Ok
        );
        assert_eq!(
            accel_row(Ok((Accel::Tcg, None)), "x86_64").status,
            Status::Ok
        );
        let r = accel_row(Ok((Accel::Tcg, Some("slow".into()))), "x86_64");
        assert_eq!(r.status, Status::Warn);
        assert_eq!(
            r.fix.as_deref(),
            Some("check /dev/kvm and BIOS virtualization; LAB_ACCEL=tcg to silence")
        );
        let no_kvm = HostError::NoKvm {
            uri: "qemu:///system".into(),
            arch: "x86_64".into(),
        };
        assert_eq!(accel_row(Err(no_kvm), "x86_64").status, Status::Fail);
        assert_eq!(
            accel_row(Err(HostError::BadAccel("fast".into())), "x86_64").status,
            Status::Fail
        );
        let broken = HostError::Libvirt(libvirt::Error::other("query", "capabilities", "boom"));
        assert_eq!(accel_row(Err(broken), "x86_64").status, Status::Warn);
    }

    #[test]
    fn space_needed_is_memory_plus_overlays_plus_new_images() {
        let n = Need::new(&[2 * GIB, 2 * GIB, GIB], 1, false);
        assert_eq!(n.memory, 5 * GIB);
        assert_eq!(n.disks, 3 * OVERLAY_HEADROOM + IMAGE_ALLOWANCE);
        assert_eq!(Need::new(&[2 * GIB], 2, true).disks, OVERLAY_HEADROOM);
    }

    #[test]
    fn space_fails_below_the_need_and_warns_without_room_for_a_checkpoint() {
        let need = Need::new(&[2 * GIB], 1, false); // 2 GiB memory + 2 GiB disks
        assert_eq!(space_row(3 * GIB, "/x", need, false).status, Status::Fail);
        let r = space_row(5 * GIB, "/x", need, false);
        assert_eq!(r.status, Status::Warn);
        assert!(r.fix.unwrap().contains("LAB_POOL_ROOT"));
        let r = space_row(6 * GIB, "/x", need, false);
        assert_eq!(r.status, Status::Ok);
        assert_eq!(
            r.detail,
            "6.0 GiB free in /x; the lab needs about 4.0 GiB (2.0 GiB memory for checkpoints, \
             2.0 GiB disks)"
        );
        let r = space_row(GIB, "pool p", need, true);
        assert!(r.fix.unwrap().contains("checkpoint rm"));
    }

    #[test]
    fn nearest_existing_folder() {
        assert_eq!(
            existing_ancestor(Path::new("/nonexistent/a/b")),
            Path::new("/")
        );
        let t = std::env::temp_dir();
        assert_eq!(existing_ancestor(&t.join("lab-doctor-no/such")), t);
    }

    #[test]
    fn subnet_clash_fails() {
        assert_eq!(subnet_row("172.16.0.0/24", Ok(())).status, Status::Ok);
        let clash = HostError::NetworkClash {
            subnet: "172.16.0.0/24".parse().unwrap(),
            network: "other".into(),
            other: "172.16.0.0/16".parse().unwrap(),
        };
        let r = subnet_row("172.16.0.0/24", Err(clash));
        assert_eq!(r.status, Status::Fail);
        assert!(r.detail.contains("overlaps libvirt network `other`"));
        let broken = HostError::Libvirt(libvirt::Error::other("list", "networks", "boom"));
        assert_eq!(
            subnet_row("172.16.0.0/24", Err(broken)).status,
            Status::Warn
        );
    }

    #[test]
    fn subreaper_from_pid1_or_libvirtds_parent() {
        assert_eq!(subreaper_row("systemd", None).status, Status::Ok);
        assert_eq!(
            subreaper_row("process_api", Some(("libvirtd", "tini"))).status,
            Status::Ok
        );
        let r = subreaper_row("process_api", Some(("libvirtd", "bash")));
        assert_eq!(r.status, Status::Warn);
        assert!(r.fix.unwrap().contains("setsid tini -s -- libvirtd"));
        assert_eq!(subreaper_row("sh", None).status, Status::Warn);
    }

    #[test]
    fn parent_pid_from_proc_stat() {
        assert_eq!(
            parse_ppid("6055 (libvirtd) S 6052 6052 6052 0 -1"),
            Some(6052)
        );
        assert_eq!(parse_ppid("42 (a ) b) R 7 42 42"), Some(7));
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn libvirt_group_membership() {
        let etc = "root:x:0:\nkvm:x:104:\nlibvirt:x:108:alice,bob\n";
        let m = |uid, user, gids| Membership {
            uid,
            user,
            gids,
            etc_group: etc,
        };
        let uri = "qemu:///system";
        assert_eq!(
            group_row(&m(0, "root", &[0]), uri, false).status,
            Status::Ok
        );
        assert_eq!(
            group_row(&m(1000, "alice", &[1000, 108]), uri, false).status,
            Status::Ok
        );
        let r = group_row(&m(1000, "alice", &[1000]), uri, false);
        assert_eq!(
            (r.status, r.fix.as_deref()),
            (Status::Warn, Some("log in again (or `newgrp libvirt`)"))
        );
        let r = group_row(&m(1001, "carol", &[1001]), uri, true);
        assert_eq!(r.status, Status::Fail);
        assert!(r.fix.unwrap().contains("usermod -aG libvirt carol"));
        assert_eq!(
            group_row(&m(1001, "carol", &[1001]), "qemu:///session", true).status,
            Status::Ok
        );
        let none = Membership {
            etc_group: "root:x:0:\n",
            ..m(1001, "carol", &[1001])
        };
        assert_eq!(group_row(&none, uri, false).status, Status::Warn);
        assert_eq!(group_by_gid(etc, 104), Some("kvm"));
    }

    #[test]
    fn local_uris() {
        assert!(uri_is_local("qemu:///system"));
        assert!(uri_is_local("qemu:///system?socket=/nonexistent/sock"));
        assert!(uri_is_local("test:///default"));
        assert!(!uri_is_local("qemu+ssh://root@host/system"));
        assert!(!uri_is_local("qemu+tcp://host/system"));
    }

    #[test]
    fn table_fits_80_columns_with_fixes_under_rows_that_are_not_ok() {
        let rows = vec![
            ok("libvirtd", "libvirt 9.0.0, QEMU 7.2.22 at qemu:///system"),
            row(
                "subreaper",
                Status::Warn,
                "PID 1 (process_api) is no init and libvirtd's parent is bash: each stopped \
                 machine waits 1-4 s to be reaped",
                Some(SUBREAPER_FIX),
            ),
            row(
                "ssh",
                Status::Fail,
                "ssh not found",
                Some("`sudo apt-get install openssh-client`"),
            ),
        ];
        let t = crate::term::plain(&table(&rows));
        assert!(t.lines().all(|l| l.chars().count() <= 80), "{t}");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "NAME          STATUS DETAIL");
        assert!(lines[1].starts_with("libvirtd      ok     libvirt 9.0.0"));
        assert!(lines[2].starts_with("subreaper     warn   PID 1"));
        assert!(lines
            .iter()
            .any(|l| l.starts_with(&format!("{}fix: restart libvirtd", " ".repeat(21)))));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("ssh           FAIL   ssh not found")));
        assert_eq!(t.matches("fix:").count(), 2);
    }

    #[test]
    fn the_readme_has_the_section_fixes_point_to() {
        let readme = include_str!("../README.md");
        assert!(SUBREAPER_FIX.contains("(README, Setup)"));
        assert!(
            readme.contains("\n## Setup\n"),
            "README has no Setup section"
        );
        assert!(readme.contains("setsid tini -s -- libvirtd"));
    }

    #[test]
    fn rows_serialize_with_lowercase_status() {
        let v = serde_json::to_value(row("ssh", Status::Fail, "d", None)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name": "ssh", "status": "fail", "detail": "d", "fix": null})
        );
    }
}
