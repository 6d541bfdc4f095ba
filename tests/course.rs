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

/// Opt-in (tests/run.sh skips it): builds `cluster-done` on the real course lab and runs every checkpoint's checks. Needs internet (the
/// course's images and binaries) and a host that runs three 2 GiB machines.
#[test]
#[ignore = "needs internet and a host for three 2 GiB machines: cargo test --test course -- --ignored"]
fn course_builds_cluster_done_and_every_check_passes() {
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

// ---------------------------------------------------------------------------------------------------------------
// The names of the downloads: what each upstream's release tooling publishes at the pinned version.
// ---------------------------------------------------------------------------------------------------------------

/// One `[[download]]` as upstream publishes it: the asset's URL and its checksum file's URL (None where the project
/// publishes no checksum) for amd64 and for arm64.
struct Published {
    name: &'static str,
    amd64: (&'static str, Option<&'static str>),
    arm64: (&'static str, Option<&'static str>),
}

/// The evidence for each row is named above it: the repository, the tag the lab pins (or the nearest stored version,
/// said where), and the file (and rule) that names the release assets there.
const PUBLISHED: &[Published] = &[
    // containerd/containerd v2.2.1, Makefile: RELEASE=containerd-$(VERSION:v%=%)-${GOOS}-${GOARCH}; `release:` packs
    // releases/$(RELEASE).tar.gz and writes `sha256sum $(RELEASE).tar.gz >$(RELEASE).tar.gz.sha256sum`.
    // .github/workflows/release.yml builds it for linux/amd64 and linux/arm64 (RELEASE_VER = the tag) and uploads
    // releases/*.tar.gz*.
    Published {
        name: "containerd",
        amd64: (
            "https://github.com/containerd/containerd/releases/download/v2.2.1/containerd-2.2.1-linux-amd64.tar.gz",
            Some("https://github.com/containerd/containerd/releases/download/v2.2.1/containerd-2.2.1-linux-amd64.tar.gz.sha256sum"),
        ),
        arm64: (
            "https://github.com/containerd/containerd/releases/download/v2.2.1/containerd-2.2.1-linux-arm64.tar.gz",
            Some("https://github.com/containerd/containerd/releases/download/v2.2.1/containerd-2.2.1-linux-arm64.tar.gz.sha256sum"),
        ),
    },
    // opencontainers/runc v1.4.0, script/release_build.sh: each binary is moved to "$builddir/$project.$arch"
    // (project="runc"), and `"$hashcmd" "${suffixes[@]/#/$project.}" >"$project.$hashcmd"` (hashcmd sha256sum) writes
    // one runc.sha256sum for all; Makefile `releaseall` passes -a amd64 -a arm64 among others.
    Published {
        name: "runc",
        amd64: (
            "https://github.com/opencontainers/runc/releases/download/v1.4.0/runc.amd64",
            Some("https://github.com/opencontainers/runc/releases/download/v1.4.0/runc.sha256sum"),
        ),
        arm64: (
            "https://github.com/opencontainers/runc/releases/download/v1.4.0/runc.arm64",
            Some("https://github.com/opencontainers/runc/releases/download/v1.4.0/runc.sha256sum"),
        ),
    },
    // containerd/nerdctl v2.2.1, Makefile `artifacts:` tars _output/nerdctl-$(VERSION_TRIMMED)-linux-amd64.tar.gz
    // and -linux-arm64.tar.gz (VERSION_TRIMMED := $(VERSION:v%=%)); .github/workflows/release.yml writes
    // `( cd _output; sha256sum nerdctl-* )` to _output/SHA256SUMS and releases _output/*.
    Published {
        name: "nerdctl",
        amd64: (
            "https://github.com/containerd/nerdctl/releases/download/v2.2.1/nerdctl-2.2.1-linux-amd64.tar.gz",
            Some("https://github.com/containerd/nerdctl/releases/download/v2.2.1/SHA256SUMS"),
        ),
        arm64: (
            "https://github.com/containerd/nerdctl/releases/download/v2.2.1/nerdctl-2.2.1-linux-arm64.tar.gz",
            Some("https://github.com/containerd/nerdctl/releases/download/v2.2.1/SHA256SUMS"),
        ),
    },
    // containernetworking/plugins v1.9.0, .github/workflows/release.yaml: matrix goarch [amd64, arm, arm64, ...];
    // cni-plugins-linux-${{ matrix.goarch }}-${{ github.ref_name }}.tgz and the same name + .tgz.sha256.
    Published {
        name: "cni-plugins",
        amd64: (
            "https://github.com/containernetworking/plugins/releases/download/v1.9.0/cni-plugins-linux-amd64-v1.9.0.tgz",
            Some("https://github.com/containernetworking/plugins/releases/download/v1.9.0/cni-plugins-linux-amd64-v1.9.0.tgz.sha256"),
        ),
        arm64: (
            "https://github.com/containernetworking/plugins/releases/download/v1.9.0/cni-plugins-linux-arm64-v1.9.0.tgz",
            Some("https://github.com/containernetworking/plugins/releases/download/v1.9.0/cni-plugins-linux-arm64-v1.9.0.tgz.sha256"),
        ),
    },
    // Kubernetes v1.34.0 binaries (this row and the five below). kubernetes/release pkg/release/release.go (v0.18.0,
    // the newest tag before v1.34.0; krel runs from its default branch, where this code is unchanged as of v0.21.1):
    // the staged binaries go to filepath.Join(targetPath, "bin", platform, arch) under release/<version>, and
    // WriteChecksums writes "<file>.sha256" (fmt.Sprintf("%s.sha%d", fileName, ...)) beside every file;
    // ProductionBucketURL = "https://dl.k8s.io". kubernetes/k8s.io apps/k8s-io/configmap-nginx.yaml, server
    // dl.k8s.io: `rewrite ^/(v[0-9]+\.[0-9]+\.[0-9]+(-(alpha|beta|rc)\.[0-9]+)?/.*)$ https://cdn.dl.k8s.io/release/$1`
    // ("Don't require /release/"). The server binaries (kubelet, kube-apiserver, kube-controller-manager,
    // kube-scheduler, kube-proxy) and kubectl are built for linux/amd64 and linux/arm64 per kubernetes/kubernetes
    // hack/lib/golang.sh (KUBE_SUPPORTED_SERVER_PLATFORMS, server_targets); only an older stored version of that
    // file could be read, not the one at v1.34.0.
    Published {
        name: "kubelet",
        amd64: (
            "https://dl.k8s.io/v1.34.0/bin/linux/amd64/kubelet",
            Some("https://dl.k8s.io/v1.34.0/bin/linux/amd64/kubelet.sha256"),
        ),
        arm64: (
            "https://dl.k8s.io/v1.34.0/bin/linux/arm64/kubelet",
            Some("https://dl.k8s.io/v1.34.0/bin/linux/arm64/kubelet.sha256"),
        ),
    },
    Published {
        name: "kube-apiserver",
        amd64: (
            "https://dl.k8s.io/v1.34.0/bin/linux/amd64/kube-apiserver",
            Some("https://dl.k8s.io/v1.34.0/bin/linux/amd64/kube-apiserver.sha256"),
        ),
        arm64: (
            "https://dl.k8s.io/v1.34.0/bin/linux/arm64/kube-apiserver",
            Some("https://dl.k8s.io/v1.34.0/bin/linux/arm64/kube-apiserver.sha256"),
        ),
    },
    Published {
        name: "kubectl",
        amd64: (
            "https://dl.k8s.io/v1.34.0/bin/linux/amd64/kubectl",
            Some("https://dl.k8s.io/v1.34.0/bin/linux/amd64/kubectl.sha256"),
        ),
        arm64: (
            "https://dl.k8s.io/v1.34.0/bin/linux/arm64/kubectl",
            Some("https://dl.k8s.io/v1.34.0/bin/linux/arm64/kubectl.sha256"),
        ),
    },
    Published {
        name: "kube-scheduler",
        amd64: (
            "https://dl.k8s.io/v1.34.0/bin/linux/amd64/kube-scheduler",
            Some("https://dl.k8s.io/v1.34.0/bin/linux/amd64/kube-scheduler.sha256"),
        ),
        arm64: (
            "https://dl.k8s.io/v1.34.0/bin/linux/arm64/kube-scheduler",
            Some("https://dl.k8s.io/v1.34.0/bin/linux/arm64/kube-scheduler.sha256"),
        ),
    },
    Published {
        name: "kube-controller-manager",
        amd64: (
            "https://dl.k8s.io/v1.34.0/bin/linux/amd64/kube-controller-manager",
            Some("https://dl.k8s.io/v1.34.0/bin/linux/amd64/kube-controller-manager.sha256"),
        ),
        arm64: (
            "https://dl.k8s.io/v1.34.0/bin/linux/arm64/kube-controller-manager",
            Some("https://dl.k8s.io/v1.34.0/bin/linux/arm64/kube-controller-manager.sha256"),
        ),
    },
    Published {
        name: "kube-proxy",
        amd64: (
            "https://dl.k8s.io/v1.34.0/bin/linux/amd64/kube-proxy",
            Some("https://dl.k8s.io/v1.34.0/bin/linux/amd64/kube-proxy.sha256"),
        ),
        arm64: (
            "https://dl.k8s.io/v1.34.0/bin/linux/arm64/kube-proxy",
            Some("https://dl.k8s.io/v1.34.0/bin/linux/arm64/kube-proxy.sha256"),
        ),
    },
    // kubernetes-sigs/cri-tools v1.34.0, hack/release.sh: VERSION=$(git describe --abbrev=0 --tag); CRI_CTL_PLATFORMS
    // has linux/amd64 and linux/arm64; `tar zcf "$RELEASES_DIR/crictl-$VERSION-$os-$arch.tar.gz"`, then
    // `sha256sum ... | tee "$file.sha256"` for every *.tar.gz.
    Published {
        name: "crictl",
        amd64: (
            "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.34.0/crictl-v1.34.0-linux-amd64.tar.gz",
            Some("https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.34.0/crictl-v1.34.0-linux-amd64.tar.gz.sha256"),
        ),
        arm64: (
            "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.34.0/crictl-v1.34.0-linux-arm64.tar.gz",
            Some("https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.34.0/crictl-v1.34.0-linux-arm64.tar.gz.sha256"),
        ),
    },
    // cyberark/kubeletctl v1.13, Makefile: linux_amd64 and linux_arm64 build $(BUILD_DIR)/kubeletctl_linux_{amd64,arm64};
    // README.md at that tag downloads .../releases/download/v1.13/kubeletctl_linux_amd64. The repository has no
    // release workflow and nothing that makes a checksum (assets are uploaded by hand: the arm64 asset's presence
    // could not be verified from the source).
    Published {
        name: "kubeletctl",
        amd64: (
            "https://github.com/cyberark/kubeletctl/releases/download/v1.13/kubeletctl_linux_amd64",
            None,
        ),
        arm64: (
            "https://github.com/cyberark/kubeletctl/releases/download/v1.13/kubeletctl_linux_arm64",
            None,
        ),
    },
    // etcd-io/etcd v3.6.4, scripts/build-binary.sh: TARGET="etcd-${VER}-${GOOS}-${GOARCH}" (VER = the tag, v3.6.4;
    // linux TARGET_ARCHS amd64 arm64 ppc64le s390x), `tar cfz "${TARGET}.tar.gz"`; scripts/release.sh: `shasum -a
    // 256` of every .tar.gz and .zip into ./SHA256SUMS, uploaded with `gh release upload`.
    Published {
        name: "etcd",
        amd64: (
            "https://github.com/etcd-io/etcd/releases/download/v3.6.4/etcd-v3.6.4-linux-amd64.tar.gz",
            Some("https://github.com/etcd-io/etcd/releases/download/v3.6.4/SHA256SUMS"),
        ),
        arm64: (
            "https://github.com/etcd-io/etcd/releases/download/v3.6.4/etcd-v3.6.4-linux-arm64.tar.gz",
            Some("https://github.com/etcd-io/etcd/releases/download/v3.6.4/SHA256SUMS"),
        ),
    },
    // flannel-io/flannel v0.27.2, Makefile `tar.gz:`: dist/flannel-$(TAG)-linux-amd64.tar.gz and -linux-arm64.tar.gz
    // (TAG?=$(shell git describe --tags --always)); .github/workflows/release.yml: `make release`, then `gh release
    // upload ${{ env.GIT_TAG }} dist/flannel*`. No checksum file is made.
    Published {
        name: "flannel",
        amd64: (
            "https://github.com/flannel-io/flannel/releases/download/v0.27.2/flannel-v0.27.2-linux-amd64.tar.gz",
            None,
        ),
        arm64: (
            "https://github.com/flannel-io/flannel/releases/download/v0.27.2/flannel-v0.27.2-linux-arm64.tar.gz",
            None,
        ),
    },
    // flannel-io/cni-plugin v1.7.1-flannel2, scripts/package.sh: FILENAME=cni-plugin-flannel-linux-$arch-"${TAG}".tgz
    // and `sha256sum $f > $f.sha256` per tarball; scripts/version.sh at this tag: GIT_TAG=${TAG}, else
    // `git tag -l --contains HEAD`, VERSION=${GIT_TAG}, TAG=${VERSION}: the full tag. (From v1.8.0-flannel2 on,
    // version.sh sets VERSION="${GIT_TAG:0:6}", the plain version.) .github/workflows/release.yml: `make release`,
    // then uploads dist/* and release/*.
    Published {
        name: "flannel-cni-plugin",
        amd64: (
            "https://github.com/flannel-io/cni-plugin/releases/download/v1.7.1-flannel2/cni-plugin-flannel-linux-amd64-v1.7.1-flannel2.tgz",
            Some("https://github.com/flannel-io/cni-plugin/releases/download/v1.7.1-flannel2/cni-plugin-flannel-linux-amd64-v1.7.1-flannel2.tgz.sha256"),
        ),
        arm64: (
            "https://github.com/flannel-io/cni-plugin/releases/download/v1.7.1-flannel2/cni-plugin-flannel-linux-arm64-v1.7.1-flannel2.tgz",
            Some("https://github.com/flannel-io/cni-plugin/releases/download/v1.7.1-flannel2/cni-plugin-flannel-linux-arm64-v1.7.1-flannel2.tgz.sha256"),
        ),
    },
    // coredns/coredns v1.12.2, Makefile.release: NAME:=coredns, VERSION from coremain/version.go (CoreVersion =
    // "1.12.2"), LINUX_ARCH has amd64 and arm64, `tar -zcf release/$(NAME)_$(VERSION)_linux_$$arch.tgz`;
    // .github/workflows/release.yml: `sha256sum $asset > $asset.sha256` for every tgz, release/*.tgz and
    // release/*.tgz.sha256 uploaded to tag v$(VERSION).
    Published {
        name: "coredns",
        amd64: (
            "https://github.com/coredns/coredns/releases/download/v1.12.2/coredns_1.12.2_linux_amd64.tgz",
            Some("https://github.com/coredns/coredns/releases/download/v1.12.2/coredns_1.12.2_linux_amd64.tgz.sha256"),
        ),
        arm64: (
            "https://github.com/coredns/coredns/releases/download/v1.12.2/coredns_1.12.2_linux_arm64.tgz",
            Some("https://github.com/coredns/coredns/releases/download/v1.12.2/coredns_1.12.2_linux_arm64.tgz.sha256"),
        ),
    },
];

/// The course lab as `lab` sees it on a host of architecture `arch` (the lab file's `arch` key, prepended).
fn course_for(arch: &str) -> model::Lab {
    let text = model::EMBEDDED_LAB
        .get_file("lab.toml")
        .unwrap()
        .contents_utf8()
        .unwrap();
    model::load_str(
        model::Source::Embedded,
        &format!("arch = \"{arch}\"\n{text}"),
    )
    .expect("the course lab with an arch is valid")
}

#[test]
fn download_urls_are_the_names_upstream_release_tooling_publishes() {
    for arch in ["amd64", "arm64"] {
        let lab = course_for(arch);
        let mut failures = Vec::new();
        for d in &lab.downloads {
            let Some(p) = PUBLISHED.iter().find(|p| p.name == d.name) else {
                failures.push(format!(
                    "{}: not in PUBLISHED; add what upstream publishes, with the evidence",
                    d.name
                ));
                continue;
            };
            let (url, sum) = if arch == "amd64" { p.amd64 } else { p.arm64 };
            if d.url != url {
                failures.push(format!(
                    "{} ({arch}): lab.toml gives\n    {}\n  upstream publishes\n    {url}",
                    d.name, d.url
                ));
            }
            let got = match &d.checksum {
                Checksum::Url(u) => Some(u.as_str()),
                Checksum::None => None,
                Checksum::Sha256(_) => Some("<a pinned sha256>"),
            };
            if got != sum {
                failures.push(format!(
                    "{} ({arch}): checksum from {got:?}, upstream publishes {sum:?}",
                    d.name
                ));
            }
        }
        for p in PUBLISHED {
            if !lab.downloads.iter().any(|d| d.name == p.name) {
                failures.push(format!(
                    "{}: in PUBLISHED but not a download of the lab",
                    p.name
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

#[path = "course/probes.rs"]
mod probes;
#[path = "course/sandbox.rs"]
mod sandbox;
use sandbox::{
    assert_file_check, files, standalone_kubelet, with, written, FileCheck, Files, STEPS,
};

/// The cluster's PKI made in `dir` with lib.sh's own make_ca and make_cert (as the step scripts make it), another
/// cluster's CA, and kubeconfigs in the layout `kubectl config` writes them (lib.sh's write_kubeconfig_as) or, for
/// kubelet.conf, the kubelet does after its TLS bootstrap.
fn make_pki(dir: &std::path::Path) {
    let script = r#"
set -euo pipefail
source "$1/lib.sh"
cd "$2"
make_ca pki kubernetes
make_ca other kubernetes
for c in "admin /O=system:masters/CN=admin" "scheduler /CN=system:kube-scheduler" \
    "controller-manager /CN=system:kube-controller-manager" "flannel /CN=flannel" \
    "kube-proxy /CN=system:kube-proxy" "coredns /CN=coredns" \
    "worker-1 /O=system:nodes/CN=system:node:worker-1" "worker-2 /O=system:nodes/CN=system:node:worker-2"; do
  make_cert pki "${c%% *}" "${c#* }" clientAuth
done
make_cert pki apiserver /CN=kube-apiserver serverAuth DNS:control-plane
make_cert other admin "/O=system:masters/CN=admin" clientAuth
for n in worker-1 worker-2; do cat "pki/$n.crt" "pki/$n.key" >"kubelet-client-$n.pem"; done
b64() { base64 -w0 "$1"; }
# kubeconfig NAME SERVER CA USER CERT KEY [EXTRA-CLUSTER-LINE]: kubectl's layout, certificates embedded.
kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: $(b64 "$3")
${7:+    $7
}    server: $2
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: $4
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: $4
  user:
    client-certificate-data: $(b64 "$5")
    client-key-data: $(b64 "$6")
EOF
}
s=https://control-plane:6443
kubeconfig admin.conf $s pki/ca.crt admin pki/admin.crt pki/admin.key
kubeconfig admin-localhost.conf https://127.0.0.1:6443 pki/ca.crt admin pki/admin.crt pki/admin.key
kubeconfig admin-other-cluster.conf $s other/ca.crt admin other/admin.crt other/admin.key
kubeconfig admin-signed-by-other.conf $s pki/ca.crt admin other/admin.crt other/admin.key
kubeconfig admin-wrong-key.conf $s pki/ca.crt admin pki/admin.crt pki/scheduler.key
kubeconfig admin-insecure.conf $s pki/ca.crt admin pki/admin.crt pki/admin.key "insecure-skip-tls-verify: true"
kubeconfig admin-server-cert.conf $s pki/ca.crt admin pki/apiserver.crt pki/apiserver.key
for n in scheduler controller-manager flannel kube-proxy coredns; do
  kubeconfig "$n.conf" $s pki/ca.crt "$n" "pki/$n.crt" "pki/$n.key"
  kubeconfig "$n-localhost.conf" https://127.0.0.1:6443 pki/ca.crt "$n" "pki/$n.crt" "pki/$n.key"
done
# bootstrap-kubelet.conf: a token user.
bootstrap() {
  cat >"$1" <<EOF
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: $(b64 "$2")
    server: $s
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: kubelet-bootstrap
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: kubelet-bootstrap
  user:
    token: $3
EOF
}
bootstrap bootstrap-kubelet.conf pki/ca.crt 0a1b2c.0123456789abcdef
bootstrap bootstrap-no-token.conf pki/ca.crt ""
bootstrap bootstrap-other-cluster.conf other/ca.crt 0a1b2c.0123456789abcdef
# kubelet.conf as the kubelet writes it after bootstrapping: the CA from the bootstrap kubeconfig, the client
# certificate and key in /var/lib/kubelet/pki/kubelet-client-current.pem.
kubelet() {
  cat >"$1" <<EOF
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: $(b64 pki/ca.crt)
    server: $2
  name: default-cluster
contexts:
- context:
    cluster: default-cluster
    namespace: default
    user: default-auth
  name: default-context
current-context: default-context
kind: Config
preferences: {}
users:
- name: default-auth
  user:
    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem
    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem
EOF
}
kubelet kubelet.conf $s
kubelet kubelet-localhost.conf https://127.0.0.1:6443
"#;
    let out = Command::new("bash")
        .args(["-c", script, "pki", STEPS])
        .arg(dir)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "making the PKI samples (openssl is needed):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn file_checks_pass_on_the_lessons_files_and_fail_on_broken_ones() {
    let lab = course();
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let s =
        |name: &str| std::fs::read(pki.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let ca = s("pki/ca.crt");
    let w = |script: &str, dest: &str| written(script, dest).into_bytes();
    const DROPINS: &str = "/var/lib/kubelet/config.d";
    let d = |name: &str| format!("{DROPINS}/{name}");
    let mut failures = Vec::new();

    // Lesson 1: containerd's config.
    let config = "/etc/containerd/config.toml";
    let containerd = files(&[(config, &w("01-containerd.sh", config))]);
    let toml = |text: &str| files(&[(config, text.as_bytes())]);
    failures.extend(assert_file_check(
        &lab,
        &FileCheck {
            checkpoint: "containerd-done",
            name: "containerd config is version 3 with SystemdCgroup = true in runc's options",
            hostname: "worker-1",
            good: vec![
                ("the step's config.toml", containerd.clone()),
                (
                    "`containerd config default` edited (nested tables, double quotes, other keys)",
                    toml(concat!(
                        "version = 3\nroot = \"/var/lib/containerd\"\n\n[plugins]\n",
                        "  [plugins.\"io.containerd.cri.v1.runtime\"]\n    enable_selinux = false\n",
                        "    [plugins.\"io.containerd.cri.v1.runtime\".containerd]\n      default_runtime_name = \"runc\"\n",
                        "      [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc]\n",
                        "        runtime_type = \"io.containerd.runc.v2\"\n",
                        "        [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc.options]\n",
                        "          BinaryName = \"\"\n          SystemdCgroup = true\n",
                    )),
                ),
            ],
            broken: vec![
                ("no config.toml", Files::new()),
                (
                    "containerd 1's config (version 2, io.containerd.grpc.v1.cri)",
                    toml("version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n"),
                ),
                (
                    "version 3 with containerd 1's table",
                    toml("version = 3\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n"),
                ),
                (
                    "SystemdCgroup in the runc table, not in its options",
                    toml("version = 3\n\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n  SystemdCgroup = true\n"),
                ),
                (
                    "SystemdCgroup under another runtime",
                    toml("version = 3\n\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.crun.options]\n  SystemdCgroup = true\n"),
                ),
                (
                    "SystemdCgroup = true only in a comment",
                    toml("version = 3\n\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\n  # SystemdCgroup = true\n  SystemdCgroup = false\n"),
                ),
                (
                    "no version (read as a version 1 config)",
                    toml("[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\n  SystemdCgroup = true\n"),
                ),
                (
                    "version = 3 inside a table, not at the top",
                    toml("[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\n  SystemdCgroup = true\n  version = 3\n"),
                ),
            ],
        },
    ));

    // Lesson 2: the standalone kubelet's drop-ins.
    let resolv = "/run/systemd/resolve/resolv.conf";
    let nginx = "/etc/kubernetes/manifests/nginx.yaml";
    let standalone = standalone_kubelet();
    let resolved = with(
        &standalone,
        &[
            (
                &d("40-resolv-conf.conf"),
                Some(&w("02-kubelet.sh", &d("40-resolv-conf.conf"))),
            ),
            (
                resolv,
                Some(b"nameserver 172.16.0.1\nsearch k8s-hard-way.lab\n"),
            ),
        ],
    );
    let authnz = String::from_utf8(w("02-kubelet.sh", &d("70-authnz.conf"))).unwrap();
    let header = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";
    failures.extend(assert_file_check(
        &lab,
        &FileCheck {
            checkpoint: "kubelet-done",
            name: "kubelet drop-ins (CRI, no anonymous access, static pods, resolv.conf) and the static pod manifest",
            hostname: "worker-1",
            good: vec![
                ("the step's files where systemd-resolved runs (Ubuntu)", resolved.clone()),
                ("the step's files without systemd-resolved (Debian)", standalone.clone()),
            ],
            broken: vec![
                ("no drop-ins", Files::new()),
                (
                    "anonymous access enabled in 70-authnz.conf",
                    with(&resolved, &[(&d("70-authnz.conf"), Some(authnz.replace("enabled: false", "enabled: true").as_bytes()))]),
                ),
                (
                    "a later drop-in turns anonymous access back on",
                    with(&resolved, &[(&d("80-debug.conf"), Some(format!("{header}authentication:\n  anonymous:\n    enabled: true\n").as_bytes()))]),
                ),
                (
                    "the read-only port open",
                    with(&resolved, &[(&d("70-authnz.conf"), Some(authnz.replace("readOnlyPort: 0", "readOnlyPort: 10255").as_bytes()))]),
                ),
                (
                    "another CRI socket",
                    with(&resolved, &[(&d("99-cri.conf"), Some(format!("{header}containerRuntimeEndpoint: unix:///run/crio/crio.sock\ncgroupDriver: systemd\n").as_bytes()))]),
                ),
                (
                    "the cgroupfs driver",
                    with(&resolved, &[(&d("99-cri.conf"), Some(format!("{header}containerRuntimeEndpoint: unix:///run/containerd/containerd.sock\ncgroupDriver: cgroupfs\n").as_bytes()))]),
                ),
                ("no 50-static-pods.conf", with(&resolved, &[(&d("50-static-pods.conf"), None)])),
                (
                    "a drop-in of another kind",
                    with(&resolved, &[(&d("50-static-pods.conf"), Some(b"apiVersion: v1\nkind: Pod\nstaticPodPath: /etc/kubernetes/manifests\n"))]),
                ),
                ("no static pod manifest", with(&resolved, &[(nginx, None)])),
                (
                    "systemd-resolved runs but the kubelet keeps its stub resolv.conf",
                    with(&resolved, &[(&d("40-resolv-conf.conf"), None)]),
                ),
                (
                    "a later drop-in sets resolvConf back to the stub",
                    with(&resolved, &[(&d("80-dns.conf"), Some(format!("{header}resolvConf: /etc/resolv.conf\n").as_bytes()))]),
                ),
                (
                    "resolvConf names systemd-resolved's file where systemd-resolved does not run",
                    with(&resolved, &[(resolv, None)]),
                ),
            ],
        },
    ));

    // Lesson 4: the admin kubeconfigs.
    let admin = s("admin.conf");
    let pki_ca = "/etc/kubernetes/pki/ca.crt";
    let kubeconfigs = files(&[
        (pki_ca, &ca),
        ("/etc/kubernetes/admin.conf", &admin),
        ("/root/.kube/config", &admin),
        ("/home/laborant/.kube/config", &admin),
    ]);
    let admin_broken = |what: &'static str, path: &str, name: &str| {
        (what, with(&kubeconfigs, &[(path, Some(&s(name)))]))
    };
    failures.extend(assert_file_check(
        &lab,
        &FileCheck {
            checkpoint: "apiserver-done",
            name: "admin.conf and ~/.kube/config of root and laborant: https://control-plane:6443, the cluster CA, the admin certificate",
            hostname: "control-plane",
            good: vec![("the step's kubeconfigs", kubeconfigs.clone())],
            broken: vec![
                ("laborant has no kubeconfig", with(&kubeconfigs, &[("/home/laborant/.kube/config", None)])),
                admin_broken("root's kubeconfig names 127.0.0.1", "/root/.kube/config", "admin-localhost.conf"),
                admin_broken("admin.conf is another cluster's", "/etc/kubernetes/admin.conf", "admin-other-cluster.conf"),
                admin_broken("a client certificate signed by another CA", "/etc/kubernetes/admin.conf", "admin-signed-by-other.conf"),
                admin_broken("the client key is not the certificate's", "/etc/kubernetes/admin.conf", "admin-wrong-key.conf"),
                admin_broken("TLS verification skipped", "/etc/kubernetes/admin.conf", "admin-insecure.conf"),
                admin_broken("the scheduler's identity, not system:masters", "/home/laborant/.kube/config", "scheduler.conf"),
                admin_broken("a server certificate as client certificate", "/etc/kubernetes/admin.conf", "admin-server-cert.conf"),
            ],
        },
    ));

    // Lessons 5 and 6: the scheduler's and the controller manager's kubeconfigs.
    for (checkpoint, name, file, good, wrong) in [
        (
            "scheduler-done",
            "scheduler.conf: https://control-plane:6443, the cluster CA, the scheduler's certificate",
            "/etc/kubernetes/scheduler.conf",
            "scheduler",
            "controller-manager.conf",
        ),
        (
            "controller-manager-done",
            "controller-manager.conf: https://control-plane:6443, the cluster CA, the controller manager's certificate",
            "/etc/kubernetes/controller-manager.conf",
            "controller-manager",
            "scheduler.conf",
        ),
    ] {
        let ok = files(&[(pki_ca, &ca), (file, &s(&format!("{good}.conf")))]);
        failures.extend(assert_file_check(
            &lab,
            &FileCheck {
                checkpoint,
                name,
                hostname: "control-plane",
                good: vec![("the step's kubeconfig", ok.clone())],
                broken: vec![
                    ("no kubeconfig", with(&ok, &[(file, None)])),
                    ("another component's identity", with(&ok, &[(file, Some(&s(wrong)))])),
                    ("the admin identity", with(&ok, &[(file, Some(&admin))])),
                    ("server 127.0.0.1", with(&ok, &[(file, Some(&s(&format!("{good}-localhost.conf"))))])),
                    ("no cluster CA to compare with", with(&ok, &[(pki_ca, None)])),
                ],
            },
        ));
    }

    // Lesson 7: the workers' kubelets after the TLS bootstrap.
    let client = "/var/lib/kubelet/pki/kubelet-client-current.pem";
    let joined = files(&[
        (pki_ca, &ca),
        (
            "/etc/kubernetes/bootstrap-kubelet.conf",
            &s("bootstrap-kubelet.conf"),
        ),
        ("/etc/kubernetes/kubelet.conf", &s("kubelet.conf")),
        (client, &s("kubelet-client-worker-1.pem")),
        (&d("99-cri.conf"), &w("02-kubelet.sh", &d("99-cri.conf"))),
        (
            &d("70-authnz.conf"),
            &w("07-tls-bootstrap-worker.sh", &d("70-authnz.conf")),
        ),
        (
            &d("50-static-pods.conf"),
            &w("02-kubelet.sh", &d("50-static-pods.conf")),
        ),
    ]);
    let joined_authnz =
        String::from_utf8(w("07-tls-bootstrap-worker.sh", &d("70-authnz.conf"))).unwrap();
    failures.extend(assert_file_check(
        &lab,
        &FileCheck {
            checkpoint: "tls-bootstrap-done",
            name: "kubelet kubeconfigs (bootstrap token, then its bootstrapped node certificate) and its API's authn/authz drop-in",
            hostname: "worker-1",
            good: vec![("the files after worker-1's bootstrap", joined.clone())],
            broken: vec![
                ("worker-2's certificate on worker-1", with(&joined, &[(client, Some(&s("kubelet-client-worker-2.pem")))])),
                ("no kubelet.conf (not bootstrapped)", with(&joined, &[("/etc/kubernetes/kubelet.conf", None)])),
                ("no client certificate", with(&joined, &[(client, None)])),
                ("kubelet.conf names 127.0.0.1", with(&joined, &[("/etc/kubernetes/kubelet.conf", Some(&s("kubelet-localhost.conf")))])),
                ("the bootstrap kubeconfig has no token", with(&joined, &[("/etc/kubernetes/bootstrap-kubelet.conf", Some(&s("bootstrap-no-token.conf")))])),
                (
                    "the bootstrap kubeconfig trusts another CA",
                    with(&joined, &[("/etc/kubernetes/bootstrap-kubelet.conf", Some(&s("bootstrap-other-cluster.conf")))]),
                ),
                (
                    "the standalone lesson's 70-authnz.conf (no webhook, AlwaysAllow)",
                    with(&joined, &[(&d("70-authnz.conf"), Some(&w("02-kubelet.sh", &d("70-authnz.conf"))))]),
                ),
                (
                    "anonymous access enabled",
                    with(&joined, &[(&d("70-authnz.conf"), Some(joined_authnz.replacen("enabled: false", "enabled: true", 1).as_bytes()))]),
                ),
                (
                    "a later drop-in authorizes everything",
                    with(&joined, &[(&d("80-debug.conf"), Some(format!("{header}authorization:\n  mode: AlwaysAllow\n").as_bytes()))]),
                ),
            ],
        },
    ));

    // Lesson 8: flannel's files on worker-1.
    let subnet_env = "/run/flannel/subnet.env";
    let net_conf = "/etc/kube-flannel/net-conf.json";
    let conflist = "/etc/cni/net.d/10-flannel.conflist";
    let flannel = files(&[
        (pki_ca, &ca),
        (subnet_env, b"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"),
        (net_conf, &w("08-network-worker.sh", net_conf)),
        ("/etc/kube-flannel/kubeconfig", &s("flannel.conf")),
        ("/opt/cni/bin/flannel", b"#!/bin/sh\n"),
        (conflist, &w("08-network-worker.sh", conflist)),
    ]);
    let net_conf_text = String::from_utf8(w("08-network-worker.sh", net_conf)).unwrap();
    failures.extend(assert_file_check(
        &lab,
        &FileCheck {
            checkpoint: "network-done",
            name: "flannel: its node's subnet, net-conf (10.244.0.0/16, vxlan), kubeconfig, CNI plugin and conflist",
            hostname: "worker-1",
            good: vec![("worker-1's files", flannel.clone())],
            broken: vec![
                (
                    "worker-2's subnet on worker-1",
                    with(&flannel, &[(subnet_env, Some(b"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"))]),
                ),
                (
                    "flannel's default network 10.1.0.0/16",
                    with(&flannel, &[(subnet_env, Some(b"FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.244.0.1/24\n"))]),
                ),
                ("no subnet.env (flanneld never ran)", with(&flannel, &[(subnet_env, None)])),
                (
                    "the host-gw backend",
                    with(&flannel, &[(net_conf, Some(net_conf_text.replace("vxlan", "host-gw").as_bytes()))]),
                ),
                ("kube-proxy's identity", with(&flannel, &[("/etc/kube-flannel/kubeconfig", Some(&s("kube-proxy.conf")))])),
                ("server 127.0.0.1", with(&flannel, &[("/etc/kube-flannel/kubeconfig", Some(&s("flannel-localhost.conf")))])),
                ("no CNI plugin", with(&flannel, &[("/opt/cni/bin/flannel", None)])),
                ("no conflist", with(&flannel, &[(conflist, None)])),
            ],
        },
    ));

    // Lesson 9: kube-proxy's configuration and kubeconfig.
    let proxy_config = "/var/lib/kube-proxy/config.yaml";
    let proxy = files(&[
        (pki_ca, &ca),
        (proxy_config, &w("09-kube-proxy-worker.sh", proxy_config)),
        ("/var/lib/kube-proxy/kubeconfig", &s("kube-proxy.conf")),
    ]);
    let proxy_text = String::from_utf8(w("09-kube-proxy-worker.sh", proxy_config)).unwrap();
    failures.extend(assert_file_check(
        &lab,
        &FileCheck {
            checkpoint: "kube-proxy-done",
            name: "kube-proxy config (iptables mode, 10.244.0.0/16) and kubeconfig (https://control-plane:6443, its certificate)",
            hostname: "worker-1",
            good: vec![("the step's files", proxy.clone())],
            broken: vec![
                ("ipvs mode", with(&proxy, &[(proxy_config, Some(proxy_text.replace("mode: iptables", "mode: ipvs").as_bytes()))])),
                ("no mode (the default)", with(&proxy, &[(proxy_config, Some(proxy_text.replace("mode: iptables\n", "").as_bytes()))])),
                (
                    "another cluster CIDR",
                    with(&proxy, &[(proxy_config, Some(proxy_text.replace("10.244.0.0/16", "10.200.0.0/16").as_bytes()))]),
                ),
                ("server 127.0.0.1", with(&proxy, &[("/var/lib/kube-proxy/kubeconfig", Some(&s("kube-proxy-localhost.conf")))])),
                ("flannel's identity", with(&proxy, &[("/var/lib/kube-proxy/kubeconfig", Some(&s("flannel.conf")))])),
            ],
        },
    ));

    // Lesson 10: CoreDNS's Corefile and kubeconfig on control-plane, the cluster DNS drop-in on the workers.
    let corefile = "/etc/coredns/Corefile";
    let corefile_text =
        written("10-coredns-control-plane.sh", corefile).replace("$upstream", resolv);
    let coredns = files(&[
        (pki_ca, &ca),
        (corefile, corefile_text.as_bytes()),
        ("/etc/coredns/kubeconfig", &s("coredns.conf")),
    ]);
    failures.extend(assert_file_check(
        &lab,
        &FileCheck {
            checkpoint: "coredns-done",
            name: "Corefile (bind eth0, cluster.local from the API server) and CoreDNS's kubeconfig (https://control-plane:6443, its certificate)",
            hostname: "control-plane",
            good: vec![("the step's files", coredns.clone())],
            broken: vec![
                ("bound to every interface", with(&coredns, &[(corefile, Some(corefile_text.replace("    bind eth0\n", "").as_bytes()))])),
                (
                    "cluster.lab instead of cluster.local",
                    with(&coredns, &[(corefile, Some(corefile_text.replace("kubernetes cluster.local", "kubernetes cluster.lab").as_bytes()))]),
                ),
                ("the admin identity", with(&coredns, &[("/etc/coredns/kubeconfig", Some(&admin))])),
                ("server 127.0.0.1", with(&coredns, &[("/etc/coredns/kubeconfig", Some(&s("coredns-localhost.conf")))])),
            ],
        },
    ));
    let dns_dropin = d("60-cluster-dns.conf");
    let cluster_dns = with(
        &joined,
        &[(&dns_dropin, Some(&w("10-coredns-worker.sh", &dns_dropin)))],
    );
    let dns_text = String::from_utf8(w("10-coredns-worker.sh", &dns_dropin)).unwrap();
    failures.extend(assert_file_check(
        &lab,
        &FileCheck {
            checkpoint: "coredns-done",
            name: "kubelets hand out clusterDNS 172.16.0.2 and clusterDomain cluster.local (drop-in 60-cluster-dns.conf)",
            hostname: "worker-1",
            good: vec![("the step's drop-ins", cluster_dns.clone())],
            broken: vec![
                ("no 60-cluster-dns.conf", with(&cluster_dns, &[(&dns_dropin, None)])),
                (
                    "kubeadm's 10.96.0.10",
                    with(&cluster_dns, &[(&dns_dropin, Some(dns_text.replace("172.16.0.2", "10.96.0.10").as_bytes()))]),
                ),
                (
                    "a second server before CoreDNS",
                    with(&cluster_dns, &[(&dns_dropin, Some(dns_text.replace("  - 172.16.0.2", "  - 10.96.0.10\n  - 172.16.0.2").as_bytes()))]),
                ),
                (
                    "another cluster domain",
                    with(&cluster_dns, &[(&dns_dropin, Some(dns_text.replace("clusterDomain: cluster.local", "clusterDomain: cluster.lab").as_bytes()))]),
                ),
                (
                    "a later drop-in overrides clusterDNS",
                    with(&cluster_dns, &[(&d("80-dns.conf"), Some(format!("{header}clusterDNS:\n- 10.96.0.10\n").as_bytes()))]),
                ),
            ],
        },
    ));

    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// Every check that reads containerd's config, a kubelet drop-in or a kubeconfig's content is a file check (no
/// systemctl, curl or kubectl in it), so the test above can run it; and the test above runs each of them.
#[test]
fn file_reading_checks_are_split_from_service_probes_and_tested() {
    let tested = include_str!("course.rs");
    for c in &course().checkpoints {
        for k in &c.checks {
            let reads = [
                "/etc/containerd/config.toml",
                "/var/lib/kubelet/config.d",
                "kc /",
                "kc \"",
            ]
            .iter()
            .any(|p| k.run.contains(p));
            if !reads {
                continue;
            }
            for probe in [
                "systemctl ",
                "curl ",
                "kubectl ",
                "iptables -",
                "crictl ",
                "ip -d",
            ] {
                assert!(
                    !k.run.contains(probe),
                    "`{}` ({}) reads files and runs {probe}: split it",
                    k.name,
                    c.name
                );
            }
            assert!(
                tested.contains(&format!("\"{}\"", k.name)),
                "`{}` ({}) reads files but has no FileCheck in file_checks_pass_on_the_lessons_files_and_fail_on_broken_ones",
                k.name,
                c.name
            );
        }
    }
}
