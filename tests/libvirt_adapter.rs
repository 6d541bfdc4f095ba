//! The libvirt adapter on libvirt's in-process test driver (`test:///default`): no libvirtd, no VMs, real API.

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

    // Domain: defined with lab's stamp, started, paused, resumed, removed.
    let m = &l.machines[0];
    let paths = xml::MachinePaths {
        disk: "/d.qcow2".into(),
        seed: "/s.img".into(),
        console_log: "/c.log".into(),
    };
    let dom = names::domain(&l.name, &m.name);
    hv.define_domain(&xml::domain(&l, m, xml::Accel::Tcg, &paths))
        .unwrap();
    assert_eq!(hv.domain_state(&dom).unwrap(), Some(DomainState::Shutoff));
    assert!(
        lab::orchestrator::owned_by(&hv.domain_xml(&dom).unwrap(), &l.name),
        "the lab's stamp survives libvirt"
    );
    assert!(!lab::orchestrator::owned_by(
        &hv.domain_xml(&dom).unwrap(),
        "demo-other"
    ));
    hv.start_domain(&dom).unwrap();
    hv.suspend_domain(&dom).unwrap();
    assert_eq!(hv.domain_state(&dom).unwrap(), Some(DomainState::Paused));
    hv.resume_domain(&dom).unwrap();
    assert_eq!(hv.domain_state(&dom).unwrap(), Some(DomainState::Running));
    assert_eq!(hv.domains("lab-demo-").unwrap(), vec![dom.clone()]);
    assert!(hv.remove_domain(&dom).unwrap());
    assert!(!hv.remove_domain(&dom).unwrap(), "removing twice is fine");
    assert_eq!(hv.domain_state(&dom).unwrap(), None);

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
    assert_eq!(hv.pool_path("no-such-pool").unwrap(), None);
}
