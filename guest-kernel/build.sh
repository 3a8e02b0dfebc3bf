#!/usr/bin/env bash
# Build a ward kernel (vmlinux) from Debian's linux-source package, cached by content.
#
#   guest-kernel/build.sh guest       the kernel ward-vmm boots (and the nested L2 guest)
#   guest-kernel/build.sh nest-host   the L1 kernel of the nested KVM harness
#
# Output: $WARD_CACHE/kernels/<name>-<hash of VERSION + fragments>/vmlinux (default
# WARD_CACHE=~/.cache/ward). Does nothing when that file exists. Prints its path last.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
name=${1:-}
case "$name" in
  guest) fragments=("$here/guest.config" "$here/guest-only.config") ;;
  nest-host) fragments=("$here/guest.config" "$here/nest-host.config") ;;
  *) echo "usage: $0 {guest|nest-host}" >&2; exit 2 ;;
esac

version=$(tr -d '[:space:]' < "$here/VERSION")
cache=${WARD_CACHE:-$HOME/.cache/ward}
hash=$(cat "$here/VERSION" "${fragments[@]}" | sha256sum | cut -c1-16)
out="$cache/kernels/$name-$hash"

if [[ -f "$out/vmlinux" ]]; then
  echo "$out/vmlinux"
  exit 0
fi

log() { echo "build.sh: $*" >&2; }

src_pkg="linux-source-$version"
deps=("$src_pkg" build-essential bc bison flex libelf-dev libssl-dev xz-utils cpio)
missing=()
for p in "${deps[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq "${missing[@]}" >&2
fi

tarball="/usr/src/linux-source-$version.tar.xz"
[[ -f "$tarball" ]] || { log "missing $tarball (package $src_pkg)"; exit 1; }

mkdir -p "$cache/kernels"
work=$(mktemp -d "$cache/kernels/.build-$name-XXXXXX")
trap 'rm -rf "$work"' EXIT

log "unpacking $tarball"
tar -xf "$tarball" -C "$work" --strip-components=1
cd "$work"

log "configuring $name (tinyconfig + ${fragments[*]##*/})"
make -s tinyconfig >&2
./scripts/kconfig/merge_config.sh -m .config "${fragments[@]}" >/dev/null
make -s olddefconfig >&2

# A fragment line the kernel's Kconfig dropped (unmet dependency, renamed symbol) is a bug here.
dropped=0
while IFS= read -r line; do
  [[ "$line" =~ ^CONFIG_[A-Z0-9_]+= ]] || continue
  grep -qxF "$line" .config || { log "not applied: $line"; dropped=1; }
done < <(cat "${fragments[@]}")
((dropped == 0)) || { log "config fragment not fully applied"; exit 1; }

log "building vmlinux with $(nproc) jobs"
start=$SECONDS
make -s -j"$(nproc)" vmlinux >&2
log "built in $((SECONDS - start)) s"

staged="$work/out"
mkdir -p "$staged"
cp vmlinux .config "$staged/"
cp "$here/VERSION" "$staged/VERSION"
rm -rf "$out"
mv "$staged" "$out"
echo "$out/vmlinux"
