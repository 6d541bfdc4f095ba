#!/usr/bin/env bash
# The test command: every test, end-to-end ones included, one at a time (they share one libvirtd and two cores).
# Needs root, a running libvirtd (qemu:///system) and the packages .ci/run installs.
set -euo pipefail
cd "$(dirname "$0")/.."
# Build (or reuse) the test cloud image first, outside any test's time limit; it is cached outside the checkout.
bash tests/image/build.sh >/dev/null
# End-to-end tests are #[ignore]d unless asked for: plain `cargo test` runs without libvirt. The course's own
# end-to-end test needs internet (its images and binaries), which CI does not have: run it by hand.
cargo test --all-targets -- --test-threads=1 --include-ignored \
    --skip course_builds_cluster_done_and_every_check_passes "$@"
