#!/usr/bin/env bash
# Lesson 4 (Module 03, Control Plane), on control-plane: kube-apiserver and kubectl. /etc/kubernetes/pki holds
# the service-account key pair (sa.key, sa.pub), the Kubernetes CA (CN=kubernetes), the API server certificate
# (SANs control-plane and 10.96.0.1, among others) and the admin certificate (O=system:masters);
# /etc/kubernetes/tokens.csv a static token; RBAC authorization; etcd over mTLS with etcd's client certificate.
# The admin kubeconfig is /etc/kubernetes/admin.conf, copied to ~/.kube/config of root and laborant.
# Safe to run again.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

main() {
  local b f home pki=/etc/kubernetes/pki

  for b in kube-apiserver kubectl; do
    f=$(download "$b")
    put_file "$f" "/usr/local/bin/$b" 0755
  done

  make_ca "$pki" kubernetes
  if [[ ! -s $pki/sa.key ]]; then
    make_key "$pki/sa.key"
  fi
  if [[ ! -s $pki/sa.pub ]]; then
    openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
  fi
  make_cert "$pki" apiserver "/CN=kube-apiserver" serverAuth \
    "DNS:control-plane,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:10.96.0.1,IP:172.16.0.2,IP:127.0.0.1"
  make_cert "$pki" admin "/O=system:masters/CN=admin" clientAuth

  # Static token authentication: token,user,uid,"groups". Made once.
  if [[ ! -s /etc/kubernetes/tokens.csv ]]; then
    (umask 077 && printf '%s,admin,admin,"system:masters"\n' "$(openssl rand -hex 16)" >/etc/kubernetes/tokens.csv)
  fi

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
  --authorization-mode=RBAC \
  --client-ca-file=/etc/kubernetes/pki/ca.crt \
  --etcd-servers=https://127.0.0.1:2379 \
  --etcd-cafile=/etc/etcd/pki/ca.crt \
  --etcd-certfile=/etc/etcd/pki/client.crt \
  --etcd-keyfile=/etc/etcd/pki/client.key \
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

  write_kubeconfig /etc/kubernetes/admin.conf admin "$pki/admin.crt" "$pki/admin.key"
  install -d -m 0700 /root/.kube
  put_file /etc/kubernetes/admin.conf /root/.kube/config 0600
  home=$(getent passwd laborant | cut -d: -f6 || true)
  if [[ -n $home && -d $home ]]; then
    install -d -m 0700 -o laborant -g laborant "$home/.kube"
    put_file /etc/kubernetes/admin.conf "$home/.kube/config" 0600
    chown laborant:laborant "$home/.kube/config"
  fi

  wait_for 120 "the API server to be ready" \
    'kubectl --kubeconfig=/etc/kubernetes/admin.conf get --raw=/readyz'
}

main "$@" </dev/null
