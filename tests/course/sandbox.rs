//! The sandbox the checks run in: files (and stub commands) bound at their paths in a throwaway mount namespace.

use lab::model;
use std::process::Command;

/// Files by absolute path inside a machine. Content starting with `#!` is made executable.
pub(crate) type Files = std::collections::BTreeMap<String, Vec<u8>>;

pub(crate) fn files(list: &[(&str, &[u8])]) -> Files {
    list.iter()
        .map(|(p, c)| (p.to_string(), c.to_vec()))
        .collect()
}

/// `base` with `changes` applied: a path with content is put (replaced or added), one with None removed.
pub(crate) fn with(base: &Files, changes: &[(&str, Option<&[u8]>)]) -> Files {
    let mut out = base.clone();
    for (p, c) in changes {
        match c {
            Some(c) => out.insert(p.to_string(), c.to_vec()),
            None => out.remove(*p),
        };
    }
    out
}

pub(crate) const STEPS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/labs/k8s-hard-way/steps");

/// What step script `script` writes to `dest`: the here-document of its `put DEST MODE <<'TAG'` line.
pub(crate) fn written(script: &str, dest: &str) -> String {
    let text = std::fs::read_to_string(format!("{STEPS}/{script}")).unwrap();
    let mut lines = text.lines();
    let head = lines
        .find(|l| l.trim_start().starts_with(&format!("put {dest} ")))
        .unwrap_or_else(|| panic!("{script} puts no {dest}"));
    let tag = head.rsplit("<<").next().unwrap().trim().trim_matches('\'');
    let body: Vec<&str> = lines.take_while(|l| *l != tag).collect();
    body.join("\n") + "\n"
}

/// The check named `name` of checkpoint `checkpoint` in the course lab.
pub(crate) fn check_text(lab: &model::Lab, checkpoint: &str, name: &str) -> String {
    let c = lab.checkpoint(checkpoint).unwrap();
    let found: Vec<_> = c.checks.iter().filter(|k| k.name == name).collect();
    assert_eq!(found.len(), 1, "{checkpoint} has one check named `{name}`");
    found[0].run.clone()
}

