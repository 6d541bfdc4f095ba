#!/usr/bin/env bash
# Lesson 6 (Module 03, Control Plane), on control-plane: kube-controller-manager with its client certificate
# (CN=system:kube-controller-manager) and /etc/kubernetes/controller-manager.conf; it allocates node pod CIDRs
# (--allocate-node-cidrs, --cluster-cidr=10.244.0.0/16), signs certificates with the Kubernetes CA and service
# account tokens with sa.key. Safe to run again.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

main() {
  local f pki=/etc/kubernetes/pki

  f=$(download kube-controller-manager)
  put_file "$f" /usr/local/bin/kube-controller-manager 0755

  make_cert "$pki" controller-manager "/CN=system:kube-controller-manager" clientAuth
  write_kubeconfig /etc/kubernetes/controller-manager.conf system:kube-controller-manager \
    "$pki/controller-manager.crt" "$pki/controller-manager.key"

  put /etc/systemd/system/kube-controller-manager.service 0644 <<'UNIT'
[Unit]
Description=Kubernetes controller manager
Documentation=https://kubernetes.io/docs/reference/command-line-tools-reference/kube-controller-manager/
After=kube-apiserver.service
Wants=kube-apiserver.service

[Service]
ExecStart=/usr/local/bin/kube-controller-manager \
  --kubeconfig=/etc/kubernetes/controller-manager.conf \
  --authentication-kubeconfig=/etc/kubernetes/controller-manager.conf \
  --authorization-kubeconfig=/etc/kubernetes/controller-manager.conf \
  --bind-address=127.0.0.1 \
  --leader-elect=true \
  --allocate-node-cidrs=true \
  --cluster-cidr=10.244.0.0/16 \
  --service-cluster-ip-range=10.96.0.0/12 \
  --cluster-signing-cert-file=/etc/kubernetes/pki/ca.crt \
  --cluster-signing-key-file=/etc/kubernetes/pki/ca.key \
  --root-ca-file=/etc/kubernetes/pki/ca.crt \
  --service-account-private-key-file=/etc/kubernetes/pki/sa.key \
  --use-service-account-credentials=true
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT
  start kube-controller-manager

  wait_for 120 "the controller manager to be healthy" 'curl -fsSk https://127.0.0.1:10257/healthz'
  # The service account controller creating `default` shows the controllers are at work.
  wait_for 120 "the default service account" \
    'kubectl --kubeconfig=/etc/kubernetes/admin.conf get serviceaccount default --namespace=default'
}

main "$@" </dev/null
