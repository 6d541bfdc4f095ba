//! Proof by fault injection: `lab` is stopped dead (SIGKILL, as `kill -9` or a power cut) or interrupted (SIGINT,
//! as Ctrl-C; `int2` as Ctrl-C twice) at the end of every phase of `up`, `snapshot`, `restore`, a checkpoint build,
//! `stop`, `start`, `checkpoint rm` and `destroy` (`LAB_TEST_FAULT=COMMAND:PHASE:FAULT`), and inside phases: while
//! the machines write their memory states, and by a real Ctrl-C while a lab-file step runs on two machines (sent
//! to `lab` alone, and to its whole process group as a terminal does). The phases are read from the commands' own
//! `LAB_LOG=lab=debug` output, so a new phase is covered without editing this file. After each fault, the next
//! command repairs what it must, and then:
//! - no machine is paused or has frozen file systems, and every machine runs;
//! - the pool holds exactly the volumes the lab's records and machines use (nothing half-made, nothing lost);
//! - lab's folder holds exactly the lab's files (no temporary file);
//! - every checkpoint that existed before is still recorded; the machines hold the files of the checkpoint the lab
//!   says it stands on; and every third case one checkpoint (in turn) is restored and its files checked (all of
//!   them at the end).
//!
//! A damaged memory state is refused before anything changes.
//!
//! An interrupted command exits 130 and says where the lab stands; a killed one leaves the repair to the next.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Output;

const CHECKPOINTS: &str = r#"
[[checkpoint]]
name = "built"
[[checkpoint.step]]
run = "echo built > /root/built"

[[checkpoint]]
name = "more"
after = "built"
[[checkpoint.step]]
run = "echo more > /root/more"

[[checkpoint]]
name = "slow"
after = "built"
[[checkpoint.step]]
run = "echo half > /root/more; echo step-started; sleep 600"
"#;

/// The phases a command went through, in order, from its `LAB_LOG=lab=debug` output.
fn phases_of(out: &Output, command: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(&out.stderr);
    let mut seen = Vec::new();
    for l in text.lines().filter(|l| l.contains("phase done")) {
        let field = |k: &str| {
            let at = l.find(&format!("{k}=\""))? + k.len() + 2;
            Some(l[at..at + l[at..].find('"')?].to_string())
        };
        if field("command").as_deref() == Some(command) {
            if let Some(p) = field("phase") {
                if !seen.contains(&p) {
                    seen.push(p);
                }
            }
        }
    }
    assert!(!seen.is_empty(), "no phases of {command} in:\n{text}");
    seen
}

