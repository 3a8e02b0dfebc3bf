#!/usr/bin/env bash
# Builds ward-agent as a static executable and prints its path on stdout (build output goes
# to stderr). The agent is the guest's /init: there is no dynamic loader and no libc there.
# See scripts/static-bin.sh (musl when installed, else glibc +crt-static; WARD_AGENT_LIBC=gnu
# forces glibc). Extra arguments go to cargo build.
exec "$(dirname "${BASH_SOURCE[0]}")/static-bin.sh" ward-agent "$@"
