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

const SHA: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

/// A lab with one machine and one `[[download]]` named `d` whose other keys are `keys` (from line 9).
fn download(keys: &str) -> String {
    with(&format!(
        "[[machine]]\nname = \"a\"\nip = \"10.9.0.5\"\n[[download]]\nname = \"d\"\n{keys}"
    ))
}

/// A lab with one machine (from line 4) and then `rest`, from line 7.
fn one_machine(rest: &str) -> String {
    with(&format!(
        "[[machine]]\nname = \"a\"\nip = \"10.9.0.5\"\n{rest}"
    ))
}

#[test]
fn download_file_names_are_plain_names() {
    let named = |a: &str| {
        download(&format!(
            "url = \"https://h/f\"\nsha256 = \"{SHA}\"\nas = \"{a}\"\n"
        ))
    };
    let rule = "`as` is the file's name in `dest`: not empty, not `.` or `..`, no `/`, not starting with `-`";
    for (a, message) in [
        ("..", "`..` is not a usable file name: it names a folder"),
        (".", "`.` is not a usable file name: it names a folder"),
        ("a/b", "`a/b` is not a usable file name: it contains /"),
        (
            "-rf",
            "`-rf` is not a usable file name: it starts with -, which commands read as an option",
        ),
        ("", "`as` is empty"),
    ] {
        assert_eq!(
            problem(&named(a)),
            (message.into(), rule.into()),
            "as = {a:?}"
        );
        assert_eq!(problems(&named(a))[0].split(": ").next(), Some("11:6"));
    }
    assert_eq!(
        load(&named("..tool")).unwrap().downloads[0].dest_path,
        "/opt/lab/downloads/..tool"
    );
    // The name taken from the URL follows the same rule.
    assert_eq!(
        problem(&download(&format!("url = \"https://h/-tool\"\nsha256 = \"{SHA}\"\n"))),
        (
            "the URL's file name `-tool` is not usable: it starts with -, which commands read as an option"
                .into(),
            "add as = \"…\" with the name to give the file".into()
        )
    );
}

#[test]
fn a_checksum_url_over_plain_http_is_refused() {
    let hint = "a checksum file fetched without TLS can be changed along with the file: use an https:// or \
                file:// checksum_url, or pin sha256 = \"…\"";
    let d = download("url = \"https://h/f\"\nchecksum_url = \"http://h/f.sha256\"\n");
    assert_eq!(
        problem(&d),
        (
            "a checksum_url over plain http:// is no check".into(),
            hint.into()
        )
    );
    assert_eq!(
        problems(&d),
        ["10:16: a checksum_url over plain http:// is no check"]
    );
    let image = one_machine(
        "[[image]]\nname = \"i\"\nurl = \"https://h/i.img\"\nchecksum_url = \"http://h/SUMS\"\n",
    );
    assert_eq!(
        problems(&image),
        ["10:16: a checksum_url over plain http:// is no check"]
    );
    // Both over plain http: both are reported.
    let both = download("url = \"http://h/f\"\nchecksum_url = \"http://h/f.sha256\"\n");
    assert_eq!(
        problems(&both),
        [
            "9:7: a plain http:// URL needs a pinned sha256",
            "10:16: a checksum_url over plain http:// is no check"
        ]
    );
    assert!(load(&download(
        "url = \"http://h/f\"\nchecksum_url = \"file:///srv/f.sha256\"\n"
    ))
    .is_err());
    load(&download(
        "url = \"https://h/f\"\nchecksum_url = \"file:///srv/f.sha256\"\n",
    ))
    .unwrap();
}

#[test]
fn a_version_placeholder_needs_a_version() {
    let add = "add version = \"…\" to the download, or write the version into the URL";
    assert_eq!(
        problem(&download(&format!(
            "url = \"https://h/{{version}}/f\"\nsha256 = \"{SHA}\"\n"
        ))),
        ("`{version}` has no `version` to fill it".into(), add.into())
    );
    assert_eq!(
        problems(&download(
            "url = \"https://h/f\"\nchecksum_url = \"https://h/{version}/f.sha256\"\n"
        )),
        ["10:16: `{version}` has no `version` to fill it"]
    );
    assert_eq!(
        problem(&download(&format!(
            "version = \"\"\nurl = \"https://h/{{version}}/f\"\nsha256 = \"{SHA}\"\n"
        ))),
        (
            "`{version}` has no `version` to fill it".into(),
            "`version` is empty: give the version, or write it into the URL".into()
        )
    );
    let image = one_machine(&format!(
        "[[image]]\nname = \"i\"\nurl = \"https://h/{{version}}/i.img\"\nsha256 = \"{SHA}\"\n"
    ));
    assert_eq!(
        problem(&image),
        (
            "`{version}` has no `version` to fill it".into(),
            "images have no `version` key: write the version into the URL".into()
        )
    );
    assert_eq!(
        problems(&image),
        ["9:7: `{version}` has no `version` to fill it"]
    );
}

