"""One WebSocket through the proxy with nothing but the standard library, for the container
and cross-architecture smoke tests: a PROXY v1 header for 198.51.100.7, the upgrade, one
masked text frame, and its echo.

  python3 scripts/ws-check.py HOST PORT     exits 0 when the echo comes back
"""
import base64
import os
import socket
import sys

host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, port), timeout=10)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(
    b"PROXY TCP4 198.51.100.7 10.0.0.1 40000 443\r\n"
    + (
        "GET /ws HTTP/1.1\r\nHost: smoke.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key
    ).encode()
)
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(4096)
    if not chunk:
        sys.exit("closed before the upgrade's answer: %r" % head)
    head += chunk
head, rest = head.split(b"\r\n\r\n", 1)
if not head.startswith(b"HTTP/1.1 101"):
    sys.exit("no upgrade: %r" % head)
message = b"hello through the container"
mask = os.urandom(4)
s.sendall(bytes([0x81, 0x80 | len(message)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(message)))
while len(rest) < 2 or len(rest) < 2 + (rest[1] & 0x7F):
    chunk = s.recv(4096)
    if not chunk:
        sys.exit("closed before the echo: %r" % rest)
    rest += chunk
echo = rest[2 : 2 + (rest[1] & 0x7F)]
if echo != message:
    sys.exit("echo was %r" % echo)
print("websocket: echoed %d bytes" % len(echo))
