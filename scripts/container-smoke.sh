#!/usr/bin/env bash
# The image under a real container runtime (podman, with runc), as a user runs it:
#  - podman builds the real Dockerfile's runtime stage around the static binary, built as the
#    build stage builds it (--build-context build=<dir>); size under 10 MB, user 65532, labels;
#  - the seed's `docker run` on a container network: the app found by its alias, a request and
#    a WebSocket through the proxy, HEALTHCHECK healthy, the process running as 65532; the app
#    re-created at a new address and served again without a restart; `podman stop` drains and
#    exits 0 within its timeout;
#  - the repository's compose files under podman-compose, with the images built here and the
#    app's and HAProxy's images tagged with the names the compose files use: a request and a
#    WebSocket through docker-compose.yml, then a request and a redirect through HAProxy
#    playing the ELB (docker-compose.elb.yml).
# Needs podman, runc, aardvark-dns, podman-compose (PyPI), curl and python3; run as root (CI).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
net=elbsmoke
img=localhost/elb-ws-proxy:smoke
app_img=docker.io/jmalloc/echo-server:latest
# This machine's facts: crun fails on its hybrid cgroups, and podman's default ulimits exceed
# the hard limits here. The same settings for podman-compose's own podman calls.
limits=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)
run=(podman run --runtime runc "${limits[@]}")
# Without systemd, podman says on stderr that it cannot schedule HEALTHCHECK timers;
# `podman healthcheck run` below runs the check itself. Its stderr goes here, shown on failure.
errors="$work/podman-stderr.log"
printf '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n[engine]\nruntime = "runc"\n' > "$work/containers.conf"
export CONTAINERS_CONF="$work/containers.conf"

