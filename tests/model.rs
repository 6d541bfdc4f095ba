//! The lab model: defaults resolved once, and every mistake reported with file, line and column.

use lab::model::{load_str, Source};

fn load(text: &str) -> Result<lab::model::Lab, String> {
    load_str(Source::File("lab.toml".into()), text).map_err(|e| e.to_string())
}

const BASE: &str = "name = \"t\"\n[network]\nsubnet = \"10.9.0.0/24\"\n";

fn with(rest: &str) -> String {
    format!("{BASE}{rest}")
}

#[test]
fn resolves_defaults_machine_over_defaults_over_builtin() {
    let lab = load(&with(
        "[defaults]\ncpus = 3\n[[machine]]\nname = \"a\"\nip = \"10.9.0.5\"\n[[machine]]\nname = \"b\"\nip = \"10.9.0.6\"\ncpus = 1\n",
    ))
    .unwrap();
    assert_eq!(lab.network.gateway.to_string(), "10.9.0.1");
    assert_eq!(lab.machines[0].cpus, 3);
    assert_eq!(lab.machines[1].cpus, 1);
    assert_eq!(lab.machines[0].memory, 2 << 30);
    assert_eq!(lab.machines[0].user, "laborant");
    assert_eq!(lab.machines[0].image, "ubuntu-24.04");
}

#[test]
fn errors_name_line_and_column() {
    let cases = [
        (with("bogus = 1\n"), "lab.toml:4:1: unknown field `bogus`"),
        (with("[[machine]]\nname = \"a\"\nip = \"10.9.0.5\"\n[[machine]]\nname = \"a\"\nip = \"10.9.0.6\"\n"), "lab.toml:8:8: machine `a` is defined twice"),
        (with("[[machine]]\nname = \"a\"\nip = \"10.9.0.5\"\n[[machine]]\nname = \"b\"\nip = \"10.9.0.5\"\n"), "lab.toml:9:6: address 10.9.0.5 is used by two machines"),
        (with("[[machine]]\nname = \"a\"\nip = \"10.8.0.5\"\n"), "lab.toml:6:6: 10.8.0.5 is outside the lab's subnet 10.9.0.0/24"),
        (with("[[machine]]\nname = \"a\"\nip = \"10.9.0.5\"\nmemory = \"lots\"\n"), "lab.toml:7:10: `lots` is not a size"),
        (with("[[machine]]\nname = \"a\"\nip = \"10.9.0.5\"\nimage = \"nope\"\n"), "lab.toml:7:9: unknown image `nope`"),
        (with("[[machine]]\nname = \"A_b\"\nip = \"10.9.0.5\"\n"), "lab.toml:5:8: machine name `A_b` is not a DNS label"),
        ("name = \"Bad\"\n[network]\nsubnet = \"10.9.0.0/24\"\n".to_string(), "lab.toml:1:8: lab name `Bad`"),
        (with("[[machine]]\nname = \"a\"\nip = \"10.9.0.5\"\n[[image]]\nname = \"i\"\nurl = \"http://x/i.img\"\nchecksum_url = \"http://x/SUMS\"\n"), "lab.toml:9:7: a plain http:// URL needs a pinned sha256"),
        (with("[[machine]]\nname = \"a\"\nip = \"10.9.0.5\"\n[[download]]\nname = \"d\"\nurl = \"https://x/d\"\n"), "lab.toml:9:7: no checksum"),
        (with("[[machine]]\nname = \"a\"\nip = \"10.9.0.5\"\n[[checkpoint]]\nname = \"c\"\nafter = \"nope\"\n[[checkpoint.step]]\nrun = \"true\"\n"), "lab.toml:9:9: `after` names `nope`"),
    ];
    for (text, want) in cases {
        let got = load(&text).unwrap_err();
        assert!(got.starts_with(want), "want `{want}`, got `{got}`");
    }
}

