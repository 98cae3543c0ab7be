#!/usr/bin/env bash
# Builds the static (musl) release binary for ARCH, x86_64 (default) or aarch64, as the image
# ships it, and prints its path. x86_64 is built with musl-gcc (Debian's musl-tools), as the
# Dockerfile's build stage does; aarch64 is cross-built with cargo-zigbuild and zig from PyPI
# (pip install ziglang cargo-zigbuild), which compile ring and mimalloc's C for the target.
#   scripts/build-static.sh aarch64      -> target/aarch64-unknown-linux-musl/release/elb-ws-proxy
# Extra arguments go to cargo (for example --example bench_backend).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-x86_64}
shift || true
case "$arch" in
  x86_64|amd64) target=x86_64-unknown-linux-musl; build=(cargo build) ;;
  aarch64|arm64) target=aarch64-unknown-linux-musl; build=(cargo zigbuild) ;;
  *) echo "usage: $0 [x86_64|aarch64] [cargo arguments]" >&2; exit 2 ;;
esac
rustup target add "$target" >/dev/null 2>&1 || true
"${build[@]}" --release --locked --target "$target" --bin elb-ws-proxy "$@" >&2
bin="target/$target/release/elb-ws-proxy"
if ! file "$bin" | grep -Eq 'statically linked|static-pie linked'; then
  file "$bin" >&2; echo "FAIL: $bin is not static" >&2; exit 1
fi
echo "$bin"
