#!/usr/bin/env bash
# Lesson 1 (Module 02, Worker Node), on each worker: containerd 2 with its systemd unit, runc, nerdctl, the CNI
# plugins, and /etc/containerd/config.toml (version 3, SystemdCgroup = true).
# Binaries come from /opt/lab/downloads, placed there by `lab up`. Safe to run again.
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
  local archive f

  # containerd: the release tarball holds bin/containerd, bin/ctr, bin/containerd-shim-runc-v2, ...
  archive=$(download "containerd-*-linux-$ARCH.tar.gz")
  mkdir -p "$WORK/containerd"
  tar -xzf "$archive" -C "$WORK/containerd"
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
  mkdir -p "$WORK/nerdctl"
  tar -xzf "$archive" -C "$WORK/nerdctl"
  put_file "$WORK/nerdctl/nerdctl" /usr/local/bin/nerdctl 0755

  # CNI plugins (bridge, host-local, loopback, portmap, ...) where containerd's CRI plugin looks for them.
  archive=$(download "cni-plugins-linux-$ARCH-*.tgz")
  install -d -m 0755 /opt/cni/bin /etc/cni/net.d
  tar -xzf "$archive" -C /opt/cni/bin --no-same-owner
}

main "$@" </dev/null
