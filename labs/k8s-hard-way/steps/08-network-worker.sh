#!/usr/bin/env bash
# Lesson 8 (Module 04, Cluster), worker part: flanneld as a systemd service (Kubernetes subnet manager, vxlan
# backend, net-conf 10.244.0.0/16; each node's subnet is the pod CIDR the controller manager gave it), the flannel
# CNI plugin in /opt/cni/bin and /etc/cni/net.d/10-flannel.conflist. Also IP forwarding and br_netfilter, which
# routing pods between nodes and, next lesson, Services need. Safe to run again.
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

main() {
  local f node
  node=$(hostname)

  if ! command -v iptables >/dev/null; then
    echo "iptables is not installed: flanneld (and kube-proxy) need it" >&2
    return 1
  fi
  if [[ ! -s /etc/kube-flannel/kubeconfig ]]; then
    echo "/etc/kube-flannel/kubeconfig is missing: it is copied from control-plane by the step before this one" >&2
    return 1
  fi

  put /etc/modules-load.d/kubernetes.conf 0644 <<'CONF'
overlay
br_netfilter
CONF
  modprobe overlay
  modprobe br_netfilter
  put /etc/sysctl.d/90-kubernetes.conf 0644 <<'CONF'
net.ipv4.ip_forward = 1
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
CONF
  sysctl --quiet --load=/etc/sysctl.d/90-kubernetes.conf
  CHANGED=0

  # flanneld: the release tarball holds flanneld (plus mk-docker-opts.sh and README.md).
  f=$(download "flannel-v*-linux-$ARCH.tar.gz")
  mkdir -p "$WORK/flannel"
  tar -xzf "$f" -C "$WORK/flannel"
  put_file "$WORK/flannel/flanneld" /usr/local/bin/flanneld 0755

  put /etc/kube-flannel/net-conf.json 0644 <<'JSON'
{
  "Network": "10.244.0.0/16",
  "Backend": {
    "Type": "vxlan"
  }
}
JSON

  put /etc/systemd/system/flanneld.service 0644 <<UNIT
[Unit]
Description=flannel overlay network agent
Documentation=https://github.com/flannel-io/flannel
After=network-online.target
Wants=network-online.target

[Service]
Environment=NODE_NAME=$node
ExecStart=/usr/local/bin/flanneld \\
  --kube-subnet-mgr \\
  --kubeconfig-file=/etc/kube-flannel/kubeconfig \\
  --net-config-path=/etc/kube-flannel/net-conf.json \\
  --iface=eth0 \\
  --ip-masq
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT
  start flanneld
  wait_for 120 "flanneld to write /run/flannel/subnet.env" 'test -s /run/flannel/subnet.env'

  # The flannel CNI plugin: the tarball holds flannel-<arch>; containerd calls it as "flannel".
  f=$(download "cni-plugin-flannel-linux-$ARCH-*.tgz")
  mkdir -p "$WORK/flannel-cni"
  tar -xzf "$f" -C "$WORK/flannel-cni"
  if [[ -f $WORK/flannel-cni/flannel-$ARCH ]]; then
    put_file "$WORK/flannel-cni/flannel-$ARCH" /opt/cni/bin/flannel 0755
  else
    put_file "$WORK/flannel-cni/flannel" /opt/cni/bin/flannel 0755
  fi

  # containerd's CRI plugin picks up the conflist by itself; the node turns Ready a few seconds later.
  put /etc/cni/net.d/10-flannel.conflist 0644 <<'JSON'
{
  "name": "cbr0",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "flannel",
      "delegate": {
        "hairpinMode": true,
        "isDefaultGateway": true
      }
    },
    {
      "type": "portmap",
      "capabilities": {
        "portMappings": true
      }
    }
  ]
}
JSON
}

main "$@" </dev/null
