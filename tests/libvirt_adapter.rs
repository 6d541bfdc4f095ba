//! The libvirt adapter on libvirt's in-process test driver (`test:///default`): no libvirtd, no VMs, real API.
//! The last test runs the volume work the test driver lacks (upload, download, physical sizes, backing files, files
//! libvirt did not create) on `qemu:///system`, with the end-to-end tests (ignored unless asked for: tests/run.sh runs them).

use lab::libvirt::{DomainState, ErrorKind, Hypervisor, VirtHost};
use lab::model::{load_str, Source};
use lab::render::{names, xml};

fn lab() -> lab::model::Lab {
    load_str(
        Source::File("two.toml".into()),
        include_str!("fixtures/two.toml"),
    )
    .unwrap()
}

/// The fixture lab under another name (and so other libvirt names, UUIDs and a subnet of its own), so that tests
/// running in parallel on the one in-process test driver do not meet.
fn lab_named(name: &str, third_octet: u8) -> lab::model::Lab {
    let text = include_str!("fixtures/two.toml")
        .replace("name = \"demo\"", &format!("name = \"{name}\""))
        .replace("10.50.0", &format!("10.50.{third_octet}"));
    load_str(Source::File(format!("{name}.toml").into()), &text).unwrap()
}

fn paths() -> xml::MachinePaths {
    xml::MachinePaths {
        disk: "/d.qcow2".into(),
        seed: "/s.img".into(),
        console_log: "/c.log".into(),
    }
}

#[test]
fn networks_domains_and_pools_round_trip() {
    let hv = VirtHost::connect("test:///default").unwrap();
    let l = lab();
    assert!(hv.is_local());

    // Network: defined and started once, its subnet visible to the clash check, removed.
    let net = names::network(&l.name);
    hv.ensure_network(&net, &xml::network(&l)).unwrap();
    hv.ensure_network(&net, &xml::network(&l)).unwrap();
    let nets = hv.networks().unwrap();
    let mine = nets.iter().find(|n| n.name == net).unwrap();
    assert!(mine.active);
    assert_eq!(mine.subnets, vec!["10.50.0.0/24".parse().unwrap()]);
    lab::host::check_subnet(&l, &hv).unwrap();

    // Pool.
    let pool = names::pool(&l.name);
    let path = hv
        .ensure_pool(&pool, &xml::pool(&l, "/lab-test-pool"))
        .unwrap();
    assert_eq!(path, "/lab-test-pool");
    assert_eq!(
        hv.pool_path(&pool).unwrap().as_deref(),
        Some("/lab-test-pool")
    );
    assert!(hv.pool_free(&pool).unwrap() > 0);

    // Domain: defined with lab's stamp, started, paused, resumed, removed.
    let m = &l.machines[0];
    let dom = names::domain(&l.name, &m.name);
    hv.define_domain(&xml::domain(
        &l,
        m,
        &xml::Hardware::new(xml::Accel::Tcg),
        &paths(),
    ))
    .unwrap();
    assert_eq!(hv.domain_state(&dom).unwrap(), Some(DomainState::Shutoff));
    let info = hv.domain_info(&dom).unwrap().expect("defined");
    assert_eq!(info.name, dom);
    assert_eq!(
        info.lab.as_deref(),
        Some("demo"),
        "the lab's stamp survives libvirt"
    );
    assert_eq!(info.machine.as_deref(), Some("one"));
    assert_eq!(info.disk.as_deref(), Some("/d.qcow2"));
    assert!(!info.kvm);
    hv.start_domain(&dom).unwrap();
    hv.suspend_domain(&dom).unwrap();
    assert_eq!(hv.domain_state(&dom).unwrap(), Some(DomainState::Paused));
    hv.resume_domain(&dom).unwrap();
    assert_eq!(hv.domain_state(&dom).unwrap(), Some(DomainState::Running));
    assert_eq!(
        hv.domain_info(&dom).unwrap().unwrap().disk.as_deref(),
        Some("/d.qcow2"),
        "a running domain's definition"
    );
    assert_eq!(hv.domains("lab-demo-").unwrap(), vec![dom.clone()]);
    assert!(hv.remove_domain(&dom).unwrap());
    assert!(!hv.remove_domain(&dom).unwrap(), "removing twice is fine");
    assert_eq!(hv.domain_state(&dom).unwrap(), None);
    assert_eq!(hv.domain_info(&dom).unwrap(), None);

    assert!(hv.remove_network(&net).unwrap());
    assert!(!hv.remove_network(&net).unwrap());
}

