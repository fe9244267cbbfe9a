#!/usr/bin/env bash
# Runs every benchmark, from a bare machine, and reports medians and ratios:
#   1. installs what is missing (scripts/install-deps.sh),
#   2. native: builds bench_native (preset release) and runs it, 5 repetitions,
#   3. Windows under Wine: builds Google Benchmark for mingw-w64 (scripts/build-mingw-benchmark.sh), cross-
#      compiles bench/win32 in build/mingw-bench and runs bench_loopback.exe under Wine, 5 repetitions, in
#      two scenarios (below), then once more under WINEDEBUG=+server to count wineserver requests per
#      operation (scripts/bench_wine_requests.py, about 15 s),
#   4. scripts/bench_report.py: prints the tables, writes docs/benchmarks-wine.svg and the results table of
#      the "Under Wine" section of docs/benchmarks.md.
# Results (JSON, console logs, machine load) go to build/bench-results/. The Wine part takes about 4 minutes.
#
#   scripts/bench.sh [--skip-native] [--skip-wine] [--two-cpus-only] [--quick] [--no-docs] [--build-only]
#     --two-cpus-only  runs the Wine benchmarks in the "two_cpus" scenario only
#     --quick          a short smoke run (1 repetition, small batches); implies --no-docs
#     --no-docs        leaves docs/ alone (prints the report only)
#     --build-only     builds the benchmarks and runs nothing (scripts/test.sh uses it)
#
# The two Wine scenarios:
#   two_cpus  the scheduler places the benchmark's threads and its wineserver on any CPU, as usual. Every
#             wineserver request wakes the server and then the client; on a virtual machine a wake-up on
#             the other vCPU (an inter-processor interrupt through the hypervisor) costs tens of
#             microseconds and dominates, and the numbers vary a lot from run to run.
#   one_cpu   the benchmark and its wineserver are pinned to one CPU (taskset): wake-ups stay on that CPU,
#             so the numbers measure the work each configuration makes (requests, thread switches) and
#             vary much less.
# Neither is Windows; docs/benchmarks.md shows both and says what they mean.
#
# Benchmarks measure wall-clock time on a 2-core machine: anything else running (builds, other Wine
# programs) shows in the numbers. The load average before and after each run is recorded and reported.
# The Wine benchmarks use their own Wine prefix ($ASYNC_SOCKET_BENCH_WINEPREFIX, by default
# ~/.cache/async_socket/wine64-bench), so that Wine programs of a test run going on at the same time do not
# share its wineserver.
set -euo pipefail
cd "$(dirname "$0")/.."

skip_native=0
skip_wine=0
quick=0
docs=1
build_only=0
scenarios=(two_cpus one_cpu)
for argument in "$@"; do
    case "$argument" in
    --skip-native) skip_native=1 ;;
    --skip-wine) skip_wine=1 ;;
    --two-cpus-only) scenarios=(two_cpus) ;;
    --quick)
        quick=1
        docs=0
        ;;
    --no-docs) docs=0 ;;
    --build-only) build_only=1 ;;
    *)
        echo "usage: scripts/bench.sh [--skip-native] [--skip-wine] [--two-cpus-only] [--quick] [--no-docs]" \
            "[--build-only]" >&2
        exit 2
        ;;
    esac
done

jobs=$(nproc 2>/dev/null || echo 2)
results=build/bench-results
mkdir -p "$results"

die() {
    echo "bench: error: $*" >&2
    exit 1
}

repetitions=(--benchmark_repetitions=5)
if [ "$quick" -eq 1 ]; then
    repetitions=(--benchmark_repetitions=1)
fi

# Machine state as JSON in $results/machine-<name>.json: phase "before" starts the file, "after" adds to it.
record_machine() {
    local name=$1 phase=$2 scenario=${3:-}
    python3 - "$results/machine-$name.json" "$phase" "$scenario" <<'EOF'
import json, os, platform, subprocess, sys, time
path, phase, scenario = sys.argv[1], sys.argv[2], sys.argv[3]
data = {}
if phase != "before" and os.path.exists(path):
    data = json.load(open(path))
with open("/proc/loadavg") as f:
    load = [float(x) for x in f.read().split()[:3]]
cpu = ""
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
data.setdefault("machine", {
    "cpu": cpu,
    "cores": os.cpu_count(),
    "kernel": platform.release(),
    "os": next((l.split("=", 1)[1].strip().strip('"') for l in open("/etc/os-release") if l.startswith("PRETTY_NAME=")), ""),
})
if scenario:
    data["scenario"] = scenario
data[phase] = {"time": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "loadavg": load}
try:
    data["machine"]["wine"] = subprocess.run(["wine", "--version"], capture_output=True, text=True).stdout.strip()
except OSError:
    pass
json.dump(data, open(path, "w"), indent=2)
EOF
}

