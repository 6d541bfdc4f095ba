//! End to end on qemu:///system under TCG: up, ssh between machines by name, status --json, a second up that
//! changes nothing, destroy, and the host left exactly as it was.

mod common;
use common::*;

#[test]
fn up_ssh_status_destroy_leaves_host_as_it_was() {
    if !enabled("up_ssh_status_destroy_leaves_host_as_it_was") {
        return;
    }
    let before = host_objects();
    let lab = test_lab("up", 11, "");
    let state_dir = lab.path("state");
    let state_before = files_below(&state_dir);

    lab.ok(&["up"]);
    let requests_after_first_up = lab
        .server
        .requests
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(requests_after_first_up, 1, "the image is downloaded once");

    // Machines reach each other by name on the lab network, with the course's user and interface names.
    let (code, out) = lab.ssh(
        "alpha",
        "ping -c 1 -W 5 beta && hostname && ip -o -4 addr show eth0 && sudo -n true",
    );
    assert_eq!(code, 0, "ping alpha -> beta failed: {out}");
    assert!(out.contains("alpha"), "{out}");
    assert!(out.contains("10.241.11.10/24"), "{out}");
    let (code, out) = lab.ssh("beta", "getent hosts alpha");
    assert_eq!(code, 0);
    assert!(out.contains("10.241.11.10"), "{out}");

    // `lab ssh` returns the remote exit code.
    assert_eq!(lab.ssh("alpha", "exit 7").0, 7);

    let status: serde_json::Value = serde_json::from_str(&lab.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["name"], "e2e-up");
    let machines = status["machines"].as_array().unwrap();
    assert_eq!(machines.len(), 2);
    for (m, (name, ip)) in machines.iter().zip(&lab.machines) {
        assert_eq!(m["name"], name.as_str());
        assert_eq!(m["ip"], ip.as_str());
        assert_eq!(m["state"], "running");
    }

    // A second `up` changes nothing: same volumes, no new download.
    let objects_up = host_objects();
    let (_, boot_id) = lab.ssh("alpha", "cat /proc/sys/kernel/random/boot_id");
    lab.ok(&["up"]);
    assert_eq!(host_objects(), objects_up);
    assert_eq!(
        lab.ssh("alpha", "cat /proc/sys/kernel/random/boot_id").1,
        boot_id,
        "no reboot"
    );
    assert_eq!(
        lab.server
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "cache hit makes no request"
    );

    lab.ok(&["destroy", "--yes"]);
    assert_eq!(host_objects(), before, "destroy leaves libvirt as it was");
    assert_eq!(
        files_below(&state_dir),
        state_before,
        "destroy leaves lab's folders as they were"
    );
}

#[test]
fn bad_lab_file_is_exit_2_and_creates_nothing() {
    if !enabled("bad_lab_file_is_exit_2_and_creates_nothing") {
        return;
    }
    let before = host_objects();
    let lab = test_lab(
        "bad",
        12,
        "[[machine]]\nname = \"alpha\"\nip = \"10.241.12.99\"\n",
    );
    let out = lab.lab(&["up"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lab.toml:") && err.contains("defined twice"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(host_objects(), before);
}
