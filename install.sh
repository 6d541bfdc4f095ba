#!/usr/bin/env bash
# From a clone to `lab up`: the system packages (Debian, Ubuntu), Rust when there is no cargo 1.89+, `lab` built and
# installed on PATH, libvirtd running, the user in group libvirt, and `lab doctor` to finish. Safe to run again:
# what is there already is left as it is (a running libvirtd included).
set -euo pipefail
cd "$(dirname "$0")"

usage() {
    cat <<'EOF'
Usage: ./install.sh [--yes] [--test] [--no-build] [--dry-run]

Installs what `lab` needs on this machine, then `lab` itself, then runs `lab doctor`.
Run it as yourself (it uses sudo where it needs root) or as root.

  --yes       do not ask before installing packages or Rust (for scripts)
  --test      also what the tests need (debootstrap, grub, bubblewrap, shellcheck, socat, ...), rustfmt and clippy;
              `lab` is built by the tests' own build (debug), so the tests reuse it
  --no-build  do not build or install `lab` (the tests run it from their own build)
  --dry-run   print what would be done, change nothing
  -h, --help  this text

Environment: PREFIX (default /usr/local: `lab` goes to PREFIX/bin), CARGO_TARGET_DIR (the build folder).
EOF
}

yes=0 test=0 build=1 dry=0
for a in "$@"; do
    case $a in
        --yes | -y) yes=1 ;;
        --test) test=1 ;;
        --no-build) build=0 ;;
        --dry-run) dry=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $a" >&2; usage >&2; exit 2 ;;
    esac
done
PREFIX=${PREFIX:-/usr/local}
MIN_RUST=1.89
started=$SECONDS
export DEBIAN_FRONTEND=noninteractive

bold='' plain=''
[[ -t 1 && -z ${NO_COLOR:-} ]] && bold=$'\033[1m' plain=$'\033[0m'
say() { printf '%s\n' "${bold}install.sh:${plain} $*"; }
die() { say "$*" >&2; exit 1; }

# Commands that change the machine go through `run` (and `as_root` when they need root), so --dry-run shows them.
run() {
    if ((dry)); then
        echo "+ $*" >&2
    else
        "$@"
    fi
}
if ((EUID == 0)); then
    as_root() { run "$@"; }
elif command -v sudo >/dev/null; then
    as_root() { run sudo "$@"; }
else
    as_root() {
        ((dry)) || die "needs root for: $* (run as root, or install sudo)"
        echo "+ (as root) $*" >&2
    }
fi

confirm() {
    ((yes || dry)) && return 0
    [[ -t 0 ]] || die "$1 (no terminal to ask on: pass --yes)"
    local answer
    read -r -p "$1 [Y/n] " answer
    [[ -z $answer || $answer == [yY]* ]]
}

# ---- system packages ---------------------------------------------------------------------------------------------

arch=$(uname -m)
case $arch in
    x86_64) qemu_system=qemu-system-x86 ;;
    aarch64) qemu_system=qemu-system-arm ;;
    *) qemu_system=qemu-system ;;
esac
has_systemd() { [[ -d /run/systemd/system ]]; }

# PACKAGE[:COMMAND]: with a COMMAND, the package is only needed when the command is missing (a machine with gcc
# but no build-essential metapackage needs nothing more).
wanted=(build-essential:cc git:git curl:curl ca-certificates pkg-config libvirt-dev "$qemu_system" qemu-utils
        libvirt-daemon-system libvirt-clients dnsmasq-base openssh-client)
has_systemd || wanted+=(tini)  # libvirtd runs under it: stopped machines are reaped at once
if ((test)); then
    wanted+=(bubblewrap openssl  # tests/course.rs runs the lab's file checks in a throwaway mount namespace
             openssh-server netcat-openbsd socat debootstrap fdisk e2fsprogs dosfstools mtools shellcheck python3
             python3-yaml bc tini)
    [[ $arch == x86_64 ]] && wanted+=(grub-pc-bin)
fi

