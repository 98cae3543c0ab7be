#!/usr/bin/env bash
# Builds the binary exactly as the Dockerfile does (release, x86_64-unknown-linux-musl), checks
# that it is static, copies it alone into an empty directory and runs it there under chroot as
# uid 65532 (no /etc, no libc), with a request and the healthcheck passing through it.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
cargo build --release --locked --target "$target"
bin="target/$target/release/elb-ws-proxy"
if ! file "$bin" | grep -Eq 'statically linked|static-pie linked'; then
  file "$bin"; echo "FAIL: $bin is not static"; exit 1
fi
echo "static: $(file -b "$bin" | cut -d, -f1-2), $(du -k "$bin" | cut -f1) KiB"

root=$(mktemp -d); site=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$root" "$site"; }
trap cleanup EXIT
cp "$bin" "$root/elb-ws-proxy"
chmod 755 "$root" "$root/elb-ws-proxy"
echo "hello from the app" > "$site/hello.txt"
ports=($(python3 -c 'import socket
ss=[socket.socket() for _ in range(3)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(*[s.getsockname()[1] for s in ss])'))
app=${ports[0]} plain=${ports[1]} tls=${ports[2]}
python3 -m http.server "$app" --bind 127.0.0.1 --directory "$site" >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$app/" && break; sleep 0.1; done

chroot=$(command -v chroot)
# exec: the background job's PID is then the proxy's own, so SIGTERM reaches it.
extra_env=()
run_in_root() {
  exec env -i LISTEN_ON="$plain" LISTEN_ON_TLS="$tls" DESTINATION_HOSTNAME=127.0.0.1 DESTINATION_PORT="$app" \
    LISTEN_ADDRESS=127.0.0.1 "${extra_env[@]}" "$chroot" --userspec=65532:65532 "$root" /elb-ws-proxy "$@"
}
# Waits (at most 10 s) for the proxy's /ping.
ready() {
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$tls/ping" && return 0
    sleep 0.1
  done
}
[ -z "$(ls -A "$root" | grep -v '^elb-ws-proxy$')" ] || { echo "FAIL: root is not empty"; exit 1; }
(exec > "$root.log" 2>&1; run_in_root) & proxy=$!; pids+=($proxy)
ready
body=$(curl -sS --max-time 5 --haproxy-protocol "http://127.0.0.1:$tls/hello.txt")
[ "$body" = "hello from the app" ] || { echo "FAIL: got '$body'"; cat "$root.log"; exit 1; }
(run_in_root healthcheck) || { echo "FAIL: healthcheck in the empty root"; exit 1; }
kill -TERM "$proxy"
wait "$proxy" && code=0 || code=$?
[ "$code" = 0 ] || { echo "FAIL: exit code $code after SIGTERM"; cat "$root.log"; exit 1; }
rm -f "$root.log"

# TLS at the proxy, in the same empty root: a self-signed certificate made at start-up, the
# PROXY header in the clear, then the handshake, as behind an NLB TLS target group.
extra_env=(TLS_SELF_SIGNED=true TLS_MODE=required)
(exec > "$root.log" 2>&1; run_in_root) & proxy=$!; pids+=($proxy)
ready
body=$(curl -sSk --max-time 5 --haproxy-protocol "https://127.0.0.1:$tls/hello.txt")
[ "$body" = "hello from the app" ] || { echo "FAIL: over TLS got '$body'"; cat "$root.log"; exit 1; }
grep -q 'made a self-signed certificate' "$root.log" || { echo "FAIL: no fingerprint logged"; cat "$root.log"; exit 1; }
kill -TERM "$proxy"
wait "$proxy" && code=0 || code=$?
[ "$code" = 0 ] || { echo "FAIL: exit code $code after SIGTERM (TLS)"; cat "$root.log"; exit 1; }
rm -f "$root.log"
echo "2 passed, 0 failed: static binary served a request (cleartext, then TLS it ended itself) and its healthcheck from an empty root, exited 0 on SIGTERM"
