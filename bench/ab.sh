#!/usr/bin/env bash
# The keep-alive row of bench/run.sh for two builds of elb-ws-proxy, taking turns: the proxy's
# own CPU time per request (user+system from /proc over a wrk run, divided by the requests it
# served), behind the same HAProxy ELB stand-in and backend. For a change whose cost is below
# the full run's round-to-round spread (an access-line field, a header per request).
#
#   bash bench/ab.sh OLD_BINARY NEW_BINARY [PAIRS]    PAIRS of 10 s runs, default 6
#
# Both run as in production: RUST_LOG=info, access lines written to a file on tmpfs
# (AB_RUST_LOG=warn leaves the access line out, to see what it costs). AB_TLS=1 has both end
# TLS with the benchmark's ECDSA P-256 certificate; AB_TLS=new also makes every request a new
# connection (a full handshake each), to compare TLS providers.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
old=$1 new=$2 pairs=${3:-6}
TICK=$(getconf CLK_TCK)
BACKEND=19100 TLS=19544 ELB=19543
. "$root/bench/common.sh"

cargo build --release --locked --example bench_backend >/dev/null 2>&1
out=$(mktemp -d)
log=$(mktemp -p /dev/shm elb-ws-proxy-ab.XXXXXX 2>/dev/null || mktemp)
"$root/target/release/examples/bench_backend" "127.0.0.1:$BACKEND" 2>/dev/null & backend=$!
trap 'stop ${proxy:-}; stop ${elb:-}; stop $backend; rm -rf "$out" "$log"' EXIT
wait_port $BACKEND
elb_config "$out/elb.cfg" $ELB $TLS
haproxy -db -f "$out/elb.cfg" >/dev/null 2>&1 & elb=$!
wait_port $ELB

url="http://127.0.0.1:$ELB/" certs=() close=()
if [ -n "${AB_TLS:-}" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj /CN=bench.test -keyout "$out/tls.key" -out "$out/tls.crt" 2>/dev/null
  url="https://127.0.0.1:$ELB/" certs=(TLS_CERT_FILE="$out/tls.crt" TLS_KEY_FILE="$out/tls.key")
  [ "$AB_TLS" = new ] && close=(-H 'Connection: close')
fi

run() { # $1 = binary; prints the proxy's CPU per request over one 10 s keep-alive run
  env LISTEN_ON=19181 LISTEN_ON_TLS=$TLS DESTINATION_HOSTNAME=127.0.0.1 DESTINATION_PORT=$BACKEND \
    LISTEN_ADDRESS=127.0.0.1 MAX_CONNECTIONS=9000 RUST_LOG=${AB_RUST_LOG:-info} "${certs[@]}" "$1" >>"$log" 2>&1 & proxy=$!
  wait_port $TLS
  wrk -t2 -c64 -d2s "${close[@]}" "$url" >/dev/null
  local t0 n
  t0=$(cpu_ticks "$proxy")
  wrk -t2 -c64 -d10s "${close[@]}" "$url" > "$out/wrk.txt"
  n=$(awk '/requests in/{print $1}' "$out/wrk.txt")
  per_request_us $(( $(cpu_ticks "$proxy") - t0 )) "$n"
  stop "$proxy"; proxy=
  : > "$log"
}

olds=() news=()
for i in $(seq 1 "$pairs"); do
  # Alternate which goes first, so a drift in the host's load falls on both.
  if [ $((i % 2)) = 1 ]; then olds+=("$(run "$old")"); news+=("$(run "$new")")
  else news+=("$(run "$new")"); olds+=("$(run "$old")"); fi
  echo "pair $i: old ${olds[-1]} µs, new ${news[-1]} µs"
done
o=$(med "${olds[@]}") n=$(med "${news[@]}")
python3 -c "o, n = $o, $n; print(f'median CPU per request: old {o:.2f} µs, new {n:.2f} µs, difference {n - o:+.2f} µs')"
