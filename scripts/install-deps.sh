#!/usr/bin/env bash
# Installs what building and testing async_socket needs, from Debian's archive, when it is missing.
#   scripts/install-deps.sh            native tools, Google Benchmark, doctest, mingw-w64 and Wine
#   scripts/install-deps.sh --fresh    first puts the machine back to what a new one has of ours: removes
#                                      the project's cache (~/.cache/async_socket or $ASYNC_SOCKET_CACHE: Wine
#                                      prefixes, the mingw build of Google Benchmark), the apt source entry the
#                                      scripts add and apt's package lists; then installs as on a new machine.
# Safe to run again: it installs only what is absent (scripts/lib/apt.sh refreshes apt's lists first).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/apt.sh
source scripts/lib/apt.sh

fresh=0
for argument in "$@"; do
    case "$argument" in
    --fresh) fresh=1 ;;
    *)
        echo "usage: scripts/install-deps.sh [--fresh]" >&2
        exit 2
        ;;
    esac
done

packages=(
    cmake make g++ clang clang-format python3   # native build, sanitizers, formatting, scripts
    pkgconf                                     # checks the installed async_socket.pc
    doxygen                                     # the API reference (scripts/api-docs.sh)
    libclang-rt-14-dev                          # libFuzzer and the sanitizer runtimes for clang
    doctest-dev libbenchmark-dev                # test and benchmark frameworks
    liburing-dev                                # the Linux io_uring backend
    libasio-dev                                 # Asio, a peer in the native benchmarks
    libuv1-dev                                  # libuv, a peer in the native benchmarks
    g++-mingw-w64-x86-64-posix                  # Windows cross compiler (posix threads)
    wine wine64                                 # runs the Windows tests and example
)

if [ "$fresh" -eq 1 ]; then
    cache_dir="${ASYNC_SOCKET_CACHE:-${HOME:-/root}/.cache/async_socket}"
    if [ -d "$cache_dir" ]; then
        # A wineserver still serving one of the prefixes would keep files open in it.
        for prefix in "$cache_dir"/wine64*; do
            if [ -f "$prefix/system.reg" ] && command -v wineserver >/dev/null; then
                WINEPREFIX="$prefix" wineserver -k 2>/dev/null || true
            fi
        done
        echo "install-deps: --fresh: removing $cache_dir" >&2
        rm -rf "$cache_dir"
    fi
    apt_remove_source async-socket-deb-src.sources
    apt_forget_lists
fi

apt_require "${packages[@]}"
