#!/usr/bin/env bash
# ward's demo on a fresh machine: installs the Debian packages, builds the guest kernel
# (and, on a host whose KVM cannot boot Linux, the nested harness's kernel), builds ward,
# runs one container in each isolation, then prints `ward compare`. Root is needed
# (containers, cgroups, /dev/kvm). Extra arguments go to `ward compare`.
#
#   bash scripts/demo.sh                 # default: ward compare --runs 5
#   bash scripts/demo.sh --format markdown --svg /tmp/compare.svg
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export WARD_CACHE=${WARD_CACHE:-$HOME/.cache/ward}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

if [[ $(id -u) != 0 ]]; then
  echo "demo.sh: needs root (containers, cgroups, /dev/kvm): sudo bash scripts/demo.sh" >&2
  exit 1
fi
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

say "packages"
.ci/install-packages >&2

say "kernels (cached in $WARD_CACHE/kernels; the first build takes a few minutes)"
guest-kernel/build.sh guest >/dev/null
if [[ -e /sys/module/kvm_pvm ]]; then
  # This host's KVM (PVM) cannot boot Linux: the VM side runs inside the nested harness.
  guest-kernel/build.sh nest-host >/dev/null
fi

say "build"
rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl \
  || timeout 120 rustup target add x86_64-unknown-linux-musl >&2 \
  || echo "musl target not installable: static binaries are built against glibc" >&2
cargo build --release --locked >&2
scripts/static-agent.sh >/dev/null
scripts/static-bin.sh ward-workload >/dev/null

ward=target/release/ward
say "ward run --isolation shared demo"
"$ward" run --rm --isolation shared demo -- sh -c 'echo "hello from a shared-kernel container, kernel $(uname -r)"'
say "ward run --isolation vm demo"
"$ward" run --rm --isolation vm demo -- sh -c 'echo "hello from a VM container, kernel $(uname -r)"'

say "ward compare"
if (($# == 0)); then
  set -- --runs 5
fi
"$ward" compare "$@"