echo "=== dependencies"
scripts/install-deps.sh

if [ "$skip_native" -eq 0 ]; then
    echo
    echo "=== native benchmarks (preset release)"
    if [ -f bench/native/bench_native.cpp ]; then
        cmake --preset release >/dev/null
        cmake --build --preset release -j "$jobs" --target bench_native
        if [ "$build_only" -eq 0 ]; then
            record_machine native before
            build/release/bench/bench_native "${repetitions[@]}" --benchmark_report_aggregates_only=true \
                --benchmark_out="$results/native.json" --benchmark_out_format=json | tee "$results/native.log"
            record_machine native after
        fi
    else
        echo "bench: bench/native/bench_native.cpp does not exist yet; no native benchmarks"
        rm -f "$results/native.json"
    fi
fi

if [ "$skip_wine" -eq 0 ]; then
    echo
    echo "=== Windows benchmarks under Wine: build"
    prefix=$(scripts/build-mingw-benchmark.sh | tail -1)
    [ -n "$prefix" ] || die "scripts/build-mingw-benchmark.sh printed no install prefix"
    # shellcheck source=lib/mingw.sh
    source scripts/lib/mingw.sh
    mingw_configure . build/mingw-bench -DASYNC_SOCKET_BUILD_TESTS=OFF -DASYNC_SOCKET_BUILD_EXAMPLES=OFF \
        -DASYNC_SOCKET_INSTALL=OFF -DASYNC_SOCKET_BUILD_BENCHMARKS=ON \
        -DASYNC_SOCKET_MINGW_BENCHMARK_PREFIX="$prefix" >/dev/null
    cmake --build build/mingw-bench -j "$jobs" --target bench_loopback ||
        die "building bench_loopback failed (does bench/CMakeLists.txt add bench/win32 on WIN32?)"
    exe=$(find build/mingw-bench -name bench_loopback.exe -print -quit)
    [ -n "$exe" ] || die "bench_loopback.exe not found under build/mingw-bench"
    echo "bench: built $exe"

    if [ "$build_only" -eq 0 ]; then
        export ASYNC_SOCKET_WINEPREFIX="${ASYNC_SOCKET_BENCH_WINEPREFIX:-${ASYNC_SOCKET_CACHE:-${HOME:-/root}/.cache/async_socket}/wine64-bench}"
        scripts/wine-run.sh --init
        extra=()
        if [ "$quick" -eq 1 ]; then
            extra=(--quick)
        fi
        rm -f "$results"/wine*.json "$results"/machine-wine*.json
        for scenario in "${scenarios[@]}"; do
            suffix=""
            description="two_cpus: threads and wineserver on any CPU"
            pin=()
            if [ "$scenario" = one_cpu ]; then
                cpu=$((jobs - 1))
                suffix="-one-cpu"
                description="one_cpu: the benchmark and its wineserver pinned to CPU $cpu (taskset)"
                pin=(taskset -c "$cpu")
            fi
            # A new wineserver for each scenario, so that it runs where the scenario says.
            WINEPREFIX="$ASYNC_SOCKET_WINEPREFIX" wineserver -w || true
            echo
            echo "=== Windows benchmarks under Wine, scenario $description"
            record_machine "wine$suffix" before "$description"
            # Repetitions of all configurations are interleaved in random order, so that a change of load during
            # the run spreads over every configuration instead of landing on a few. The JSON keeps every
            # repetition.
            "${pin[@]}" scripts/wine-run.sh "$exe" "${extra[@]}" "${repetitions[@]}" \
                --benchmark_enable_random_interleaving=true --benchmark_display_aggregates_only=true \
                --benchmark_out="$results/wine$suffix.json" --benchmark_out_format=json | tee "$results/wine$suffix.log"
            record_machine "wine$suffix" after
        done
        echo
        echo "=== wineserver requests per operation (WINEDEBUG=+server, scripts/bench_wine_requests.py)"
        ASYNC_SOCKET_BENCH_WINEPREFIX="$ASYNC_SOCKET_WINEPREFIX" python3 scripts/bench_wine_requests.py "$exe" \
            --out "$results/wine-requests.json" || echo "bench: counting wineserver requests failed (not fatal)"
    fi
fi

if [ "$build_only" -eq 1 ]; then
    exit 0
fi

echo
echo "=== report"
report_args=("$results")
if [ "$docs" -eq 1 ] && [ "$skip_wine" -eq 0 ]; then
    report_args+=(--docs docs)
fi
python3 scripts/bench_report.py "${report_args[@]}"
