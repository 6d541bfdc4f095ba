#!/usr/bin/env bash
# Lesson 7 (Module 04, Cluster), worker part: with /etc/kubernetes/pki/ca.crt and
# /etc/kubernetes/bootstrap-kubelet.conf copied from control-plane, the kubelet leaves standalone mode: it
# bootstraps a client certificate (auto-approved), writes /etc/kubernetes/kubelet.conf and registers its node.
# Its API now authenticates clients by certificate (the cluster CA) or webhook and authorizes by webhook.
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

main() {
  local f
  for f in /etc/kubernetes/pki/ca.crt /etc/kubernetes/bootstrap-kubelet.conf; do
    if [[ ! -s $f ]]; then
      echo "$f is missing: it is copied from control-plane by the step before this one" >&2
      return 1
    fi
  done

  put /var/lib/kubelet/config.d/70-authnz.conf 0644 <<'YAML'
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
readOnlyPort: 0
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
YAML

  put /etc/systemd/system/kubelet.service 0644 <<'UNIT'
[Unit]
Description=Kubernetes kubelet
Documentation=https://kubernetes.io/docs/reference/command-line-tools-reference/kubelet/
After=containerd.service
Wants=containerd.service

[Service]
ExecStart=/usr/local/bin/kubelet \
  --config-dir=/var/lib/kubelet/config.d/ \
  --bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf \
  --kubeconfig=/etc/kubernetes/kubelet.conf
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT
  start kubelet

  wait_for 180 "the kubelet's client certificate (TLS bootstrap)" \
    'test -s /etc/kubernetes/kubelet.conf && test -s /var/lib/kubelet/pki/kubelet-client-current.pem'
  wait_for 120 "the kubelet's health endpoint" 'curl -fsS http://127.0.0.1:10248/healthz'
}

main "$@" </dev/null
