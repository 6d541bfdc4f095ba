#!/usr/bin/env bash
# Lesson 7 (Module 04, Cluster), worker part: with /etc/kubernetes/pki/ca.crt and
# /etc/kubernetes/bootstrap-kubelet.conf copied from control-plane, the kubelet leaves standalone mode: it
# bootstraps a client certificate (auto-approved), writes /etc/kubernetes/kubelet.conf and registers its node.
# Its API now authenticates clients by certificate (the cluster CA) or webhook and authorizes by webhook.
# Safe to run again.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

main() {
  need_copied /etc/kubernetes/pki/ca.crt /etc/kubernetes/bootstrap-kubelet.conf

  put /var/lib/kubelet/config.d/70-authnz.conf 0644 <<'YAML'
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
readOnlyPort: 0
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
YAML

  put /etc/systemd/system/kubelet.service 0644 <<'UNIT'
[Unit]
Description=Kubernetes kubelet
Documentation=https://kubernetes.io/docs/reference/command-line-tools-reference/kubelet/
After=containerd.service
Wants=containerd.service

[Service]
ExecStart=/usr/local/bin/kubelet \
  --config-dir=/var/lib/kubelet/config.d/ \
  --bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf \
  --kubeconfig=/etc/kubernetes/kubelet.conf
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT
  start kubelet

  wait_for 180 "the kubelet's client certificate (TLS bootstrap)" \
    'test -s /etc/kubernetes/kubelet.conf && test -s /var/lib/kubelet/pki/kubelet-client-current.pem'
  wait_for 120 "the kubelet's health endpoint" 'curl -fsS http://127.0.0.1:10248/healthz'
}

main "$@" </dev/null
