#!/usr/bin/env bash
# Runs a Windows program under Wine in the project's own prefix, quietly.
#   scripts/wine-run.sh program.exe [args...]
#   scripts/wine-run.sh --init          creates the prefix (once; later calls return at once)
# The prefix is $ASYNC_SOCKET_WINEPREFIX, by default wine64 in the project cache ($ASYNC_SOCKET_CACHE, by default
# ~/.cache/async_socket). Creating it takes a
# few seconds; scripts/test.sh does it once before ctest runs tests in parallel.
set -euo pipefail
export WINEDEBUG=-all
export WINEARCH=win64
export WINEPREFIX="${ASYNC_SOCKET_WINEPREFIX:-${ASYNC_SOCKET_CACHE:-${HOME:-/root}/.cache/async_socket}/wine64}"
export WINEDLLOVERRIDES="mscoree,mshtml="   # no Mono/Gecko installer prompts

if [ ! -f "$WINEPREFIX/system.reg" ]; then
    mkdir -p "$WINEPREFIX"
    wineboot --init >/dev/null 2>&1 || true
    wineserver --wait || true
fi
if [ "${1:-}" = "--init" ]; then
    exit 0
fi
exec wine "$@"
