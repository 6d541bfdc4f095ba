//! End to end on qemu:///system under TCG, two machines: lab-wide snapshots with memory and disk-only, restores,
//! processes surviving a memory restore, guest clocks after a restore, a two-step chain built from the lab file
//! (with an alias, a copy step and checks), stale detection after editing a step, undo, and removal rules.
//! Interruptions and `kill -9` at every phase are tested in e2e_faults.rs.

mod common;
use common::*;
use serde_json::Value;

const CHECKPOINTS: &str = r#"
[[checkpoint]]
name = "one"
description = "a file on every machine, copied from alpha to beta"
[[checkpoint.step]]
run = "echo one > /root/one"
[[checkpoint.step]]
machines = ["beta"]
copy = [{ from = "alpha:/root/one", to = "/root/from-alpha/one", mode = "0600" }]
[[checkpoint.check]]
name = "one is there"
run = "test -f /root/one"

[[checkpoint]]
name = "two"
aliases = ["module-done"]
[[checkpoint.step]]
machines = ["alpha"]
script = "steps/two.sh"
[[checkpoint.check]]
name = "two is there"
machines = ["alpha"]
run = "grep -q two /root/two"
"#;

fn both(lab: &TestLab, cmd: &str) -> Vec<String> {
    lab.machines
        .iter()
        .map(|(m, _)| {
            let (code, out) = lab.ssh(m, cmd);
            assert_eq!(code, 0, "{m}: `{cmd}` failed: {out}");
            out.trim().to_string()
        })
        .collect()
}

fn checkpoints(lab: &TestLab) -> Vec<Value> {
    let v: Value = serde_json::from_str(&lab.ok(&["checkpoints", "--json"])).unwrap();
    v.as_array().unwrap().clone()
}

