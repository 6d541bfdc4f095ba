#!/usr/bin/env bash
# Lesson 9 (Module 04, Cluster), worker part: kube-proxy in iptables mode as a systemd service, configured by
# /var/lib/kube-proxy/config.yaml, talking to the API server with /var/lib/kube-proxy/kubeconfig. Safe to run again.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

main() {
  local f

  need_copied /var/lib/kube-proxy/kubeconfig

  f=$(download kube-proxy)
  put_file "$f" /usr/local/bin/kube-proxy 0755

  put /var/lib/kube-proxy/config.yaml 0644 <<'YAML'
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig
mode: iptables
clusterCIDR: 10.244.0.0/16
YAML

  put /etc/systemd/system/kube-proxy.service 0644 <<'UNIT'
[Unit]
Description=Kubernetes network proxy
Documentation=https://kubernetes.io/docs/reference/command-line-tools-reference/kube-proxy/
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/local/bin/kube-proxy --config=/var/lib/kube-proxy/config.yaml
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT
  start kube-proxy

  wait_for 120 "kube-proxy to program the KUBE-SERVICES chain" 'iptables -t nat -S KUBE-SERVICES'
  wait_for 60 "kube-proxy's health endpoint" 'curl -fsS http://127.0.0.1:10256/healthz'
}

main "$@" </dev/null
