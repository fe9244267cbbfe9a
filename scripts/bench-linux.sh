#!/usr/bin/env bash
# Runs the native Linux loopback benchmarks (bench/linux/bench_linux_loopback.cpp: ping-pong, 64 KiB streaming and
# 64 connections echoing on 2 threads; the library on io_uring and epoll, raw epoll and raw liburing loops, Asio,
# libuv) and prints the medians of the repetitions, the ratios the issues ask about and the heap allocations per
# IO, all rows of one run side by side.
#   scripts/bench-linux.sh [repetitions]     default 5; results in build/bench-results/linux.json, the chart in
#                                            build/bench-results/benchmarks-linux.svg (docs/ keeps a copy)
# The repetitions of all rows are interleaved in random order (Google Benchmark), so a slow spell of the machine
# spreads over every row instead of landing on one.
# Installs what is missing first (scripts/install-deps.sh). Wall-clock time on a noisy 2-core machine: the
# load average before and after is printed; quote medians and ratios, never single runs.
set -euo pipefail
cd "$(dirname "$0")/.."
repetitions="${1:-5}"
bash scripts/install-deps.sh >/dev/null
cmake --preset release >/dev/null
cmake --build build/release --target bench_linux_loopback bench_linux_accept -j "$(nproc)" >/dev/null
mkdir -p build/bench-results
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs; kernel $(uname -r)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
build/release/bench/bench_linux_loopback --benchmark_repetitions="$repetitions" --benchmark_enable_random_interleaving=true \
    --benchmark_report_aggregates_only=true --benchmark_out=build/bench-results/linux.json \
    --benchmark_out_format=json >/dev/null
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - build/bench-results/linux.json <<'PY'
import json, sys
rows, allocs = {}, {}
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    if b.get("aggregate_name") != "median":
        continue
    name = b["run_name"].replace("/real_time", "")
    if b.get("error_occurred"):
        continue
    rows[name] = b.get("items_per_second") or b.get("bytes_per_second")
    allocs[name] = b.get("allocs_per_io")
units = {"pingpong64": ("round trips/s", 1), "stream64k": ("MiB/s", 1048576), "echo64x64": ("messages/s", 1)}
variants = ["library/io_uring", "library/epoll", "raw_epoll", "raw_uring", "asio", "libuv"]
print()
print(f"{'row (median)':20s} {'pingpong64 rt/s':>16s} {'stream64k MiB/s':>16s} {'echo64x64 msg/s':>16s} {'allocs/IO pp, st, echo':>26s}")
for v in variants:
    cells, alloc_cells = [], []
    for test, (unit, scale) in units.items():
        value = rows.get(f"{test}_{v}")
        cells.append(f"{value / scale:16,.0f}" if value else f"{'-':>16s}")
        a = allocs.get(f"{test}_{v}")
        alloc_cells.append("-" if a is None else f"{a:.4g}")
    print(f"{v:20s} {' '.join(cells)} {', '.join(alloc_cells):>26s}")
def get(test, v):
    return rows.get(f"{test}_{v}")
def ratio(a, b):
    return f"{a / b:.3f}" if a and b else "n/a"
def best(test, names):
    found = [(get(test, n), n) for n in names if get(test, n)]
    return max(found) if found else (None, "none")
print()
raw_pp, raw_pp_name = best("pingpong64", ["raw_epoll", "raw_uring"])
raw_st, raw_st_name = best("stream64k", ["raw_epoll", "raw_uring"])
lib_st, lib_st_name = best("stream64k", ["library/io_uring", "library/epoll"])
print(f"ping-pong, library io_uring / Asio:              {ratio(get('pingpong64', 'library/io_uring'), get('pingpong64', 'asio'))}")
print(f"ping-pong, library io_uring / best raw ({raw_pp_name}): {ratio(get('pingpong64', 'library/io_uring'), raw_pp)}")
print(f"ping-pong, library io_uring / libuv:             {ratio(get('pingpong64', 'library/io_uring'), get('pingpong64', 'libuv'))}")
print(f"streaming, best library ({lib_st_name}) / best raw ({raw_st_name}): {ratio(lib_st, raw_st)}")
print(f"streaming, best library / Asio:                  {ratio(lib_st, get('stream64k', 'asio'))}")
for v in ("library/io_uring", "library/epoll"):
    print(f"64 connections, {v} / Asio:          {ratio(get('echo64x64', v), get('echo64x64', 'asio'))}")
print(f"64 connections, best raw / Asio:                 {ratio(best('echo64x64', ['raw_epoll', 'raw_uring'])[0], get('echo64x64', 'asio'))}")
PY
python3 scripts/bench_linux_chart.py build/bench-results/linux.json build/bench-results/benchmarks-linux.svg

# Connections accepted per second (bench/linux/bench_linux_accept.cpp), rows interleaved the same way.
build/release/bench/bench_linux_accept --benchmark_repetitions="$repetitions" --benchmark_enable_random_interleaving=true \
    --benchmark_report_aggregates_only=true --benchmark_out=build/bench-results/linux-accept.json \
    --benchmark_out_format=json >/dev/null
echo "load after the accept rows: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - build/bench-results/linux-accept.json <<'PY'
import json, sys
rows, allocs = {}, {}
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    if b.get("aggregate_name") != "median" or b.get("error_occurred"):
        continue
    name = b["run_name"].replace("/real_time", "").replace("accept200_", "")
    rows[name] = b.get("items_per_second")
    allocs[name] = b.get("allocs_per_io")
print()
print(f"{'row (median)':20s} {'accepts/s':>12s} {'allocs/accept':>14s}")
for v in ["library/io_uring", "library/epoll", "raw_epoll", "raw_uring", "asio"]:
    value = rows.get(v)
    print(f"{v:20s} {value:12,.0f} {allocs.get(v, 0):14.4g}" if value else f"{v:20s} {'-':>12s}")
def ratio(a, b):
    return f"{a / b:.3f}" if a and b else "n/a"
print()
for v in ("library/io_uring", "library/epoll"):
    print(f"accepts/s, {v} / Asio:       {ratio(rows.get(v), rows.get('asio'))}")
    print(f"accepts/s, {v} / raw_uring:  {ratio(rows.get(v), rows.get('raw_uring'))}")
PY
