#!/usr/bin/env bash
# Runs the native Linux loopback benchmarks (bench/linux/bench_linux_loopback.cpp) and prints the medians of
# the repetitions and the ratios the issues ask about, all rows of one run side by side.
#   scripts/bench-linux.sh [repetitions]     default 5; results in build/bench-results/linux.json
# Installs what is missing first (scripts/install-deps.sh). Wall-clock time on a noisy 2-core machine: the
# load average before and after is printed; quote medians and ratios, never single runs.
set -euo pipefail
cd "$(dirname "$0")/.."
repetitions="${1:-5}"
bash scripts/install-deps.sh >/dev/null
cmake --preset release >/dev/null
cmake --build build/release --target bench_linux_loopback -j "$(nproc)" >/dev/null
mkdir -p build/bench-results
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
build/release/bench/bench_linux_loopback --benchmark_repetitions="$repetitions" \
    --benchmark_report_aggregates_only=true --benchmark_out=build/bench-results/linux.json \
    --benchmark_out_format=json >/dev/null
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - build/bench-results/linux.json <<'PY'
import json, sys
rows = {}
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    if b.get("aggregate_name") != "median":
        continue
    name = b["run_name"].replace("/real_time", "")
    rows[name] = b.get("items_per_second") or b.get("bytes_per_second")
for name, value in rows.items():
    unit = "round trips/s" if name.startswith("pingpong") else "MiB/s"
    shown = value if unit == "round trips/s" else value / 1048576
    print(f"{name:36s} {shown:14.0f} {unit}")
def ratio(a, b):
    return rows[a] / rows[b] if a in rows and b in rows and rows[b] else float("nan")
for test in ("pingpong64", "stream64k"):
    for lib in ("io_uring", "epoll"):
        mine = f"{test}_library/{lib}"
        print(f"{mine:36s} / asio {ratio(mine, test + '_asio'):.3f}   / raw epoll {ratio(mine, test + '_raw_epoll'):.3f}")
PY
