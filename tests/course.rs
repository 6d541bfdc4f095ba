//! The embedded course lab: shellcheck-clean idempotent-style scripts, the checkpoint chain and aliases in course
//! order, a checksum source for every download, and each checkpoint's rendered plan (snapshot-tested).

use lab::model::{self, Checksum, StepAction};
use std::process::Command;

fn course() -> model::Lab {
    model::load(None).expect("the embedded course lab is valid")
}

const ORDER: [&str; 10] = [
    "containerd-done",
    "kubelet-done",
    "etcd-done",
    "apiserver-done",
    "scheduler-done",
    "controller-manager-done",
    "tls-bootstrap-done",
    "network-done",
    "kube-proxy-done",
    "coredns-done",
];

#[test]
fn checkpoints_chain_in_course_order_with_module_aliases() {
    let lab = course();
    let chain: Vec<&str> = lab
        .checkpoint_chain("cluster-done")
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(chain, ORDER);
    assert_eq!(lab.checkpoint("worker-done").unwrap().name, "kubelet-done");
    assert_eq!(
        lab.checkpoint("control-plane-done").unwrap().name,
        "controller-manager-done"
    );
    assert_eq!(lab.checkpoint("cluster-done").unwrap().name, "coredns-done");
    for c in &lab.checkpoints {
        assert!(!c.steps.is_empty(), "{} has steps", c.name);
        assert!(!c.checks.is_empty(), "{} has checks", c.name);
    }
}

#[test]
fn every_download_has_a_checksum_source_or_says_why_not() {
    let lab = course();
    let text = model::EMBEDDED_LAB
        .get_file("lab.toml")
        .unwrap()
        .contents_utf8()
        .unwrap();
    let names: Vec<&str> = lab.downloads.iter().map(|d| d.name.as_str()).collect();
    for want in [
        "containerd",
        "runc",
        "nerdctl",
        "cni-plugins",
        "kubelet",
        "crictl",
        "kubeletctl",
        "etcd",
        "kube-apiserver",
        "kube-scheduler",
        "kube-controller-manager",
        "kube-proxy",
        "kubectl",
        "flannel",
        "flannel-cni-plugin",
        "coredns",
    ] {
        assert!(names.contains(&want), "the course lab downloads {want}");
    }
    for d in &lab.downloads {
        match &d.checksum {
            Checksum::Sha256(_) | Checksum::Url(_) => {}
            Checksum::None => {
                // Only where upstream publishes no sum, and the file says so next to the entry.
                let at = text.find(&format!("name = \"{}\"", d.name)).unwrap();
                let entry =
                    &text[text[..at].rfind("[[download]]").unwrap()..at + 400.min(text.len() - at)];
                assert!(
                    entry.contains('#'),
                    "{} has no checksum and no comment saying why",
                    d.name
                );
            }
        }
        assert!(d.url.starts_with("https://"), "{}", d.url);
        assert!(
            d.dest_path.starts_with("/opt/lab/downloads/"),
            "{}",
            d.dest_path
        );
    }
}

#[test]
fn step_scripts_are_shellcheck_clean_and_strict() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("labs/k8s-hard-way/steps");
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 10);
    for s in &scripts {
        let text = std::fs::read_to_string(s).unwrap();
        assert!(text.starts_with("#!/usr/bin/env bash"), "{}", s.display());
        assert!(text.contains("set -euo pipefail"), "{}", s.display());
        for l in text
            .lines()
            .filter(|l| l.contains("curl ") || l.contains("wget "))
        {
            assert!(
                l.contains("127.0.0.1") || l.contains("localhost"),
                "{} fetches from outside the VM: {l}",
                s.display()
            );
        }
    }
    match Command::new("shellcheck")
        .args(["-x", "-P", "SCRIPTDIR"])
        .args(&scripts)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "shellcheck:\n{}",
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(_) if std::env::var("CI").is_err() => {
            eprintln!("skipping shellcheck: not installed (CI installs it)")
        }
        Err(e) => panic!("shellcheck is required in CI: {e}"),
    }
    // Every script the lab file names is one of these files.
    for c in &course().checkpoints {
        for s in &c.steps {
            if let StepAction::Script { path, .. } = &s.action {
                assert!(dir.parent().unwrap().join(path).exists(), "{path}");
            }
        }
    }
}

#[test]
fn rendered_plans() {
    let lab = course();
    for name in ORDER {
        let plan = lab::render::plan::describe(lab.checkpoint(name).unwrap());
        insta::assert_snapshot!(format!("plan_{name}"), plan);
    }
}

/// Opt-in: builds `cluster-done` on the real course lab and runs every checkpoint's checks. Needs internet (the
/// course's images and binaries) and a host that runs three 2 GiB machines.
#[test]
fn course_builds_cluster_done_and_every_check_passes() {
    if std::env::var("LAB_COURSE_E2E").as_deref() != Ok("1") {
        eprintln!("skipping the course end-to-end test: set LAB_COURSE_E2E=1 on a machine with internet access");
        return;
    }
    let lab = env!("CARGO_BIN_EXE_lab");
    let run = |args: &[&str]| {
        let st = Command::new(lab).args(args).status().expect("run lab");
        assert!(st.success(), "lab {} failed", args.join(" "));
    };
    let dir = tempfile::tempdir().unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    run(&["up"]);
    for name in ORDER {
        run(&["restore", name]);
        run(&["check", name]);
    }
    run(&["destroy", "--yes"]);
}
