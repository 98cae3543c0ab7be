#!/usr/bin/env bash
# The aarch64 (Graviton) static binary, cross-built by scripts/build-static.sh, run under
# Debian's qemu-aarch64-static on this x86_64 machine: --version, then a request and a
# WebSocket through it to an app, and a clean exit on SIGTERM.
# Needs qemu-user-static, ziglang and cargo-zigbuild (PyPI), curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(scripts/build-static.sh aarch64)
file -b "$bin" | grep -q 'ARM aarch64' || { file "$bin"; echo "FAIL: not an aarch64 binary"; exit 1; }
echo "built: $(file -b "$bin" | cut -d, -f1-2), $(du -k "$bin" | cut -f1) KiB"
qemu=$(command -v qemu-aarch64-static)
version=$("$qemu" "$bin" --version)
[[ "$version" == "elb-ws-proxy 0.1.0 ("* ]] || { echo "FAIL: --version says $version"; exit 1; }
echo "under qemu: $version"

cargo build --release --locked --target x86_64-unknown-linux-musl --example bench_backend >/dev/null 2>&1
log=$(mktemp)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -f "$log"; }
trap cleanup EXIT
ports=($(python3 -c 'import socket
ss=[socket.socket() for _ in range(3)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(*[s.getsockname()[1] for s in ss])'))
app=${ports[0]} plain=${ports[1]} tls=${ports[2]}
target/x86_64-unknown-linux-musl/release/examples/bench_backend "127.0.0.1:$app" 2>/dev/null & pids+=($!)
env -i LISTEN_ON="$plain" LISTEN_ON_TLS="$tls" DESTINATION_HOSTNAME=127.0.0.1 DESTINATION_PORT="$app" \
  LISTEN_ADDRESS=127.0.0.1 "$qemu" "$bin" > "$log" 2>&1 & proxy=$!; pids+=($proxy)
# Emulation is slow to start: at most 30 s for /ping.
for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$tls/ping" && break; sleep 0.1; done
headers=$(curl -sS --max-time 10 --haproxy-protocol "http://127.0.0.1:$tls/headers") || { cat "$log"; exit 1; }
grep -qi '^x-forwarded-for: 127.0.0.1$' <<<"$headers" || { echo "FAIL: the app got: $headers"; cat "$log"; exit 1; }
echo "request through the aarch64 proxy: x-forwarded-for 127.0.0.1"
python3 scripts/ws-check.py 127.0.0.1 "$tls" || { cat "$log"; exit 1; }
kill -TERM "$proxy"
wait "$proxy" && code=0 || code=$?
[ "$code" = 0 ] || { echo "FAIL: exit code $code after SIGTERM"; cat "$log"; exit 1; }
echo "aarch64 smoke: passed"
