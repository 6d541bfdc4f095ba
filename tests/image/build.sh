#!/usr/bin/env bash
# Build (or reuse) a small Debian 12 (bookworm) cloud image for lab's tests.
#
# Usage: tests/image/build.sh
#   Prints the absolute path of the qcow2 image as the last line of stdout;
#   everything else goes to stderr.
#
# Needs root and the Debian package mirror only: no loop devices, no mounts.
# The image is cached under ${LAB_TEST_IMAGE_CACHE:-/var/cache/lab-test-image}
# in a directory named after the hash of this script, so editing the script
# rebuilds it.
#
# Environment:
#   LAB_TEST_IMAGE_CACHE   cache directory (default /var/cache/lab-test-image)
#   LAB_DEBIAN_MIRROR      Debian mirror (default http://deb.debian.org/debian)
set -euo pipefail

# Keep the real stdout for the final path; send everything else to stderr.
exec 3>&1 1>&2

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

script=$(readlink -f "${BASH_SOURCE[0]}")
cache=${LAB_TEST_IMAGE_CACHE:-/var/cache/lab-test-image}
mirror=${LAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
key=$(sha256sum "$script" | cut -c1-16)
image_name=debian-12-test.qcow2

mkdir -p "$cache"
cache=$(cd "$cache" && pwd -P)
final_dir="$cache/$key"
final="$final_dir/$image_name"

if [[ -f "$final" ]]; then
    echo "$final" >&3
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot)"

# --- one builder at a time -------------------------------------------------
exec 9>"$cache/.lock"
if ! flock -n 9; then
    log "another build holds $cache/.lock; waiting (up to 1h)"
    flock -w 3600 9 || die "timed out waiting for $cache/.lock"
fi
if [[ -f "$final" ]]; then
    log "built by a concurrent run"
    echo "$final" >&3
    exit 0
fi

# --- helpers ---------------------------------------------------------------
# Unmount anything below $1 (deepest first): debootstrap mounts /proc and
# /sys in its target and a killed run can leave them behind.
unmount_below() {
    local dir=$1 mnt
    local -a mnts=()
    while read -r _ mnt _; do
        mnt=$(printf '%b' "$mnt") # /proc/mounts escapes spaces as \040
        case $mnt in "$dir"/*) mnts+=("$mnt") ;; esac
    done </proc/mounts
    local i
    for ((i = ${#mnts[@]} - 1; i >= 0; i--)); do
        umount -l "${mnts[i]}" || true
    done
}

remove_tree() {
    local dir=$1
    [[ -e "$dir" ]] || return 0
    unmount_below "$dir"
    rm -rf --one-file-system "$dir"
}

tmp=""
cleanup() {
    local rc=$?
    if [[ -n "$tmp" ]]; then
        remove_tree "$tmp" || log "warning: could not remove $tmp"
    fi
    if [[ $rc -ne 0 ]]; then
        log "FAILED (exit $rc)"
    fi
}
trap cleanup EXIT

# --- host tools --------------------------------------------------------------
need_pkgs=()
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
{ command -v grub-mkimage >/dev/null 2>&1 &&
    [[ -f /usr/lib/grub/i386-pc/boot.img && -f /usr/lib/grub/i386-pc/linux.mod ]]; } ||
    need_pkgs+=(grub-pc-bin grub-common)
command -v sfdisk >/dev/null 2>&1 || need_pkgs+=(fdisk)
command -v mkfs.ext4 >/dev/null 2>&1 || need_pkgs+=(e2fsprogs)
command -v qemu-img >/dev/null 2>&1 || need_pkgs+=(qemu-utils)
if ((${#need_pkgs[@]})); then
    log "installing host packages: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
fi

# Leftovers of killed runs (we hold the lock, so nobody else is building).
for d in "$cache"/.build.*; do
    [[ -e "$d" ]] || continue
    log "removing stale $d"
    remove_tree "$d"
done

start=$SECONDS
tmp=$(mktemp -d "$cache/.build.XXXXXX")
root="$tmp/root"
mkdir "$root"

# --- 1. root file system -------------------------------------------------------
packages=(
    systemd-sysv linux-image-amd64 cloud-init python3-cffi-backend
    cloud-guest-utils openssh-server qemu-guest-agent
    ifupdown isc-dhcp-client iproute2 iputils-ping netbase
    sudo ca-certificates locales net-tools procps dnsutils
    resolvconf dbus
)
log "debootstrap bookworm from $mirror"
include=$(
    IFS=,
    echo "${packages[*]}"
)
debootstrap --variant=minbase --include="$include" \
    bookworm "$root" "$mirror" >&2

# Anything debootstrap left mounted must go before we pack the tree.
unmount_below "$root"

log "configuring the root file system"
cat >"$root/etc/fstab" <<'EOF'
LABEL=rootfs / ext4 defaults,errors=remount-ro 0 1
EOF

echo localhost >"$root/etc/hostname"
cat >"$root/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF
# resolvconf makes ifupdown's dns-nameservers (what cloud-init's ENI
# renderer writes for static configs) and dhclient's DNS reach resolv.conf.
# Forget the build host's resolvers that debootstrap copied in.
rm -f "$root/etc/resolv.conf"
ln -s ../run/resolvconf/resolv.conf "$root/etc/resolv.conf"
rm -f "$root/etc/resolvconf/resolv.conf.d/original"

# Fresh identity on first boot.
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
rm -f "$root"/etc/ssh/ssh_host_*
# No root password (locked).
chroot "$root" usermod -p '*' root

mkdir -p "$root/etc/cloud/cloud.cfg.d"
cat >"$root/etc/cloud/cloud.cfg.d/99-lab.cfg" <<'EOF'
# lab test image
datasource_list: [ NoCloud, None ]
locale: C.UTF-8
# 127.0.1.1 <hostname> in /etc/hosts (sudo resolves its own host name).
manage_etc_hosts: true
# RSA/DSA host key generation takes ~40 s under TCG.
ssh_genkeytypes: [ ed25519, ecdsa ]
# No grub-pc package in the image; nothing for debconf to record.
grub_dpkg:
  enabled: false
EOF

chroot "$root" systemctl enable ssh.service >&2
chroot "$root" systemctl enable serial-getty@ttyS0.service >&2

# Drivers for the virtio root disk, NIC and the VFAT NoCloud seed, also in
# the initramfs (MODULES=most has most of these; make sure of all).
cat >>"$root/etc/initramfs-tools/modules" <<'EOF'
virtio_pci
virtio_blk
virtio_net
virtio_scsi
vfat
fat
nls_cp437
nls_iso8859-1
nls_utf8
EOF
# FSTYPE: the fsck hook can't probe LABEL=rootfs inside the chroot.
cat >"$root/etc/initramfs-tools/conf.d/lab" <<'EOF'
RESUME=none
FSTYPE=ext4
COMPRESS=gzip
EOF

kvers=()
for k in "$root"/boot/vmlinuz-*; do
    [[ -e "$k" ]] && kvers+=("${k##*/vmlinuz-}")
