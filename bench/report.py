"""Turns bench/out/figures into bench/RESULTS.md: each figure, and its ratio to nginx-seed and HAProxy."""
import datetime
import os
import platform
import sys

figures_path, dur, runs, hold, stream = sys.argv[1:6]
fig = {}
for line in open(figures_path):
    name, key, *value = line.split()
    fig.setdefault(name, {})[key] = " ".join(value)


def num(name, key):
    v = fig.get(name, {}).get(key, "")
    try:
        if v.endswith("ms"):
            return float(v[:-2])
        if v.endswith("us"):
            return float(v[:-2]) / 1000
        if v.endswith("s") and not v.endswith("ms"):
            return float(v[:-1]) * 1000
        return float(v)
    except ValueError:
        return None


rows = [
    ("keep-alive requests/s (64 conns)", "keepalive_rps", True, "≥ 1.25× HAProxy, ≥ 2.5× nginx"),
    ("keep-alive p50 latency (ms)", "p50", False, ""),
    ("keep-alive p99 latency (ms)", "p99", False, "≤ HAProxy"),
    ("one request per connection, requests/s", "close_rps", True, "≥ HAProxy"),
    (f"memory per idle WebSocket (KiB, {hold} held)", "ws_kib_per_conn", False, "≤ 4 KiB"),
    ("WebSocket echo, 32 B messages/s (100 conns)", "ws_msgs_per_s", True, "≥ HAProxy"),
    ("WebSocket echo, 64 KiB messages, MB/s (10 conns)", "ws_mb_per_s", True, "≥ HAProxy"),
    (f"download {int(stream) >> 20} MiB, seconds", "download_s", False, "≤ HAProxy"),
    (f"upload {int(stream) >> 20} MiB, seconds", "upload_s", False, "≤ HAProxy"),
    ("proxy peak RSS while streaming (KiB)", "stream_peak_kib", False, "< 32 MiB"),
]


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b else "—"


print("# Benchmark results\n")
print(f"- date: {datetime.date.today()}; machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
print(f"- every proxy sits between the same backend and HAProxy (TCP mode, send-proxy) playing the ELB;")
print(f"  wrk {dur}s runs, best of {runs}; WebSocket memory with {hold} idle connections, each verified to echo at the end")
print("- produced by `bash bench/run.sh`\n")
print("| figure | elb-ws-proxy | nginx (seed config) | HAProxy (HTTP mode) | ours ÷ nginx | ours ÷ HAProxy | target |")
print("|---|---|---|---|---|---|---|")
for label, key, _, target in rows:
    ours, ng, hp = (fig.get(n, {}).get(key, "—") for n in ("elb-ws-proxy", "nginx-seed", "haproxy-http"))
    print(f"| {label} | {ours} | {ng} | {hp} | {ratio(num('elb-ws-proxy', key), num('nginx-seed', key))} "
          f"| {ratio(num('elb-ws-proxy', key), num('haproxy-http', key))} | {target} |")
for n in ("elb-ws-proxy", "nginx-seed", "haproxy-http"):
    v = fig.get(n, {}).get("ws_verified")
    if v is not None and v != hold:
        print(f"\n{n}: only {v} of {hold} held WebSockets still echoed at the end.")
