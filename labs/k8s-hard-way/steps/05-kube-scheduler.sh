#!/usr/bin/env bash
# Lesson 5 (Module 03, Control Plane), on control-plane: kube-scheduler with its client certificate
# (CN=system:kube-scheduler) and /etc/kubernetes/scheduler.conf. Safe to run again.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

main() {
  local f pki=/etc/kubernetes/pki

  f=$(download kube-scheduler)
  put_file "$f" /usr/local/bin/kube-scheduler 0755

  make_cert "$pki" scheduler "/CN=system:kube-scheduler" clientAuth
  write_kubeconfig /etc/kubernetes/scheduler.conf system:kube-scheduler "$pki/scheduler.crt" "$pki/scheduler.key"

  put /etc/systemd/system/kube-scheduler.service 0644 <<'UNIT'
[Unit]
Description=Kubernetes scheduler
Documentation=https://kubernetes.io/docs/reference/command-line-tools-reference/kube-scheduler/
After=kube-apiserver.service
Wants=kube-apiserver.service

[Service]
ExecStart=/usr/local/bin/kube-scheduler \
  --kubeconfig=/etc/kubernetes/scheduler.conf \
  --authentication-kubeconfig=/etc/kubernetes/scheduler.conf \
  --authorization-kubeconfig=/etc/kubernetes/scheduler.conf \
  --bind-address=127.0.0.1 \
  --leader-elect=true
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT
  start kube-scheduler

  wait_for 120 "the scheduler to be healthy" 'curl -fsSk https://127.0.0.1:10259/healthz'
}

main "$@" </dev/null
