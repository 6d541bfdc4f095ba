#!/usr/bin/env bash
# Lesson 8 (Module 04, Cluster), control-plane part: flanneld's identity. A client certificate (CN=flannel),
# the flannel ClusterRole (read nodes, patch node status) bound to it, and /etc/kubernetes/flannel.conf, which
# lab copies to the workers as /etc/kube-flannel/kubeconfig. Safe to run again.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

main() {
  local pki=/etc/kubernetes/pki
  export KUBECONFIG=/etc/kubernetes/admin.conf

  make_cert "$pki" flannel "/CN=flannel" clientAuth
  write_kubeconfig /etc/kubernetes/flannel.conf flannel "$pki/flannel.crt" "$pki/flannel.key"

  kubectl apply -f - >/dev/null <<'YAML'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: flannel
rules:
  - apiGroups: [""]
    resources: [pods]
    verbs: [get]
  - apiGroups: [""]
    resources: [nodes]
    verbs: [get, list, watch]
  - apiGroups: [""]
    resources: [nodes/status]
    verbs: [patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: flannel
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: flannel
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: User
    name: flannel
YAML
}

main "$@" </dev/null
