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
