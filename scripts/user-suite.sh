#!/usr/bin/env bash
# Runs README's test command the way a new contributor would: as an ordinary user, on a fresh
# copy of the tree, with neither haproxy nor curl on PATH. Needs root to create that user and
# is run by .ci/run; the toolchain and the crates already fetched are shared read-only.
set -euo pipefail
cd "$(dirname "$0")/.."

user=elb-ws-proxy-ci
id -u "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
home=$(getent passwd "$user" | cut -d: -f6)

toolchain=$(dirname "$(rustup which cargo)")
# The user may pass through the directories above the toolchain (not list them) and read it.
d=$(dirname "$toolchain")
chmod -R o+rX "$d"
while d=$(dirname "$d") && [ "$d" != / ]; do chmod o+x "$d"; done

# A PATH with every program of /usr/bin and /bin except the two the ignored tests need.
bin="$home/bin-without-tools"
rm -rf "$bin" && mkdir -p "$bin"
for f in /usr/bin/* /bin/*; do
  name=$(basename "$f")
  case "$name" in curl | haproxy) continue ;; esac
  [ -e "$bin/$name" ] || ln -s "$f" "$bin/$name"
done

# A fresh copy of the committed tree, and a copy of the crates already downloaded.
src="$home/src"
rm -rf "$src" && git clone -q "$PWD" "$src"
# The copy and its build tree are gigabytes on a shared disk: gone when the run ends, pass or fail.
trap 'rm -rf "$src" "$home/.cargo"' EXIT
mkdir -p "$home/.cargo"
[ -d "$HOME/.cargo/registry" ] && cp -r "$HOME/.cargo/registry" "$home/.cargo/"
chown -R "$user:" "$home"

cmd=$(sed -n 's/^ *\(cargo test[^`]*\)$/\1/p' README.md | sed -n 1p)
[ -n "$cmd" ] || { echo "README names no test command" >&2; exit 1; }
echo "as $user, PATH without haproxy and curl: $cmd"
runuser -u "$user" -- env -i HOME="$home" CARGO_HOME="$home/.cargo" ${CARGO_INCREMENTAL:+CARGO_INCREMENTAL=$CARGO_INCREMENTAL} \
  PATH="$toolchain:$bin" bash -c "cd '$src' && ! command -v haproxy && ! command -v curl && $cmd"
