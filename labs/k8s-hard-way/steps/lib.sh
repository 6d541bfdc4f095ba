#!/usr/bin/env bash
# Shared helpers of the course's step scripts. A step sources it with
#   # shellcheck source=lib.sh
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# right after its own `set -euo pipefail`. lab sends each step alone over SSH (`sudo bash -s`), so it inlines this
# file's text (minus the shebang) in place of that line; run by hand from this folder, bash sources it. Either way
# it must stay plain definitions plus the few globals below, and never read standard input at top level (the
# script's own text arrives there). Every step then runs `main "$@" </dev/null` for the same reason.
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

# need_copied FILE...: fail unless every FILE is there and not empty; lab copies them from control-plane in the
# step before the one that calls this.
need_copied() {
  local f
  for f in "$@"; do
    if [[ ! -s $f ]]; then
      echo "$f is missing: it is copied from control-plane by the step before this one" >&2
      return 1
    fi
  done
}

# unpack ARCHIVE NAME [TAR-FLAG...]: extract the gzipped tarball ARCHIVE into $WORK/NAME.
unpack() {
  mkdir -p "$WORK/$2"
  tar -xzf "$1" -C "$WORK/$2" "${@:3}"
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

# make_key FILE: a new 2048-bit RSA private key in FILE, readable by its owner only.
make_key() {
  (umask 077 && openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1")
}

# make_ca DIR CN: DIR/ca.crt and DIR/ca.key, a self-signed CA; an existing one is kept.
make_ca() {
  local dir=$1 cn=$2
  if [[ -s $dir/ca.crt && -s $dir/ca.key ]]; then return 0; fi
  install -d -m 0755 "$dir"
  make_key "$dir/ca.key"
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
  make_key "$dir/$name.key"
  ext=$(mktemp -p "$WORK")
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=$eku" >"$ext"
  if [[ -n $sans ]]; then printf 'subjectAltName=%s\n' "$sans" >>"$ext"; fi
  openssl req -new -key "$dir/$name.key" -subj "$subject" |
    openssl x509 -req -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
      -days 3650 -sha256 -extfile "$ext" -out "$dir/$name.crt"
}

# write_kubeconfig_as DEST USER CREDENTIAL-FLAG...: a kubeconfig for https://control-plane:6443 with the CA
# embedded and USER's credentials given by the `kubectl config set-credentials` flags (a client certificate, a
# token), written to DEST (mode 0600) when its content changed.
write_kubeconfig_as() {
  local dest=$1 user=$2 tmp="$WORK/kubeconfig.$2"
  shift 2
  rm -f "$tmp"
  kubectl config set-cluster kubernetes --server=https://control-plane:6443 \
    --certificate-authority=/etc/kubernetes/pki/ca.crt --embed-certs=true --kubeconfig="$tmp" >/dev/null
  kubectl config set-credentials "$user" "$@" --kubeconfig="$tmp" >/dev/null
  kubectl config set-context default --cluster=kubernetes --user="$user" --kubeconfig="$tmp" >/dev/null
  kubectl config use-context default --kubeconfig="$tmp" >/dev/null
  put_file "$tmp" "$dest" 0600
}

# write_kubeconfig DEST USER CERT KEY: write_kubeconfig_as with the client certificate CERT and its KEY embedded.
write_kubeconfig() {
  write_kubeconfig_as "$1" "$2" --client-certificate="$3" --client-key="$4" --embed-certs=true
}
