#!/usr/bin/env python3
"""Prints the table of docs/benchmarks.md ("Native") from one or more runs of bench_native.

Each FILE is the JSON of one run made with repetitions and aggregates, e.g.
    build/release/bench/bench_native --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \\
        --benchmark_out=run1.json --benchmark_out_format=json
For every benchmark the median aggregate of each run is taken (CPU time and real time), then the median of
those over the runs; the range column is the lowest and highest per-run median (CPU time). Ratios use CPU
time: on a machine shared with other jobs, real time also counts the time other processes held the core,
CPU time only this process's (both are printed). Several runs (processes) matter: figures move from one
process to the next by more than within one (address layout), so take the median of at least three.

    scripts/bench_native_table.py run1.json [run2.json ...]
"""
import json
import statistics
import sys


def load(paths):
    cpu, real = {}, {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
        for entry in document.get("benchmarks", []):
            if entry.get("run_type") != "aggregate" or entry.get("aggregate_name") != "median":
                continue
            name = entry.get("run_name", entry["name"])
            cpu.setdefault(name, []).append(entry["cpu_time"])
            real.setdefault(name, []).append(entry["real_time"])
    return ({k: statistics.median(v) for k, v in cpu.items()}, {k: statistics.median(v) for k, v in real.items()},
            {k: (min(v), max(v)) for k, v in cpu.items()}, {k: len(v) for k, v in cpu.items()})


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cpu, real, spread, runs = load(sys.argv[1:])
    allocs = ["heap_alloc", "recycling_pool_alloc", "std_allocator_alloc", "recycling_pool_alloc_shared_only",
              "recycling_pool_alloc_mutex", "per_thread_sketch"]
    print("| benchmark | buffers | CPU ns (median) | range over runs | real ns (median) | ratio to baseline "
          "| heap / this |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for direction in ("send", "receive"):
        for count in (1, 4, 16, 64):
            base = cpu.get(f"{direction}/baseline/{count}")
            heap = cpu.get(f"{direction}/heap_alloc/{count}")
            for alloc in ["baseline"] + allocs:
                name = f"{direction}/{alloc}/{count}"
                if name not in cpu:
                    continue
                ratio = f"{cpu[name] / base:.2f}" if base else "-"
                speedup = f"{heap / cpu[name]:.2f}" if heap and alloc not in ("baseline", "heap_alloc") else ""
                low, high = spread[name]
                print(f"| {direction}/{alloc} | {count} | {cpu[name]:.1f} | {low:.1f}-{high:.1f} | {real[name]:.1f} "
                      f"| {ratio} | {speedup} |")
    for name in sorted(n for n in cpu if n.startswith("send_with_event/")):
        base = cpu.get("send/baseline/1")
        ratio = f"{cpu[name] / base:.2f}" if base else "-"
        low, high = spread[name]
        print(f"| {name.rsplit('/', 1)[0]} | 1 | {cpu[name]:.1f} | {low:.1f}-{high:.1f} | {real[name]:.1f} | {ratio} | |")
    print()
    print("| allocate + deallocate of a 1-buffer context | CPU ns (median) | range over runs | real ns (median) |")
    print("|---|---:|---:|---:|")
    for name in sorted(n for n in cpu if n.startswith("alloc_pair/")):
        low, high = spread[name]
        print(f"| {name.split('/')[1]} | {cpu[name]:.2f} | {low:.2f}-{high:.2f} | {real[name]:.2f} |")
    print()
    print(f"runs: {max(runs.values()) if runs else 0}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
