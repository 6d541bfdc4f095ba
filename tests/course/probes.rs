//! The checks that ask the cluster (kubectl) or a running process (/proc), run against stub commands that give a
//! recorded correct or broken answer, and the file checks whose parsing changed (SANs, YAML in any style). The stubs
//! prove the parsing; what only a cluster shows is in BEHAVIOUR, with the upstream source that says so.

use super::course;
use super::sandbox::{
    assert_file_check, files, standalone_kubelet, stub, with, written, FileCheck, Files, STEPS,
};
use std::process::Command;

/// What each stubbed answer stands for, and the upstream source (at the lab's pinned versions, or the stored version
/// said) that says the component behaves so. `lab check` on a real build (the ignored end-to-end test) runs them all.
const BEHAVIOUR: &[(&str, &str)] = &[
    (
        "kubernetes.default.svc.cluster.local resolves from a pod on each worker",
        "kubernetes/kubernetes cmd/kubelet/app/server.go (stored version read; unchanged in substance since \
         --config-dir came in 1.28): the command's RunE merges the drop-ins once, mergeKubeletConfigurations, \
         jsonpatch.MergePatch in lexical file order, before Run; nothing reloads them, so a kubelet that was not \
         restarted keeps its old clusterDNS. busybox networking/nslookup.c (a stored version read, FEATURE_NSLOOKUP_BIG: `printf(\"** server can't find %s: %s\\n\", name, rcodes[rcode])` for an error rcode): an answer \
         is printed as \"Name:\\t<name>\" then \"Address: <ip>\"; a name the server does not know as \"** server \
         can't find <name>: NXDOMAIN\", exit status 1.",
    ),
    (
        "a pod on each worker reaches a pod on the other",
        "kubernetes/kubernetes pkg/kubelet/prober/prober_manager.go and status: a container without a readiness probe \
         is Ready as soon as it runs, so the pod is Ready before busybox's httpd listens; the stub's first wget \
         fails as such a pod's would.",
    ),
    (
        "the API server reaches each kubelet with its client certificate (node proxy)",
        "kubernetes/kubernetes pkg/registry/core/node/rest/proxy.go: nodes/NAME/proxy is proxied to the kubelet's \
         port with the API server's kubelet transport, whose client certificate is --kubelet-client-certificate \
         (pkg/kubeapiserver/options KubeletConfig, client.KubeletClientConfig.CertFile); the kubelet with anonymous \
         access off answers a request without one 401 Unauthorized (pkg/kubelet/server/auth.go, \
         WithAuthentication), and kubelet's /healthz answers \"ok\" (k8s.io/apiserver pkg/server/healthz). kubectl \
         get --raw prints the body and exits 0 on 2xx, an `Error from server (Unauthorized)` and 1 otherwise.",
    ),
    (
        "the running controller manager allocates node CIDRs from 10.244.0.0/16",
        "k8s.io/cloud-provider options (a stored version read: NodeControllerOptions.AddFlags registers \
         fs.BoolVar(&o.AllocateNodeCIDRs, \"allocate-node-cidrs\", ...) beside \"cluster-cidr\"; the same two flags, \
         not read here at v1.34.0, are in kube-controller-manager's KubeCloudSharedOptions); \
         spf13/pflag bool.go: a bool flag's NoOptDefVal is \"true\" (a bare flag is true, \
         =VALUE is strconv.ParseBool), a string flag takes =VALUE or the next argument, the last one given wins. \
         systemd: `systemctl show --property=MainPID --value UNIT` prints the main process's PID, 0 when it is not \
         running; /proc/PID/cmdline holds its arguments separated by NUL bytes (proc(5)).",
    ),
    (
        "bootstrap token secret, and the TLS bootstrapping ClusterRoleBindings with their roles and groups",
        "kubernetes/kubernetes pkg/controller/certificates/approver/sarapprove.go: the CSR approver approves a \
         kubelet's client CSR only if a SubjectAccessReview lets its requester create \
         certificatesigningrequests/nodeclient (first certificate) or /selfnodeclient (renewal), which the \
         ClusterRoles system:certificates.k8s.io:certificatesigningrequests:nodeclient and :selfnodeclient grant \
         (plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go); the rbac.authorization.k8s.io/v1 \
         ClusterRoleBinding has roleRef {apiGroup, kind, name} and subjects [{apiGroup, kind, name}] \
         (staging/src/k8s.io/api/rbac/v1/types.go); `kubectl get KIND A B -o json` prints a v1 List of the objects.",
    ),
];