#[test]
fn sha256_by_arch_takes_known_arches_only() {
    let by_arch = |entries: &str| {
        format!(
            "arch = \"amd64\"\n{}",
            download(&format!(
                "url = \"https://h/f-{{arch}}\"\nsha256_by_arch = {{ {entries} }}\n"
            ))
        )
    };
    let x86 = by_arch(&format!("x86_64 = \"{SHA}\""));
    assert_eq!(
        problem(&x86),
        (
            "unknown arch `x86_64` in sha256_by_arch".into(),
            "the arches are named as in `arch`: amd64 and arm64 (did you mean `amd64`?)".into()
        )
    );
    // At the entry's key, not at `url`.
    assert_eq!(
        problems(&x86),
        ["11:20: unknown arch `x86_64` in sha256_by_arch"]
    );
    // A bad sum is reported at its entry, for the lab's arch and for the other one alike.
    assert_eq!(
        problems(&by_arch(&format!("amd64 = \"{SHA}\", arm64 = \"nope\""))),
        ["11:104: sha256 must be 64 hexadecimal characters"]
    );
    assert_eq!(
        problems(&by_arch(&format!("amd64 = \"bad\", arm64 = \"{SHA}\""))),
        ["11:28: sha256 must be 64 hexadecimal characters"]
    );
    assert_eq!(
        problem(&by_arch(&format!("arm64 = \"{SHA}\""))),
        (
            "no checksum for amd64, the lab's arch".into(),
            "sha256_by_arch has arm64 only: add amd64 = \"…\"".into()
        )
    );
    let lab = load(&by_arch(&format!(
        "amd64 = \"{}\", arm64 = \"{SHA}\"",
        SHA.to_uppercase()
    )))
    .unwrap();
    assert_eq!(
        lab.downloads[0].checksum,
        lab::model::Checksum::Sha256(SHA.into())
    );
    // The sub-table form, and a pinned sum besides it.
    let both = download(&format!(
        "url = \"https://h/f\"\nsha256 = \"{SHA}\"\n[download.sha256_by_arch]\namd64 = \"{SHA}\"\narm64 = \"{SHA}\"\n"
    ));
    assert_eq!(
        problems(&both),
        ["10:10: give either sha256 or sha256_by_arch, not both"]
    );
}

#[test]
fn after_may_name_an_alias_and_the_model_keeps_the_name() {
    let lab = load(&one_machine(
        "[[checkpoint]]\nname = \"one\"\naliases = [\"first\"]\n[[checkpoint]]\nname = \"two\"\n\
         [[checkpoint]]\nname = \"branch\"\nafter = \"first\"\n",
    ))
    .unwrap();
    let after: Vec<(&str, &str)> = lab
        .checkpoints
        .iter()
        .map(|c| (c.name.as_str(), c.after.as_str()))
        .collect();
    assert_eq!(after, [("one", "base"), ("two", "one"), ("branch", "one")]);
    let chain: Vec<&str> = lab
        .checkpoint_chain("branch")
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(chain, ["one", "branch"]);
    // An alias defined later, or the checkpoint's own alias, is not an earlier checkpoint.
    assert_eq!(
        problems(&one_machine(
            "[[checkpoint]]\nname = \"one\"\nafter = \"uno\"\naliases = [\"uno\"]\n"
        )),
        ["9:9: `after` names `uno`, which is not `base` or an earlier checkpoint"]
    );
}

#[test]
fn lab_s_own_checkpoint_names_are_refused() {
    let named = |n: &str| one_machine(&format!("[[checkpoint]]\nname = \"{n}\"\n"));
    let undo = "lab keeps the state `lab restore` replaced as `undo` (and an older one as `undo-TIME`): choose \
                another name";
    let stale =
        "lab keeps a stale checkpoint that others are built on as `NAME.stale-TIME`: choose another name";
    assert_eq!(
        problem(&named("undo")),
        ("checkpoint name `undo` is reserved".into(), undo.into())
    );
    assert_eq!(
        problem(&named("undo-20250101t000000z")),
        (
            "checkpoint name `undo-20250101t000000z` is reserved".into(),
            undo.into()
        )
    );
    assert_eq!(
        problem(&named("one.stale-1")),
        (
            "checkpoint name `one.stale-1` is reserved".into(),
            stale.into()
        )
    );
    assert_eq!(
        problems(&named("base")),
        ["8:8: `base` is the checkpoint `lab up` takes; choose another name"]
    );
    // Names that only look alike are fine.
    load(&named("undone")).unwrap();
    load(&named("one.stale")).unwrap();
    load(&named("base-2")).unwrap();
    let alias = |a: &str| {
        one_machine(&format!(
            "[[checkpoint]]\nname = \"one\"\naliases = [\"{a}\"]\n"
        ))
    };
    assert_eq!(problems(&alias("undo")), ["9:12: alias `undo` is reserved"]);
    assert_eq!(
        problem(&alias("x.stale-2")),
        ("alias `x.stale-2` is reserved".into(), stale.into())
    );
    assert_eq!(
        problem(&alias("base")).0,
        "`base` is the checkpoint `lab up` takes; choose another name"
    );
}

