#!/usr/bin/env bash
# Lesson 3 (Module 03, Control Plane), on control-plane: etcd, etcdctl and etcdutl; the `etcd` system user;
# /var/lib/etcd; TLS material in /etc/etcd/pki (ca, server, client); etcd.service reading /etc/default/etcd.
# A single member: clients over TLS on 127.0.0.1 and 172.16.0.2, client certificates required. Safe to run again.
set -euo pipefail

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
DL=/opt/lab/downloads
ARCH=$(dpkg --print-architecture)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
CHANGED=0

# download GLOB: the one file in /opt/lab/downloads whose name matches GLOB.
download() {
  local found
  found=$(compgen -G "$DL/$1" || true)
  if [[ -z $found || $found == *$'\n'* ]]; then
    echo "expected exactly one file matching $DL/$1 (placed by lab from the lab file's [[download]])" >&2
    return 1
  fi
  printf '%s\n' "$found"
}

# put_file SRC DEST MODE: install SRC as DEST unless DEST already has that content (CHANGED=1 when it did not).
put_file() {
  if [[ -f $2 ]] && cmp -s "$1" "$2"; then
    chmod "$3" "$2"
  else
    install -D -m "$3" "$1" "$2"
    CHANGED=1
  fi
}

# put DEST MODE: put_file with the content on standard input.
put() {
  local tmp
  tmp=$(mktemp -p "$WORK")
  cat >"$tmp"
  put_file "$tmp" "$1" "$2"
}

# wait_for SECONDS WHAT SNIPPET: retry the bash SNIPPET (10 s per try) until it succeeds; fail after SECONDS.
wait_for() {
  local deadline=$((SECONDS + $1))
  until timeout 10 bash -c "$3" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "timed out after $1 s waiting for $2" >&2
      return 1
    fi
    sleep 2
  done
}

# start UNIT: reload units, enable UNIT, (re)start it if anything changed or it is not running.
start() {
  systemctl daemon-reload
  systemctl enable --quiet "$1"
  if ((CHANGED)) || ! systemctl is-active --quiet "$1"; then
    systemctl restart "$1"
  fi
  CHANGED=0
}

# make_ca DIR CN: DIR/ca.crt and DIR/ca.key, a self-signed CA; an existing one is kept.
make_ca() {
  local dir=$1 cn=$2
  if [[ -s $dir/ca.crt && -s $dir/ca.key ]]; then return 0; fi
  install -d -m 0755 "$dir"
  (umask 077 && openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/ca.key")
  openssl req -x509 -new -sha256 -days 3650 -key "$dir/ca.key" -subj "/CN=$cn" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$dir/ca.crt"
}

# make_cert DIR NAME SUBJECT EXTENDED-KEY-USAGE [SANS]: DIR/NAME.crt and DIR/NAME.key signed by DIR/ca;
# an existing pair is kept.
make_cert() {
  local dir=$1 name=$2 subject=$3 eku=$4 sans=${5:-} ext
  if [[ -s $dir/$name.crt && -s $dir/$name.key ]]; then return 0; fi
  (umask 077 && openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/$name.key")
  ext=$(mktemp -p "$WORK")
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=$eku" >"$ext"
  if [[ -n $sans ]]; then printf 'subjectAltName=%s\n' "$sans" >>"$ext"; fi
  openssl req -new -key "$dir/$name.key" -subj "$subject" |
    openssl x509 -req -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
      -days 3650 -sha256 -extfile "$ext" -out "$dir/$name.crt"
}

# write_kubeconfig DEST USER CERT KEY: a kubeconfig for https://control-plane:6443 with the CA and the client
# certificate embedded, written to DEST (mode 0600) when its content changed.
write_kubeconfig() {
  local tmp="$WORK/kubeconfig.$2"
  rm -f "$tmp"
  kubectl config set-cluster kubernetes --server=https://control-plane:6443 \
    --certificate-authority=/etc/kubernetes/pki/ca.crt --embed-certs=true --kubeconfig="$tmp" >/dev/null
  kubectl config set-credentials "$2" --client-certificate="$3" --client-key="$4" --embed-certs=true \
    --kubeconfig="$tmp" >/dev/null
  kubectl config set-context default --cluster=kubernetes --user="$2" --kubeconfig="$tmp" >/dev/null
  kubectl config use-context default --kubeconfig="$tmp" >/dev/null
  put_file "$tmp" "$1" 0600
}

main() {
  local f pki=/etc/etcd/pki

  if ! id etcd >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/etcd --no-create-home --shell /usr/sbin/nologin etcd
  fi
  install -d -m 0700 -o etcd -g etcd /var/lib/etcd

  f=$(download "etcd-*-linux-$ARCH.tar.gz")
  mkdir -p "$WORK/etcd"
  tar -xzf "$f" -C "$WORK/etcd" --strip-components=1
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
