#!/usr/bin/env bash
# Side-by-side benchmark: elb-ws-proxy, nginx with the seed image's config, and HAProxy in HTTP
# mode doing the same job, each between the same backend and HAProxy in TCP mode with
# send-proxy playing the ELB. Writes bench/RESULTS.md.
#
#   bash bench/run.sh            full run: two rounds, about 30 minutes (BENCH_ROUNDS=n for n)
#   BENCH_SMOKE=1 bash bench/run.sh   seconds, to check the machinery works
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

for tool in nginx haproxy wrk curl python3 h2load; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install nginx haproxy wrk curl python3 nghttp2-client"; exit 1; }
done
TICK=$(getconf CLK_TCK)

if [ "${BENCH_SMOKE:-0}" = 1 ]; then
  DUR=1 RUNS=1 HOLD=200 STREAM=$((16 << 20)) ECHO_SECS=1 ROUNDS=1
else
  DUR=10 RUNS=3 HOLD=5000 STREAM=$((1 << 30)) ECHO_SECS=10 ROUNDS=${BENCH_ROUNDS:-2}
fi
out="$root/bench/out"; rm -rf "$out"; mkdir -p "$out"
BACKEND=19000 PLAIN=19081 TLS=19444 ELB=19443

echo "building (release)"
cargo build --release --locked --bin elb-ws-proxy --example bench_backend --example bench_ws >/dev/null 2>&1
bin="$root/target/release"
ws="$bin/examples/bench_ws"

. "$root/bench/common.sh"

# elb-ws-proxy logs as it would in production (access lines included), to a file on tmpfs, so a
# failure can be explained afterwards; after each process its warnings and errors are kept in
# $out/elb-ws-proxy.warnings and the file is emptied (a full run's access lines are gigabytes).
: > "$out/elb-ws-proxy.warnings"
ourlog=$(mktemp -p /dev/shm elb-ws-proxy-bench.XXXXXX 2>/dev/null || mktemp)
keep_warnings() {
  grep -E '^\S+ +(WARN|ERROR) ' "$ourlog" >> "$out/elb-ws-proxy.warnings" || true
  : > "$ourlog"
}
stop_proxy() { stop "$proxy"; keep_warnings; }

"$bin/examples/bench_backend" "127.0.0.1:$BACKEND" 2>/dev/null & backend=$!
trap 'stop ${proxy:-}; stop ${elb:-}; stop $backend; rm -f "$ourlog"' EXIT
wait_port $BACKEND

elb_config "$out/elb.cfg" $ELB $TLS

# The seed image's nginx config rendered for these ports. One change: worker_connections is
# raised from the image's 1024 so nginx can hold the 5,000 WebSockets (two connections each).
cat > "$out/nginx.conf" <<EOF
worker_processes auto;
worker_rlimit_nofile 20000;
error_log $out/nginx-error.log warn;
pid $out/nginx.pid;
events { worker_connections 16384; }
http {
  access_log /dev/null;
  client_body_temp_path $out/nginx-body;
  proxy_temp_path $out/nginx-proxy;
  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
  server {
    listen 127.0.0.1:$PLAIN proxy_protocol;
    return 301 https://\$host\$request_uri;
  }
  server {
    listen 127.0.0.1:$TLS proxy_protocol;
    location /ping { add_header Content-Type text/plain; return 200 'ok'; }
    location / {
      proxy_pass http://127.0.0.1:$BACKEND;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_protocol_addr;
      proxy_set_header X-Forwarded-Proto https;
    }
  }
}
EOF

cat > "$out/haproxy-http.cfg" <<EOF
global
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 120s
  timeout server 120s
  timeout tunnel 1h
frontend plain
  bind 127.0.0.1:$PLAIN accept-proxy
  http-request redirect scheme https code 301
frontend tls
  bind 127.0.0.1:$TLS accept-proxy
  maxconn 9000
  http-request return status 200 content-type text/plain string ok if { path /ping }
  http-request set-header X-Forwarded-For %[src]
  http-request set-header X-Forwarded-Proto https
  http-request set-header X-Forwarded-Port %[dst_port]
  default_backend app