#[test]
fn the_mirror_is_checked_as_the_cli_checks_it() {
    let mirror = |m: &str| format!("mirror = \"{m}\"\n{}", one_machine(""));
    let forms = "use http://HOST[:PORT]/PATH or file:///PATH";
    assert_eq!(
        problem(&mirror("http://")),
        ("mirror `http://` is not a URL".into(), forms.into())
    );
    assert_eq!(
        problems(&mirror("http://")),
        ["1:10: mirror `http://` is not a URL"]
    );
    assert_eq!(
        problem(&mirror("file://server/srv")),
        (
            "mirror `file://server/srv` names another machine (a file URL is a local folder)"
                .into(),
            forms.into()
        )
    );
    assert_eq!(
        problem(&mirror("http://m/base?x=1")).0,
        "mirror `http://m/base?x=1` has a query or fragment"
    );
    assert_eq!(
        problem(&mirror("ftp://m/")).0,
        "mirror `ftp://m/` is not an http(s) or file URL (`ftp:`)"
    );
    assert_eq!(
        load(&mirror("HTTP://M:80/base")).unwrap().mirror.as_deref(),
        Some("http://m/base")
    );
    assert_eq!(
        load(&mirror("file:///")).unwrap().mirror.as_deref(),
        Some("file:///")
    );
}

#[test]
fn image_and_download_names_follow_the_checkpoint_name_pattern() {
    let hint = "lowercase letters, digits, `.`, `_` and `-`, starting with a letter or digit";
    assert_eq!(
        problem(&one_machine(&format!(
            "[[image]]\nname = \"My Image\"\nurl = \"https://h/i.img\"\nsha256 = \"{SHA}\"\n"
        ))),
        (
            "image name `My Image` must match [a-z0-9][a-z0-9._-]{0,62}".into(),
            hint.into()
        )
    );
    let d = with(&format!(
        "[[machine]]\nname = \"a\"\nip = \"10.9.0.5\"\n[[download]]\nname = \"\"\nurl = \"https://h/f\"\nsha256 = \"{SHA}\"\n"
    ));
    assert_eq!(
        problems(&d),
        ["8:8: download name `` must match [a-z0-9][a-z0-9._-]{0,62}"]
    );
    // Images and downloads are fetched by name, so they cannot share one.
    let same = one_machine(&format!(
        "[[download]]\nname = \"ubuntu-24.04\"\nurl = \"https://h/f\"\nsha256 = \"{SHA}\"\n"
    ));
    assert_eq!(
        problem(&same),
        (
            "download `ubuntu-24.04` has the name of an image".into(),
            "images and downloads are fetched by name: choose another name".into()
        )
    );
}

#[test]
fn insecure_no_checksum_with_a_checksum_is_refused() {
    let d = download(&format!(
        "url = \"https://h/f\"\nsha256 = \"{SHA}\"\ninsecure_no_checksum = true\n"
    ));
    assert_eq!(
        problem(&d),
        (
            "insecure_no_checksum = true contradicts sha256".into(),
            "the download has a checksum: remove insecure_no_checksum".into()
        )
    );
    assert_eq!(
        problems(&d),
        ["11:24: insecure_no_checksum = true contradicts sha256"]
    );
    assert_eq!(
        problem(&download(
            "url = \"https://h/f\"\nchecksum_url = \"https://h/f.sha256\"\ninsecure_no_checksum = true\n"
        ))
        .0,
        "insecure_no_checksum = true contradicts checksum_url"
    );
    assert_eq!(
        problem(&download(&format!(
            "url = \"https://h/f\"\ninsecure_no_checksum = true\nsha256_by_arch = {{ amd64 = \"{SHA}\" }}\n"
        )))
        .0,
        "insecure_no_checksum = true contradicts sha256_by_arch"
    );
    let alone = load(&download(
        "url = \"https://h/f\"\ninsecure_no_checksum = true\n",
    ))
    .unwrap();
    assert_eq!(alone.downloads[0].checksum, lab::model::Checksum::None);
    load(&download(&format!(
        "url = \"https://h/f\"\nsha256 = \"{SHA}\"\ninsecure_no_checksum = false\n"
    )))
    .unwrap();
}
