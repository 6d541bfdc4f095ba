# shellcheck shell=bash
# Shared by the benchmarks: the release build, and the test image served over loopback HTTP (as the tests serve it),
# so that lab's real download, checksum and cache code runs.

# serve_test_image HERE: sets `image`, `sha` and `port`, and adds the server's pid to the caller's `pids`.
# shellcheck disable=SC2034  # image, sha and port are for the caller
serve_test_image() {
    local here=$1
    cargo build --quiet --release --manifest-path "$here/Cargo.toml"
    image=$(bash "$here/tests/image/build.sh" | tail -n 1)
    sha=$(sha256sum "$image" | cut -d' ' -f1)
    port=$((20000 + RANDOM % 20000))
    python3 -m http.server --bind 127.0.0.1 --directory "$(dirname "$image")" "$port" >/dev/null 2>&1 &
    pids+=($!)
    sleep 1
}

# secs COMMAND...: the seconds COMMAND takes; its output goes to the caller's $log, shown if it fails.
# shellcheck disable=SC2154  # log is the caller's
secs() {
    local s
    echo "== $*" >>"$log"
    s=$(date +%s.%N)
    if ! "$@" >>"$log" 2>&1; then
        echo "failed: $*" >&2
        tail -n 20 "$log" >&2
        return 1
    fi
    echo "$(date +%s.%N) - $s" | bc
}