backend app
  http-reuse always
  server app 127.0.0.1:$BACKEND maxconn 9000
EOF

# TLS at the proxy, as behind an NLB TCP listener: every proxy ends TLS itself with the same
# ECDSA P-256 certificate, after the same ELB stand-in's PROXY header.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test -addext basicConstraints=critical,CA:FALSE \
  -keyout "$out/tls.key" -out "$out/tls.crt" 2>/dev/null
cat "$out/tls.crt" "$out/tls.key" > "$out/tls.pem"
python3 - "$out" "$TLS" <<'PY'
import sys
out, port = sys.argv[1:3]
conf = open(f"{out}/nginx.conf").read()
conf = conf.replace(
    f"listen 127.0.0.1:{port} proxy_protocol;",
    f"listen 127.0.0.1:{port} ssl proxy_protocol;\n    ssl_certificate {out}/tls.crt;\n"
    f"    ssl_certificate_key {out}/tls.key;\n    ssl_protocols TLSv1.2 TLSv1.3;",
)
open(f"{out}/nginx-tls.conf", "w").write(conf.replace(f"pid {out}/nginx.pid;", f"pid {out}/nginx-tls.pid;"))
PY
sed -e "s|bind 127.0.0.1:$TLS accept-proxy|bind 127.0.0.1:$TLS accept-proxy ssl crt $out/tls.pem alpn http/1.1|" \
  "$out/haproxy-http.cfg" > "$out/haproxy-tls.cfg"

start_proxy() { # $1 = name, $2 = tls to end TLS with $out/tls.crt
  local tls=${2:-}
  case $1 in
    elb-ws-proxy)
      local certs=()
      [ -n "$tls" ] && certs=(TLS_CERT_FILE="$out/tls.crt" TLS_KEY_FILE="$out/tls.key")
      env LISTEN_ON=$PLAIN LISTEN_ON_TLS=$TLS DESTINATION_HOSTNAME=127.0.0.1 DESTINATION_PORT=$BACKEND \
        LISTEN_ADDRESS=127.0.0.1 MAX_CONNECTIONS=9000 RUST_LOG=info "${certs[@]}" "$bin/elb-ws-proxy" >>"$ourlog" 2>&1 & proxy=$! ;;
    nginx-seed)
      mkdir -p "$out/nginx-body" "$out/nginx-proxy"
      nginx -p "$out" -c "$out/nginx${tls:+-tls}.conf" -g 'daemon off;' 2>>"$out/nginx-error.log" & proxy=$! ;;
    haproxy-http)
      haproxy -db -f "$out/haproxy-${tls:-http}.cfg" >/dev/null 2>&1 & proxy=$! ;;
  esac
  wait_port $TLS
  sleep 0.3
}

