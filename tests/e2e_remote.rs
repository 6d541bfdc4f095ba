//! A lab on a "remote" libvirt host through libvirt's own `qemu+ssh://` URI. The remote host is this machine,
//! reached through an sshd the test starts on the loopback address, so the whole remote path runs for real: the
//! image and seeds uploaded as volume streams over the SSH connection, the console read back the same way, and
//! `lab ssh` reaching the machines through the libvirt host.

mod common;
use common::*;

#[test]
#[ignore = "needs root and libvirtd: tests/run.sh runs it"]
fn lab_on_a_remote_libvirt_host() {
    let before = host_objects();
    let sshd = start_sshd();
    let uri = format!(
        "qemu+ssh://root@127.0.0.1:{}/system?keyfile={}&no_verify=1",
        sshd.port,
        sshd.key.display()
    );
    let lab = test_lab("remote", 15, "");
    let env = [("LAB_CONNECT", uri.as_str())];
    let run = |args: &[&str]| {
        let out = lab.lab_with(args, &env);
        assert!(
            out.status.success(),
            "lab {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    run(&["up"]);
    let status: serde_json::Value = serde_json::from_str(&run(&["status", "--json"])).unwrap();
    assert_eq!(status["uri"], uri.as_str());
    assert_eq!(status["machines"][0]["state"], "running");
    // Through the libvirt host to the lab network.
    let out = run(&["ssh", "alpha", "--", "ping -c 1 -W 5 beta && hostname"]);
    assert!(out.contains("alpha"), "{out}");
    // The lab lives on that URI: a command on another URI refuses it.
    let other = lab.lab(&["snapshot", "x"]);
    assert_ne!(other.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("lives on"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );

    // Checkpoints on the remote host.
    run(&["ssh", "beta", "--", "echo R | sudo tee /root/marker"]);
    run(&["snapshot", "r"]);
    run(&["ssh", "beta", "--", "echo S | sudo tee /root/marker"]);
    run(&["restore", "r"]);
    assert_eq!(
        run(&["ssh", "beta", "--", "sudo cat /root/marker"]).trim(),
        "R"
    );

    run(&["destroy", "--yes"]);
    assert_eq!(
        host_objects(),
        before,
        "destroy over the remote URI leaves the host as it was"
    );
}