/// The control plane's stub kubectl: the recorded `answers`, and an empty success for anything else (the checks'
/// namespace and clean-up commands), with the pod simulation below.
fn kubectl(answers: &[(&str, &str, i32)]) -> Vec<u8> {
    stub(answers, PODS)
}

/// A stub kubectl's pods: `apply -f -` keeps the manifests; `wait --for=jsonpath=...Succeeded pod/A...` runs each
/// pod's command here, and `exec POD -- CMD` runs CMD here, with NODE set to the worker the pod's nodeSelector names
/// (an unpinned pod goes to worker-1, the worker the samples keep healthy: the scheduler's choice is free).
const PODS: &str = r#"
state = "/tmp/kubectl-stub"
os.makedirs(state, exist_ok=True)
while "-n" in args:
    del args[args.index("-n"):args.index("-n") + 2]
def pods():
    import yaml
    out = {}
    for f in sorted(os.listdir(state)):
        for d in yaml.safe_load_all(open(os.path.join(state, f))):
            out[d["metadata"]["name"]] = d
    return out
def run(pod, cmd):
    node = (pod["spec"].get("nodeSelector") or {}).get("kubernetes.io/hostname", "worker-1")
    return subprocess.run(cmd, env={**os.environ, "NODE": node}).returncode
if args[0] == "apply":
    open(f"{state}/{len(os.listdir(state))}.yaml", "w").write(sys.stdin.read())
elif args[0] == "wait" and any(a.endswith("=Succeeded") for a in args):
    p = pods()
    sys.exit(max(run(p[a[4:]], p[a[4:]]["spec"]["containers"][0]["command"]) for a in args if a.startswith("pod/")))
elif args[0] == "exec":
    sys.exit(run(pods()[args[1]], args[args.index("--") + 1:]))
elif args[0] == "get" and "jsonpath={.status.podIP}" in args:
    print({"worker-1": "10.244.0.5", "worker-2": "10.244.1.5"}[pods()[args[2]]["spec"]["nodeSelector"]["kubernetes.io/hostname"]], end="")
"#;

