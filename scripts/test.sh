#!/usr/bin/env bash
# The one test command: installs and starts what the tests need, runs every
# test (unit, integration, doc, benches in test mode, examples), and stops
# what it started, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

FEATURES="${FEATURES:---all-features}"

# --- etcd: the `etcd` feature needs protoc to build and a real etcd to test.
need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
if ((${#need[@]})); then
    echo "== installing ${need[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${need[@]}"
fi

# A loopback port nothing listens on.
free_port() {
    local port
    while :; do
        port=$(((RANDOM % 20000) + 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
}

ETCD_DIR="$(mktemp -d -t fluxor-etcd.XXXXXX)"
ETCD_PID=""
cleanup() {
    if [ -n "$ETCD_PID" ]; then
        kill "$ETCD_PID" 2>/dev/null || true
        wait "$ETCD_PID" 2>/dev/null || true
    fi
    rm -rf "$ETCD_DIR"
}
trap cleanup EXIT INT TERM

client_port="$(free_port)"
peer_port="$(free_port)"
while [ "$peer_port" = "$client_port" ]; do peer_port="$(free_port)"; done
client_url="http://127.0.0.1:${client_port}"
peer_url="http://127.0.0.1:${peer_port}"
echo "== starting a throwaway etcd on ${client_url}"
etcd --name fluxor-test --data-dir "$ETCD_DIR/data" \
    --listen-client-urls "$client_url" --advertise-client-urls "$client_url" \
    --listen-peer-urls "$peer_url" --initial-advertise-peer-urls "$peer_url" \
    --initial-cluster "fluxor-test=${peer_url}" \
    --heartbeat-interval 10 --election-timeout 100 \
    >"$ETCD_DIR/etcd.log" 2>&1 &
ETCD_PID=$!
for _ in $(seq 1 200); do
    if curl -fsS "${client_url}/health" 2>/dev/null | grep -q '"health":"true"'; then
        break
    fi
    if ! kill -0 "$ETCD_PID" 2>/dev/null; then
        cat "$ETCD_DIR/etcd.log" >&2
        echo "etcd exited" >&2
        exit 1
    fi
    sleep 0.05
done
curl -fsS "${client_url}/health" | grep -q '"health":"true"' || { cat "$ETCD_DIR/etcd.log" >&2; echo "etcd never became healthy" >&2; exit 1; }
export FLUXOR_ETCD_ENDPOINTS="$client_url"
export FLUXOR_ETCD_BIN="$(command -v etcd)"
export FLUXOR_ETCDCTL_BIN="$(command -v etcdctl)"

echo "== unit, integration and bench-smoke tests"
cargo test $FEATURES --all-targets

echo "== doc tests"
cargo test $FEATURES --doc

echo "== examples"
for example in quickstart hyper_client reqwest_client axum_gateway tonic_client; do
    echo "-- cargo run --example $example"
    timeout 120 cargo run --quiet $FEATURES --example "$example"
done

echo "-- cargo run --features etcd --example etcd_cluster"
timeout 120 cargo run --quiet --features etcd --example etcd_cluster

echo "-- cargo run --example health_scale (smoke size: 200 instances, 2 s)"
timeout 300 cargo run --quiet $FEATURES --example health_scale -- 200 2
