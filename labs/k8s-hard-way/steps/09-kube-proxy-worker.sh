#!/usr/bin/env bash
# Lesson 9 (Module 04, Cluster), worker part: kube-proxy in iptables mode as a systemd service, configured by
# /var/lib/kube-proxy/config.yaml, talking to the API server with /var/lib/kube-proxy/kubeconfig. Safe to run again.
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

  if [[ ! -s /var/lib/kube-proxy/kubeconfig ]]; then
    echo "/var/lib/kube-proxy/kubeconfig is missing: it is copied from control-plane by the step before this one" >&2
    return 1
  fi

  f=$(download kube-proxy)
  put_file "$f" /usr/local/bin/kube-proxy 0755

  put /var/lib/kube-proxy/config.yaml 0644 <<'YAML'
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig
mode: iptables
clusterCIDR: 10.244.0.0/16
YAML

  put /etc/systemd/system/kube-proxy.service 0644 <<'UNIT'
[Unit]
Description=Kubernetes network proxy
Documentation=https://kubernetes.io/docs/reference/command-line-tools-reference/kube-proxy/
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/local/bin/kube-proxy --config=/var/lib/kube-proxy/config.yaml
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT
  start kube-proxy

  wait_for 120 "kube-proxy to program the KUBE-SERVICES chain" 'iptables -t nat -S KUBE-SERVICES'
  wait_for 60 "kube-proxy's health endpoint" 'curl -fsS http://127.0.0.1:10256/healthz'
}

main "$@" </dev/null
