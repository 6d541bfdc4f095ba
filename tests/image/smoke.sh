#!/usr/bin/env bash
# Boot the lab test image under plain QEMU (TCG, no libvirt) with a NoCloud
# seed and check that cloud-init finishes, the hostname and network are set
# and the seeded user can ssh in and sudo.
#
# Usage: tests/image/smoke.sh [IMAGE]
#   IMAGE defaults to the output of tests/image/build.sh.
#
# Environment:
#   SMOKE_TIMEOUT   seconds to wait for cloud-init to finish (default 240)
#   SMOKE_NET       static (default) or dhcp: the network-config v2 flavour
#   SMOKE_KEEP=1    keep the work dir even on success
#
# The guest gets QEMU user networking with restrict=on: it cannot reach any
# outside address; only a loopback port-forward to its ssh port exists.
set -euo pipefail

log() { printf 'smoke.sh: %s\n' "$*" >&2; }
die() {
    log "FAIL: $*"
    exit 1
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
timeout_s=${SMOKE_TIMEOUT:-240}
net_mode=${SMOKE_NET:-static}
mac=52:54:00:12:34:56

image=${1:-}
if [[ -z "$image" ]]; then
    image=$("$here/build.sh" | tail -n1)
fi
[[ -f "$image" ]] || die "no image at $image"
image=$(readlink -f "$image")

need_pkgs=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need_pkgs+=(qemu-system-x86)
command -v qemu-img >/dev/null 2>&1 || need_pkgs+=(qemu-utils)
command -v mkfs.vfat >/dev/null 2>&1 || need_pkgs+=(dosfstools)
command -v mcopy >/dev/null 2>&1 || need_pkgs+=(mtools)
command -v ssh >/dev/null 2>&1 || need_pkgs+=(openssh-client)
command -v ss >/dev/null 2>&1 || need_pkgs+=(iproute2)
if ((${#need_pkgs[@]})); then
    log "installing host packages: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >&2
fi

work=$(mktemp -d /tmp/lab-smoke.XXXXXX)
qemu_pid=""
ok=0
cleanup() {
    if [[ -n "$qemu_pid" ]] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
        for _ in $(seq 1 20); do
            kill -0 "$qemu_pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -9 "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
    if [[ $ok -eq 1 && "${SMOKE_KEEP:-0}" != 1 ]]; then
        rm -rf "$work"
    else
        log "work dir kept: $work (console: $work/console.log)"
    fi
}
trap cleanup EXIT

# --- seed ---------------------------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -C lab-smoke -f "$work/key"
pubkey=$(cat "$work/key.pub")

cat >"$work/user-data" <<EOF
#cloud-config
users:
  - name: laborant
    shell: /bin/bash
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    lock_passwd: true
    ssh_authorized_keys:
      - $pubkey
runcmd:
  - [ sh, -c, "echo LAB-SEED-OK > /dev/ttyS0" ]
EOF

cat >"$work/meta-data" <<'EOF'
instance-id: test-1
local-hostname: t1
EOF

case $net_mode in
static)
    cat >"$work/network-config" <<EOF
version: 2
ethernets:
  eth0:
    match:
      macaddress: "$mac"
    set-name: eth0
    addresses: [10.0.2.15/24]
    routes:
      - to: 0.0.0.0/0
        via: 10.0.2.2
    nameservers:
      addresses: [10.0.2.3]
EOF
    ;;
dhcp)
    cat >"$work/network-config" <<EOF
version: 2
ethernets:
  eth0:
    match:
      macaddress: "$mac"
    set-name: eth0
    dhcp4: true
EOF
    ;;
*) die "SMOKE_NET must be static or dhcp, not $net_mode" ;;
esac

mkfs.vfat -n CIDATA -C "$work/seed.img" 2048 >/dev/null
mcopy -i "$work/seed.img" "$work/user-data" "$work/meta-data" "$work/network-config" ::

qemu-img create -q -f qcow2 -b "$image" -F qcow2 "$work/overlay.qcow2" 4G

# --- boot -----------------------------------------------------------------------
port=""
for p in $(seq 2222 2299); do
    if [[ -z $(ss -Hltn "sport = :$p") ]]; then
        port=$p
        break
    fi
done
[[ -n "$port" ]] || die "no free port in 2222-2299"

log "booting $image (TCG, ssh on 127.0.0.1:$port, net=$net_mode)"
start=$SECONDS
qemu-system-x86_64 \
    -machine q35,accel=tcg -m 1024 -smp 2 \
    -display none -monitor none \
    -serial "file:$work/console.log" \
    -drive "file=$work/overlay.qcow2,if=virtio,format=qcow2" \
    -drive "file=$work/seed.img,if=virtio,format=raw" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$port-:22" \
    -device "virtio-net-pci,netdev=n0,mac=$mac" \
    </dev/null >"$work/qemu.log" 2>&1 &
qemu_pid=$!

gssh() {
    ssh -p "$port" -i "$work/key" \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o BatchMode=yes -o ConnectTimeout=5 -o LogLevel=ERROR \
        laborant@127.0.0.1 "$@"
}

status=""
deadline=$((start + timeout_s))
while ((SECONDS < deadline)); do
    kill -0 "$qemu_pid" 2>/dev/null || {
        cat "$work/qemu.log" >&2
        tail -n 40 "$work/console.log" >&2 || true
        die "qemu exited"
    }
    left=$((deadline - SECONDS))
    if out=$(timeout "$left" ssh -p "$port" -i "$work/key" \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o BatchMode=yes -o ConnectTimeout=5 -o LogLevel=ERROR \
        laborant@127.0.0.1 cloud-init status --wait 2>/dev/null); then
        status=$(grep '^status:' <<<"$out" || true)
        break
    fi
    status=$(grep '^status:' <<<"${out:-}" || true)
    [[ -n "$status" ]] && break
    sleep 3
done
elapsed=$((SECONDS - start))

if [[ "$status" != "status: done" ]]; then
    log "cloud-init: ${status:-no answer} after ${elapsed}s"
    tail -n 40 "$work/console.log" >&2 || true
    if [[ -n "$status" ]]; then
        gssh 'cloud-init status --long; grep -E "WARNING|ERROR|Traceback" /var/log/cloud-init.log | tail -n 40' >&2 || true
    fi
    die "cloud-init did not reach status: done"
fi
log "cloud-init done ${elapsed}s after qemu start"

host=$(gssh hostname)
[[ "$host" == t1 ]] || die "hostname is '$host', want t1"
addrs=$(gssh ip -o addr show)
grep -q '^[0-9]*: eth0 *inet 10\.0\.2\.15/24' <<<"$addrs" ||
    die "eth0 lacks 10.0.2.15/24: $addrs"
sudo_err=$(gssh sudo -n true 2>&1) || die "passwordless sudo failed: $sudo_err"
[[ -z "$sudo_err" ]] || die "sudo complained: $sudo_err"
# restrict=on makes QEMU's DHCP server hand out neither router nor DNS, so
# only the static config can prove DNS settings reach resolv.conf.
if [[ $net_mode == static ]]; then
    gssh cat /etc/resolv.conf | grep -q '^nameserver 10\.0\.2\.3$' ||
        die "resolv.conf lacks nameserver 10.0.2.3"
fi
warnings=$(gssh "grep -cE 'WARNING|Traceback' /var/log/cloud-init.log" || true)
log "cloud-init.log: ${warnings:-?} WARNING/Traceback lines"
grep -q LAB-SEED-OK "$work/console.log" || die "runcmd marker missing on console"
log "$(gssh cloud-init --version 2>&1 | tr -d '\n'); hostname $host; eth0 up; sudo ok"

gssh sudo -n poweroff >/dev/null 2>&1 || true
for _ in $(seq 1 30); do
    kill -0 "$qemu_pid" 2>/dev/null || break
    sleep 1
done

ok=1
log "PASS (cloud-init done in ${elapsed}s)"
