#!/usr/bin/env bash
# Lesson 7 (Module 04, Cluster), control-plane part: the API server gets a client certificate for talking to
# kubelets (apiserver-kubelet-client, O=system:masters), bootstrap token authentication, the Node authorizer and
# the NodeRestriction admission plugin; a bootstrap token secret in kube-system; the three ClusterRoleBindings of
# TLS bootstrapping; and /etc/kubernetes/bootstrap-kubelet.conf for the workers. Safe to run again.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

main() {
  local pki=/etc/kubernetes/pki token id secret
  export KUBECONFIG=/etc/kubernetes/admin.conf

  make_cert "$pki" apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth

  put /etc/systemd/system/kube-apiserver.service 0644 <<'UNIT'
[Unit]
Description=Kubernetes API server
Documentation=https://kubernetes.io/docs/reference/command-line-tools-reference/kube-apiserver/
After=network-online.target etcd.service
Wants=network-online.target etcd.service

[Service]
ExecStart=/usr/local/bin/kube-apiserver \
  --advertise-address=172.16.0.2 \
  --allow-privileged=true \
  --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NodeRestriction \
  --enable-bootstrap-token-auth=true \
  --client-ca-file=/etc/kubernetes/pki/ca.crt \
  --etcd-servers=https://127.0.0.1:2379 \
  --etcd-cafile=/etc/etcd/pki/ca.crt \
  --etcd-certfile=/etc/etcd/pki/client.crt \
  --etcd-keyfile=/etc/etcd/pki/client.key \
  --kubelet-client-certificate=/etc/kubernetes/pki/apiserver-kubelet-client.crt \
  --kubelet-client-key=/etc/kubernetes/pki/apiserver-kubelet-client.key \
  --secure-port=6443 \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file=/etc/kubernetes/pki/sa.pub \
  --service-account-signing-key-file=/etc/kubernetes/pki/sa.key \
  --service-cluster-ip-range=10.96.0.0/12 \
  --tls-cert-file=/etc/kubernetes/pki/apiserver.crt \
  --tls-private-key-file=/etc/kubernetes/pki/apiserver.key \
  --token-auth-file=/etc/kubernetes/tokens.csv
Restart=on-failure
RestartSec=5
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
UNIT
  start kube-apiserver
  wait_for 120 "the API server to be ready" 'kubectl get --raw=/readyz'

  # The bootstrap token: [a-z0-9]{6}.[a-z0-9]{16}, made once and kept in /etc/kubernetes/bootstrap-token.
  if [[ ! -s /etc/kubernetes/bootstrap-token ]]; then
    (umask 077 && printf '%s.%s\n' "$(openssl rand -hex 3)" "$(openssl rand -hex 8)" >/etc/kubernetes/bootstrap-token)
  fi
  token=$(</etc/kubernetes/bootstrap-token)
  id=${token%%.*}
  secret=${token#*.}

  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: bootstrap-token-$id
  namespace: kube-system
type: bootstrap.kubernetes.io/token
stringData:
  description: "Bootstrap token for the workers' kubelets"
  token-id: "$id"
  token-secret: "$secret"
  usage-bootstrap-authentication: "true"
  usage-bootstrap-signing: "true"
---
# Bootstrapping kubelets (group system:bootstrappers) may create certificate signing requests.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: create-csrs-for-bootstrapping
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:node-bootstrapper
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: Group
    name: system:bootstrappers
---
# The controller manager approves their first client certificate by itself.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: auto-approve-csrs-for-group
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:certificates.k8s.io:certificatesigningrequests:nodeclient
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: Group
    name: system:bootstrappers
---
# ... and the renewals of nodes' own client certificates.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: auto-approve-renewals-for-nodes
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:certificates.k8s.io:certificatesigningrequests:selfnodeclient
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: Group
    name: system:nodes
YAML

  # The workers' bootstrap kubeconfig; lab copies it (and ca.crt) to the workers.
  write_kubeconfig_as /etc/kubernetes/bootstrap-kubelet.conf kubelet-bootstrap --token="$token"
}

main "$@" </dev/null