measure() { # $1 = name, $2 = file; appends "name key value" lines to it
  local name=$1 f=$2 best lat50 lat99 r
  start_proxy "$name"
  haproxy -db -f "$out/elb.cfg" >/dev/null 2>&1 & elb=$!
  wait_port $ELB
  curl -fsS "http://127.0.0.1:$ELB/" >/dev/null || { echo "$name: no answer through the ELB"; exit 1; }

  # CPU per request: the proxy's own user+system time over a run, divided by what it served.
  local procs t0 cpus n
  best=0; cpus=()
  for _ in $(seq 1 "$RUNS"); do
    mapfile -t procs < <(pids_of "$proxy"); t0=$(cpu_ticks "${procs[@]}")
    wrk -t2 -c64 -d"${DUR}s" --latency "http://127.0.0.1:$ELB/" > "$out/wrk.txt"
    n=$(awk '/requests in/{print $1}' "$out/wrk.txt")
    cpus+=("$(per_request_us $(( $(cpu_ticks "${procs[@]}") - t0 )) "$n")")
    r=$(awk '/Requests\/sec/{printf "%d", $2}' "$out/wrk.txt")
    if [ "$r" -gt "$best" ]; then
      best=$r
      lat50=$(awk '$1=="50%"{print $2}' "$out/wrk.txt"); lat99=$(awk '$1=="99%"{print $2}' "$out/wrk.txt")
    fi
  done
  echo "$name keepalive_rps $best" >> "$f"; echo "$name p50 $lat50" >> "$f"; echo "$name p99 $lat99" >> "$f"
  echo "$name keepalive_cpu_us $(med "${cpus[@]}")" >> "$f"

  best=0; cpus=()
  for _ in $(seq 1 "$RUNS"); do
    mapfile -t procs < <(pids_of "$proxy"); t0=$(cpu_ticks "${procs[@]}")
    wrk -t2 -c64 -d"${DUR}s" -H 'Connection: close' "http://127.0.0.1:$ELB/" > "$out/wrk.txt"
    n=$(awk '/requests in/{print $1}' "$out/wrk.txt")
    cpus+=("$(per_request_us $(( $(cpu_ticks "${procs[@]}") - t0 )) "$n")")
    r=$(awk '/Requests\/sec/{printf "%d", $2}' "$out/wrk.txt")
    [ "$r" -gt "$best" ] && best=$r
  done
  echo "$name close_rps $best" >> "$f"
  echo "$name close_cpu_us $(med "${cpus[@]}")" >> "$f"

  # Memory per idle WebSocket: resident growth of the proxy's processes over HOLD connections.
  local before after line
  mapfile -t procs < <(pids_of "$proxy")
  before=$(sum_status VmRSS "${procs[@]}")
  coproc HOLDER { "$ws" hold "127.0.0.1:$ELB" "$HOLD" 2>&1; }
  if ! read -r line <&"${HOLDER[0]}" || [ "$line" != "open $HOLD" ]; then
    echo "$name: the $HOLD WebSockets did not all open: ${line:-bench_ws ended}"
    stop "$elb"; stop_proxy
    [ "$name" = elb-ws-proxy ] && tail -n 20 "$out/elb-ws-proxy.warnings"
    exit 1
  fi
  sleep 2
  mapfile -t procs < <(pids_of "$proxy")
  after=$(sum_status VmRSS "${procs[@]}")
  echo go >&"${HOLDER[1]}"
  read -r line <&"${HOLDER[0]}"
  wait "$HOLDER_PID" || { echo "$name: held WebSockets failed to echo ($line)"; }
  echo "$name ws_kib_per_conn $(python3 -c "print(round(($after - $before) / $HOLD, 2))")" >> "$f"
  echo "$name ws_verified ${line#verified }" >> "$f"

  mapfile -t procs < <(pids_of "$proxy"); t0=$(cpu_ticks "${procs[@]}")
  read -r _ msgs _ _ < <("$ws" echo "127.0.0.1:$ELB" 100 "$ECHO_SECS" 32)
  echo "$name ws_msgs_per_s $msgs" >> "$f"
  # Each echoed message crosses the proxy twice; CPU per message echoed.
  echo "$name ws_cpu_us $(per_request_us $(( $(cpu_ticks "${procs[@]}") - t0 )) "$(python3 -c "print(int(float('$msgs') * $ECHO_SECS))")")" >> "$f"
  read -r _ _ _ mbs < <("$ws" echo "127.0.0.1:$ELB" 10 "$ECHO_SECS" 65536)
  echo "$name ws_mb_per_s $mbs" >> "$f"

  # Streaming, on a fresh proxy so its peak memory is this phase's alone.
  stop "$elb"; stop_proxy; sleep 0.3
  start_proxy "$name"
  haproxy -db -f "$out/elb.cfg" >/dev/null 2>&1 & elb=$!
  wait_port $ELB
  local down up code
  down=$(curl -sS -o /dev/null -w '%{time_total} %{size_download}' "http://127.0.0.1:$ELB/download?$STREAM" || true)
  [ "${down#* }" = "$STREAM" ] || down="failed x"
  up=$( (head -c "$STREAM" /dev/zero || true) | curl -sS -o "$out/upload.txt" -w '%{time_total} %{http_code}' -X POST -T - "http://127.0.0.1:$ELB/upload" || true)
  code=${up#* }
  [ "$code" = 200 ] && [ "$(cat "$out/upload.txt" 2>/dev/null)" = "$STREAM" ] || up="failed(HTTP-$code) x"
  mapfile -t procs < <(pids_of "$proxy")
  echo "$name download_s ${down% *}" >> "$f"
  echo "$name upload_s ${up% *}" >> "$f"
  echo "$name stream_peak_kib $(sum_status VmHWM "${procs[@]}")" >> "$f"
  stop "$elb"; stop_proxy; sleep 0.5
}

# HTTP/2 with prior knowledge after the PROXY header, as an NLB TLS listener with ALPN forwards
# it: many streams per connection. The proxies take turns, each run on a fresh process, so that
# a slow spell of the host (common on this shared machine) falls on all of them rather than on
# whichever was being measured. nginx's seed config has no http2 and answers 400.
measure_h2() { # $1 = file; appends "name h2_rps value" and "name h2_cpu_us value" lines to it
  local f=$1 name procs t0 n r
  local -A best=() cpus=()
  for _ in $(seq 1 "$RUNS"); do
    for name in "${PROXIES[@]}"; do
      start_proxy "$name"
      haproxy -db -f "$out/elb.cfg" >/dev/null 2>&1 & elb=$!
      wait_port $ELB
      mapfile -t procs < <(pids_of "$proxy"); t0=$(cpu_ticks "${procs[@]}")
      h2load -c16 -m32 -t2 -D "$DUR" "http://127.0.0.1:$ELB/" > "$out/h2load.txt" 2>&1 || true
      n=$(awk '/^requests:/{print $8}' "$out/h2load.txt"); n=${n:-0}
      r=$(awk '/^finished in/{printf "%d", $4}' "$out/h2load.txt"); r=${r:-0}
      if [ "$n" -gt 0 ] && [ "$(awk '/^requests:/{print $10}' "$out/h2load.txt")" = 0 ]; then
        cpus[$name]="${cpus[$name]:-} $(per_request_us $(( $(cpu_ticks "${procs[@]}") - t0 )) "$n")"
        [ "$r" -gt "${best[$name]:-0}" ] && best[$name]=$r
      fi
      stop "$elb"; stop_proxy; sleep 0.3
    done
  done
  for name in "${PROXIES[@]}"; do
    if [ "${best[$name]:-0}" -gt 0 ]; then
      # shellcheck disable=SC2086 # one argument per run
      echo "$name h2_rps ${best[$name]}" >> "$f"; echo "$name h2_cpu_us $(med ${cpus[$name]})" >> "$f"
    else
      echo "$name h2_rps failed" >> "$f"; echo "$name h2_cpu_us failed" >> "$f"
    fi
  done
}

# TLS ended by each proxy, the proxies taking turns on fresh processes as for HTTP/2: CPU per
# keep-alive request, per new connection (a full handshake and one request), for a download,
# and memory per idle TLS WebSocket. Every row is HTTP/1.1 on every proxy: wrk offers no ALPN,
# HAProxy's bind offers only http/1.1 and the seed's nginx has no http2, so the download's curl
# is held to HTTP/1.1 too (left to itself it would pick h2 from elb-ws-proxy alone).
measure_tls() { # $1 = file; appends "name tls_* value" lines to it
  local f=$1 name procs t0 n before after line
  local -A ka=() close=() down=() mem=()
  for _ in $(seq 1 "$RUNS"); do
    for name in "${PROXIES[@]}"; do
      start_proxy "$name" tls
      haproxy -db -f "$out/elb.cfg" >/dev/null 2>&1 & elb=$!
      wait_port $ELB
      curl -fsSk "https://127.0.0.1:$ELB/" >/dev/null || { echo "$name: no answer over TLS"; exit 1; }
      mapfile -t procs < <(pids_of "$proxy"); t0=$(cpu_ticks "${procs[@]}")
      wrk -t2 -c64 -d"${DUR}s" "https://127.0.0.1:$ELB/" > "$out/wrk.txt"
      n=$(awk '/requests in/{print $1}' "$out/wrk.txt")
      ka[$name]="${ka[$name]:-} $(per_request_us $(( $(cpu_ticks "${procs[@]}") - t0 )) "$n")"
      t0=$(cpu_ticks "${procs[@]}")
      wrk -t2 -c64 -d"${DUR}s" -H 'Connection: close' "https://127.0.0.1:$ELB/" > "$out/wrk.txt"
      n=$(awk '/requests in/{print $1}' "$out/wrk.txt")
      close[$name]="${close[$name]:-} $(per_request_us $(( $(cpu_ticks "${procs[@]}") - t0 )) "$n")"
      t0=$(cpu_ticks "${procs[@]}")
      n=$(curl -sSk --http1.1 -o /dev/null -w '%{size_download}' "https://127.0.0.1:$ELB/download?$STREAM" || true)
      if [ "$n" = "$STREAM" ]; then
        down[$name]="${down[$name]:-} $(python3 -c "print(round($(( $(cpu_ticks "${procs[@]}") - t0 )) * 1000 / $TICK))")"
      fi
      stop "$elb"; stop_proxy; sleep 0.3
    done
  done
  # Memory per idle TLS WebSocket, once per round (the handshakes take a while).
  for name in "${PROXIES[@]}"; do
    start_proxy "$name" tls
    haproxy -db -f "$out/elb.cfg" >/dev/null 2>&1 & elb=$!
    wait_port $ELB
    mapfile -t procs < <(pids_of "$proxy")
    before=$(sum_status VmRSS "${procs[@]}")
    coproc HOLDER { BENCH_WS_TLS="$out/tls.crt" "$ws" hold "127.0.0.1:$ELB" "$HOLD" 2>&1; }
    if read -r line <&"${HOLDER[0]}" && [ "$line" = "open $HOLD" ]; then
      sleep 2
      mapfile -t procs < <(pids_of "$proxy")
      after=$(sum_status VmRSS "${procs[@]}")
      echo go >&"${HOLDER[1]}"
      read -r line <&"${HOLDER[0]}"
      if wait "$HOLDER_PID"; then
        mem[$name]=$(python3 -c "print(round(($after - $before) / $HOLD, 2))")
      else
        echo "$name: held TLS WebSockets failed to echo ($line)"
      fi
    else
      echo "$name: the $HOLD TLS WebSockets did not all open: ${line:-bench_ws ended}"
      kill "$HOLDER_PID" 2>/dev/null || true
    fi
    stop "$elb"; stop_proxy; sleep 0.5
  done
  for name in "${PROXIES[@]}"; do
    # shellcheck disable=SC2086 # one argument per run
    echo "$name tls_keepalive_cpu_us $(med ${ka[$name]:-failed})" >> "$f"
    # shellcheck disable=SC2086
    echo "$name tls_close_cpu_us $(med ${close[$name]:-failed})" >> "$f"
    # shellcheck disable=SC2086
    echo "$name tls_download_cpu_ms $(med ${down[$name]:-failed})" >> "$f"
    echo "$name tls_ws_kib_per_conn ${mem[$name]:-failed}" >> "$f"
  done
}

PROXIES=(elb-ws-proxy nginx-seed haproxy-http)
: > "$out/figures.1"
for round in $(seq 1 "$ROUNDS"); do
  for name in "${PROXIES[@]}"; do
    echo "round $round: measuring $name"
    measure "$name" "$out/figures.$round"
  done
  echo "round $round: HTTP/2, the proxies in turn"
  measure_h2 "$out/figures.$round"
  echo "round $round: TLS at the proxy, the proxies in turn"
  measure_tls "$out/figures.$round"
done
python3 "$root/bench/report.py" "$out" "$DUR" "$RUNS" "$HOLD" "$STREAM" > "$root/bench/RESULTS.md"
cat "$root/bench/RESULTS.md"
echo "elb-ws-proxy's warnings and errors during the run: $(wc -l < "$out/elb-ws-proxy.warnings") (bench/out/elb-ws-proxy.warnings)"
