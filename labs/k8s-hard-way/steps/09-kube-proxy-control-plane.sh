#!/usr/bin/env bash
# Lesson 9 (Module 04, Cluster), control-plane part: kube-proxy's client certificate (CN=system:kube-proxy, which
# the built-in system:node-proxier binding authorizes) and /etc/kubernetes/kube-proxy.conf pointing at
# https://control-plane:6443; lab copies it to the workers as /var/lib/kube-proxy/kubeconfig. Safe to run again.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

main() {
  local pki=/etc/kubernetes/pki
  make_cert "$pki" kube-proxy "/CN=system:kube-proxy" clientAuth
  write_kubeconfig /etc/kubernetes/kube-proxy.conf system:kube-proxy "$pki/kube-proxy.crt" "$pki/kube-proxy.key"
}

main "$@" </dev/null
