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