#[test]
fn a_clashing_network_is_named() {
    let hv = VirtHost::connect("test:///default").unwrap();
    let l = load_str(
        Source::File("x.toml".into()),
        &include_str!("fixtures/two.toml").replace("10.50.0", "192.168.122"),
    )
    .unwrap();
    // test:///default has a network `default` on 192.168.122.0/24.
    let e = lab::host::check_subnet(&l, &hv).unwrap_err();
    assert!(
        e.to_string().contains("overlaps libvirt network `default`"),
        "{e}"
    );
}

#[test]
fn missing_objects_are_not_found() {
    let hv = VirtHost::connect("test:///default").unwrap();
    let e = hv.start_domain("no-such-domain").unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert_eq!(e.object, "no-such-domain");
    assert_eq!(hv.pool_path("no-such-pool").unwrap(), None);
    assert_eq!(
        hv.pool_free("no-such-pool").unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(hv.domain_info("no-such-domain").unwrap(), None);
    assert!(!hv.remove_network("no-such-network").unwrap());
    // `default-pool` is one of the test driver's own.
    assert_eq!(
        hv.read_volume("default-pool", "no-such-volume", 0, 10)
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        hv.volume_backing("default-pool", "no-such-volume")
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
    assert!(!hv.delete_volume("default-pool", "no-such-volume").unwrap());
}

#[test]
fn taken_names_and_uuids_are_classified() {
    let hv = VirtHost::connect("test:///default").unwrap();
    let l = lab_named("taken", 51);

    // A network under another name with the same UUID.
    let net = names::network(&l.name);
    hv.ensure_network(&net, &xml::network(&l)).unwrap();
    let twin = xml::network(&l).replace(
        &format!("<name>{net}</name>"),
        "<name>lab-taken-twin</name>",
    );
    let e = hv.ensure_network("lab-taken-twin", &twin).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Exists, "{e}");

    // A pool under another name with the same UUID, and one on the same folder.
    let pool = names::pool(&l.name);
    hv.ensure_pool(&pool, &xml::pool(&l, "/lab-taken-pool"))
        .unwrap();
    let twin = xml::pool(&l, "/lab-taken-other").replace(
        &format!("<name>{pool}</name>"),
        "<name>lab-taken-twin</name>",
    );
    let e = hv.ensure_pool("lab-taken-twin", &twin).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Exists, "{e}");
    let same_folder =
        "<pool type='dir'><name>lab-taken-folder</name><target><path>/lab-taken-pool</path></target></pool>";
    let e = hv.ensure_pool("lab-taken-folder", same_folder).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Exists, "{e}");

    // A domain of the same name with another UUID.
    let m = &l.machines[0];
    let dom_xml = xml::domain(&l, m, &xml::Hardware::new(xml::Accel::Tcg), &paths());
    hv.define_domain(&dom_xml).unwrap();
    hv.define_domain(&dom_xml).unwrap(); // the same definition again is a redefinition
    let uuid = names::uuid("domain", &l.name, &m.name);
    let e = hv
        .define_domain(&dom_xml.replace(&uuid, "00000000-0000-4000-8000-000000000001"))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Exists, "{e}");
    assert_eq!(
        e.object,
        names::domain(&l.name, &m.name),
        "named from the XML"
    );

    // A volume of the same name.
    let vol = xml::volume("base.qcow2", 1 << 20, "qcow2");
    let base = hv.create_volume(&pool, &vol).unwrap();
    let e = hv.create_volume(&pool, &vol).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Exists, "{e}");
    assert_eq!(e.object, "base.qcow2");

    // Volumes: the test driver cannot tell the physical size, so it is the allocation.
    hv.create_volume(&pool, &xml::overlay("top.qcow2", 1 << 20, &base, "qcow2"))
        .unwrap();
    assert_eq!(
        hv.volume_backing(&pool, "top.qcow2").unwrap().as_deref(),
        Some(base.as_str())
    );
    assert_eq!(hv.volume_backing(&pool, "base.qcow2").unwrap(), None);
    let vols = hv.volumes(&pool).unwrap();
    let names: Vec<&str> = vols.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["base.qcow2", "top.qcow2"]);
    for v in &vols {
        assert_eq!(v.capacity, 1 << 20);
        assert_eq!(v.physical, v.allocation);
    }

    assert!(hv.remove_domain(&names::domain(&l.name, &m.name)).unwrap());
    assert!(hv.remove_pool(&pool).unwrap());
    assert!(hv.remove_network(&net).unwrap());
}

