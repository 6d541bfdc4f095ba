#!/usr/bin/env bash
# Benchmark: class kits. An instructor's two-machine test lab with a chain of checkpoints built by steps (each step
# writes 64 MiB of fresh data and waits 20 s, standing for a lesson's work) is exported; a student's empty host
# imports it and goes to the last checkpoint. Prints:
# - the kit's size against the raw bytes of its layers, memory states, image and assets;
# - export and import times against `cp` of the same bytes;
# - the time from an empty host to `up --at LAST`: from the kit, against building it from the steps.
# Needs root and a running libvirtd (what the tests need). Usage: benches/kit.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export LAB_ACCEL=${LAB_ACCEL:-tcg} LAB_CONNECT=qemu:///system
work=$(mktemp -d /var/tmp/lab-bench-kit.XXXXXX)
lab=$here/target/release/lab
log=$here/target/bench-kit.log
: >"$log"
pids=()

cleanup() {
    if [[ -d $work/instructor ]]; then
        (cd "$work/instructor" && XDG_STATE_HOME=$work/instructor-state "$lab" destroy --yes >/dev/null 2>&1) || true
    fi
    if [[ -d $work/student/bench-kit ]]; then
        (cd "$work/student/bench-kit" && XDG_STATE_HOME=$work/student/state "$lab" destroy --yes >/dev/null 2>&1) || true
    fi
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=benches/common.sh
source "$here/benches/common.sh"
serve_test_image "$here"

mkdir -p "$work/instructor"
cd "$work/instructor"
{
    printf 'name = "bench-kit"\n[network]\nsubnet = "10.242.9.0/24"\nmode = "isolated"\n'
    printf '[defaults]\nimage = "test"\ncpus = 1\nmemory = "640MiB"\ndisk = "4GiB"\n'
    printf '[[machine]]\nname = "m1"\nip = "10.242.9.11"\n[[machine]]\nname = "m2"\nip = "10.242.9.12"\n'
    printf '[[image]]\nname = "test"\nurl = "http://127.0.0.1:%s/%s"\nsha256 = "%s"\n' "$port" "$(basename "$image")" "$sha"
    for i in 1 2 3; do
        printf '[[checkpoint]]\nname = "lesson-%s"\n[[checkpoint.step]]\n' "$i"
        printf 'run = "head -c 64M /dev/urandom > /root/lesson-%s && sleep 20"\n' "$i"
    done
} >lab.toml
export XDG_STATE_HOME=$work/instructor-state XDG_CACHE_HOME=$work/instructor-cache
t_up=$(secs "$lab" up)
t_build=$(secs "$lab" restore lesson-3)
t_export=$(secs "$lab" export "$work/kit")

# What the kit holds, raw and as stored.
read -r raw stored < <(python3 - "$work/kit/kit.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
big = [f for f in m["files"] if f["kind"]["kind"] in ("volume", "image", "asset")]
raw = sum((f.get("content") or {"size": f["size"]})["size"] for f in big)
print(raw, sum(f["size"] for f in m["files"]))
EOF
)
# cp of the same raw bytes (the pool's files the kit holds), and of the kit itself.
pool=/var/lib/libvirt/images/lab-bench-kit
mkdir -p "$work/cp-raw"
files=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(" ".join(f["kind"].get("volume","") for f in m["files"] if f["kind"]["kind"] in ("volume","image")))' "$work/kit/kit.json")
sync
t_cp_raw=$(secs bash -c "cd $pool && cp $files $work/cp-raw/ && sync")
"$lab" destroy --yes --purge-cache >>"$log" 2>&1
t_cp_kit=$(secs bash -c "cp -r $work/kit $work/cp-kit && sync")

# The student: an empty host, the kit over loopback HTTP.
kport=$((port + 1))
python3 -m http.server --bind 127.0.0.1 --directory "$work/kit" "$kport" >/dev/null 2>&1 &
pids+=($!)
sleep 1
mkdir -p "$work/student"
cd "$work/student"
export XDG_STATE_HOME=$work/student/state XDG_CACHE_HOME=$work/student/cache
t_import=$(secs "$lab" import "http://127.0.0.1:$kport")
cd bench-kit
t_at=$(secs "$lab" up --at lesson-3 --offline)
"$lab" destroy --yes --purge-cache >>"$log" 2>&1

mib() { echo "scale=1; $1 / 1048576" | bc; }
ratio() { echo "scale=2; $1 / $2" | bc; }
cat <<EOF
kit: $(mib "$stored") MiB stored for $(mib "$raw") MiB of layers, memory states, image and assets ($(ratio "$raw" "$stored")x smaller)
instructor: up ${t_up} s, building lesson-1..3 from steps ${t_build} s
export ${t_export} s; cp of the same raw bytes ${t_cp_raw} s (export/cp = $(ratio "$t_export" "$t_cp_raw"))
import over loopback HTTP ${t_import} s; cp of the kit ${t_cp_kit} s (import/cp = $(ratio "$t_import" "$t_cp_kit"))
empty host to lesson-3: from the kit $(echo "$t_import + $t_at" | bc) s (import ${t_import} + up --at ${t_at}); from the steps $(echo "$t_up + $t_build" | bc) s (up ${t_up} + build ${t_build})
EOF
