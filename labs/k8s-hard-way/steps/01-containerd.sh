#!/usr/bin/env bash
# Lesson 1 (Module 02, Worker Node), on each worker: containerd 2 with its systemd unit, runc, nerdctl, the CNI
# plugins, and /etc/containerd/config.toml (version 3, SystemdCgroup = true).
# Binaries come from /opt/lab/downloads, placed there by `lab up`. Safe to run again.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ARCH=$(dpkg --print-architecture)

main() {
  local archive f

  # containerd: the release tarball holds bin/containerd, bin/ctr, bin/containerd-shim-runc-v2, ...
  archive=$(download "containerd-*-linux-$ARCH.tar.gz")
  unpack "$archive" containerd
  for f in "$WORK"/containerd/bin/*; do
    put_file "$f" "/usr/local/bin/${f##*/}" 0755
  done

  # runc: a single static binary, runc.<arch> upstream.
  f=$(download "runc.$ARCH")
  put_file "$f" /usr/local/sbin/runc 0755

  put /etc/containerd/config.toml 0644 <<'EOF'
version = 3

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  SystemdCgroup = true
EOF

  put /etc/systemd/system/containerd.service 0644 <<'EOF'
[Unit]
Description=containerd container runtime
Documentation=https://containerd.io
After=network.target dbus.service local-fs.target

[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/containerd
Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=5
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
OOMScoreAdjust=-999

[Install]
WantedBy=multi-user.target
EOF
  start containerd
  wait_for 60 "containerd to answer on its socket" '/usr/local/bin/ctr version'

  # nerdctl: the plain (not -full) tarball, flat: nerdctl plus the rootless helper scripts.
  archive=$(download "nerdctl-*-linux-$ARCH.tar.gz")
  unpack "$archive" nerdctl
  put_file "$WORK/nerdctl/nerdctl" /usr/local/bin/nerdctl 0755

  # CNI plugins (bridge, host-local, loopback, portmap, ...) where containerd's CRI plugin looks for them.
  archive=$(download "cni-plugins-linux-$ARCH-*.tgz")
  install -d -m 0755 /opt/cni/bin /etc/cni/net.d
  tar -xzf "$archive" -C /opt/cni/bin --no-same-owner
}

main "$@" </dev/null