missing=()
for w in "${wanted[@]}"; do
    p=${w%%:*} c=${w#*:}
    [[ $c != "$w" ]] && command -v "$c" >/dev/null && continue
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

debian_like() {
    [[ -r /etc/os-release ]] || return 1
    # shellcheck disable=SC1091
    . /etc/os-release
    [[ " ${ID:-} ${ID_LIKE:-} " == *" debian "* || " ${ID:-} ${ID_LIKE:-} " == *" ubuntu "* ]]
}

install_packages() {
    ((${#missing[@]})) || { say "system packages: all there"; return 0; }
    if ! debian_like || ! command -v apt-get >/dev/null; then
        say "this is not Debian or Ubuntu: install these packages (or your system's equivalents), then run me again:"
        printf '    %s\n' "${missing[@]}"
        exit 1
    fi
    confirm "Install ${#missing[*]} package(s): ${missing[*]}?" || die "stopped: nothing installed"
    say "installing: ${missing[*]}"
    as_root apt-get update -qq
    # Some machines ship a backported qemu-utils that Breaks the archive's qemu-system-x86: pin qemu-utils to the
    # version of qemu-system-x86 that apt would install, so the two always come from one QEMU release.
    local qemu_version pinned=() p
    qemu_version=$(apt-cache policy "$qemu_system" | awk '/Candidate:/ {print $2}')
    for p in "${missing[@]}"; do [[ $p == qemu-utils ]] || pinned+=("$p"); done
    if [[ "$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)" != "$qemu_version" ]]; then
        pinned+=("qemu-utils=$qemu_version")
    fi
    as_root apt-get install -y -qq --allow-downgrades "${pinned[@]}" >/dev/null
}

# ---- Rust --------------------------------------------------------------------------------------------------------

cargo_ok() {
    local v
    v=$(cargo --version 2>/dev/null | awk '{print $2}') || return 1
    [[ -n $v && "$(printf '%s\n%s\n' "$MIN_RUST" "$v" | sort -V | head -1)" == "$MIN_RUST" ]]
}

install_rust() {
    # shellcheck disable=SC1091  # rustup's, where it has been installed before
    [[ -f $HOME/.cargo/env ]] && . "$HOME/.cargo/env"
    if ! cargo_ok; then
        confirm "No cargo $MIN_RUST or newer: install Rust with rustup (into ~/.cargo)?" || die "stopped: Rust needed"
        if ((dry)); then
            echo "+ curl https://sh.rustup.rs | sh -s -- -y --profile minimal"
        else
            curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
            # shellcheck disable=SC1091
            . "$HOME/.cargo/env"
        fi
    fi
    if ((test)) && command -v rustup >/dev/null; then
        local c
        for c in rustfmt clippy; do
            rustup component list --installed 2>/dev/null | grep -q "^$c" || run rustup component add "$c"
        done
    fi
    say "rust: $(cargo --version 2>/dev/null || echo 'cargo (after the install)')"
}

# ---- lab ---------------------------------------------------------------------------------------------------------

install_lab() {
    ((build)) || return 0
    local target=${CARGO_TARGET_DIR:-target}
    if ((test)); then
        # Exactly the build the tests make (`cargo test --all-targets --no-run`), whose `lab` is then installed: the
        # tests reuse it, so CI pays for no second build. (`cargo install --debug` would not do: without the
        # dev-dependencies' features its build differs from the tests', and it compiles lab and its deps again.)
        run cargo test --locked --all-targets --no-run
        as_root install -D -m 0755 "$target/debug/lab" "$PREFIX/bin/lab"
    elif [[ -w $PREFIX || $EUID -eq 0 ]]; then
        run cargo install --locked --path . --force --root "$PREFIX"
    else
        # Built as this user (its cargo, its target folder), put in place as root.
        run cargo install --locked --path . --force --root "$target/install-stage"
        as_root install -D -m 0755 "$target/install-stage/bin/lab" "$PREFIX/bin/lab"
    fi
    say "installed $PREFIX/bin/lab"
}

# ---- libvirtd ----------------------------------------------------------------------------------------------------

# As root: this user's group may not be in effect yet.
libvirt_answers() {
    if ((EUID == 0)); then virsh -c qemu:///system version; else sudo virsh -c qemu:///system version; fi >/dev/null 2>&1
}

no_polkit() { [[ ! -S /run/dbus/system_bus_socket ]]; }
sock_auth_set() { grep -q '^ *auth_unix_rw *= *"none"' /etc/libvirt/libvirtd.conf 2>/dev/null; }

start_libvirt() {
    # Without udev, /dev/kvm is root-only; libvirtd then re-probes QEMU on every call (~30 s per define).
    if [[ -e /dev/kvm ]] && getent group kvm >/dev/null && [[ "$(stat -c %G:%a /dev/kvm)" != kvm:660 ]]; then
        as_root chgrp kvm /dev/kvm
        as_root chmod 0660 /dev/kvm
    fi
    if pgrep -x libvirtd >/dev/null; then
        say "libvirtd: running already (left as it is)"
        no_polkit && ! sock_auth_set && [[ $(lab_user) != root ]] &&
            say "note: without D-Bus, group libvirt gets in only with unix_sock_group = \"libvirt\"," \
                "unix_sock_rw_perms = \"0770\" and auth_unix_rw = \"none\" in /etc/libvirt/libvirtd.conf" \
                "(then restart libvirtd); root always does"
    elif has_systemd; then
        as_root systemctl enable --now virtlogd.socket libvirtd.service
    else
        pgrep -x virtlogd >/dev/null || as_root virtlogd -d
        # Group libvirt's access is granted by polkit, which needs D-Bus; without it the socket's group and mode
        # (libvirt, 0770, set here with it) are the access control.
        if no_polkit && ! sock_auth_set && [[ $(lab_user) != root ]]; then
            # The socket's group and mode must then be what grants access (libvirt's own default is 0777).
            as_root sh -c 'printf "%s\n" "# install.sh: no D-Bus for polkit; group libvirt may use the socket" \
                "unix_sock_group = \"libvirt\"" "unix_sock_rw_perms = \"0770\"" "auth_unix_rw = \"none\"" \
                >>/etc/libvirt/libvirtd.conf'
        fi
        # Stopping a domain, libvirt waits until its QEMU (an orphan) has been reaped; without systemd, PID 1 may
        # reap only every few seconds. libvirtd runs under `tini -s`, a subreaper that reaps its orphans at once.
        as_root sh -c 'setsid tini -s -- libvirtd </dev/null >>/var/log/libvirtd.log 2>&1 &'
        say "libvirtd: started under tini (no systemd here; start it the same way after a reboot)"
    fi
    ((dry)) && return 0
    local _
    for _ in $(seq 60); do
        libvirt_answers && return 0
        sleep 1
    done
    die "libvirtd does not answer after 60 s (see /var/log/libvirtd.log)"
}

# The user lab runs as: the one who called sudo, or this one. Root needs no group.
lab_user() {
    if ((EUID == 0)); then echo "${SUDO_USER:-root}"; else id -un; fi
}

join_group() {
    local user
    user=$(lab_user)
    [[ $user == root ]] && return 0
    if ! id -nG "$user" | tr ' ' '\n' | grep -qx libvirt; then
        as_root usermod -aG libvirt "$user"
        say "added $user to group libvirt"
    fi
    if ! id -nG | tr ' ' '\n' | grep -qx libvirt || ((EUID == 0)); then
        say "$user is in group libvirt from the next login on: \`lab up\` works after \`newgrp libvirt\` (in this" \
            "shell) or a new login"
    fi
}

doctor() {
    ((dry)) && { echo "+ lab doctor"; return 0; }
    local lab=$PREFIX/bin/lab
    [[ -x $lab ]] || lab=lab
    command -v "$lab" >/dev/null || { say "lab is not built (--no-build): skipping lab doctor"; return 0; }
    say "lab doctor:"
    local user
    user=$(lab_user)
    if [[ $user != root ]] && ((EUID != 0)) && ! id -nG | tr ' ' '\n' | grep -qx libvirt; then
        # This shell does not have the group yet; sg gives it to one command.
        sg libvirt -c "$lab doctor"
    else
        "$lab" doctor
    fi
}

install_packages
install_rust
install_lab
start_libvirt
join_group
status=0
doctor || status=$?
next=''
((status == 0)) && next=": next, \`lab up\`"
say "done in $((SECONDS - started)) s$next"
exit "$status"