done
((${#kvers[@]} == 1)) || die "expected one kernel in /boot, found ${#kvers[@]}"
kver=${kvers[0]}
log "rebuilding initramfs for $kver"
chroot "$root" update-initramfs -u -k "$kver" >&2
initrd_list=$(chroot "$root" lsinitramfs "/boot/initrd.img-$kver")
for m in virtio_pci virtio_blk virtio_net vfat fat nls_cp437 nls_iso8859-1 nls_utf8 ext4; do
    grep -Eq "/${m}\.ko(\.[a-z]+)?$" <<<"$initrd_list" || die "initramfs lacks $m"
done

# Save space.
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/*
rm -rf "$root"/var/cache/debconf/*-old "$root"/var/log/*.log "$root"/tmp/*

# GRUB: no grub-install; a hand-written config plus the host's i386-pc
# modules (so normal mode can load anything it needs on demand).
mkdir -p "$root/boot/grub/i386-pc"
cp /usr/lib/grub/i386-pc/*.mod /usr/lib/grub/i386-pc/*.lst "$root/boot/grub/i386-pc/"
cat >"$root/boot/grub/grub.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
set default=0
search --no-floppy --label rootfs --set=root
menuentry 'Debian GNU/Linux 12 (lab test image)' {
    linux /boot/vmlinuz-$kver root=LABEL=rootfs ro console=tty0 console=ttyS0,115200 net.ifnames=0 biosdevname=0
    initrd /boot/initrd.img-$kver
}
EOF

# --- 2. disk image, no loop devices ---------------------------------------------
content_mib=$(du -s -B1M "$root" | cut -f1)
# Content + 10% fs overhead + ~300 MiB free, rounded up to 64 MiB.
part_mib=$(((content_mib * 11 / 10 + 300 + 63) / 64 * 64))
log "root tree ${content_mib} MiB -> ext4 of ${part_mib} MiB"
part="$tmp/part.ext4"
disk="$tmp/disk.raw"
truncate -s "${part_mib}M" "$part"
mkfs.ext4 -F -q -L rootfs -d "$root" "$part" >&2
remove_tree "$root"

truncate -s "$((part_mib + 1))M" "$disk"
sfdisk --no-reread --no-tell-kernel -q "$disk" >&2 <<EOF
label: dos
unit: sectors
start=2048, size=$((part_mib * 2048)), type=83, bootable
EOF
dd if="$part" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
rm -f "$part"

core="$tmp/core.img"
grub-mkimage -O i386-pc -o "$core" -p '(hd0,msdos1)/boot/grub' \
    biosdisk part_msdos ext2 normal linux configfile search search_label \
    serial terminal echo test
core_size=$(stat -c %s "$core")
((core_size <= (2048 - 1) * 512)) || die "core.img too big: $core_size bytes"
# boot.img's code only (440 bytes): keeps disk signature and partition table.
# Its kernel-sector field defaults to 1, and core.img's diskboot blocklist
# (filled in by grub-mkimage) points at sector 2 onwards.
dd if=/usr/lib/grub/i386-pc/boot.img of="$disk" bs=440 count=1 conv=notrunc status=none
dd if="$core" of="$disk" bs=512 seek=1 conv=notrunc status=none

log "converting to compressed qcow2"
mkdir "$tmp/out"
qemu-img convert -c -O qcow2 "$disk" "$tmp/out/$image_name"
rm -f "$disk"

# --- 3. publish ---------------------------------------------------------------
rm -rf "$final_dir"
mv -T "$tmp/out" "$final_dir"
for d in "$cache"/*; do
    [[ -d "$d" && "$d" != "$final_dir" ]] || continue
    [[ ${d##*/} =~ ^[0-9a-f]{16}$ ]] || continue
    log "removing old image dir $d"
    rm -rf --one-file-system "$d"
done

log "built $final ($(du -h --apparent-size "$final" | cut -f1)) in $((SECONDS - start))s"
echo "$final" >&3