#[test]
fn remove_domain_falls_back_to_the_flags_the_driver_knows() {
    // The test driver refuses VIR_DOMAIN_UNDEFINE_NVRAM and CHECKPOINTS_METADATA with VIR_ERR_INVALID_ARG.
    let hv = VirtHost::connect("test:///default").unwrap();
    let l = lab_named("flags", 52);
    let m = &l.machines[1];
    let dom = names::domain(&l.name, &m.name);
    hv.define_domain(&xml::domain(
        &l,
        m,
        &xml::Hardware::new(xml::Accel::Tcg),
        &paths(),
    ))
    .unwrap();
    hv.start_domain(&dom).unwrap();
    assert!(hv.remove_domain(&dom).unwrap());
    assert_eq!(hv.domain_state(&dom).unwrap(), None);
}

#[test]
fn versions_are_reported() {
    let hv = VirtHost::connect("test:///default").unwrap();
    let v = hv.version().unwrap();
    let parts: Vec<u32> = v.libvirt.split('.').map(|p| p.parse().unwrap()).collect();
    assert_eq!(parts.len(), 3, "{v:?}");
    assert!(parts[0] >= 6, "{v:?}");
    assert!(v.hypervisor.starts_with("TEST "), "{v:?}");
}

#[test]
fn unreachable_libvirt_is_classified_by_code_and_errno() {
    // No driver for the scheme: VIR_ERR_NO_CONNECT.
    let e = VirtHost::connect("nosuchdriver:///x").err().unwrap();
    assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
    assert!(e.hint().unwrap().contains("libvirtd"));
    // No socket there: a system error from the RPC layer with errno ENOENT.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("libvirt-sock");
    let e = VirtHost::connect(&format!("qemu:///system?socket={}", sock.display()))
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
    // A socket nobody listens on: ECONNREFUSED.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let e = VirtHost::connect(&format!("qemu:///system?socket={}", sock.display()))
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
}

