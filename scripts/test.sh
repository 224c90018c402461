#!/usr/bin/env bash
# The one test command: installs and starts what the tests need, runs every
# test (unit, integration, doc, benches in test mode, examples), and stops
# what it started, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

FEATURES="${FEATURES:---all-features}"

echo "== unit, integration and bench-smoke tests"
cargo test $FEATURES --all-targets

echo "== doc tests"
cargo test $FEATURES --doc

echo "== examples"
for example in quickstart; do
    echo "-- cargo run --example $example"
    timeout 120 cargo run --quiet $FEATURES --example "$example"
done
echo "-- cargo run --example health_scale (smoke size: 200 instances, 2 s)"
timeout 300 cargo run --quiet $FEATURES --example health_scale -- 200 2
