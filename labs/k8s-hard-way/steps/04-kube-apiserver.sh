#!/usr/bin/env bash
# Lesson 4 (Module 03, Control Plane), on control-plane: kube-apiserver and kubectl. /etc/kubernetes/pki holds
# the service-account key pair (sa.key, sa.pub), the Kubernetes CA (CN=kubernetes), the API server certificate
# (SANs control-plane and 10.96.0.1, among others) and the admin certificate (O=system:masters);
# /etc/kubernetes/tokens.csv a static token; RBAC authorization; etcd over mTLS with etcd's client certificate.
# The admin kubeconfig is /etc/kubernetes/admin.conf, copied to ~/.kube/config of root and laborant.
# Safe to run again.
set -euo pipefail

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
DL=/opt/lab/downloads
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
  local b f home pki=/etc/kubernetes/pki

  for b in kube-apiserver kubectl; do
    f=$(download "$b")
    put_file "$f" "/usr/local/bin/$b" 0755
  done

  make_ca "$pki" kubernetes
  if [[ ! -s $pki/sa.key ]]; then
    (umask 077 && openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key")
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
