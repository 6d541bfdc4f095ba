#!/usr/bin/env bash
# Benchmark: lab's downloader vs curl on a 1 GiB file served from loopback.
# Prints wall times, lab/curl ratio, and how much of lab's time a plain
# sha256sum of the same file would take. Not a test; run by hand:
#   bash benches/download.sh [SIZE_MIB]
set -euo pipefail

size_mib=${1:-1024}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d)
server_pid=""

cleanup() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { print b - a }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { print a / b }'; }

echo "building the example (release)..."
cargo build --quiet --release --example fetch --manifest-path "$here/Cargo.toml"
fetch_bin="$here/target/release/examples/fetch"

echo "creating a ${size_mib} MiB file..."
mkdir -p "$work/srv"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$work/srv/big.img"

t0=$(now)
sum=$(sha256sum "$work/srv/big.img" | cut -d' ' -f1)
t1=$(now)
t_sha=$(elapsed "$t0" "$t1")

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$work/srv" "$port" >/dev/null 2>&1 &
server_pid=$!
url="http://127.0.0.1:$port/big.img"
for _ in $(seq 50); do
    curl -sf -o /dev/null -r 0-0 "$url" && break
    sleep 0.1
done

min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b ? a : b) }'; }

# Two rounds, alternating, best of each: the first read warms the server.
t_curl=999999
t_lab=999999
for round in 1 2; do
    t0=$(now)
    curl -sf -o "$work/curl.img" "$url"
    t1=$(now)
    t_curl=$(min "$t_curl" "$(elapsed "$t0" "$t1")")
    rm -f "$work/curl.img"

    rm -rf "$work/cache"
    t0=$(now)
    "$fetch_bin" "$url" "$work/cache" "$sum" >/dev/null
    t1=$(now)
    t_lab=$(min "$t_lab" "$(elapsed "$t0" "$t1")")
    test -f "$work/cache/blobs-v1/sha256/$sum"
    echo "round $round done"
done

# A cache hit makes no request and only re-hashes the blob: lab's own hashing cost.
t0=$(now)
"$fetch_bin" "$url" "$work/cache" "$sum" >/dev/null
t1=$(now)
t_hit=$(elapsed "$t0" "$t1")

printf 'size:              %d MiB\n' "$size_mib"
printf 'curl -s -o:        %.2f s\n' "$t_curl"
printf 'lab fetch:         %.2f s (download + sha256 + rename)\n' "$t_lab"
printf 'lab cache hit:     %.2f s (re-hash only, no request)\n' "$t_hit"
printf 'sha256sum:         %.2f s\n' "$t_sha"
printf 'ratio lab/curl:    %.2f\n' "$(div "$t_lab" "$t_curl")"
printf 'hashing share:     %.0f%% (lab re-hash time / lab fetch time; hashing overlaps the transfer)\n' "$(div "$t_hit" "$t_lab" | awk '{ print 100 * $1 }')"
printf 'sha256sum/lab:     %.2f\n' "$(div "$t_sha" "$t_lab")"
