#!/usr/bin/env bash
# bench/ab.sh's keep-alive row for two builds served at the same time rather than in turns:
# each behind its own ELB stand-in, both before the same backend, one wrk each, 10 s per round.
# A slow spell of this shared host then falls on both builds at once; the builds swap sides
# every round. Prints each round and the median of the per-round differences (new - old).
#
#   bash bench/ab_parallel.sh OLD_BINARY NEW_BINARY [ROUNDS]    default 12 rounds
#
# Both log as in production (RUST_LOG=info, access lines to files on tmpfs); AB_RUST_LOG=warn
# leaves the access line out.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
old=$1 new=$2 rounds=${3:-12}
TICK=$(getconf CLK_TCK)
BACKEND=19100
. "$root/bench/common.sh"

cargo build --release --locked --example bench_backend >/dev/null 2>&1
out=$(mktemp -d)
"$root/target/release/examples/bench_backend" "127.0.0.1:$BACKEND" 2>/dev/null & backend=$!
trap 'stop ${pa:-}; stop ${pb:-}; stop ${ea:-}; stop ${eb:-}; stop $backend; rm -rf "$out"' EXIT
wait_port $BACKEND
# Side a: ELB 19543 -> proxy 19544; side b: ELB 19643 -> proxy 19644.
elb_config "$out/a.cfg" 19543 19544
elb_config "$out/b.cfg" 19643 19644
haproxy -db -f "$out/a.cfg" >/dev/null 2>&1 & ea=$!
haproxy -db -f "$out/b.cfg" >/dev/null 2>&1 & eb=$!

start() { # $1 = binary, $2 = port behind the ELB, $3 = plain port; prints the pid
  env LISTEN_ON=$3 LISTEN_ON_TLS=$2 DESTINATION_HOSTNAME=127.0.0.1 DESTINATION_PORT=$BACKEND \
    LISTEN_ADDRESS=127.0.0.1 MAX_CONNECTIONS=9000 RUST_LOG=${AB_RUST_LOG:-info} "$1" \
    >>"$out/log.$2" 2>&1 & echo $!
}
both_wrk() { # $1 = seconds; one wrk per side at once, into $out/wrk.a and $out/wrk.b
  wrk -t1 -c32 -d"$1s" http://127.0.0.1:19543/ > "$out/wrk.a" & local w=$!
  wrk -t1 -c32 -d"$1s" http://127.0.0.1:19643/ > "$out/wrk.b"
  wait $w
}

olds=() news=() diffs=()
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) = 1 ]; then sa=$old sb=$new; else sa=$new sb=$old; fi
  pa=$(start "$sa" 19544 19181); pb=$(start "$sb" 19644 19182)
  wait_port 19544; wait_port 19644; wait_port 19543; wait_port 19643
  both_wrk 2
  a0=$(cpu_ticks "$pa"); b0=$(cpu_ticks "$pb")
  both_wrk 10
  ua=$(per_request_us $(( $(cpu_ticks "$pa") - a0 )) "$(awk '/requests in/{print $1}' "$out/wrk.a")")
  ub=$(per_request_us $(( $(cpu_ticks "$pb") - b0 )) "$(awk '/requests in/{print $1}' "$out/wrk.b")")
  if [ $((r % 2)) = 1 ]; then o=$ua n=$ub; else o=$ub n=$ua; fi
  olds+=("$o") news+=("$n") diffs+=("$(python3 -c "print(round($n - $o, 2))")")
  echo "round $r: old $o µs, new $n µs, difference ${diffs[-1]} µs"
  stop "$pa"; stop "$pb"; pa= pb=
  : > "$out/log.19544"; : > "$out/log.19644"
done
echo "medians: old $(med "${olds[@]}") µs, new $(med "${news[@]}") µs;" \
  "median difference $(med "${diffs[@]}") µs per request"