fn virsh(args: &[&str]) -> String {
    let out = std::process::Command::new("virsh")
        .args(["-c", "qemu:///system"])
        .args(args)
        .output()
        .expect("virsh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Faults {
    lab: TestLab,
    /// Checkpoint -> (machine -> expected content of `cat /root/marker /root/built /root/more`).
    markers: Vec<(String, String)>,
    /// What the markers hold now (a snapshot or `up` changes no file).
    now: String,
    turn: usize,
    cases: usize,
    started: std::time::Instant,
}

impl Faults {
    /// Removes a checkpoint and what was built on it, if a (killed) command got as far as taking it.
    fn remove_if_built(&self, name: &str) {
        let out = self
            .lab
            .lab(&["checkpoint", "rm", name, "--recursive", "--yes"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success()
                || err.contains(&format!("no checkpoint `{name}`"))
                || err.contains(&format!("checkpoint `{name}` is not built")),
            "checkpoint rm {name}: {err}"
        );
    }

    fn state(&self) -> Value {
        let p = self
            .lab
            .path(&format!("state/lab/labs/{}/state.json", self.lab.name));
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
    }

    fn pool(&self) -> String {
        format!("lab-{}", self.lab.name)
    }

    /// What the marker files hold on every machine, read through the guest agent (a tenth of an SSH login's
    /// time under emulation).
    fn markers_now(&self) -> String {
        let mut all = String::new();
        for (m, _) in &self.lab.machines {
            let dom = format!("lab-{}-{m}", self.lab.name);
            let exec = virsh(&[
                "qemu-agent-command",
                &dom,
                r#"{"execute":"guest-exec","arguments":{"path":"/bin/sh","arg":["-c","for f in marker built more; do cat /root/$f 2>/dev/null || echo -; done"],"capture-output":true}}"#,
            ]);
            let pid = serde_json::from_str::<Value>(&exec).unwrap()["return"]["pid"]
                .as_i64()
                .unwrap_or_else(|| panic!("guest-exec on {dom}: {exec}"));
            let status =
                format!(r#"{{"execute":"guest-exec-status","arguments":{{"pid":{pid}}}}}"#);
            let out = (0..200)
                .find_map(|_| {
                    let v: Value =
                        serde_json::from_str(&virsh(&["qemu-agent-command", &dom, &status]))
                            .ok()?;
                    if v["return"]["exited"] == true {
                        return Some(v["return"]["out-data"].as_str().unwrap_or("").to_string());
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    None
                })
                .unwrap_or_else(|| panic!("{dom}: the marker read did not finish"));
            let text = String::from_utf8(base64(&out)).unwrap();
            all.push_str(&format!(
                "{m}: {} ",
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            ));
        }
        all
    }

    /// Restores `name` and compares its markers with what they were when it was taken.
    fn verify(&mut self, name: &str, want: &str) {
        self.lab.ok(&["restore", name]);
        assert_eq!(self.markers_now(), want, "markers after restoring {name}");
        self.now = want.to_string();
    }

    /// Restores the next checkpoint in turn and checks its markers.
    fn restore_in_turn(&mut self) {
        let (name, want) = self.markers[self.turn % self.markers.len()].clone();
        self.turn += 1;
        self.verify(&name, &want);
    }

    /// Moves the lab off `name` if it stands on it (the checkpoint the machines run on cannot be removed).
    fn leave(&mut self, name: &str) {
        if self.current().as_deref() == Some(name) {
            self.restore_in_turn();
        }
    }

    /// The checkpoint the lab says it stands on.
    fn current(&self) -> Option<String> {
        self.state()["current"].as_str().map(str::to_string)
    }

    /// Puts the lab on `name` unless it already stands there.
    fn be_at(&mut self, name: &str) {
        if self.current().as_deref() != Some(name) {
            let want = self.want(name).expect("markers known");
            self.verify(name, &want);
        }
    }

    fn want(&self, name: &str) -> Option<String> {
        self.markers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, w)| w.clone())
    }

    /// Every invariant that must hold after a fault and the repair that follows it.
    fn check(&mut self, case: &str, before: &BTreeSet<String>) {
        self.cases += 1;
        // The next command of any kind repairs: `status` here.
        let out = self.lab.lab(&["status", "--json"]);
        assert!(
            out.status.success(),
            "{case}: status after the fault failed"
        );
        let status: Value = serde_json::from_slice(&out.stdout).unwrap();
        for m in status["machines"].as_array().unwrap() {
            assert_eq!(m["state"], "running", "{case}: {m}");
            let dom = format!("lab-{}-{}", self.lab.name, m["name"].as_str().unwrap());
            let frozen = virsh(&[
                "qemu-agent-command",
                &dom,
                r#"{"execute":"guest-fsfreeze-status"}"#,
            ]);
            assert!(frozen.contains("thawed"), "{case}: {dom} is {frozen}");
        }
        let state = self.state();
        assert!(state["pending"].is_null(), "{case}: pending left: {state}");
        let records: BTreeSet<String> = state["checkpoints"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        for r in before {
            assert!(
                records.contains(r),
                "{case}: checkpoint {r} lost ({records:?})"
            );
        }
        assert_eq!(
            self.volumes(),
            self.expected_volumes(&state),
            "{case}: the pool holds exactly what the lab uses"
        );
        let files = files_below(&self.lab.path("state"));
        let stray: Vec<&String> = files.iter().filter(|f| f.contains(".tmp")).collect();
        assert!(stray.is_empty(), "{case}: temporary files left: {stray:?}");
        // The machines hold the files of the checkpoint the lab stands on (a new snapshot's: those of before).
        let now = self.markers_now();
        let want = state["current"]
            .as_str()
            .and_then(|c| self.want(c))
            .unwrap_or_else(|| self.now.clone());
        assert_eq!(now, want, "{case}: the machines' files");
        self.now = now;
        // Every third case, one checkpoint restores with its markers, in turn.
        if self.cases.is_multiple_of(3) {
            self.restore_in_turn();
        }
        eprintln!(
            "case {} ({case}) checked at {:.0} s",
            self.cases,
            self.started.elapsed().as_secs_f64()
        );
    }

    fn volumes(&self) -> BTreeSet<String> {
        virsh(&["pool-refresh", &self.pool()]);
        virsh(&["vol-list", &self.pool()])
            .lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }

    /// Seeds, console logs, images in use, every record's files, every machine's disk and the backing chains.
    fn expected_volumes(&self, state: &Value) -> BTreeSet<String> {
        let mut want = BTreeSet::new();
        let mut roots = Vec::new();
        for (m, _) in &self.lab.machines {
            want.insert(format!("{m}.seed.img"));
            want.insert(format!("{m}.console.log"));
            let blk = virsh(&["domblklist", &format!("lab-{}-{m}", self.lab.name)]);
            let vda = blk
                .lines()
                .find(|l| l.trim_start().starts_with("vda"))
                .and_then(|l| l.split_whitespace().nth(1))
                .expect("vda");
            roots.push(vda.rsplit('/').next().unwrap().to_string());
        }
        for r in state["checkpoints"].as_object().unwrap().values() {
            for mr in r["machines"].as_object().unwrap().values() {
                roots.push(mr["layer"].as_str().unwrap().to_string());
                if let Some(mem) = mr["memory"].as_str() {
                    want.insert(mem.to_string());
                }
            }
        }
        for root in roots {
            let mut at = Some(root);
            while let Some(v) = at.take() {
                if !want.insert(v.clone()) {
                    continue;
                }
                let xml = virsh(&["vol-dumpxml", &v, "--pool", &self.pool()]);
                at = xml.split("<backingStore>").nth(1).and_then(|b| {
                    let p = b.split("<path>").nth(1)?.split("</path>").next()?;
                    Some(p.rsplit('/').next()?.to_string())
                });
            }
        }
        want
    }

    /// Runs `lab ARGS` with a fault after COMMAND:PHASE; an interrupted command must exit 130 and say why.
    fn fault(&self, args: &[&str], command: &str, phase: &str, fault: &str) -> Output {
        let spec = format!("{command}:{phase}:{fault}");
        let out = self
            .lab
            .lab_with(args, &[("LAB_TEST_FAULT", spec.as_str())]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("LAB_TEST_FAULT: {fault} after {command}:{phase}")),
            "{spec}: the fault was not reached:\n{err}"
        );
        match fault {
            "kill" => assert_eq!(out.status.code(), None, "{spec}: killed by a signal"),
            // "int" and "int2" (Ctrl-C twice: stop waiting for slow guests too)
            _ => {
                // Ctrl-C at the very end of a command changes nothing: it may finish with 0.
                let code = out.status.code();
                assert!(
                    code == Some(130) || code == Some(0),
                    "{spec}: exit {code:?}:\n{err}"
                );
                if code == Some(130) {
                    assert!(
                        err.contains("error: interrupted: "),
                        "{spec}: says where the lab is:\n{err}"
                    );
                }
            }
        }
        out
    }
}

fn records(f: &Faults) -> BTreeSet<String> {
    f.state()["checkpoints"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| !k.starts_with("undo"))
        .cloned()
        .collect()
}

#[test]
#[ignore = "needs root and libvirtd: tests/run.sh runs it"]
fn every_phase_survives_kill_and_ctrl_c() {
    let before_all = host_objects();
    let lab = test_lab("faults", 16, CHECKPOINTS);
    let debug = [("LAB_LOG", "lab=debug")];

    // A normal run of each command, to learn its phases.
    let up = lab.lab_with(&["up"], &debug);
    assert!(up.status.success());
    let up_phases = phases_of(&up, "up");
    for (m, _) in &lab.machines {
        lab.ssh(m, "echo A | sudo tee /root/marker >/dev/null");
    }
    // A user's snapshot; lab's own (base, lab-file checkpoints) also compact memory first.
    let snap = lab.lab_with(&["snapshot", "a"], &debug);
    assert!(snap.status.success());
    let snapshot_phases = phases_of(&snap, "snapshot");
    let built = lab.lab_with(&["restore", "built"], &debug);
    assert!(built.status.success());
    let build_phases = phases_of(&built, "build");
    let own_snapshot_phases: Vec<String> = phases_of(&built, "snapshot")
        .into_iter()
        .filter(|p| !snapshot_phases.contains(p))
        .collect();
    let reup = lab.lab_with(&["up"], &debug);
    assert!(reup.status.success());
    let reup_phases = phases_of(&reup, "up");
    let restore = lab.lab_with(&["restore", "a"], &debug);
    assert!(restore.status.success());
    let restore_phases = phases_of(&restore, "restore");
    eprintln!("phases: up {up_phases:?} (again: {reup_phases:?}), snapshot {snapshot_phases:?} (lab's own also {own_snapshot_phases:?}), restore {restore_phases:?}, build {build_phases:?}");

    let mut f = Faults {
        markers: Vec::new(),
        now: String::new(),
        turn: 0,
        cases: 0,
        started: std::time::Instant::now(),
        lab,
    };
    for name in ["base", "a", "more", "built"] {
        f.lab.ok(&["restore", name]);
        let m = f.markers_now();
        f.now = m.clone();
        f.markers.push((name.into(), m));
    }
    f.remove_if_built("more");
    let kept = records(&f);

    // snapshot: a new checkpoint each time; a killed one is simply not taken. `saving` is a point inside the phase
    // that writes the memory states: one machine's is written, the other's may still be being written.
    assert!(snapshot_phases.contains(&"saving".to_string()));
    for (i, p) in snapshot_phases.iter().enumerate() {
        for fault in ["kill", "int"] {
            let name = format!("z{i}-{fault}");
            f.fault(&["snapshot", &name], "snapshot", p, fault);
            f.check(&format!("snapshot:{p}:{fault}"), &kept);
            f.leave(&name);
            f.remove_if_built(&name);
        }
    }
    // restore: of `a` (every restore moves every machine to new disks, wherever the lab stands); `int2` also
    // stops waiting for slow guests.
    for p in &restore_phases {
        for fault in ["kill", "int", "int2"] {
            f.fault(&["restore", "a"], "restore", p, fault);
            f.check(&format!("restore:{p}:{fault}"), &kept);
        }
    }
    // A checkpoint build (`more`, from `built`): steps and saving, with the snapshot inside it. A build that was
    // stopped goes back to `built`, so the next case starts there without another restore.
    let build_points: Vec<(&str, &String)> = build_phases
        .iter()
        .map(|p| ("build", p))
        .chain(own_snapshot_phases.iter().map(|p| ("snapshot", p)))
        .collect();
    for (command, p) in build_points {
        for fault in ["kill", "int"] {
            f.be_at("built");
            f.remove_if_built("more");
            f.fault(&["restore", "more"], command, p, fault);
            f.check(&format!("build {command}:{p}:{fault}"), &kept);
        }
    }
    ctrl_c_during_a_step(&mut f, &kept);
    damaged_memory_states_are_refused(&mut f);
    power_and_rm_faults(&mut f, &kept, &debug);
    // `up` of the running lab: every phase runs again (quickly: machines are up, downloads cached).
    for p in &reup_phases {
        for fault in ["kill", "int"] {
            f.fault(&["up"], "up", p, fault);
            f.check(&format!("up:{p}:{fault}"), &kept);
        }
    }
    // At the end, every checkpoint restores with its markers.
    for (name, want) in f.markers.clone() {
        f.verify(&name, &want);
    }
    eprintln!("{} fault cases on a running lab", f.cases);
    f.lab.ok(&["destroy", "--yes"]);

    // A first `up` and `destroy`, on a second lab: after each fault, the next command leaves the host as it was.
    let lab = test_lab("faults2", 17, "");
    let before = host_objects();
    let state_before = files_below(&lab.path("state"));
    let gone = |case: &str| {
        // `status` exits 1 for a lab that is not up; it repairs first either way.
        let out = lab.lab(&["status"]);
        assert!(
            matches!(out.status.code(), Some(0) | Some(1)),
            "{case}: status"
        );
        // A killed first `up` and a killed `destroy` are both finished by removing the lab.
        if !files_below(&lab.path("state")).is_empty() {
            lab.ok(&["destroy", "--yes"]);
        }
        assert_eq!(host_objects(), before, "{case}: libvirt as before");
        assert_eq!(
            files_below(&lab.path("state")),
            state_before,
            "{case}: files as before"
        );
    };
    // The phases of a first `up` until its machines run are cheap (no boot); `ready` and later need a boot each.
    let cheap: Vec<&String> = up_phases
        .iter()
        .take_while(|p| p.as_str() != "ready")
        .collect();
    for p in &cheap {
        for fault in ["kill", "int"] {
            lab_fault(&lab, &["up"], "up", p, fault);
            gone(&format!("first up:{p}:{fault}"));
        }
    }
    lab_fault(&lab, &["up"], "up", "ready", "kill");
    gone("first up:ready:kill");
    // destroy: of a lab whose machines were started (interrupted `up --keep-on-failure` keeps them).
    let destroy_out = {
        lab_fault(&lab, &["up", "--keep-on-failure"], "up", "machines", "int");
        let out = lab.lab_with(&["destroy", "--yes"], &debug);
        assert!(out.status.success());
        out
    };
    for p in phases_of(&destroy_out, "destroy") {
        for fault in ["kill", "int"] {
            lab_fault(&lab, &["up", "--keep-on-failure"], "up", "machines", "int");
            assert!(
                !files_below(&lab.path("state")).is_empty(),
                "a half-made lab to destroy"
            );
            lab_fault(&lab, &["destroy", "--yes"], "destroy", &p, fault);
            gone(&format!("destroy:{p}:{fault}"));
        }
    }
    drop(lab);
    assert_eq!(host_objects(), before_all, "the host is left as it was");
}

/// Ctrl-C while a lab-file step runs on both machines: the build goes back to `built` and exits 130, whether the
/// SIGINT reaches `lab` alone or its whole process group, as a terminal sends it (ssh children included).
fn ctrl_c_during_a_step(f: &mut Faults, kept: &BTreeSet<String>) {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    for group in [false, true] {
        let case = format!(
            "Ctrl-C during a step (to {})",
            if group { "the process group" } else { "lab" }
        );
        f.be_at("built");
        let mut child = f
            .lab
            .command(&["restore", "slow"])
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("run lab");
        let pid = child.id() as i32;
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("{l}");
                let _ = tx.send(l);
            }
        });
        let mut text = String::new();
        let mut started = 0;
        while started < 2 {
            let l = rx
                .recv_timeout(std::time::Duration::from_secs(600))
                .unwrap_or_else(|_| {
                    let _ = child.kill();
                    panic!("{case}: the step did not start on both machines:\n{text}")
                });
            started += usize::from(l.contains("| step-started"));
            text.push_str(&l);
            text.push('\n');
        }
        // SAFETY: sending a signal has no memory-safety preconditions.
        unsafe {
            libc::kill(if group { -pid } else { pid }, libc::SIGINT);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{case}: lab did not end after Ctrl-C");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        text.extend(rx.try_iter().map(|l| l + "\n"));
        assert_eq!(status.code(), Some(130), "{case}:\n{text}");
        assert!(
            text.contains("the lab is back at `built`"),
            "{case}: says where the lab is:\n{text}"
        );
        assert_eq!(f.current().as_deref(), Some("built"), "{case}");
        assert!(f.state()["checkpoints"].get("slow").is_none(), "{case}");
        f.check(&case, kept);
    }
}