fn find<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no checkpoint {name} in {list:?}"))
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
#[ignore = "needs root and libvirtd: tests/run.sh runs it"]
fn checkpoints_end_to_end() {
    let before = host_objects();
    let lab = test_lab("ckpt", 13, CHECKPOINTS);
    std::fs::create_dir_all(lab.path("steps")).unwrap();
    std::fs::write(
        lab.path("steps/two.sh"),
        "#!/usr/bin/env bash\nset -euo pipefail\necho two > /root/two\n",
    )
    .unwrap();

    lab.ok(&["up"]);
    let list = checkpoints(&lab);
    assert_eq!(find(&list, "base")["built"], true);
    assert_eq!(find(&list, "base")["current"], true);
    assert_eq!(find(&list, "one")["built"], false);

    // A: markers and a running process.
    both(&lab, "echo A | sudo tee /root/marker");
    lab.ssh(
        "alpha",
        "nohup sleep 100000 >/dev/null 2>&1 & echo $! > /tmp/sleeper",
    );
    lab.ok(&["snapshot", "a"]);
    assert_ne!(
        lab.lab(&["snapshot", "a"]).status.code(),
        Some(0),
        "an existing name needs --force"
    );

    // B: changed markers.
    both(&lab, "echo B | sudo tee /root/marker");
    lab.ok(&["snapshot", "b"]);

    // Restore A: A's markers on both machines, the process still running, the clock set to now.
    lab.ok(&["restore", "a"]);
    assert_eq!(both(&lab, "sudo cat /root/marker"), ["A", "A"]);
    assert_eq!(
        lab.ssh("alpha", "kill -0 $(cat /tmp/sleeper)").0,
        0,
        "a process survives a memory restore"
    );
    let t0 = now();
    let (_, guest) = lab.ssh("alpha", "date +%s.%N");
    let t1 = now();
    let g: f64 = guest.trim().parse().unwrap();
    assert!(
        g >= t0 - 2.0 && g <= t1 + 2.0,
        "guest clock {g} not within 2 s of the host ({t0}..{t1})"
    );
    let status: Value = serde_json::from_str(&lab.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["checkpoint"], "a");

    // Restore B.
    lab.ok(&["restore", "b"]);
    assert_eq!(both(&lab, "sudo cat /root/marker"), ["B", "B"]);

    // A disk-only checkpoint boots.
    let (_, boot_before) = lab.ssh("alpha", "cat /proc/sys/kernel/random/boot_id");
    lab.ok(&["snapshot", "c", "--disk-only"]);
    both(&lab, "echo C2 | sudo tee /root/marker");
    lab.ok(&["restore", "c"]);
    assert_eq!(both(&lab, "sudo cat /root/marker"), ["B", "B"]);
    // Taken at once after memory restores: the files the guests still had only in memory are on the disks too
    // (the file systems are frozen for the snapshot), the SSH host keys written at first boot among them.
    assert_eq!(
        both(
            &lab,
            "sudo find /etc/ssh -name 'ssh_host_*' -size 0 | wc -l"
        ),
        ["0", "0"]
    );
    assert_ne!(
        lab.ssh("alpha", "cat /proc/sys/kernel/random/boot_id").1,
        boot_before,
        "disk-only restore boots"
    );
    assert_eq!(find(&checkpoints(&lab), "c")["memory"], false);

    // `stop --shutdown` powers the guests off cleanly; a restore works on a stopped lab, and the state the last
    // restore replaced is kept as `undo`.
    lab.ok(&["stop", "--shutdown"]);
    let status: Value = serde_json::from_str(&lab.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["state"], "stopped", "{status}");
    assert_eq!(status["machines"][1]["state"], "shut-off", "{status}");
    lab.ok(&["restore", "undo"]);
    assert_eq!(both(&lab, "sudo cat /root/marker"), ["C2", "C2"]);

    // `stop` frees the machines' memory (no QEMU process) and loses nothing; `start` brings the lab back at one
    // instant with its clocks set.
    lab.ssh(
        "alpha",
        "nohup sleep 100000 >/dev/null 2>&1 & echo $! > /tmp/sleeper2",
    );
    both(&lab, "echo S | sudo tee /root/stopmark");
    let stopped = now();
    lab.ok(&["stop"]);
    let status: Value = serde_json::from_str(&lab.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["state"], "stopped", "{status}");
    assert_eq!(status["machines"][0]["state"], "saved", "{status}");
    for (m, _) in &lab.machines {
        let qemu = std::process::Command::new("pgrep")
            .args(["-f", &format!("guest=lab-{}-{m},", lab.name)])
            .output()
            .unwrap();
        assert!(
            !qemu.status.success(),
            "{m}'s QEMU process is gone while stopped"
        );
    }
    // Stopped longer than the clock check's 2 s margin, so that a clock left where it stopped fails it.
    while now() < stopped + 4.0 {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    lab.ok(&["start"]);
    assert_eq!(both(&lab, "sudo cat /root/stopmark"), ["S", "S"]);
    assert_eq!(
        lab.ssh("alpha", "kill -0 $(cat /tmp/sleeper2)").0,
        0,
        "a process survives stop and start"
    );
    let t0 = now();
    let (_, guest) = lab.ssh("alpha", "date +%s.%N");
    let t1 = now();
    let g: f64 = guest.trim().parse().unwrap();
    assert!(
        g >= t0 - 2.0 && g <= t1 + 2.0,
        "guest clock {g} not within 2 s of the host ({t0}..{t1}) after start"
    );
    // `up` starts a stopped lab too.
    lab.ok(&["stop"]);
    lab.ok(&["up"]);
    assert_eq!(
        lab.ssh("alpha", "kill -0 $(cat /tmp/sleeper2)").0,
        0,
        "up starts the saved machines"
    );

    // A two-step chain built from the lab file, through an alias, from base.
    lab.ok(&["restore", "module-done"]);
    assert_eq!(lab.ssh("alpha", "sudo cat /root/two").1.trim(), "two");
    assert_eq!(
        lab.ssh(
            "beta",
            "sudo cat /root/from-alpha/one && sudo stat -c %a /root/from-alpha/one"
        )
        .1,
        "one\n600\n"
    );
    assert_ne!(
        lab.ssh("alpha", "sudo test -f /root/marker").0,
        0,
        "built from base, not from the previous state"
    );
    let list = checkpoints(&lab);
    for n in ["one", "two"] {
        assert_eq!(find(&list, n)["built"], true, "{n}");
        assert_eq!(find(&list, n)["stale"], false, "{n}");
    }
    assert_eq!(find(&list, "two")["parent"], "one");
    assert_eq!(find(&list, "two")["current"], true);
    let checks: Value = serde_json::from_str(&lab.ok(&["check", "--json"])).unwrap();
    assert!(
        checks
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["passed"] == true),
        "{checks}"
    );
    let checks: Value = serde_json::from_str(&lab.ok(&["check", "one", "--json"])).unwrap();
    assert_eq!(
        checks.as_array().unwrap().len(),
        2,
        "one check on each of two machines"
    );

    // Editing a step makes its checkpoint stale; restore rebuilds it from its fresh parent.
    std::fs::write(
        lab.path("steps/two.sh"),
        "#!/usr/bin/env bash\nset -euo pipefail\necho two-edited > /root/two\n",
    )
    .unwrap();
    let list = checkpoints(&lab);
    assert_eq!(find(&list, "two")["stale"], true);
    assert_eq!(find(&list, "one")["stale"], false);
    assert_ne!(
        lab.lab(&["restore", "two", "--no-build"]).status.code(),
        Some(0)
    );
    lab.ok(&["restore", "two"]);
    assert_eq!(
        lab.ssh("alpha", "sudo cat /root/two").1.trim(),
        "two-edited"
    );
    assert_eq!(find(&checkpoints(&lab), "two")["stale"], false);

    // A failing step stops with its exit code and names the machine.
    std::fs::write(lab.path("steps/two.sh"), "#!/usr/bin/env bash\nexit 3\n").unwrap();
    let out = lab.lab(&["restore", "two"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("alpha") && err.contains("exit code 3"),
        "{err}"
    );

    // Removing a checkpoint with children is refused; --recursive removes the subtree.
    assert_ne!(
        lab.lab(&["checkpoint", "rm", "a"]).status.code(),
        Some(0),
        "a has child b"
    );
    lab.ok(&["restore", "base"]);
    // Without a terminal to confirm on, --recursive asks for --yes and removes nothing.
    let out = lab.lab(&["checkpoint", "rm", "one", "--recursive"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pass --yes"),
        "{out:?}"
    );
    assert_eq!(find(&checkpoints(&lab), "one")["built"], true);
    lab.ok(&["checkpoint", "rm", "one", "--recursive", "--yes"]);
    let list = checkpoints(&lab);
    assert_eq!(find(&list, "one")["built"], false);
    assert_eq!(find(&list, "two")["built"], false);

    lab.ok(&["destroy", "--yes"]);
    assert_eq!(
        host_objects(),
        before,
        "destroy removes every checkpoint file"
    );
}
