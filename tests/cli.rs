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
