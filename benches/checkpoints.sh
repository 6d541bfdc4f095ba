#!/usr/bin/env bash
# Benchmark: `lab up`, `lab snapshot` and `lab restore` for an N-machine test lab (default 3) and a 1-machine lab,
# against what people do with plain virsh: internal snapshots reverted one machine after another (what
# vagrant-libvirt does), and a cold boot. Prints the figures and the ratios. Needs root and a running libvirtd.
# Usage: benches/checkpoints.sh [MACHINES]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-3}
export LAB_ACCEL=${LAB_ACCEL:-tcg} LAB_CONNECT=qemu:///system
work=$(mktemp -d)
export XDG_CACHE_HOME=$work/cache XDG_STATE_HOME=$work/state
lab=$here/target/release/lab
pids=()
# Every command's output, with the phase timings of each (LAB_LOG), is kept here for a look afterwards.
log=$here/target/bench-checkpoints.log
export LAB_LOG=${LAB_LOG:-lab=debug}
: >"$log"

cleanup() {
    for d in "$work"/lab-*; do
        if [[ -d $d ]]; then (cd "$d" && "$lab" destroy --yes >/dev/null 2>&1) || true; fi
    done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=benches/common.sh
source "$here/benches/common.sh"
serve_test_image "$here"

make_lab() { # NAME MACHINES INDEX
    local dir=$work/lab-$1
    mkdir -p "$dir"
    {
        printf 'name = "bench-%s"\n[network]\nsubnet = "10.242.%s.0/24"\nmode = "isolated"\n' "$1" "$3"
        printf '[defaults]\nimage = "test"\ncpus = 1\nmemory = "640MiB"\ndisk = "4GiB"\n'
        for i in $(seq "$2"); do printf '[[machine]]\nname = "m%s"\nip = "10.242.%s.%s"\n' "$i" "$3" $((10 + i)); done
        printf '[[image]]\nname = "test"\nurl = "http://127.0.0.1:%s/%s"\nsha256 = "%s"\n' "$port" "$(basename "$image")" "$sha"
    } >"$dir/lab.toml"
    echo "$dir"
}

# The median of several timings (restores vary by a second on a loaded two-core host).
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# How long the last snapshot kept the machines paused (lab prints it).
paused() { grep -o 'machines paused [0-9.]* s' "$log" | tail -n 1 | awk '{print $3}'; }
runs=${RUNS:-3}

many=$(make_lab many "$n" 1)
one=$(make_lab one 1 2)
cd "$many"
t_up=$(secs "$lab" up)
t_snap=$(secs "$lab" snapshot bench)
p_snap=$(paused)
t_first=$(secs "$lab" restore bench)
times=()
for _ in $(seq "$runs"); do times+=("$(secs "$lab" restore bench)"); done
t_restore=$(median "${times[@]}")

# Plain virsh: internal snapshots with memory, reverted one machine after another (what vagrant-libvirt does);
# then the same followed by setting each guest's clock (`virsh domtime --now`), the end state `lab restore` gives.
doms=$(virsh list --name | grep "^lab-bench-many-")
for d in $doms; do virsh snapshot-create-as "$d" vbench --diskspec vdb,snapshot=no >/dev/null; done
times=()
for _ in $(seq "$runs"); do
    start=$(date +%s.%N)
    for d in $doms; do virsh snapshot-revert "$d" vbench >/dev/null; done
    times+=("$(echo "$(date +%s.%N) - $start" | bc)")
done
t_virsh=$(median "${times[@]}")
times=()
for _ in $(seq "$runs"); do
    start=$(date +%s.%N)
    for d in $doms; do virsh snapshot-revert "$d" vbench >/dev/null && virsh domtime "$d" --now >/dev/null; done
    times+=("$(echo "$(date +%s.%N) - $start" | bc)")
done
t_virsh_clock=$(median "${times[@]}")
for d in $doms; do virsh snapshot-delete "$d" vbench >/dev/null || true; done
"$lab" destroy --yes >/dev/null

cd "$one"
secs "$lab" up >/dev/null
secs "$lab" snapshot bench >/dev/null
p_one=$(paused)
times=()
for _ in $(seq "$runs"); do times+=("$(secs "$lab" restore bench)"); done
t_one=$(median "${times[@]}")
"$lab" destroy --yes >/dev/null

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, accel $LAB_ACCEL, $n machines of 640 MiB; medians of $runs runs"
echo "lab up (cold boot, $n machines):               $t_up s"
echo "lab snapshot ($n machines, memory):            $t_snap s (machines paused $p_snap s; 1 machine: $p_one s)"
echo "lab restore ($n machines):                     $t_restore s (first: $t_first s)"
echo "lab restore (1 machine):                       $t_one s"
echo "virsh snapshot-revert, one after another:      $t_virsh s"
echo "  the same, each followed by virsh domtime:    $t_virsh_clock s"
echo "ratio restore $n machines / 1 machine:         $(echo "scale=2; $t_restore / $t_one" | bc)"
echo "ratio sequential virsh revert / lab restore:   $(echo "scale=2; $t_virsh / $t_restore" | bc)"
echo "ratio virsh revert + domtime / lab restore:    $(echo "scale=2; $t_virsh_clock / $t_restore" | bc)"
echo "ratio cold boot / lab restore:                 $(echo "scale=2; $t_up / $t_restore" | bc)"
