#!/usr/bin/env bash
# Benchmark: how big a machine's memory state is with the free-page balloon that lab gives new machines
# (virtio-balloon with free page reporting) and without it (older labs' machines, `<memballoon model='none'/>`).
# Two machines of the same size run the same work: fill MEMFILL of memory and free it again (as a build or a
# `kubectl apply` does), read files into the page cache, then drop the clean caches (as lab does before a lab-file
# checkpoint). Then each machine's memory is saved with `virsh save`, the format `lab snapshot` writes.
# Needs root and a running libvirtd (what the tests need). Usage: benches/memory.sh [MEMORY] [MEMFILL] [WAIT]
# (WAIT: seconds between freeing the memory and saving it, 10 by default; lab itself waits 3).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
memory=${1:-1GiB}
fill=${2:-512M}
wait=${3:-10}
export LAB_ACCEL=${LAB_ACCEL:-tcg} LAB_CONNECT=qemu:///system
work=$(mktemp -d /var/tmp/lab-bench-memory.XXXXXX)
lab=$here/target/release/lab
log=$here/target/bench-memory.log
: >"$log"
pids=()

cleanup() {
    if [[ -f $work/lab.toml ]]; then
        (cd "$work" && "$lab" destroy --yes >/dev/null 2>&1) || true
    fi
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=benches/common.sh
source "$here/benches/common.sh"
serve_test_image "$here"

cd "$work"
export XDG_STATE_HOME=$work/state XDG_CACHE_HOME=$work/cache
{
    printf 'name = "bench-memory"\n[network]\nsubnet = "10.242.10.0/24"\nmode = "isolated"\n'
    printf '[defaults]\nimage = "test"\ncpus = 1\nmemory = "%s"\ndisk = "4GiB"\n' "$memory"
    printf '[[machine]]\nname = "balloon"\nip = "10.242.10.11"\n[[machine]]\nname = "plain"\nip = "10.242.10.12"\n'
    printf '[[image]]\nname = "test"\nurl = "http://127.0.0.1:%s/%s"\nsha256 = "%s"\n' "$port" "$(basename "$image")" "$sha"
} >lab.toml
"$lab" up >>"$log" 2>&1

# The second machine loses its balloon: powered off, redefined with none, started again.
plain="lab-bench-memory-plain"
virsh -q shutdown "$plain" >>"$log"
for _ in $(seq 120); do
    [[ $(virsh domstate "$plain") == "shut off" ]] && break
    sleep 1
done
[[ $(virsh domstate "$plain") == "shut off" ]] || { echo "$plain did not power off" >&2; exit 1; }
virsh dumpxml --inactive "$plain" | python3 -c '
import re, sys
xml = sys.stdin.read()
xml, n = re.subn(r"<memballoon model=.virtio.(?:[^>]*/>|.*?</memballoon>)", "<memballoon model=\"none\"/>", xml, flags=re.S)
assert n == 1, "no virtio balloon in the domain"
sys.stdout.write(xml)' >"$work/plain.xml"
virsh -q define "$work/plain.xml" >>"$log"
virsh -q start "$plain" >>"$log"
for _ in $(seq 300); do
    "$lab" ssh plain -- true >/dev/null 2>&1 && break
    sleep 1
done
"$lab" ssh plain -- true >>"$log" 2>&1

work_script="sudo sh -c 'head -c $fill /dev/urandom > /dev/shm/fill && rm /dev/shm/fill && \
cat /usr/lib/x86_64-linux-gnu/*.so* /usr/bin/* > /dev/null 2>&1; sync; echo 3 > /proc/sys/vm/drop_caches'"
for m in balloon plain; do
    "$lab" ssh "$m" -- "$work_script" >>"$log" 2>&1
done
# Free page reporting runs in passes a few seconds apart: WAIT gives it time (10 s and 60 s measured the same here).
sleep "$wait"
declare -A size
for m in balloon plain; do
    virsh -q save "lab-bench-memory-$m" "$work/$m.save" >>"$log"
    size[$m]=$(stat -c %s "$work/$m.save")
done

mib() { echo "scale=1; $1 / 1048576" | bc; }
cat <<EOF
machines of $memory, $fill filled and freed, caches dropped, saved with virsh save ${wait} s later:
with the free-page balloon: $(mib "${size[balloon]}") MiB
without a balloon:          $(mib "${size[plain]}") MiB ($(echo "scale=2; ${size[plain]} / ${size[balloon]}" | bc)x)
EOF
