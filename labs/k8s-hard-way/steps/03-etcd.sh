#!/usr/bin/env bash
# Lesson 3 (Module 03, Control Plane), on control-plane: etcd, etcdctl and etcdutl; the `etcd` system user;
# /var/lib/etcd; TLS material in /etc/etcd/pki (ca, server, client); etcd.service reading /etc/default/etcd.
# A single member: clients over TLS on 127.0.0.1 and 172.16.0.2, client certificates required. Safe to run again.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ARCH=$(dpkg --print-architecture)

main() {
  local f pki=/etc/etcd/pki

  if ! id etcd >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/etcd --no-create-home --shell /usr/sbin/nologin etcd
  fi
  install -d -m 0700 -o etcd -g etcd /var/lib/etcd

  f=$(download "etcd-*-linux-$ARCH.tar.gz")
  unpack "$f" etcd --strip-components=1
  for f in etcd etcdctl etcdutl; do
    put_file "$WORK/etcd/$f" "/usr/local/bin/$f" 0755
  done

  make_ca "$pki" etcd-ca
  make_cert "$pki" server "/CN=control-plane" serverAuth,clientAuth \
    "DNS:control-plane,DNS:localhost,IP:127.0.0.1,IP:172.16.0.2"
  make_cert "$pki" client "/CN=kube-apiserver-etcd-client" clientAuth
  chown etcd:etcd "$pki/server.crt" "$pki/server.key"

  put /etc/default/etcd 0644 <<'ENV'
ETCD_NAME=control-plane
ETCD_DATA_DIR=/var/lib/etcd
ETCD_LISTEN_CLIENT_URLS=https://127.0.0.1:2379,https://172.16.0.2:2379
ETCD_ADVERTISE_CLIENT_URLS=https://172.16.0.2:2379
ETCD_LISTEN_PEER_URLS=http://127.0.0.1:2380
ETCD_INITIAL_ADVERTISE_PEER_URLS=http://127.0.0.1:2380
ETCD_INITIAL_CLUSTER=control-plane=http://127.0.0.1:2380
ETCD_INITIAL_CLUSTER_STATE=new
ETCD_INITIAL_CLUSTER_TOKEN=k8s-hard-way
ETCD_LISTEN_METRICS_URLS=http://127.0.0.1:2381
ETCD_CERT_FILE=/etc/etcd/pki/server.crt
ETCD_KEY_FILE=/etc/etcd/pki/server.key
ETCD_TRUSTED_CA_FILE=/etc/etcd/pki/ca.crt
ETCD_CLIENT_CERT_AUTH=true
ENV

  put /etc/systemd/system/etcd.service 0644 <<'UNIT'
[Unit]
Description=etcd key-value store
Documentation=https://etcd.io/docs/
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
User=etcd
Group=etcd
EnvironmentFile=/etc/default/etcd
ExecStart=/usr/local/bin/etcd
Restart=on-failure
RestartSec=5
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
UNIT
  start etcd

  wait_for 120 "etcd to be healthy" 'etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/etcd/pki/ca.crt \
    --cert=/etc/etcd/pki/client.crt --key=/etc/etcd/pki/client.key endpoint health'
}

main "$@" </dev/null