/// A damaged memory state (a changed header, a cut file) is refused before anything changes: the lab stays where
/// it was, with nothing pending.
fn damaged_memory_states_are_refused(f: &mut Faults) {
    f.be_at("a");
    f.lab.ok(&["snapshot", "dmg"]);
    let file = |m: &str| {
        let state = f.state();
        let vol = state["checkpoints"]["dmg"]["machines"][m]["memory"]
            .as_str()
            .unwrap()
            .to_string();
        virsh(&["vol-path", &vol, "--pool", &f.pool()])
            .trim()
            .to_string()
    };
    let refused = |f: &Faults, what: &str, why: &str| {
        let before = f.state();
        let out = f.lab.lab(&["restore", "dmg"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(
            err.contains("memory state") && err.contains(why) && err.contains("hint:"),
            "{what}: {err}"
        );
        let after = f.state();
        assert_eq!(
            after["current"], before["current"],
            "{what}: nothing changed"
        );
        assert!(after["pending"].is_null(), "{what}: nothing pending");
        assert_eq!(
            f.markers_now(),
            f.now,
            "{what}: the machines were not touched"
        );
    };
    let alpha = file("alpha");
    let mut bytes = std::fs::read(&alpha).unwrap();
    let header: Vec<u8> = bytes[..16].to_vec();
    bytes[..16].fill(0);
    std::fs::write(&alpha, &bytes).unwrap();
    refused(f, "a changed header", "header");
    bytes[..16].copy_from_slice(&header);
    std::fs::write(&alpha, &bytes).unwrap();
    drop(bytes);
    let beta = file("beta");
    let len = std::fs::metadata(&beta).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&beta)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    refused(f, "a cut file", "bytes");
    f.leave("dmg");
    f.remove_if_built("dmg");
}

/// `stop`, `start` and `checkpoint rm` at the end of each of their phases. A lab left stopped is started again
/// (`up`) before the checks, which want running machines.
fn power_and_rm_faults(f: &mut Faults, kept: &BTreeSet<String>, debug: &[(&str, &str)]) {
    let learn = |f: &Faults, args: &[&str], command: &str| {
        let out = f.lab.lab_with(args, debug);
        assert!(out.status.success(), "{}", args.join(" "));
        phases_of(&out, command)
    };
    let stop_phases = learn(f, &["stop"], "stop");
    let start_phases = learn(f, &["start"], "start");
    f.lab.ok(&["snapshot", "rm-me"]);
    f.leave("rm-me");
    // `undo`, made by moving off it, is built on it: removed with it.
    let rm = ["checkpoint", "rm", "rm-me", "--recursive", "--yes"];
    let rm_phases = learn(f, &rm, "checkpoint-rm");
    for fault in ["kill", "int"] {
        for p in &stop_phases {
            f.fault(&["stop"], "stop", p, fault);
            f.lab.ok(&["up"]);
            f.check(&format!("stop:{p}:{fault}"), kept);
        }
        for p in &start_phases {
            f.lab.ok(&["stop"]);
            f.fault(&["start"], "start", p, fault);
            f.lab.ok(&["up"]);
            f.check(&format!("start:{p}:{fault}"), kept);
        }
        for p in &rm_phases {
            f.lab.ok(&["snapshot", "rm-me"]);
            f.leave("rm-me");
            f.fault(&rm, "checkpoint-rm", p, fault);
            f.check(&format!("checkpoint rm:{p}:{fault}"), kept);
            f.leave("rm-me");
            f.remove_if_built("rm-me");
        }
    }
}

fn lab_fault(lab: &TestLab, args: &[&str], command: &str, phase: &str, fault: &str) {
    let spec = format!("{command}:{phase}:{fault}");
    let out = lab.lab_with(args, &[("LAB_TEST_FAULT", spec.as_str())]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("LAB_TEST_FAULT: {fault} after {command}:{phase}")),
        "{spec}: the fault was not reached:\n{err}"
    );
    if fault == "kill" {
        assert_eq!(out.status.code(), None, "{spec}: killed");
    } else {
        assert!(
            matches!(out.status.code(), Some(130) | Some(0)),
            "{spec}: {err}"
        );
    }
}

/// Standard base64, as the guest agent encodes command output.
fn base64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            _ => 63,
        }
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
