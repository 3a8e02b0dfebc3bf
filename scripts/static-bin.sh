#!/usr/bin/env bash
# Builds one workspace binary as a static executable and prints its path on stdout (build
# output goes to stderr):  scripts/static-bin.sh PACKAGE [cargo build args...]
# The binary is the package's binary of the same name (ward-agent, ward-workload). Static
# because it runs where there is no dynamic loader and no libc: the guest initrd, the demo
# image.
#
# musl when the target is installed; otherwise glibc with crt-static (a static-pie binary).
# --target is always given so RUSTFLAGS reach only the binary, not build scripts.
# WARD_STATIC_LIBC=gnu (or the older WARD_AGENT_LIBC=gnu) forces the glibc build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ $# -lt 1 || $1 == -* ]]; then
  echo "usage: scripts/static-bin.sh PACKAGE [cargo build args...]" >&2
  exit 2
fi
package=$1
shift

musl=x86_64-unknown-linux-musl
gnu=x86_64-unknown-linux-gnu
libc=${WARD_STATIC_LIBC:-${WARD_AGENT_LIBC:-}}
if [[ $libc != gnu ]] && rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
  target=$musl
  cargo build --release -p "$package" --bin "$package" --target "$target" "$@" >&2
else
  target=$gnu
  RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
    cargo build --release -p "$package" --bin "$package" --target "$target" "$@" >&2
fi

target_dir=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')}
bin="$target_dir/$target/release/$package"
[[ -x $bin ]] || { echo "static-bin.sh: $bin was not built" >&2; exit 1; }
# A PT_INTERP header means a loader is needed: the build was not static after all.
if command -v readelf >/dev/null && readelf -lW "$bin" | grep -q 'INTERP'; then
  echo "static-bin.sh: $bin is dynamically linked" >&2
  exit 1
fi
echo "$bin"
