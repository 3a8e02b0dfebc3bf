#!/usr/bin/env bash
# Builds ward-agent as a static executable and prints its path on stdout (build output goes
# to stderr). The agent is the guest's /init: there is no dynamic loader and no libc there.
#
# musl when the target is installed; otherwise glibc with crt-static (a static-pie binary).
# --target is always given so RUSTFLAGS reach only the agent, not build scripts.
# WARD_AGENT_LIBC=gnu forces the glibc build. Extra arguments go to cargo build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

musl=x86_64-unknown-linux-musl
gnu=x86_64-unknown-linux-gnu
if [[ ${WARD_AGENT_LIBC:-} != gnu ]] && rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
  target=$musl
  cargo build --release -p ward-agent --target "$target" "$@" >&2
else
  target=$gnu
  RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
    cargo build --release -p ward-agent --target "$target" "$@" >&2
fi

target_dir=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')}
bin="$target_dir/$target/release/ward-agent"
[[ -x $bin ]] || { echo "static-agent.sh: $bin was not built" >&2; exit 1; }
# A PT_INTERP header means a loader is needed: the build was not static after all.
if command -v readelf >/dev/null && readelf -lW "$bin" | grep -q 'INTERP'; then
  echo "static-agent.sh: $bin is dynamically linked" >&2
  exit 1
fi
echo "$bin"
