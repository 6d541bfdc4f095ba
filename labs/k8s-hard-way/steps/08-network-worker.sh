#!/usr/bin/env bash
# Lesson 8 (Module 04, Cluster), worker part: flanneld as a systemd service (Kubernetes subnet manager, vxlan
# backend, net-conf 10.244.0.0/16; each node's subnet is the pod CIDR the controller manager gave it), the flannel
# CNI plugin in /opt/cni/bin and /etc/cni/net.d/10-flannel.conflist. Also IP forwarding and br_netfilter, which
# routing pods between nodes and, next lesson, Services need. Safe to run again.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ARCH=$(dpkg --print-architecture)

main() {
  local f node
  node=$(hostname)

  if ! command -v iptables >/dev/null; then
    echo "iptables is not installed: flanneld (and kube-proxy) need it" >&2
    return 1
  fi
  need_copied /etc/kube-flannel/kubeconfig

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
  unpack "$f" flannel
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
  unpack "$f" flannel-cni
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
