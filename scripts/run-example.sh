#!/usr/bin/env bash
# Builds the echo examples for Windows and runs echo_client against echo_server under Wine, in one command.
#
#   scripts/run-example.sh [echo_client options]     e.g. --messages 500 --size 65536 --buffers 4
#
# Builds with the mingw preset (build/mingw), starts echo_server on an ephemeral port in the background,
# reads the port from its first line, runs echo_client against it, stops the server and exits with the
# client's status: 0 only when every echoed byte matched. Every step has a time limit, so the script ends
# by itself whatever fails.
#
# Environment:
#   ASYNC_SOCKET_EXAMPLE_BUILD_DIR   use this already configured Windows build tree instead of the preset
#   ASYNC_SOCKET_EXAMPLE_TIMEOUT     seconds the client may run (default 600)
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 1

build_timeout=900        # configure, and build of the two targets
start_timeout=60         # from starting the server to its "listening on" line (a new Wine prefix is slow)
client_timeout="${ASYNC_SOCKET_EXAMPLE_TIMEOUT:-600}"
stop_timeout=30          # from the client's end to the server's own exit

say() { echo "run-example: $*" >&2; }
die() {
    say "$*"
    exit 1
}

# 0. Tools (cmake, mingw-w64, Wine), installed from Debian's archive when missing.
scripts/install-deps.sh || die "installing the build tools failed"

# 1. Build.
if [ -n "${ASYNC_SOCKET_EXAMPLE_BUILD_DIR:-}" ]; then
    build_dir="$ASYNC_SOCKET_EXAMPLE_BUILD_DIR"
    [ -f "$build_dir/CMakeCache.txt" ] || die "$build_dir is not a configured build tree"
    timeout "$build_timeout" cmake --build "$build_dir" --target echo_server echo_client ||
        die "building echo_server and echo_client in $build_dir failed"
else
    build_dir="build/mingw"
    timeout "$build_timeout" cmake --preset mingw >/dev/null || die "configuring (cmake --preset mingw) failed"
    timeout "$build_timeout" cmake --build --preset mingw --target echo_server echo_client ||
        die "building echo_server and echo_client (cmake --build --preset mingw) failed"
fi
server_exe="$build_dir/examples/echo_server.exe"
client_exe="$build_dir/examples/echo_client.exe"
if [ ! -f "$server_exe" ] || [ ! -f "$client_exe" ]; then
    die "$server_exe or $client_exe is missing (is ASYNC_SOCKET_BUILD_EXAMPLES off, or not a Windows build?)"
fi

# 2. Wine prefix (created once; later calls return at once).
timeout 300 scripts/wine-run.sh --init || die "creating the Wine prefix failed"

# 3. The server, in the background. It serves one connection and exits; the timeout bounds its life
#    whatever happens.
work="$(mktemp -d)" || die "mktemp failed"
server_out="$work/server.out"
server_pid=""
stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null
        wait "$server_pid" 2>/dev/null
    fi
    server_pid=""
}
show_server_output() {
    if [ -s "$server_out" ]; then
        say "echo_server said:"
        tr -d '\r' <"$server_out" | sed 's/^/    /' >&2
    fi
}
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    stop_server
    rm -rf "$work"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

server_lifetime=$((start_timeout + client_timeout + stop_timeout + 30))
timeout --kill-after=10 "$server_lifetime" scripts/wine-run.sh "$server_exe" 0 --connections 1 >"$server_out" 2>&1 &
server_pid=$!

# 4. Its port, from "listening on 127.0.0.1:PORT" (Windows programs end lines with \r\n).
port=""
deadline=$((SECONDS + start_timeout))
while :; do
    port="$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\).*$/\1/p' "$server_out" | head -n 1)"
    [ -n "$port" ] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        wait "$server_pid" 2>/dev/null
        server_status=$?
        server_pid=""
        show_server_output
        die "echo_server exited with status $server_status before it listened"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        show_server_output
        die "echo_server did not print its port within ${start_timeout}s"
    fi
    sleep 0.1
done
say "echo_server listens on 127.0.0.1:$port"

# 5. The client.
timeout --kill-after=10 "$client_timeout" scripts/wine-run.sh "$client_exe" "$port" "$@"
client_status=$?
if [ "$client_status" -eq 124 ] || [ "$client_status" -eq 137 ]; then
    say "echo_client did not finish within ${client_timeout}s"
fi

# 6. After a good run the server ends by itself (its one connection is done); after a failed one, or if it
#    does not end in time, it is stopped.
deadline=$((SECONDS + stop_timeout))
[ "$client_status" -eq 0 ] || deadline=$SECONDS
while kill -0 "$server_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.1
done
if kill -0 "$server_pid" 2>/dev/null; then
    if [ "$client_status" -eq 0 ]; then
        say "echo_server still running ${stop_timeout}s after the client ended; stopping it"
    fi
    stop_server
else
    wait "$server_pid" 2>/dev/null
    server_status=$?
    server_pid=""
    if [ "$server_status" -ne 0 ]; then
        say "echo_server exited with status $server_status"
    fi
fi
show_server_output

if [ "$client_status" -eq 0 ]; then
    say "OK"
else
    say "FAILED (echo_client status $client_status)"
fi
exit "$client_status"
