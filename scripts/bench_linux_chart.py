#!/usr/bin/env python3
"""Draws the chart of the native Linux benchmarks from the JSON scripts/bench-linux.sh writes.

    scripts/bench_linux_chart.py build/bench-results/linux.json docs/benchmarks-linux.svg

One panel per scenario (pingpong64, stream64k, echo64x64), one bar per row (the library on io_uring and on epoll,
raw epoll, raw liburing, Asio, libuv): the median of the repetitions, as a fraction of the fastest row of that
scenario, with the value written beside the bar. A row missing from the run (libuv not installed, io_uring
refused) is left out of its panel. Hand-written SVG: no plotting package needed.
"""
import json
import sys

SCENARIOS = [
    ("pingpong64", "64-byte ping-pong, round trips/s", 1.0, "{:,.0f}"),
    ("stream64k", "64 KiB streaming, MiB/s", 1048576.0, "{:,.0f}"),
    ("echo64x64", "64 connections echoing, messages/s", 1.0, "{:,.0f}"),
]
ROWS = [
    ("library/io_uring", "library, io_uring", "#1f77b4"),
    ("library/epoll", "library, epoll", "#6baed6"),
    ("raw_uring", "raw liburing loop", "#7f7f7f"),
    ("raw_epoll", "raw epoll loop", "#bdbdbd"),
    ("asio", "Asio", "#d62728"),
    ("libuv", "libuv", "#ff9896"),
]


def medians(path):
    found = {}
    for bench in json.load(open(path, encoding="utf-8"))["benchmarks"]:
        if bench.get("aggregate_name") != "median" or bench.get("error_occurred"):
            continue
        name = bench["run_name"].replace("/real_time", "")
        found[name] = bench.get("items_per_second") or bench.get("bytes_per_second")
    return found


def chart(found, date):
    label_width, bar_width, bar_height, gap = 150, 360, 16, 4
    panel_gap, title_height = 18, 20
    width = label_width + bar_width + 90
    y = 30
    out = []
    for test, title, scale, fmt in SCENARIOS:
        rows = [(label, colour, found[f"{test}_{key}"] / scale) for key, label, colour in ROWS if f"{test}_{key}" in found]
        if not rows:
            continue
        out.append(f'<text x="10" y="{y + 14}" font-weight="bold">{title}</text>')
        y += title_height
        best = max(value for _, _, value in rows)
        for label, colour, value in rows:
            length = bar_width * value / best
            out.append(f'<text x="{label_width - 6}" y="{y + 12}" text-anchor="end">{label}</text>')
            out.append(f'<rect x="{label_width}" y="{y}" width="{length:.1f}" height="{bar_height}" fill="{colour}"/>')
            out.append(f'<text x="{label_width + length + 4:.1f}" y="{y + 12}">{fmt.format(value)}</text>')
            y += bar_height + gap
        y += panel_gap
    y += 4
    out.append(f'<text x="10" y="{y}" font-size="10">medians of one run, all rows interleaved ({date}); '
               "bars relative to the fastest row of each scenario</text>")
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y + 10}" '
            'font-family="sans-serif" font-size="12">')
    background = f'<rect width="{width}" height="{y + 10}" fill="white"/>'
    return "\n".join([head, background] + out + ["</svg>"]) + "\n"


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: bench_linux_chart.py RESULTS.json OUT.svg")
    data = json.load(open(sys.argv[1], encoding="utf-8"))
    date = data.get("context", {}).get("date", "")[:10]
    found = medians(sys.argv[1])
    if not found:
        sys.exit(f"bench_linux_chart: no medians in {sys.argv[1]} (run with --benchmark_repetitions)")
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write(chart(found, date))
    print(f"bench_linux_chart: wrote {sys.argv[2]}")


if __name__ == "__main__":
    main()