#[test]
fn downloads_expand_version_and_arch_and_default_to_all_machines() {
    let lab = load(&format!(
        "arch = \"arm64\"\n{BASE}[[machine]]\nname = \"a\"\nip = \"10.9.0.5\"\n[[machine]]\nname = \"b\"\nip = \"10.9.0.6\"\n\
         [[download]]\nname = \"k\"\nversion = \"v1\"\nurl = \"https://h/{{version}}/{{arch}}/k\"\nchecksum_url = \"https://h/{{version}}/{{arch}}/k.sha256\"\nmode = \"0755\"\n",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let d = &lab.downloads[0];
    assert_eq!(d.url, "https://h/v1/arm64/k");
    assert_eq!(
        d.checksum,
        lab::model::Checksum::Url("https://h/v1/arm64/k.sha256".into())
    );
    assert_eq!(d.machines, ["a", "b"]);
    assert_eq!(d.dest_path, "/opt/lab/downloads/k");
    assert_eq!(d.mode, 0o755);
}

#[test]
fn embedded_course_lab_matches_the_course() {
    let lab = lab::model::load(None).unwrap();
    assert_eq!(lab.name, "k8s-hard-way");
    assert_eq!(lab.network.subnet.to_string(), "172.16.0.0/24");
    assert_eq!(lab.network.gateway.to_string(), "172.16.0.1");
    let m: Vec<(String, String, String)> = lab
        .machines
        .iter()
        .map(|m| (m.name.clone(), m.ip.to_string(), m.user.clone()))
        .collect();
    assert_eq!(
        m,
        [
            (
                "control-plane".into(),
                "172.16.0.2".into(),
                "laborant".into()
            ),
            ("worker-1".into(), "172.16.0.3".into(), "laborant".into()),
            ("worker-2".into(), "172.16.0.4".into(), "laborant".into()),
        ]
    );
}

/// The messages of every problem, in order, as `LINE:COL: message`.
fn problems(text: &str) -> Vec<String> {
    let e = load_str(Source::File("lab.toml".into()), text).unwrap_err();
    e.problems
        .iter()
        .map(|p| format!("{}:{}: {}", p.line, p.col, p.message))
        .collect()
}

/// The one problem's message and hint.
fn problem(text: &str) -> (String, String) {
    let e = load_str(Source::File("lab.toml".into()), text).unwrap_err();
    assert_eq!(e.problems.len(), 1, "{e}");
    let p = &e.problems[0];
    (p.message.clone(), p.hint.clone().unwrap_or_default())
}

const SEVERAL: &str = r#"name = "t"
[network]
subnet = "10.9.0.0/24"
[defaults]
memory = 2048
[[machine]]
name = "a"
ip = "10.9.0.0"
[[machine]]
name = "a"
ip = "10.9.0.255"
disk = "20GB"
[[machine]]
name = "c"
ip = "10.9.0.1"
image = "nope"
[[download]]
name = "d"
url = "https://example.org/d"
machines = ["a", "zed"]
[[checkpoint]]
name = "one"
after = "nowhere"
[[checkpoint.step]]
script = "steps/missing.sh"
"#;

#[test]
fn every_problem_is_reported_at_once() {
    assert_eq!(
        problems(SEVERAL),
        [
            "5:10: `2048` has no unit",
            "8:6: 10.9.0.0 is the network address of 10.9.0.0/24",
            "10:8: machine `a` is defined twice",
            "11:6: 10.9.0.255 is the broadcast address of 10.9.0.0/24",
            "12:8: `20GB` uses a decimal unit (GB = 10^9 bytes), which lab does not take",
            "15:6: 10.9.0.1 is the gateway's address",
            "16:9: unknown image `nope`",
            "19:7: no checksum",
            "20:18: unknown machine `zed`",
            "23:9: `after` names `nowhere`, which is not `base` or an earlier checkpoint",
            "25:10: script `steps/missing.sh` cannot be read",
        ]
    );
}

#[test]
fn the_report_shows_each_line_with_a_caret_and_a_hint() {
    let report = load(SEVERAL).unwrap_err();
    assert!(!report.contains('\x1b'), "no colors: {report}");
    assert!(report.ends_with("\n\n11 errors in lab.toml"), "{report}");
    insta::assert_snapshot!("several_errors", report);
}

#[test]
fn one_problem_has_no_count_line() {
    let report = load(&with(
        "[[machine]]\nname = \"a\"\nip = \"10.9.0.5\"\nmemory = \"2GB\"\n",
    ))
    .unwrap_err();
    assert_eq!(
        report,
        "lab.toml:7:10: `2GB` uses a decimal unit (GB = 10^9 bytes), which lab does not take\n  \
         |\n7 | memory = \"2GB\"\n  |          ^^^^^\n  |\n  \
         = hint: write `2GiB` (1 GiB = 2^30 bytes): sizes use binary units"
    );
}

#[test]
fn sizes_need_a_binary_unit() {
    let machine = |size: &str| {
        with(&format!(
            "[[machine]]\nname = \"a\"\nip = \"10.9.0.5\"\nmemory = {size}\n"
        ))
    };
    assert_eq!(
        load(&machine("\"2GiB\"")).unwrap().machines[0].memory,
        2 << 30
    );
    assert_eq!(
        load(&machine("\"1536 MiB\"")).unwrap().machines[0].memory,
        1536 << 20
    );
    assert_eq!(
        problem(&machine("2048")),
        (
            "`2048` has no unit".into(),
            "write `\"2048MiB\"` or `\"2GiB\"`: sizes need a unit".into()
        )
    );
    assert_eq!(
        problem(&machine("\"2048\"")),
        (
            "`2048` has no unit".into(),
            "write `2048MiB` or `2GiB`: sizes need a unit".into()
        )
    );
    // Decimal units and bare letters are refused rather than read as binary (or as 10^9, which is rarely meant).
    assert_eq!(
        problem(&machine("\"2GB\"")).1,
        "write `2GiB` (1 GiB = 2^30 bytes): sizes use binary units"
    );
    assert_eq!(
        problem(&machine("\"2G\"")),
        (
            "`2G` has an unclear unit: G could mean GB or GiB".into(),
            "write `2GiB`: sizes use binary units".into()
        )
    );
    assert_eq!(
        problem(&machine("\"1.5GiB\"")).1,
        "write `1536MiB`: sizes are whole numbers"
    );
    // libvirt counts memory in KiB.
    assert_eq!(
        problem(&machine("\"1000000000B\"")),
        (
            "memory must be a whole number of KiB".into(),
            "libvirt counts memory in KiB: write `976562KiB`".into()
        )
    );
    assert_eq!(
        problem(&machine("true")).0,
        "invalid type: boolean `true`, expected a size with a unit, like \"2GiB\""
    );
}

#[test]
fn network_broadcast_and_gateway_addresses_are_named() {
    let at = |ip: &str| with(&format!("[[machine]]\nname = \"a\"\nip = \"{ip}\"\n"));
    let hint = "machines take the addresses 10.9.0.2 to 10.9.0.254".to_string();
    assert_eq!(
        problem(&at("10.9.0.0")),
        (
            "10.9.0.0 is the network address of 10.9.0.0/24".into(),
            hint.clone()
        )
    );
    assert_eq!(
        problem(&at("10.9.0.255")),
        (
            "10.9.0.255 is the broadcast address of 10.9.0.0/24".into(),
            hint.clone()
        )
    );
    assert_eq!(
        problem(&at("10.9.0.1")),
        ("10.9.0.1 is the gateway's address".into(), hint.clone())
    );
    assert_eq!(
        problem(&at("10.10.0.5")),
        (
            "10.10.0.5 is outside the lab's subnet 10.9.0.0/24".into(),
            hint
        )
    );
    let gateway = "name = \"t\"\n[network]\nsubnet = \"10.9.0.0/24\"\ngateway = \"10.9.0.255\"\n[[machine]]\nname = \"a\"\nip = \"10.9.0.5\"\n";
    assert_eq!(
        problem(gateway).0,
        "gateway 10.9.0.255 is the broadcast address of 10.9.0.0/24"
    );
}

#[test]
fn duplicate_keys_and_tables_are_named() {
    let key = with(
        "[[machine]]\nname = \"a\"\nip = \"10.9.0.5\"\nmemory = \"1GiB\"\nmemory = \"2GiB\"\n",
    );
    assert!(
        load(&key)
            .unwrap_err()
            .starts_with("lab.toml:8:1: key `memory` is defined twice\n"),
        "{}",
        load(&key).unwrap_err()
    );
    let table = with("[network]\nmode = \"nat\"\n");
    assert_eq!(problem(&table).0, "table `[network]` is defined twice");
}

#[test]
fn errors_in_the_embedded_lab_name_it() {
    let e = load_str(
        Source::Embedded,
        &with("[[machine]]\nname = \"a\"\nip = \"10.9.0.0\"\n"),
    )
    .unwrap_err();
    assert!(
        e.to_string().starts_with(
            "<embedded course lab>:6:6: 10.9.0.0 is the network address of 10.9.0.0/24\n"
        ),
        "{e}"
    );
}