/// A shell stub that prints `answer(NODE)`'s text for the node it runs on (NODE, set by the stub kubectl) and
/// exits with its status.
fn per_node(answer: impl Fn(&str) -> (&'static str, i32)) -> Vec<u8> {
    let arms: String = ["worker-1", "worker-2"]
        .iter()
        .map(|n| {
            let (out, code) = answer(n);
            format!("  {n}) cat <<'EOF'\n{out}EOF\n    exit {code} ;;\n")
        })
        .collect();
    format!("#!/bin/sh\ncase $NODE in\n{arms}esac\nexit 1\n").into_bytes()
}

/// busybox 1.36 nslookup's output for kubernetes.default.svc.cluster.local., through CoreDNS or through the lab
/// network's DNS (a kubelet without clusterDNS gives pods the node's resolv.conf).
const NSLOOKUP_OK: &str = "Server:\t\t172.16.0.2\nAddress:\t172.16.0.2:53\n\n\
                           Name:\tkubernetes.default.svc.cluster.local\nAddress: 10.96.0.1\n\n";
const NSLOOKUP_NXDOMAIN: &str = "Server:\t\t172.16.0.1\nAddress:\t172.16.0.1:53\n\n\
                                 ** server can't find kubernetes.default.svc.cluster.local.: NXDOMAIN\n\n";

fn assert_none(failures: Vec<String>) {
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn cluster_dns_is_tried_from_a_pod_on_each_worker() {
    let kubelet_not_restarted = |bad: &'static str| {
        files(&[
            ("/usr/local/bin/kubectl", &kubectl(&[])),
            (
                "/usr/local/bin/nslookup",
                &per_node(|n| {
                    if n == bad {
                        (NSLOOKUP_NXDOMAIN, 1)
                    } else {
                        (NSLOOKUP_OK, 0)
                    }
                }),
            ),
        ])
    };
    let ok = with(
        &kubelet_not_restarted("none"),
        &[(
            "/usr/local/bin/nslookup",
            Some(&per_node(|_| (NSLOOKUP_OK, 0))),
        )],
    );
    assert_none(assert_file_check(
        &course(),
        &FileCheck {
            checkpoint: "coredns-done",
            name: BEHAVIOUR[0].0,
            hostname: "control-plane",
            good: vec![("CoreDNS answers on both workers", ok)],
            broken: vec![
                (
                    "worker-2's kubelet not restarted after 60-cluster-dns.conf",
                    kubelet_not_restarted("worker-2"),
                ),
                (
                    "worker-1's kubelet not restarted after 60-cluster-dns.conf",
                    kubelet_not_restarted("worker-1"),
                ),
            ],
        },
    ));
}

#[test]
fn pod_to_pod_is_retried_until_the_server_listens() {
    // wget as busybox's: the first try on each worker finds the server not yet listening, or every try times out.
    let wget = |always_fails: bool| {
        format!(
            "#!/bin/sh\nn=/tmp/wget-tries-$NODE; echo >>$n\n\
             if {always_fails} || [ $(wc -l <$n) = 1 ]; then echo 'wget: download timed out' >&2; exit 1; fi\necho ok\n"
        )
        .into_bytes()
    };
    let sample = |w: &[u8]| {
        files(&[
            ("/usr/local/bin/kubectl", &kubectl(&[])),
            ("/usr/local/bin/wget", w),
        ])
    };
    assert_none(assert_file_check(
        &course(),
        &FileCheck {
            checkpoint: "network-done",
            name: BEHAVIOUR[1].0,
            hostname: "control-plane",
            good: vec![(
                "the servers listen a moment after Ready",
                sample(&wget(false)),
            )],
            broken: vec![("no route between the workers' pods", sample(&wget(true)))],
        },
    ));
}

#[test]
fn the_api_server_must_reach_each_kubelet() {
    let unauthorized = "Error from server (Unauthorized): the server has asked for the client to provide credentials\n";
    let answers = |w1: (&'static str, i32), w2: (&'static str, i32)| {
        files(&[(
            "/usr/local/bin/kubectl",
            &kubectl(&[
                ("get --raw /api/v1/nodes/worker-1/proxy/healthz", w1.0, w1.1),
                ("get --raw /api/v1/nodes/worker-2/proxy/healthz", w2.0, w2.1),
            ]),
        )])
    };
    assert_none(assert_file_check(
        &course(),
        &FileCheck {
            checkpoint: "tls-bootstrap-done",
            name: BEHAVIOUR[2].0,
            hostname: "control-plane",
            good: vec![("both kubelets answer ok", answers(("ok", 0), ("ok", 0)))],
            broken: vec![
                (
                    "no --kubelet-client-certificate: 401 from both",
                    answers((unauthorized, 1), (unauthorized, 1)),
                ),
                (
                    "worker-2's kubelet refuses the API server",
                    answers(("ok", 0), (unauthorized, 1)),
                ),
                (
                    "a kubelet answers something else",
                    answers(("ok", 0), ("[-]syncloop failed\n", 0)),
                ),
            ],
        },
    ));
}

#[test]
fn the_running_controller_manager_allocates_node_cidrs() {
    // The step's ExecStart as systemd splits it (backslash-newline continues the line), as the process's argv.
    let unit = written(
        "06-kube-controller-manager.sh",
        "/etc/systemd/system/kube-controller-manager.service",
    );
    let exec = unit.replace("\\\n", " ");
    let argv: Vec<&str> = exec
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .split_whitespace()
        .collect();
    assert!(
        argv.contains(&"--allocate-node-cidrs=true")
            && argv.contains(&"--cluster-cidr=10.244.0.0/16")
    );
    let running = |pid: &str, argv: &[&str]| {
        let answer = format!("{pid}\n");
        files(&[
            (
                "/usr/local/bin/systemctl",
                &stub(
                    &[(
                        "show --property=MainPID --value kube-controller-manager",
                        &answer,
                        0,
                    )],
                    "",
                ),
            ),
            ("/proc/1/cmdline", (argv.join("\0") + "\0").as_bytes()),
        ])
    };
    let edit = |drop: &str, add: &[&str]| {
        let mut a: Vec<&str> = argv.iter().copied().filter(|f| *f != drop).collect();
        a.extend(add);
        running("1", &a)
    };
    assert_none(assert_file_check(
        &course(),
        &FileCheck {
            checkpoint: "controller-manager-done",
            name: BEHAVIOUR[3].0,
            hostname: "control-plane",
            good: vec![
                ("the step's unit, running", running("1", &argv)),
                (
                    "a bare --allocate-node-cidrs",
                    edit("--allocate-node-cidrs=true", &["--allocate-node-cidrs"]),
                ),
                (
                    "--cluster-cidr and its value as two arguments",
                    edit(
                        "--cluster-cidr=10.244.0.0/16",
                        &["--cluster-cidr", "10.244.0.0/16"],
                    ),
                ),
            ],
            broken: vec![
                (
                    "no --allocate-node-cidrs",
                    edit("--allocate-node-cidrs=true", &[]),
                ),
                (
                    "--allocate-node-cidrs=false",
                    edit(
                        "--allocate-node-cidrs=true",
                        &["--allocate-node-cidrs=false"],
                    ),
                ),
                (
                    "a later --allocate-node-cidrs=false",
                    edit("", &["--allocate-node-cidrs=false"]),
                ),
                (
                    "no --cluster-cidr",
                    edit("--cluster-cidr=10.244.0.0/16", &[]),
                ),
                (
                    "another cluster CIDR",
                    edit(
                        "--cluster-cidr=10.244.0.0/16",
                        &["--cluster-cidr=10.200.0.0/16"],
                    ),
                ),
                ("not running (MainPID 0)", running("0", &argv)),
            ],
        },
    ));
}

/// The ClusterRoleBindings the lesson 7 step applies, as `kubectl get clusterrolebinding A B C -o json` prints
/// them (a v1 List), with `edit` (python, on the list `items`) applied.
fn bindings_json(edit: &str) -> String {
    let text =
        std::fs::read_to_string(format!("{STEPS}/07-tls-bootstrap-control-plane.sh")).unwrap();
    let manifest: String = text
        .lines()
        .skip_while(|l| !l.contains("kubectl apply -f - >/dev/null <<YAML"))
        .skip(1)
        .take_while(|l| *l != "YAML")
        .map(|l| format!("{l}\n"))
        .collect();
    let script = format!(
        "import json, sys, yaml\nitems = [d for d in yaml.safe_load_all(sys.stdin) if d['kind'] == 'ClusterRoleBinding']\n\
         {edit}\nprint(json.dumps({{'apiVersion': 'v1', 'kind': 'List', 'items': items}}, indent=4))\n"
    );
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let json = String::from_utf8(out.stdout).unwrap();
    assert!(
        !edit.is_empty() || json.matches("\"ClusterRoleBinding\"").count() == 3,
        "{json}"
    );
    json
}

#[test]
fn bootstrap_bindings_grant_their_roles_to_their_groups() {
    let sample = |edit: &str, code: i32| {
        let json = bindings_json(edit);
        files(&[
            ("/etc/kubernetes/bootstrap-token", b"0a1b2c.0123456789abcdef\n"),
            (
                "/usr/local/bin/kubectl",
                &kubectl(&[
                    ("-n kube-system get secret bootstrap-token-0a1b2c", "", 0),
                    ("get clusterrolebinding create-csrs-for-bootstrapping auto-approve-csrs-for-group auto-approve-renewals-for-nodes -o json", &json, code),
                    ("*", "", 1),
                ]),
            ),
        ])
    };
    assert_none(assert_file_check(
        &course(),
        &FileCheck {
            checkpoint: "tls-bootstrap-done",
            name: BEHAVIOUR[4].0,
            hostname: "control-plane",
            good: vec![
                ("the step's bindings", sample("", 0)),
                (
                    "a binding with one more subject",
                    sample(
                        "items[0]['subjects'].append({'kind': 'User', 'name': 'x'})",
                        0,
                    ),
                ),
            ],
            broken: vec![
                (
                    "auto-approve bound to the node-bootstrapper role",
                    sample(
                        "items[1]['roleRef']['name'] = 'system:node-bootstrapper'",
                        0,
                    ),
                ),
                (
                    "renewals granted to the bootstrappers, not the nodes",
                    sample(
                        "items[2]['subjects'][0]['name'] = 'system:bootstrappers'",
                        0,
                    ),
                ),
                (
                    "a User, not the Group",
                    sample("items[0]['subjects'][0]['kind'] = 'User'", 0),
                ),
                (
                    "a Role, not a ClusterRole",
                    sample("items[1]['roleRef']['kind'] = 'Role'", 0),
                ),
                (
                    "a binding missing (kubectl lists the others, exits 1)",
                    sample("del items[2]", 1),
                ),
                ("no bootstrap token secret", {
                    let mut f = sample("", 0);
                    f.insert(
                        "/etc/kubernetes/bootstrap-token".into(),
                        b"ffffff.0123456789abcdef\n".to_vec(),
                    );
                    f
                }),
            ],
        },
    ));
}

#[test]
fn api_server_sans_are_matched_whole() {
    let lab = course();
    let pki = tempfile::tempdir().unwrap();
    let step = std::fs::read_to_string(format!("{STEPS}/04-kube-apiserver.sh")).unwrap();
    let sans = step
        .split('"')
        .find(|s| s.starts_with("DNS:control-plane,"))
        .unwrap();
    let cert = |sans: &str| {
        let out = Command::new("bash")
            .args(["-c", "source \"$1/lib.sh\" && cd \"$2\" && { [ -s pki/ca.crt ] || make_ca pki kubernetes; } && rm -f pki/x.* && make_cert pki x /CN=kube-apiserver serverAuth \"$3\" && cat pki/x.crt", "sans", STEPS])
            .arg(pki.path())
            .arg(sans)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        files(&[("/etc/kubernetes/pki/apiserver.crt", &out.stdout)])
    };
    assert_none(assert_file_check(
        &lab,
        &FileCheck {
            checkpoint: "apiserver-done",
            name: "the API server certificate covers control-plane and 10.96.0.1",
            hostname: "control-plane",
            good: vec![
                ("the step's SANs", cert(sans)),
                ("the two alone", cert("IP:10.96.0.1,DNS:control-plane")),
            ],
            broken: vec![
                (
                    "look-alikes only",
                    cert("DNS:control-plane.example,IP:10.96.0.10"),
                ),
                (
                    "no 10.96.0.1",
                    cert("DNS:control-plane,IP:10.96.0.10,IP:172.16.0.2"),
                ),
                (
                    "no control-plane",
                    cert("DNS:control-plane2,DNS:kubernetes,IP:10.96.0.1"),
                ),
                ("no certificate", Files::new()),
            ],
        },
    ));
}

#[test]
fn kubelet_files_are_read_in_any_yaml_style() {
    let d = |n: &str| format!("/var/lib/kubelet/config.d/{n}");
    let nginx = "/etc/kubernetes/manifests/nginx.yaml";
    let step = standalone_kubelet();
    let manifest = written("02-kubelet.sh", nginx);
    let image = |img: &str| {
        with(
            &step,
            &[(
                nginx,
                Some(
                    manifest
                        .replace("docker.io/library/nginx:1.27", img)
                        .as_bytes(),
                ),
            )],
        )
    };
    let cri_json = br#"{"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration", "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock", "cgroupDriver": "systemd"}"#;
    let authnz_flow = |anonymous: &str| {
        format!(
            "{{apiVersion: kubelet.config.k8s.io/v1beta1, kind: KubeletConfiguration, readOnlyPort: 0,\n  \
             authentication: {{anonymous: {{enabled: {anonymous}}}, webhook: {{enabled: false}}}}, authorization: {{mode: AlwaysAllow}}}}\n"
        )
        .into_bytes()
    };
    let pod_json = br#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nginx"}, "spec": {"hostNetwork": true, "containers": [{"name": "nginx", "image": "nginx:1.27"}]}}"#;
    assert_none(assert_file_check(
        &course(),
        &FileCheck {
            checkpoint: "kubelet-done",
            name: "kubelet drop-ins (CRI, no anonymous access, static pods, resolv.conf) and the static pod manifest",
            hostname: "worker-1",
            good: vec![
                ("image: nginx:1.27", image("nginx:1.27")),
                ("image: docker.io/nginx:1.27", image("docker.io/nginx:1.27")),
                ("image by digest", image("docker.io/library/nginx@sha256:0000000000000000000000000000000000000000000000000000000000000000")),
                ("99-cri.conf in JSON", with(&step, &[(&d("99-cri.conf"), Some(cri_json))])),
                ("70-authnz.conf in flow style", with(&step, &[(&d("70-authnz.conf"), Some(&authnz_flow("false")))])),
                ("the manifest in JSON", with(&step, &[(nginx, Some(pod_json))])),
            ],
            broken: vec![
                ("another image whose name starts the same", image("docker.io/library/nginx-unprivileged:1.27")),
                ("another registry's nginx", image("registry.example/library/nginx:1.27")),
                ("another user's nginx", image("nginxinc/nginx:1.27")),
                (
                    "nginx only in a comment",
                    image("docker.io/library/busybox:1.36 # image: docker.io/library/nginx"),
                ),
                ("anonymous access on, in flow style", with(&step, &[(&d("70-authnz.conf"), Some(&authnz_flow("true")))])),
            ],
        },
    ));
}

/// Each check tested against stubs has its row of evidence, and each row names a check of the lab.
#[test]
fn stubbed_checks_cite_upstream_behaviour() {
    let lab = course();
    let names: Vec<&str> = lab
        .checkpoints
        .iter()
        .flat_map(|c| c.checks.iter().map(|k| k.name.as_str()))
        .collect();
    for (name, evidence) in BEHAVIOUR {
        assert!(
            names.contains(name),
            "BEHAVIOUR names `{name}`, which is no check"
        );
        assert!(
            evidence.len() > 100,
            "`{name}`: say which source shows the behaviour"
        );
    }
}
