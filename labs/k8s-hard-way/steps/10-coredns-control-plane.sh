#!/usr/bin/env bash
# Lesson 10 (Module 04, Cluster), control-plane part: CoreDNS as a systemd service (user coredns), bound to eth0
# (172.16.0.2:53), answering cluster.local from the API server through the kubernetes plugin and forwarding
# everything else upstream. Its identity: a client certificate (CN=coredns) bound to the system:coredns
# ClusterRole, in /etc/coredns/kubeconfig. Safe to run again.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ARCH=$(dpkg --print-architecture)

main() {
  local f upstream=/etc/resolv.conf pki=/etc/kubernetes/pki
  export KUBECONFIG=/etc/kubernetes/admin.conf

  f=$(download "coredns_*_linux_$ARCH.tgz")
  unpack "$f" coredns
  put_file "$WORK/coredns/coredns" /usr/local/bin/coredns 0755

  if ! id coredns >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin coredns
  fi

  make_cert "$pki" coredns "/CN=coredns" clientAuth
  write_kubeconfig /etc/coredns/kubeconfig coredns "$pki/coredns.crt" "$pki/coredns.key"
  chown root:coredns /etc/coredns/kubeconfig
  chmod 0640 /etc/coredns/kubeconfig

  kubectl apply -f - >/dev/null <<'YAML'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
  - apiGroups: [""]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:coredns
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: User
    name: coredns
YAML

  # With systemd-resolved, /etc/resolv.conf names the local stub; forward to the real upstream servers instead.
  if [[ -s /run/systemd/resolve/resolv.conf ]]; then
    upstream=/run/systemd/resolve/resolv.conf
  fi
  put /etc/coredns/Corefile 0644 <<EOF2
.:53 {
    bind eth0
    errors
    health :8080
    ready :8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig /etc/coredns/kubeconfig
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    forward . $upstream
    cache 30
    loop
    reload
    loadbalance
}
EOF2

  put /etc/systemd/system/coredns.service 0644 <<'UNIT'
[Unit]
Description=CoreDNS, the cluster DNS server
Documentation=https://coredns.io
After=network-online.target kube-apiserver.service
Wants=network-online.target

[Service]
User=coredns
Group=coredns
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=true
ExecStart=/usr/local/bin/coredns -conf /etc/coredns/Corefile
Restart=on-failure
RestartSec=5
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
UNIT
  start coredns

  wait_for 120 "CoreDNS to be ready" 'curl -fsS http://127.0.0.1:8181/ready'
}

main "$@" </dev/null
