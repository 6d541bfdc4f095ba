//! Snapshot tests of everything lab renders: libvirt XML and cloud-init documents. Pure, no libvirt needed.

use lab::model::{load_str, Source};
use lab::render::cloud_init::{self, SeedKeys};
use lab::render::xml::{self, Accel, MachinePaths};

fn lab() -> lab::model::Lab {
    load_str(
        Source::File("two.toml".into()),
        include_str!("fixtures/two.toml"),
    )
    .expect("valid")
}

fn keys() -> SeedKeys {
    SeedKeys {
        authorized_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeLoginKey lab-demo".into(),
        host_key_private:
            "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----\n".into(),
        host_key_public: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeHostKey root@one".into(),
    }
}

fn paths(m: &str) -> MachinePaths {
    MachinePaths {
        disk: format!("/pool/{m}.active-0.qcow2"),
        seed: format!("/pool/{m}.seed.img"),
        console_log: format!("/pool/{m}.console.log"),
    }
}

#[test]
fn network_xml() {
    insta::assert_snapshot!(xml::network(&lab()));
}

#[test]
fn isolated_network_has_no_forward() {
    let text = include_str!("fixtures/two.toml").replace("mode = \"nat\"", "mode = \"isolated\"");
    let l = load_str(Source::File("two.toml".into()), &text).unwrap();
    assert!(!xml::network(&l).contains("<forward"));
    let docs = cloud_init::documents(&l, &l.machines[0], &keys());
    assert!(
        !docs.network_config.contains("gateway4"),
        "no route out of an isolated lab"
    );
}

#[test]
fn domain_xml_tcg_and_kvm() {
    let l = lab();
    insta::assert_snapshot!(
        "domain_tcg",
        xml::domain(
            &l,
            &l.machines[1],
            &xml::Hardware::new(Accel::Tcg),
            &paths("two")
        )
    );
    // New machines get a named CPU model a memory state can move with, never the host's own CPU.
    let kvm = xml::domain(
        &l,
        &l.machines[1],
        &xml::Hardware::new(Accel::Kvm),
        &paths("two"),
    );
    assert!(kvm.starts_with("<domain type='kvm'>") && !kvm.contains("host-passthrough"));
    assert!(
        kvm.contains("<model fallback='forbid'>Nehalem</model>"),
        "{kvm}"
    );
    // The machines of older labs keep theirs, so their memory states still load.
    let old = xml::domain(
        &l,
        &l.machines[1],
        &xml::Hardware::legacy(Accel::Kvm),
        &paths("two"),
    );
    assert!(old.contains("host-passthrough") && old.contains("<memballoon model='none'/>"));
    // Read back, the hardware is what was rendered.
    let hw = xml::Hardware {
        machine: "pc-q35-7.2".into(),
        ..xml::Hardware::new(Accel::Tcg)
    };
    let back =
        lab::libvirt::xml_read::hardware(&xml::domain(&l, &l.machines[1], &hw, &paths("two")));
    assert_eq!(back, Some(hw));
}

#[test]
fn pool_and_volume_xml() {
    let l = lab();
    insta::assert_snapshot!("pool", xml::pool(&l, "/var/lib/libvirt/images/lab-demo"));
    insta::assert_snapshot!(
        "overlay",
        xml::overlay("one.active-0.qcow2", 20 << 30, "/p/image-x.qcow2", "qcow2")
    );
    insta::assert_snapshot!(
        "snapshot",
        xml::external_snapshot("cp", Some("/p/one.mem"), "/p/one.active-1.qcow2")
    );
}

#[test]
fn cloud_init_documents() {
    let l = lab();
    let docs = cloud_init::documents(&l, &l.machines[1], &keys());
    insta::assert_snapshot!("user_data", docs.user_data);
    insta::assert_snapshot!("meta_data", docs.meta_data);
    insta::assert_snapshot!("network_config", docs.network_config);
}

#[test]
fn seed_image_is_a_cidata_vfat_with_the_documents() {
    let l = lab();
    let docs = cloud_init::documents(&l, &l.machines[0], &keys());
    let img = cloud_init::seed_image(&docs).unwrap();
    let fs = fatfs::FileSystem::new(std::io::Cursor::new(img), fatfs::FsOptions::new()).unwrap();
    assert_eq!(fs.volume_label().trim(), "CIDATA");
    let mut names: Vec<String> = fs
        .root_dir()
        .iter()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["meta-data", "network-config", "user-data"]);
    let mut text = String::new();
    use std::io::Read;
    fs.root_dir()
        .open_file("user-data")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, docs.user_data);
}
