"""Turns bench/out/figures.* (one file per round) into bench/RESULTS.md: the median of each
figure over the rounds, and its ratio to nginx-seed and HAProxy; then each round's ratios."""
import datetime
import os
import platform
import statistics
import sys

out_dir, dur, runs, hold, stream = sys.argv[1:6]
paths = sorted(p for p in os.listdir(out_dir) if p.startswith("figures."))
rounds = []
for p in paths:
    fig = {}
    for line in open(os.path.join(out_dir, p)):
        name, key, *value = line.split()
        fig.setdefault(name, {})[key] = " ".join(value)
    rounds.append(fig)
PROXIES = ("elb-ws-proxy", "nginx-seed", "haproxy-http")


def parse(v):
    """A figure as a number (latencies in ms), or None for a failure."""
    try:
        if v.endswith("ms"):
            return float(v[:-2])
        if v.endswith("us"):
            return float(v[:-2]) / 1000
        if v.endswith("s"):
            return float(v[:-1]) * 1000
        return float(v)
    except (ValueError, AttributeError):
        return None


def value(fig, name, key):
    return parse(fig.get(name, {}).get(key))


def median(name, key):
    vs = [value(f, name, key) for f in rounds]
    if not vs or any(v is None for v in vs):
        failed = [f.get(name, {}).get(key, "—") for f in rounds if value(f, name, key) is None]
        return None, (failed[0] if failed else "—")
    m = statistics.median(vs)
    return m, (f"{m:.3g}" if m < 100 else f"{m:.0f}")


rows = [
    ("keep-alive requests/s (64 conns)", "keepalive_rps", "≥ 1.25× HAProxy, ≥ 2.5× nginx"),
    ("keep-alive p50 latency (ms)", "p50", ""),
    ("keep-alive p99 latency (ms)", "p99", "≤ HAProxy"),
    ("keep-alive, proxy CPU per request (µs)", "keepalive_cpu_us", "≤ HAProxy"),
    ("one request per connection, requests/s", "close_rps", "≥ HAProxy"),
    ("one request per connection, proxy CPU per request (µs)", "close_cpu_us", "≤ HAProxy"),
    ("HTTP/2 requests/s (h2load, 16 conns × 32 streams)", "h2_rps", "≥ HAProxy"),
    ("HTTP/2, proxy CPU per request (µs)", "h2_cpu_us", "≤ HAProxy"),
    (f"memory per idle WebSocket (KiB, {hold} held)", "ws_kib_per_conn", "≤ 4 KiB"),
    ("WebSocket echo, 32 B messages/s (100 conns)", "ws_msgs_per_s", "≥ HAProxy"),
    ("WebSocket echo, proxy CPU per message (µs)", "ws_cpu_us", "≤ HAProxy"),
    ("WebSocket echo, 64 KiB messages, MB/s (10 conns)", "ws_mb_per_s", "≥ HAProxy"),
    (f"download {int(stream) >> 20} MiB, seconds", "download_s", "≤ HAProxy"),
    (f"upload {int(stream) >> 20} MiB (chunked), seconds", "upload_s", "≤ HAProxy"),
    ("proxy peak RSS while streaming (KiB)", "stream_peak_kib", "< 32 MiB"),
    ("TLS keep-alive, proxy CPU per request (µs)", "tls_keepalive_cpu_us", "≤ 0.8× the better"),
    ("TLS new connection (handshake + 1 request), proxy CPU (µs)", "tls_close_cpu_us", "≤ 0.8× the better"),
    (f"TLS download {int(stream) >> 20} MiB over HTTP/1.1, proxy CPU (ms)", "tls_download_cpu_ms", "≤ 0.8× the better"),
    (f"memory per idle TLS WebSocket (KiB, {hold} held)", "tls_ws_kib_per_conn", "≤ 0.5× HAProxy"),
]


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b else "—"


print("# Benchmark results\n")
print(f"- date: {datetime.date.today()}; machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
print("- every proxy sits between the same backend and HAProxy (TCP mode, send-proxy) playing the ELB;")
print("- CPU per request is the proxy's own user+system time from /proc (nginx: master and workers) over a run,")
print("  divided by the requests served in it; the median of the runs. nginx's seed config has no http2: HTTP/2 fails there")
print(f"  wrk and h2load {dur}s runs, best of {runs} (HTTP/2: the proxies take turns, a fresh process for each run);")
print(f"  WebSocket memory with {hold} idle connections, each verified to echo at the end")
print(f"- rounds: {len(rounds)} (in each, every proxy in turn); the table gives each figure's median over the rounds")
print("- produced by `bash bench/run.sh`\n")
print("| figure | elb-ws-proxy | nginx (seed config) | HAProxy (HTTP mode) | ours ÷ nginx | ours ÷ HAProxy | target |")
print("|---|---|---|---|---|---|---|")
for label, key, target in rows:
    (o, os_), (n, ns), (h, hs) = (median(p, key) for p in PROXIES)
    print(f"| {label} | {os_} | {ns} | {hs} | {ratio(o, n)} | {ratio(o, h)} | {target} |")

print("\nOurs ÷ HAProxy in each round:\n")
print("| figure | " + " | ".join(f"round {i + 1}" for i in range(len(rounds))) + " |")
print("|---|" + "---|" * len(rounds))
for label, key, _ in rows:
    cells = [ratio(value(f, "elb-ws-proxy", key), value(f, "haproxy-http", key)) for f in rounds]
    print(f"| {label} | " + " | ".join(cells) + " |")
for i, f in enumerate(rounds):
    for n in PROXIES:
        v = f.get(n, {}).get("ws_verified")
        if v is not None and v != hold:
            print(f"\nround {i + 1}, {n}: only {v} of {hold} held WebSockets still echoed at the end.")

# The hand-written analysis of the targets missed (profiles, what was tried) follows the figures.
notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "NOTES.md")
if os.path.exists(notes):
    print()
    print(open(notes).read().rstrip())