fail() { echo "FAIL: $*"; podman logs proxy 2>&1 | tail -20 || true; cat "$errors" 2>/dev/null || true; exit 1; }
cleanup() {
  podman rm -f -t 0 proxy app >/dev/null 2>&1 || true
  podman network rm -f "$net" >/dev/null 2>&1 || true
  (cd "$root" && podman-compose -p elbsmoke -f docker-compose.yml -f docker-compose.elb.yml down -t 0 >/dev/null 2>&1) || true
  rm -rf "$work"
  podman image prune -f >/dev/null 2>&1 || true  # the rebuilt images' old layers, on a shared disk
}
trap cleanup EXIT
# Waits (at most 15 s) for /ping on 127.0.0.1:$1.
ready() {
  for _ in $(seq 1 150); do
    curl -s -o /dev/null "http://127.0.0.1:$1/ping" && return 0
    sleep 0.1
  done
  fail "no /ping on port $1"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# A request (its headers echoed by the app) and a WebSocket through 127.0.0.1:$1.
# Either may find the network's DNS (aardvark-dns) not answering for a container just started
# (it has also failed a lookup once between a request that resolved and the next), and get
# 502; the proxy resolves the app's name again for each new connection, so each is asked again
# after a 502, for at most 10 s. Any other failure fails at once.
through() {
  local headers="" ws=""
  for _ in $(seq 1 100); do
    headers=$(curl -sS --max-time 5 --haproxy-protocol "http://127.0.0.1:$1/headers") || fail "request through port $1"
    grep -qi '^x-forwarded-for: 127.0.0.1$' <<<"$headers" && break
    sleep 0.1
  done
  grep -qi '^x-forwarded-for: 127.0.0.1$' <<<"$headers" || fail "the app got: $headers"
  for _ in $(seq 1 50); do
    ws=$(python3 scripts/ws-check.py 127.0.0.1 "$1" 2>&1) && { echo "$ws"; return 0; }
    grep -q "HTTP/1.1 502 " <<<"$ws" || break
    sleep 0.2
  done
  echo "$ws"
  fail "WebSocket through port $1"
}

echo "== building the static binaries and the images"
bin=$(scripts/build-static.sh x86_64)
cargo build --release --locked --target x86_64-unknown-linux-musl --example bench_backend >/dev/null 2>&1
mkdir -p "$work/build" "$work/app" "$work/empty"
cp "$bin" "$work/build/elb-ws-proxy"
cp target/x86_64-unknown-linux-musl/release/examples/bench_backend "$work/app/app"
printf 'FROM scratch\nCOPY app /app\nUSER 65532:65532\nEXPOSE 8080\nENTRYPOINT ["/app", "0.0.0.0:8080"]\n' > "$work/app/Containerfile"
podman build -q --format docker -t "$app_img" -f "$work/app/Containerfile" "$work/app" >/dev/null
rev=$(git rev-parse --short=12 HEAD)
source_url=https://example.com/elb-ws-proxy.git
# The runtime stage takes the binary from the `build` context; the repository's context is not
# needed for it, so an empty one is sent.
podman build -q --format docker --build-context build="$work/build" --build-arg TARGETARCH=amd64 \
  --build-arg REVISION="$rev" --build-arg CREATED="$(date -u +%FT%TZ)" --build-arg SOURCE="$source_url" \
  -t "$img" -f Dockerfile "$work/empty" >/dev/null
size=$(podman image inspect "$img" --format '{{.Size}}')
[ "$size" -lt 10000000 ] || fail "image is $size bytes"
user=$(podman image inspect "$img" --format '{{.Config.User}}')
[ "$user" = 65532:65532 ] || fail "image user is $user"
label=$(podman image inspect "$img" --format '{{index .Labels "org.opencontainers.image.revision"}}')
[ "$label" = "$rev" ] || fail "revision label is $label, not $rev"
for l in version created source; do
  v=$(podman image inspect "$img" --format "{{index .Labels \"org.opencontainers.image.$l\"}}")
  [ -n "$v" ] && [ "$v" != unknown ] || fail "label org.opencontainers.image.$l is '$v'"
done
[ "$(podman image inspect "$img" --format '{{index .Labels "org.opencontainers.image.source"}}')" = "$source_url" ] || fail "source label"
version=$("${run[@]}" --rm "$img" --version 2>>"$errors")
[[ "$version" == *"($rev"* ]] || fail "--version says $version"
echo "image: $((size / 1024)) KiB, user $user, revision $label; $version"

echo "== docker run on a container network"
podman network create --subnet 10.89.77.0/24 "$net" >/dev/null
"${run[@]}" -d --name app --network "$net" --network-alias echo --ip 10.89.77.10 "$app_img" >/dev/null 2>>"$errors"
port=$(free_port)
"${run[@]}" -d --name proxy --network "$net" -p "127.0.0.1:$port:8444" \
  -e LISTEN_ON=8081 -e LISTEN_ON_TLS=8444 -e DESTINATION_HOSTNAME=echo -e DESTINATION_PORT=8080 \
  -e SHUTDOWN_DELAY=1s -e SHUTDOWN_TIMEOUT=5s "$img" >/dev/null 2>>"$errors"
ready "$port"
through "$port"
echo "request and WebSocket through the proxy to the app found by its alias"
podman healthcheck run proxy >/dev/null || fail "HEALTHCHECK is not healthy"
echo "HEALTHCHECK: healthy"
pid=$(podman inspect proxy --format '{{.State.Pid}}')
uid=$(stat -c %u "/proc/$pid")
[ "$uid" = 65532 ] || fail "the proxy runs as uid $uid"
echo "the proxy runs as uid $uid"
podman rm -f -t 0 app >/dev/null 2>>"$errors" || fail "podman rm app"
# Once in a CI run the new container failed to start (exit 126) right after the old one was
# removed; a second attempt started it. Up to three, each error kept for the failure report.
for attempt in 1 2 3; do
  "${run[@]}" -d --name app --network "$net" --network-alias echo --ip 10.89.77.11 "$app_img" >/dev/null 2>>"$errors" && break
  podman rm -f -t 0 app >/dev/null 2>&1 || true
  [ "$attempt" = 3 ] && fail "the app did not start again at 10.89.77.11"
  sleep 1
done
through "$port"
echo "the app re-created at 10.89.77.11 (was .10) is served without a restart"
started=$(date +%s)
podman stop -t 20 proxy >/dev/null 2>>"$errors"
took=$(( $(date +%s) - started ))
code=$(podman inspect proxy --format '{{.State.ExitCode}}')
[ "$code" = 0 ] || fail "exit code $code after podman stop"
[ "$took" -lt 20 ] || fail "podman stop took ${took}s, its timeout is 20s"
podman logs proxy 2>&1 | grep -q "shutdown complete" || fail "no drain in the log"
echo "podman stop: drained and exited 0 in ${took}s"
podman rm -f -t 0 proxy app >/dev/null 2>>"$errors"

echo "== docker-compose.yml under podman-compose"
# The compose file builds `proxy` from the Dockerfile; the image built above stands in for it
# under the names podman-compose gives a built service's image.
podman tag "$img" localhost/elbsmoke_proxy localhost/elbsmoke-proxy
podman-compose -p elbsmoke up -d --no-build >/dev/null 2>&1 || { podman-compose -p elbsmoke up -d --no-build; fail "podman-compose up"; }
ready 8444
through 8444
echo "request and WebSocket through the compose file's proxy to its app"
podman-compose -p elbsmoke down -t 20 >/dev/null 2>&1

echo "== docker-compose.yml with docker-compose.elb.yml (HAProxy playing the ELB) under podman-compose"
# The overlay's haproxy:2.6 image, made here from Debian's HAProxy 2.6 and the libraries it
# links (no registry is reachable from CI); it takes the config where the official image does.
mkdir -p "$work/haproxy"
{
  echo 'FROM scratch'
  for f in /usr/sbin/haproxy $(ldd /usr/sbin/haproxy | grep -o '/[^ ]*'); do
    mkdir -p "$work/haproxy/root$(dirname "$f")"; cp -L "$f" "$work/haproxy/root$f"
  done
  echo 'COPY root/ /'
  echo 'ENTRYPOINT ["/usr/sbin/haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]'
} > "$work/haproxy/Containerfile"
podman build -q --format docker -t docker.io/library/haproxy:2.6 -f "$work/haproxy/Containerfile" "$work/haproxy" >/dev/null
compose=(podman-compose -p elbsmoke -f docker-compose.yml -f docker-compose.elb.yml)
"${compose[@]}" up -d --no-build >/dev/null 2>&1 || { "${compose[@]}" up -d --no-build; fail "podman-compose up with the ELB"; }
ready 8444
headers=""
for _ in $(seq 1 100); do
  headers=$(curl -sS --max-time 5 "http://127.0.0.1:8443/headers" 2>/dev/null) && grep -qi '^x-forwarded-for: ' <<<"$headers" && break
  sleep 0.1
done
grep -qi '^x-forwarded-for: [0-9]' <<<"$headers" || fail "through the ELB stand-in the app got: $headers"
grep -qi '^x-forwarded-proto: https$' <<<"$headers" || fail "through the ELB stand-in the app got: $headers"
redirect=$(curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' "http://127.0.0.1:8080/x?y=1")
[[ "$redirect" == "301 https://127.0.0.1/x?y=1" ]] || fail "the plain port through the ELB answered $redirect"
echo "through HAProxy's send-proxy-v2: the app got $(grep -i '^x-forwarded-for' <<<"$headers"); the plain port redirects (301)"
"${compose[@]}" down -t 20 >/dev/null 2>&1
echo "container smoke: passed"