/// Runs a check's `run` text the way lab does (`bash -s`, the text on standard input) in a throwaway mount
/// namespace made by bubblewrap: the root is an empty tmpfs with the host's programs (/usr and its /bin, /lib...
/// links) and a few files of /etc that programs need (the dynamic linker's cache, alternatives, openssl's config)
/// read-only, and `files` bound read-only at their paths. None of the host's own /etc/containerd, /etc/kubernetes,
/// /var, /run, /root or /home is visible, and nothing of the host is written. Ok, or the check's output.
///
/// Commands a check runs can be stubbed: /usr/local is an empty tmpfs in which `files` may put programs (the
/// machines' own /usr/local/bin is first on the check's PATH), and /proc/1/cmdline may be given (what a stub
/// `systemctl show --property=MainPID` names as the PID 1).
pub(crate) fn run_check(run: &str, files: &Files, hostname: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    require_python_yaml();
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = [
        "--die-with-parent",
        "--unshare-all",
        "--share-net",
        "--unshare-uts",
        "--hostname",
        hostname,
        "--tmpfs",
        "/",
        "--ro-bind",
        "/usr",
        "/usr",
        "--tmpfs",
        "/usr/local",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--tmpfs",
        "/run",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        match std::fs::symlink_metadata(top) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(top).unwrap();
                args.extend(["--symlink".into(), target.display().to_string(), top.into()]);
            }
            Ok(m) if m.is_dir() => args.extend(["--ro-bind".into(), top.into(), top.into()]),
            _ => {}
        }
    }
    for etc in [
        "/etc/ld.so.cache",
        "/etc/alternatives",
        "/etc/ssl",
        "/etc/passwd",
        "/etc/group",
    ] {
        args.extend(["--ro-bind-try".into(), etc.into(), etc.into()]);
    }
    for (i, (path, content)) in files.iter().enumerate() {
        let stub = path.starts_with("/usr/local/") || path == "/proc/1/cmdline";
        assert!(
            stub || (path.starts_with('/')
                && !path.starts_with("/usr/")
                && !path.starts_with("/proc/")),
            "{path}"
        );
        let src = dir.path().join(i.to_string());
        std::fs::write(&src, content).unwrap();
        let mode = if content.starts_with(b"#!") {
            0o755
        } else {
            0o644
        };
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(mode)).unwrap();
        args.extend(["--ro-bind".into(), src.display().to_string(), path.clone()]);
    }
    args.extend(["--chdir", "/", "timeout", "60", "bash", "-s"].map(String::from));
    let mut child = match Command::new("bwrap")
        .args(&args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!(
            "bubblewrap (bwrap) runs the file checks in a throwaway mount namespace: {e}; \
             install it (Debian: apt-get install bubblewrap; .ci/run does)"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(run.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("bwrap:"),
        "bubblewrap could not set up the sandbox: {text}"
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(text.trim().to_string())
    }
}

/// A file check and the samples it must pass and fail.
pub(crate) struct FileCheck {
    pub(crate) checkpoint: &'static str,
    pub(crate) name: &'static str,
    pub(crate) hostname: &'static str,
    pub(crate) good: Vec<(&'static str, Files)>,
    pub(crate) broken: Vec<(&'static str, Files)>,
}

pub(crate) fn assert_file_check(lab: &model::Lab, c: &FileCheck) -> Vec<String> {
    let run = check_text(lab, c.checkpoint, c.name);
    let mut failures = Vec::new();
    for (what, f) in &c.good {
        if let Err(out) = run_check(&run, f, c.hostname) {
            failures.push(format!("`{}` fails on {what}:\n{out}", c.name));
        }
    }
    for (what, f) in &c.broken {
        if run_check(&run, f, c.hostname).is_ok() {
            failures.push(format!("`{}` passes on a broken state: {what}", c.name));
        }
    }
    failures
}

/// The checks read YAML and JSON with python3 and its yaml module (cloud-init's dependency on the machines).
fn require_python_yaml() {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let found = *FOUND.get_or_init(|| {
        Command::new("/usr/bin/python3")
            .args(["-c", "import yaml"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(
        found,
        "the course lab's checks read YAML with python3's yaml module, which /usr/bin/python3 lacks here: \
         install it (Debian: apt-get install python3-yaml)"
    );
}

/// A stub command: a python3 script that prints the recorded answer of the first `(pattern, stdout, status)` whose
/// pattern (fnmatch: `*` is any text) matches its arguments joined by spaces; `rest` is python run when none does
/// (with `args`, the argument list), by default a failure that names the arguments.
pub(crate) fn stub(answers: &[(&str, &str, i32)], rest: &str) -> Vec<u8> {
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    let table: Vec<String> = answers
        .iter()
        .map(|(p, out, code)| {
            format!(
                "    (bytes.fromhex('{}').decode(), bytes.fromhex('{}').decode(), {code}),",
                hex(p),
                hex(out)
            )
        })
        .collect();
    format!(
        "#!/usr/bin/python3\nimport fnmatch, os, subprocess, sys\nargs = sys.argv[1:]\nANSWERS = [\n{}\n]\n\
         for pattern, out, code in ANSWERS:\n    if fnmatch.fnmatchcase(' '.join(args), pattern):\n        \
         sys.stdout.write(out)\n        sys.exit(code)\n{}\n",
        table.join("\n"),
        if rest.is_empty() { "sys.exit(f'stub {sys.argv[0]}: no recorded answer for {args}')" } else { rest }
    )
    .into_bytes()
}

/// What the lesson 2 step writes for a standalone kubelet where systemd-resolved does not run: its drop-ins and
/// the static pod's manifest.
pub(crate) fn standalone_kubelet() -> Files {
    let w = |dest: &str| written("02-kubelet.sh", dest).into_bytes();
    let paths = [
        "/var/lib/kubelet/config.d/99-cri.conf",
        "/var/lib/kubelet/config.d/70-authnz.conf",
        "/var/lib/kubelet/config.d/50-static-pods.conf",
        "/etc/kubernetes/manifests/nginx.yaml",
    ];
    paths.iter().map(|p| (p.to_string(), w(p))).collect()
}
