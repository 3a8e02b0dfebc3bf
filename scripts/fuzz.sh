#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time: scripts/fuzz.sh [seconds per target, default 30]
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). A crash fails the
# script and leaves the reproducer under fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"

secs=${1:-30}
command -v cargo-fuzz >/dev/null || { echo "fuzz: cargo-fuzz is not installed (cargo install cargo-fuzz)"; exit 1; }

for target in $(cargo +nightly fuzz list); do
    echo "=== fuzz $target (${secs}s)"
    mkdir -p "corpus/$target"
    cargo +nightly fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
done
