#!/usr/bin/env bash
# The test command: every test, end-to-end ones included, one at a time (they share one libvirtd and two cores).
# Needs root (it makes libvirt networks). What the tests need and is missing (packages, a running libvirtd) comes
# first from `./install.sh --test`. Each test binary's wall time is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests use beyond a build: the install script's test profile provides all of it.
ready() {
    local c
    for c in virsh qemu-img debootstrap bwrap shellcheck socat nc sshd mkfs.vfat mcopy sfdisk bc python3 tini; do
        command -v "$c" >/dev/null || PATH=$PATH:/usr/sbin:/sbin command -v "$c" >/dev/null || return 1
    done
    python3 -c 'import yaml' 2>/dev/null && virsh -c qemu:///system version >/dev/null 2>&1
}
if ! ready; then
    echo "run.sh: the tests need more than this machine has: ./install.sh --test --yes --no-build" >&2
    ./install.sh --test --yes --no-build
fi

# Build (or reuse) the test cloud image first, outside any test's time limit; it is cached outside the checkout.
bash tests/image/build.sh >/dev/null
# End-to-end tests are #[ignore]d unless asked for: plain `cargo test` runs without libvirt. The course's own
# end-to-end test needs internet (its images and binaries), which CI does not have: run it by hand.
args=(--test-threads=1 --include-ignored --skip course_builds_cluster_done_and_every_check_passes "$@")

# Build every test binary once, then run them one by one, timing each (the same as `cargo test --all-targets`,
# which runs them in this order, but every binary runs even after one fails).
targets=$(cargo test --all-targets --no-run --message-format=json-render-diagnostics |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        t = m["target"]
        rank = {"lib": 1, "bin": 2, "test": 3}.get(t["kind"][0], 4)
        print(rank, t["kind"][0], t["name"])
' | sort -u -k1,1n -k3,3 | cut -d" " -f2-)
declare -a rows=()
failed=0
while read -r kind name; do
    case $kind in
        lib) sel=(--lib) ;;
        bin) sel=(--bin "$name") ;;
        test) sel=(--test "$name") ;;
        bench) sel=(--bench "$name") ;;
        example) sel=(--example "$name") ;;
        *) continue ;;
    esac
    start=$EPOCHREALTIME
    result=ok
    cargo test "${sel[@]}" -- "${args[@]}" </dev/null || { result=FAILED; failed=1; }
    rows+=("$(awk -v k="$kind" -v n="$name" -v s="$start" -v e="$EPOCHREALTIME" -v r="$result" \
        'BEGIN { printf "%-8s %-24s %8.1f  %s", k, n, e - s, r }')")
done <<<"$targets"

echo
echo "test binaries, wall time:"
printf '%-8s %-24s %8s  %s\n' KIND BINARY SECONDS RESULT
printf '%s\n' "${rows[@]}"
exit "$failed"