#[test]
#[ignore = "needs root and libvirtd: tests/run.sh runs it"]
fn volumes_on_qemu_system() {
    let hv = VirtHost::connect("qemu:///system").unwrap();
    let v = hv.version().unwrap();
    assert!(v.hypervisor.starts_with("QEMU "), "{v:?}");

    let dir = tempfile::Builder::new()
        .prefix("lab-adapter-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let folder = dir.path().join("pool");
    let folder_s = folder.to_str().unwrap().to_string();
    let pool = format!("lab-adapter-{}", std::process::id());
    let pool_xml = format!(
        "<pool type='dir'><name>{pool}</name><target><path>{folder_s}</path></target></pool>"
    );
    struct Cleanup<'a>(&'a VirtHost, &'a str);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = self.0.remove_pool(self.1);
        }
    }
    assert_eq!(hv.ensure_pool(&pool, &pool_xml).unwrap(), folder_s);
    let _cleanup = Cleanup(&hv, &pool);
    assert!(hv.pool_free(&pool).unwrap() > 0);

    // A raw volume uploaded, read back in parts.
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let base = hv
        .create_volume(&pool, &xml::volume("base.raw", data.len() as u64, "raw"))
        .unwrap();
    let sent = std::sync::atomic::AtomicU64::new(0);
    hv.upload_volume(&pool, "base.raw", &mut &data[..], data.len() as u64, &|n| {
        sent.store(n, std::sync::atomic::Ordering::SeqCst)
    })
    .unwrap();
    assert_eq!(sent.into_inner(), data.len() as u64);
    let r = hv.read_volume(&pool, "base.raw", 1000, 16).unwrap();
    assert_eq!(r.size, data.len() as u64);
    assert_eq!(r.bytes, &data[1000..1016]);
    let r = hv
        .read_volume(&pool, "base.raw", data.len() as u64 - 4, 100)
        .unwrap();
    assert_eq!(r.bytes, &data[data.len() - 4..], "clamped to the size");
    let r = hv
        .read_volume(&pool, "base.raw", data.len() as u64 + 10, 100)
        .unwrap();
    assert!(r.bytes.is_empty());
    assert_eq!(
        hv.read_volume_tail(&pool, "base.raw", 7).unwrap(),
        &data[data.len() - 7..]
    );

    // A qcow2 overlay: its backing file, and a file much smaller than its capacity.
    hv.create_volume(&pool, &xml::overlay("top.qcow2", 1 << 30, &base, "raw"))
        .unwrap();
    assert_eq!(
        hv.volume_backing(&pool, "top.qcow2").unwrap().as_deref(),
        Some(base.as_str())
    );
    assert_eq!(hv.volume_backing(&pool, "base.raw").unwrap(), None);
    let vols = hv.volumes(&pool).unwrap();
    let top = vols.iter().find(|v| v.name == "top.qcow2").unwrap();
    assert_eq!(top.capacity, 1 << 30);
    assert!(top.physical > 0 && top.physical < 1 << 20, "{top:?}");
    let raw = vols.iter().find(|v| v.name == "base.raw").unwrap();
    assert_eq!(raw.physical, data.len() as u64);

    // A growing file libvirt did not create (like QEMU's console log): found, then read from where it was.
    let log = folder.join("m.console.log");
    std::fs::write(&log, b"first line\n").unwrap();
    let r = hv.read_volume(&pool, "m.console.log", 0, 1 << 20).unwrap();
    assert_eq!(r.bytes, b"first line\n");
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, b"second line\n").unwrap();
    let r2 = hv
        .read_volume(&pool, "m.console.log", r.size, 1 << 20)
        .unwrap();
    assert_eq!(r2.bytes, b"second line\n");
    assert_eq!(r2.size, r.size + 12);

    // Volume jobs and refreshes of one pool from many threads: libvirt refuses a refresh while a volume is
    // being created ("asynchronous jobs running"); the adapter never lets them overlap.
    std::thread::scope(|s| {
        let hv = &hv;
        let pool = &pool;
        let base = &base;
        s.spawn(move || {
            for i in 0..15 {
                let name = format!("o{i}.qcow2");
                hv.create_volume(pool, &xml::overlay(&name, 1 << 30, base, "raw"))
                    .unwrap();
            }
        });
        for _ in 0..2 {
            s.spawn(move || {
                for _ in 0..30 {
                    hv.pool_free(pool).unwrap();
                    hv.volumes(pool).unwrap();
                }
            });
        }
    });

    assert!(hv.remove_pool(&pool).unwrap());
    assert!(!folder.exists());
}
