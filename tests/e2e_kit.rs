//! Class kits end to end: an instructor's lab (two machines) with a checkpoint built by a step and a user snapshot
//! with memory is exported; the instructor's host forgets everything; a student with a new home imports the kit
//! over HTTP on loopback and goes straight to each checkpoint offline: markers, a running process, the checks, no
//! step run, and a second import that transfers no file. Then every kind of bad kit, each refused with one line
//! naming the file and nothing left behind; a full disk during export; and an import onto a `qemu+ssh://` host.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

const CHECKPOINTS: &str = r#"
[[checkpoint]]
name = "built"
description = "a file written by a step"
[[checkpoint.step]]
run = "echo built >> /root/built"
[[checkpoint.check]]
name = "the step ran once"
run = "test \"$(cat /root/built)\" = built"
"#;

/// `lab` as a student on another host: its own home (state, cache), run in `dir`.
fn student(home: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    eprintln!("$ (student) lab {}", args.join(" "));
    let out = std::process::Command::new("timeout")
        .arg("1500")
        .arg(env!("CARGO_BIN_EXE_lab"))
        .args(args)
        .current_dir(dir)
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("LAB_ACCEL", "tcg")
        .env("LAB_CONNECT", "qemu:///system")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run lab");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// An export killed half-way leaves no kit that looks whole (kit.json is written last, so `kit verify` and `import`
/// refuse it); an interrupted one removes what it wrote and exits 130.
fn export_faults(lab: &TestLab, work: &Path) {
    let half = work.join("half");
    let h = half.to_str().unwrap();
    let out = lab.lab_with(&["export", h], &[("LAB_TEST_FAULT", "export:file:kill")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("LAB_TEST_FAULT: kill after export:file"),
        "{err}"
    );
    assert_eq!(out.status.code(), None, "killed");
    assert!(
        half.exists() && !half.join("kit.json").exists(),
        "no manifest"
    );
    assert!(!lab.lab(&["kit", "verify", h]).status.success());
    std::fs::remove_dir_all(&half).unwrap();
    let out = lab.lab_with(&["export", h], &[("LAB_TEST_FAULT", "export:file:int")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("error: interrupted: "), "{err}");
    assert!(!half.exists(), "the partial kit was removed");
}

#[test]
#[ignore = "needs root and libvirtd: tests/run.sh runs it"]
fn a_class_kit_end_to_end() {
    let before = host_objects();
    let lab = test_lab("kit", 19, CHECKPOINTS);
    let work = tempfile::tempdir().unwrap();
    let kit = work.path().join("kit");

    // The instructor: a checkpoint built by a step, then markers, a process and a snapshot with memory.
    lab.ok(&["up"]);
    lab.ok(&["restore", "built"]);
    for (m, _) in &lab.machines {
        lab.ssh(m, "echo K | sudo tee /root/marker >/dev/null");
    }
    lab.ssh(
        "alpha",
        "nohup sleep 100000 >/dev/null 2>&1 & echo $! > /tmp/sleeper",
    );
    lab.ok(&["snapshot", "mine"]);
    let checks = lab.ok(&["check", "built", "--json"]);
    assert!(!checks.contains("\"passed\": false"), "{checks}");
    lab.ok(&["export", kit.to_str().unwrap()]);
    let verified = lab.ok(&["kit", "verify", kit.to_str().unwrap()]);
    assert!(verified.contains("is whole"), "{verified}");
    export_faults(&lab, work.path());
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(kit.join("kit.json")).unwrap()).unwrap();
    let names: Vec<&str> = manifest["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["base", "built", "mine"],
        "every built checkpoint but undo"
    );
    // The instructor's host forgets the lab and the downloads.
    lab.ok(&["destroy", "--yes", "--purge-cache"]);

    // The student: another home, the kit over HTTP.
    let server = Server::start(kit.clone());
    let url = format!("http://127.0.0.1:{}", server.port);
    let home = work.path().join("student");
    std::fs::create_dir_all(&home).unwrap();
    ok(student(&home, &home, &["import", &url], &[]));
    let files = manifest["files"].as_array().unwrap().len();
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        files + 1,
        "every file once, and the manifest"
    );
    let dir = home.join("e2e-kit");
    assert!(
        dir.join("lab.toml").exists(),
        "the lab file goes into ./LAB-NAME"
    );

    // Straight to the built checkpoint, offline: no boot, no step.
    let up = student(&home, &dir, &["up", "--at", "built", "--offline"], &[]);
    let err = String::from_utf8_lossy(&up.stderr).into_owned();
    assert!(up.status.success(), "{err}");
    assert!(!err.contains("step 1 of"), "no step ran: {err}");
    let ssh = |m: &str, cmd: &str| ok(student(&home, &dir, &["ssh", m, "--", cmd], &[]));
    assert_eq!(
        ssh("alpha", "sudo cat /root/built").trim(),
        "built",
        "the step ran once, at the instructor's"
    );
    let checks = ok(student(&home, &dir, &["check", "built", "--json"], &[]));
    assert!(!checks.contains("\"passed\": false"), "{checks}");
    // The snapshot with memory: markers on both machines, the process still running.
    ok(student(&home, &dir, &["restore", "mine", "--offline"], &[]));
    for (m, _) in &lab.machines {
        assert_eq!(ssh(m, "sudo cat /root/marker").trim(), "K", "{m}");
    }
    assert_eq!(
        student(
            &home,
            &dir,
            &["ssh", "alpha", "--", "kill -0 $(cat /tmp/sleeper)"],
            &[]
        )
        .status
        .code(),
        Some(0),
        "the process survives in the kit's memory state"
    );
    // Importing the same kit again transfers no file (the manifest only).
    server.requests.store(0, Ordering::SeqCst);
    ok(student(
        &home,
        &home,
        &[
            "import",
            &url,
            home.join("again").to_str().unwrap(),
            "--replace",
        ],
        &[],
    ));
    assert_eq!(server.requests.load(Ordering::SeqCst), 1, "only kit.json");
    ok(student(
        &home,
        &home.join("again"),
        &["destroy", "--yes"],
        &[],
    ));

    // A kit whose memory states need what this host lacks (saved under KVM, restored under emulation): the
    // checkpoint's disks boot instead, with one warning, and hold everything (they were frozen when it was taken).
    let kvm_kit = work.path().join("kvm-kit");
    copy_dir(&kit, &kvm_kit);
    let p = kvm_kit.join("kit.json");
    let t = std::fs::read_to_string(&p)
        .unwrap()
        .replace("\"accel\": \"tcg\"", "\"accel\": \"kvm\"");
    std::fs::write(&p, t).unwrap();
    let khome = work.path().join("kvm-home");
    std::fs::create_dir_all(&khome).unwrap();
    ok(student(
        &khome,
        &khome,
        &["import", kvm_kit.to_str().unwrap()],
        &[],
    ));
    let kdir = khome.join("e2e-kit");
    let out = student(&khome, &kdir, &["up", "--at", "mine", "--offline"], &[]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.matches("cannot be loaded on this host").count(),
        1,
        "one warning: {err}"
    );
    assert!(err.contains("KVM"), "{err}");
    let marker = ok(student(
        &khome,
        &kdir,
        &["ssh", "beta", "--", "sudo cat /root/marker"],
        &[],
    ));
    assert_eq!(
        marker.trim(),
        "K",
        "the disks alone hold the snapshot's files"
    );
    ok(student(&khome, &kdir, &["destroy", "--yes"], &[]));

    // Bad kits: one line naming the file, a hint, exit 1, nothing registered or half-placed.
    let bad = |name: &str, change: &dyn Fn(&Path), args: &[&str], expect: &str| {
        let copy = work.path().join(format!("bad-{name}"));
        copy_dir(&kit, &copy);
        change(&copy);
        let h = work.path().join(format!("home-{name}"));
        std::fs::create_dir_all(&h).unwrap();
        let objects = host_objects();
        let mut a = vec!["import", copy.to_str().unwrap()];
        a.extend_from_slice(args);
        let out = student(&h, &h, &a, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.contains(expect) && err.contains("hint:"),
            "{name}: {err}"
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert_eq!(host_objects(), objects, "{name}: nothing made in libvirt");
        assert!(!h.join("e2e-kit").exists(), "{name}: no lab folder");
        let state: Vec<String> = files_below(&h.join("state"));
        assert!(
            state.iter().all(|f| !f.contains("state.json")),
            "{name}: nothing registered: {state:?}"
        );
    };
    let a_volume = |k: &Path| -> PathBuf {
        std::fs::read_dir(k.join("volumes"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().contains(".mem-"))
            .unwrap()
    };
    bad(
        "missing",
        &|k| std::fs::remove_file(a_volume(k)).unwrap(),
        &[],
        "volumes/",
    );
    bad(
        "changed",
        &|k| {
            let p = a_volume(k);
            let mut b = std::fs::read(&p).unwrap();
            let i = b.len() / 2;
            b[i] ^= 0x01;
            std::fs::write(&p, b).unwrap();
        },
        &[],
        "sha256",
    );
    bad(
        "truncated",
        &|k| {
            let p = a_volume(k);
            let b = std::fs::read(&p).unwrap();
            std::fs::write(&p, &b[..b.len() / 3]).unwrap();
        },
        &[],
        "volumes/",
    );
    bad(
        "format",
        &|k| {
            let p = k.join("kit.json");
            let t =
                std::fs::read_to_string(&p)
                    .unwrap()
                    .replacen("\"format\": 1", "\"format\": 99", 1);
            std::fs::write(&p, t).unwrap();
        },
        &[],
        "format 99",
    );
    let other = work.path().join("other.toml");
    std::fs::write(
        &other,
        "name = \"another-lab\"\n[network]\nsubnet = \"10.241.99.0/24\"\n[[machine]]\nname = \"m\"\nip = \"10.241.99.5\"\n",
    )
    .unwrap();
    bad(
        "other-lab",
        &|_| {},
        &["--file", other.to_str().unwrap()],
        "another-lab",
    );

    // A full disk during export: the partial kit is removed.
    let small = work.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(mounted.success());
    ok(student(
        &home,
        &dir,
        &["up", "--at", "built", "--offline"],
        &[],
    ));
    let out = student(
        &home,
        &dir,
        &["export", small.join("kit").to_str().unwrap()],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let left = files_below(&small);
    let _ = std::process::Command::new("umount").arg(&small).status();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no space left") && err.contains("hint:"),
        "{err}"
    );
    assert!(left.is_empty(), "the partial kit is removed: {left:?}");
    ok(student(&home, &dir, &["destroy", "--yes"], &[]));

    // An import onto a libvirt host reached over SSH (this machine, through an sshd on loopback).
    let sshd = start_sshd();
    let uri = sshd.uri();
    let remote_home = work.path().join("remote");
    std::fs::create_dir_all(&remote_home).unwrap();
    let env = [("LAB_CONNECT", uri.as_str())];
    ok(student(&remote_home, &remote_home, &["import", &url], &env));
    let rdir = remote_home.join("e2e-kit");
    ok(student(
        &remote_home,
        &rdir,
        &["up", "--at", "mine", "--offline"],
        &env,
    ));
    let marker = ok(student(
        &remote_home,
        &rdir,
        &["ssh", "beta", "--", "sudo cat /root/marker"],
        &env,
    ));
    assert_eq!(marker.trim(), "K");
    ok(student(&remote_home, &rdir, &["destroy", "--yes"], &env));

    drop(lab);
    assert_eq!(host_objects(), before, "the host is left as it was");
}
