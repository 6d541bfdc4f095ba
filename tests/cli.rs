//! The command line without VMs: exit codes, one-line errors with hints, no backtraces.

use assert_cmd::Command;
use predicates::prelude::*;

fn lab() -> Command {
    let mut c = Command::cargo_bin("lab").unwrap();
    let dir = std::env::temp_dir().join(format!("lab-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    c.current_dir(&dir)
        .env("XDG_STATE_HOME", dir.join("state"))
        .env("XDG_CACHE_HOME", dir.join("cache"));
    c
}

#[test]
fn bad_usage_is_exit_2() {
    lab().arg("frobnicate").assert().code(2);
    lab()
        .args(["snapshot", "Bad Name"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a checkpoint name"));
    lab()
        .args(["plan", "nope"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("hint:"));
}

#[test]
fn unreachable_libvirt_is_one_line_with_a_hint() {
    lab()
        .args([
            "status",
            "--connect",
            "qemu:///system?socket=/nonexistent/libvirt-sock",
        ])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("error: libvirt: connect to")
                .and(predicate::str::contains("hint: is libvirtd running?")),
        )
        .stderr(predicate::str::contains("panicked").not())
        .stderr(predicate::str::contains("backtrace").not());
}

#[test]
fn missing_lab_file_names_it() {
    lab()
        .args(["--file", "/nonexistent/lab.toml", "validate"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "/nonexistent/lab.toml:1:1: cannot read the lab file: no such file",
        ));
}

#[test]
fn validate_shows_the_embedded_course_lab() {
    lab()
        .args(["validate", "--json"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("\"name\": \"k8s-hard-way\"")
                .and(predicate::str::contains("172.16.0.2")),
        );
}

#[test]
fn destroy_without_a_terminal_needs_yes() {
    lab()
        .args(["destroy", "--connect", "test:///default"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--yes"));
}

#[test]
fn doctor_json_lists_rows() {
    let pools = tempfile::tempdir().unwrap();
    let out = lab()
        .args(["doctor", "--json", "--connect", "test:///default"])
        .env("LAB_ACCEL", "tcg")
        .env("LAB_POOL_ROOT", pools.path())
        .output()
        .unwrap();
    // Exit 0 or 1 depending on this host's tools; never a usage error or a crash.
    assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "libvirtd",
            "/dev/kvm",
            "accel",
            "qemu-img",
            "dnsmasq",
            "free space",
            "subnet",
            "subreaper",
            "libvirt group",
            "ssh"
        ]
    );
    for r in &rows {
        assert!(r["detail"].is_string(), "{r}");
        assert!(
            matches!(r["status"].as_str(), Some("ok" | "warn" | "fail")),
            "{r}"
        );
    }
    let row = |n: &str| rows.iter().find(|r| r["name"] == n).unwrap();
    assert_eq!(row("libvirtd")["status"], "ok");
    // LAB_ACCEL=tcg: no warning.
    assert_eq!(row("accel")["status"], "ok");
    // The test driver's only network is 192.168.122.0/24; host routes are this machine's.
    assert!(row("subnet")["detail"]
        .as_str()
        .unwrap()
        .contains("172.16.0.0/24"));
    let free = row("free space");
    assert!(
        free["detail"]
            .as_str()
            .unwrap()
            .contains(&pools.path().display().to_string()),
        "{free}"
    );
    let fails = rows.iter().any(|r| r["status"] == "fail");
    assert_eq!(out.status.code(), Some(if fails { 1 } else { 0 }));
}

#[test]
fn doctor_fails_without_libvirtd() {
    lab()
        .args([
            "doctor",
            "--connect",
            "qemu:///system?socket=/nonexistent/libvirt-sock",
        ])
        .assert()
        .code(1)
        .stdout(
            predicate::str::is_match(r"(?m)^libvirtd +FAIL +cannot connect to")
                .unwrap()
                .and(predicate::str::contains("fix: start libvirtd"))
                .and(
                    predicate::str::is_match(r"(?m)^subnet +warn +skipped: needs libvirtd")
                        .unwrap(),
                ),
        )
        .stderr(predicate::str::contains("panicked").not());
}

#[test]
fn bad_option_values_are_exit_2_before_anything_runs() {
    lab()
        .args(["status"])
        .env("LAB_ACCEL", "bogus")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("invalid value 'bogus'"));
    lab()
        .args(["status", "--connect", "bogus"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a libvirt URI"));
    lab()
        .args(["fetch", "--mirror", "notaurl"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a URL"));
}

#[test]
fn names_are_checked_against_the_lab_file_first_with_did_you_mean() {
    lab()
        .args(["ssh", "worker1", "--connect", "test:///default"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("no machine `worker1`")
                .and(predicate::str::contains("did you mean `worker-1`")),
        );
    lab()
        .args(["restore", "woker-done", "--connect", "test:///default"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "no checkpoint `woker-done` (did you mean `worker-done`?)",
        ));
    lab()
        .args(["check", "nosuch", "--connect", "test:///default"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no checkpoint `nosuch`"));
    // `up --at` with a name nobody knows fails at once: no connection, nothing made (the URI would not answer).
    lab()
        .args([
            "up",
            "--at",
            "nosuch",
            "--connect",
            "qemu:///system?socket=/nonexistent/sock",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no checkpoint `nosuch`"));
    // A lab that is not up: going to a lesson is what `up --at` does.
    lab()
        .args(["restore", "worker-done", "--connect", "test:///default"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("is not up")
                .and(predicate::str::contains("`lab up --at worker-done`")),
        );
}

#[test]
fn a_closed_pipe_ends_output_quietly() {
    let bin = assert_cmd::cargo::cargo_bin("lab");
    for args in [
        "validate",
        "completions bash",
        "--help",
        "plan cluster-done",
    ] {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -o pipefail; {} {args} 2>&1 | head -c 1 >/dev/null",
                bin.display()
            ))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args}: {err}"
        );
        assert!(
            matches!(out.status.code(), Some(0) | Some(1) | Some(141)),
            "{args}: {:?}",
            out.status
        );
    }
}

/// `lab checkpoints` of the course lab, at `columns` columns ($COLUMNS), as lines.
fn course_checkpoints(columns: &str) -> Vec<String> {
    let out = lab()
        .env("COLUMNS", columns)
        .args(["checkpoints", "--connect", "test:///default"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn checkpoints_of_the_course_at_80_columns_keep_every_name_whole() {
    let lines = course_checkpoints("80");
    let text = lines.join("\n");
    for l in &lines {
        assert!(
            l.chars().count() <= 80,
            "{} columns: {l}",
            l.chars().count()
        );
    }
    // The eleven checkpoints are one chain: flat, each name (and its aliases) whole at the start of a line.
    for name in [
        "base",
        "containerd-done",
        "kubelet-done (worker-done)",
        "etcd-done",
        "apiserver-done",
        "scheduler-done",
        "controller-manager-done (control-plane-done)",
        "tls-bootstrap-done",
        "network-done",
        "kube-proxy-done",
        "coredns-done (cluster-done)",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(name)),
            "`{name}`:\n{text}"
        );
    }
    assert!(!text.contains('…'), "nothing cut: {text}");
    assert!(text.contains("Lesson 1 done"), "the descriptions: {text}");
    assert!(!text.contains("\u{1b}["), "plain in a pipe: {text}");
}

#[test]
fn checkpoints_follow_columns() {
    let wide = course_checkpoints("120");
    assert!(wide.iter().all(|l| l.chars().count() <= 120));
    assert!(
        wide.iter()
            .any(|l| l.starts_with("controller-manager-done (control-plane-done) not built")),
        "{wide:#?}"
    );
    let narrow = course_checkpoints("60");
    assert!(narrow
        .iter()
        .any(|l| l == "controller-manager-done (control-plane-done)"));
    assert!(
        narrow.iter().all(|l| l.chars().count() <= 60),
        "{narrow:#?}"
    );
}

#[test]
fn conveniences() {
    lab()
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(predicate::str::contains("_lab"));
    lab().args(["--help"]).assert().success().stdout(
        predicate::str::contains("Examples:").and(predicate::str::contains("LAB_BOOT_TIMEOUT")),
    );
    let out = lab()
        .args(["plan", "worker-done", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["containerd-done", "kubelet-done"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("course");
    lab().args(["init"]).arg(&d).assert().success();
    assert!(d.join("lab.toml").exists() && d.join("steps/01-containerd.sh").exists());
    lab()
        .arg("--file")
        .arg(d.join("lab.toml"))
        .arg("validate")
        .assert()
        .success()
        .stdout(predicate::str::contains("k8s-hard-way"));
    lab()
        .args(["init"])
        .arg(&d)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--force"));
    lab()
        .args(["ssh-config", "--connect", "test:///default"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is not up"));
}

#[test]
fn a_remote_host_that_does_not_answer_fails_within_the_time_out() {
    // Something that takes the connection and never speaks, as a hung host would (loopback only).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    lab()
        .args([
            "status",
            "--connect",
            &format!("qemu+ssh://root@127.0.0.1:{port}/system?no_verify=1"),
        ])
        .env("LAB_CONNECT_TIMEOUT", "3")
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("connecting to root@127.0.0.1")
                .and(predicate::str::contains("did not finish within 3 s"))
                .and(predicate::str::contains("hint:")),
        );
}

/// Colour, as cargo does: in a pipe only with CLICOLOR_FORCE, never with NO_COLOR; on a terminal unless NO_COLOR or
/// CLICOLOR=0. An error with a hint (stderr) and `lab checkpoints` (stdout) need no libvirtd.
mod colour {
    use super::lab;

    const ESC: &str = "\u{1b}[";

    /// stdout of `lab checkpoints` and stderr of `lab plan nope` (an error with a hint), in a pipe.
    fn piped(env: &[(&str, &str)]) -> (String, String) {
        let run = |args: &[&str]| {
            let mut c = lab();
            for v in ["NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE"] {
                c.env_remove(v);
            }
            c.envs(env.iter().copied()).args(args).output().unwrap()
        };
        let listed = run(&["checkpoints", "--connect", "test:///default"]);
        let failed = run(&["plan", "nope"]);
        assert_eq!(failed.status.code(), Some(2));
        (
            String::from_utf8(listed.stdout).unwrap(),
            String::from_utf8(failed.stderr).unwrap(),
        )
    }

    #[test]
    fn plain_in_a_pipe() {
        let (out, err) = piped(&[]);
        assert!(!out.contains(ESC) && !err.contains(ESC), "{out}{err}");
        assert!(
            err.starts_with("error: ") && err.contains("hint: "),
            "{err}"
        );
    }

    #[test]
    fn clicolor_force_colours_a_pipe() {
        let (out, err) = piped(&[("CLICOLOR_FORCE", "1")]);
        assert!(out.contains(ESC), "{out}");
        assert!(
            err.contains("\u{1b}[1m\u{1b}[31merror"),
            "red error: {err:?}"
        );
        assert!(err.contains("hint\u{1b}[0m: "), "{err:?}");
    }

    #[test]
    fn no_color_wins() {
        let (out, err) = piped(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]);
        assert!(!out.contains(ESC) && !err.contains(ESC), "{out}{err}");
    }

    #[test]
    fn the_tracing_log_follows_the_same_choice() {
        let log = |env: &[(&str, &str)]| {
            let mut c = lab();
            c.env_remove("NO_COLOR").env_remove("CLICOLOR_FORCE");
            let o = c
                .envs(env.iter().copied())
                .args(["-v", "destroy", "--yes", "--connect", "test:///default"])
                .output()
                .unwrap();
            String::from_utf8(o.stderr).unwrap()
        };
        let plain = log(&[]);
        assert!(plain.contains("DEBUG") && !plain.contains(ESC), "{plain}");
        assert!(log(&[("CLICOLOR_FORCE", "1")]).contains(ESC));
        assert!(!log(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]).contains(ESC));
    }

    /// `lab ARGS` on a terminal (util-linux `script` gives it one): what the terminal shows.
    fn on_a_terminal(env: &[(&str, &str)], args: &str) -> Option<String> {
        let script = ["/usr/bin/script", "/bin/script"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let bin = assert_cmd::cargo::cargo_bin("lab");
        let o = std::process::Command::new(script)
            .current_dir(std::env::temp_dir())
            .env("TERM", "xterm")
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR_FORCE")
            .env_remove("CLICOLOR")
            .envs(env.iter().copied())
            .args(["-qec", &format!("{} {args}", bin.display()), "/dev/null"])
            .output()
            .unwrap();
        Some(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    #[test]
    fn a_terminal_gets_colour_unless_no_color_or_clicolor_0() {
        let Some(shown) = on_a_terminal(&[], "plan nope") else {
            return; // no `script` here
        };
        assert!(shown.contains(ESC), "{shown:?}");
        for env in [("NO_COLOR", "1"), ("CLICOLOR", "0")] {
            let shown = on_a_terminal(&[env], "plan nope").unwrap();
            assert!(shown.contains("error: "), "{shown:?}");
            assert!(!shown.contains(ESC), "{env:?}: {shown:?}");
        }
    }
}
