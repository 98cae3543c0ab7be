# Helpers bench/run.sh and bench/ab.sh share: the ELB stand-in's config, a proxy's processes,
# their CPU time and memory from /proc, CPU per request, medians, waiting for a port. Sourced;
# needs TICK set.

pids_of() { # the proxy's processes: the given pid and its children (nginx workers)
  local p=$1; echo "$p"; pgrep -P "$p" || true
}
sum_status() { # sum of a /proc/PID/status field (VmRSS, VmHWM) over pids, in KiB
  local field=$1; shift; local t=0 v
  for p in "$@"; do v=$(awk -v f="$field:" '$1==f{print $2}' "/proc/$p/status" 2>/dev/null || echo 0); t=$((t + ${v:-0})); done
  echo "$t"
}
cpu_ticks() { # user+system clock ticks of the given pids, from /proc/PID/stat (fields 14, 15)
  local t=0 v
  for p in "$@"; do v=$(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$p/stat" 2>/dev/null || echo 0); t=$((t + ${v:-0})); done
  echo "$t"
}
per_request_us() { # ticks, requests -> microseconds of the proxy's CPU per request
  python3 -c "import sys; t, n = int(sys.argv[1]), int(sys.argv[2]); print(round(t * 1e6 / $TICK / n, 1) if n else 'failed')" "$1" "$2"
}
med() { python3 -c "import statistics, sys; v = [float(x) for x in sys.argv[1:] if x != 'failed']; print(statistics.median(v) if v else 'failed')" "$@"; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened"; exit 1; }
stop() { [ -n "${1:-}" ] && kill "$1" 2>/dev/null && wait "$1" 2>/dev/null || true; }
elb_config() { # $1 = file: HAProxy in TCP mode on port $2 playing the ELB, sending PROXY v1 to port $3
  cat > "$1" <<EOF
global
  maxconn 9000
defaults
  mode tcp
  timeout connect 5s
  timeout client 120s
  timeout server 120s
frontend elb
  bind 127.0.0.1:$2
  maxconn 9000
  default_backend instance
backend instance
  server proxy 127.0.0.1:$3 send-proxy maxconn 9000
EOF
}
