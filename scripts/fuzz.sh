#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (build/fuzz) and runs each for a bounded time.
#   scripts/fuzz.sh [--seconds N]      N seconds per fuzzer, 60 by default
# Each fuzzer starts from its seeds (tests/fuzz/corpus/<name>) and the inputs of earlier runs
# (build/fuzz/corpus/<name>); a crashing input is written to build/fuzz/artifacts/<name>/ and can be
# replayed with build/fuzz/tests/fuzz/<name> <file>. Exit status is non-zero on a build failure or any crash.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=60
while [ $# -gt 0 ]; do
    case "$1" in
    --seconds)
        seconds=${2:-}
        shift 2 || true
        ;;
    --seconds=*)
        seconds=${1#--seconds=}
        shift
        ;;
    *)
        echo "usage: scripts/fuzz.sh [--seconds N]" >&2
        exit 2
        ;;
    esac
done
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "fuzz.sh: --seconds needs a positive whole number" >&2
    exit 2
fi
if ! command -v clang++ >/dev/null; then
    echo "fuzz.sh: clang++ is needed (Debian: clang, and libclang-rt-14-dev for libFuzzer)" >&2
    exit 2
fi
if ! grep -q 'tests/fuzz' CMakeLists.txt; then
    echo "fuzz.sh: CMakeLists.txt does not add tests/fuzz (option ASYNC_SOCKET_BUILD_FUZZERS)" >&2
    exit 2
fi

build=build/fuzz
fuzzers=(fuzz_buffers)

cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DASYNC_SOCKET_BUILD_FUZZERS=ON -DASYNC_SOCKET_SANITIZE= -DASYNC_SOCKET_BUILD_TESTS=OFF \
    -DASYNC_SOCKET_BUILD_BENCHMARKS=OFF -DASYNC_SOCKET_BUILD_EXAMPLES=OFF -DASYNC_SOCKET_INSTALL=OFF >/dev/null ||
    exit 1
cmake --build "$build" -j 2 --target "${fuzzers[@]}" || exit 1

failed=0
for name in "${fuzzers[@]}"; do
    corpus=$build/corpus/$name
    artifacts=$build/artifacts/$name
    log=$build/$name.log
    mkdir -p "$corpus" "$artifacts"
    echo "=== $name: fuzzing for $seconds s (log: $log)"
    started=$SECONDS
    "$build/tests/fuzz/$name" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$artifacts/" \
        "$corpus" "tests/fuzz/corpus/$name" >"$log" 2>&1
    status=$?
    elapsed=$((SECONDS - started))
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    per_second=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    coverage=$(grep -E '^#[0-9]+' "$log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*')
    echo "$name: ${executions:-?} executions in $elapsed s (${per_second:-?}/s); ${coverage:-no coverage line}"
    if [ "$status" -ne 0 ]; then
        failed=1
        echo "$name: FAILED (exit $status); the crashing input is in $artifacts/" >&2
        grep -E 'fuzz_buffers:|ERROR|SUMMARY|Test unit written' "$log" | head -20 >&2
    fi
done
exit "$failed"
