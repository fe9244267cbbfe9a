#!/usr/bin/env python3
"""Turns the JSON output of scripts/bench.sh into tables of medians and ratios, and a chart.

    scripts/bench_report.py RESULTS_DIR [--docs DOCS_DIR]

RESULTS_DIR holds what scripts/bench.sh wrote: wine.json and wine-one-cpu.json (bench_loopback.exe under
Wine in the "two_cpus" and "one_cpu" scenarios, every repetition), wine-requests.json (wineserver requests per
operation), native.json (bench_native, aggregates) and machine-*.json (load before and after each run).

Prints, for the Wine benchmarks, the median of the repetitions of each configuration, its spread, and its
ratio against the raw Win32 baselines and Asio, then whether the project's targets are met; for the native
benchmarks, the medians. Writes RESULTS_DIR/wine.md, RESULTS_DIR/native.md and
RESULTS_DIR/benchmarks-wine.svg.

With --docs DOCS_DIR it also writes DOCS_DIR/benchmarks-wine.svg (a hand-written SVG bar chart) and
replaces the text between the markers

    <!-- BEGIN wine-results (scripts/bench_report.py) -->
    <!-- END wine-results -->

in DOCS_DIR/benchmarks.md with the tables (nothing else of that file is touched; without the markers the
file is left alone and a warning is printed; a missing file is created with a "## Native" heading and an
"## Under Wine" section holding the markers).
"""
import argparse
import json
import os
import statistics
import sys

BEGIN_MARKER = "<!-- BEGIN wine-results (scripts/bench_report.py) -->"
END_MARKER = "<!-- END wine-results -->"

# (name, JSON file, machine file, title)
SCENARIOS = [
    ("two_cpus", "wine.json", "machine-wine.json", "threads and wineserver on any CPU"),
    ("one_cpu", "wine-one-cpu.json", "machine-wine-one-cpu.json", "benchmark and wineserver pinned to one CPU"),
]

# Configurations of bench/win32/bench_loopback.cpp, in the order shown.
CONFIGS = [
    ("spec_default", "library"),
    ("recycled_events", "library"),
    ("fast", "library"),
    ("iocp", "library"),
    ("iocp_fast", "library"),
    ("iocp_fast_batch", "library"),
    ("raw_event_per_io", "raw"),
    ("raw", "raw"),
    ("raw_skip", "raw"),
    ("asio", "asio"),
]
RAW = ["raw_event_per_io", "raw", "raw_skip"]

# (prefix of the benchmark name, title, rate counter, divisor, unit, CPU counter, operation)
BENCHMARKS = [
    ("pingpong_64B", "64-byte ping-pong", "items_per_second", 1.0, "round trips/s", "cpu_us_per_round_trip",
     "round trip"),
    ("stream_64KiB", "64 KiB streaming", "bytes_per_second", 1024.0 * 1024.0, "MiB/s", "cpu_us_per_MiB", "MiB"),
]

# (benchmark, configuration, baseline, minimum ratio, what it means)
TARGETS = [
    ("pingpong_64B", "spec_default", "raw_event_per_io", 0.95, "spec default >= 0.95x raw_event_per_io"),
    ("stream_64KiB", "spec_default", "raw_event_per_io", 0.95, "spec default >= 0.95x raw_event_per_io"),
    ("pingpong_64B", "fast", "best_raw", 0.95, "fast >= 0.95x the best raw baseline"),
    ("pingpong_64B", "fast", "asio", 1.0, "fast >= 1.0x Asio"),
    ("stream_64KiB", "fast", "best_raw", 0.95, "fast >= 0.95x the best raw baseline"),
    ("pingpong_64B", "iocp_fast", "best_raw", 0.95, "iocp_fast >= 0.95x the best raw baseline"),
    ("pingpong_64B", "iocp_fast", "asio", 1.0, "iocp_fast >= 1.0x Asio"),
    ("stream_64KiB", "iocp_fast", "best_raw", 0.95, "iocp_fast >= 0.95x the best raw baseline"),
]

COLORS = {"library": ("#2f6db5", "#9dbde6"), "raw": ("#6f6f6f", "#c4c4c4"), "asio": ("#d9822b", "#f1c497")}


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def summarise(document):
    """{(benchmark, config): {median, min, max, n, cpu}} from every repetition (or the aggregate medians)."""
    runs, medians, cpu = {}, {}, {}
    for entry in document.get("benchmarks", []):
        parts = entry.get("run_name", entry["name"]).split("/")
        kind = next((b for b in BENCHMARKS if b[0] == parts[0]), None)
        if kind is None or len(parts) < 2 or entry.get("error_occurred") or kind[2] not in entry:
            continue
        key = (parts[0], parts[1])
        if entry.get("run_type") == "aggregate":
            if entry.get("aggregate_name") == "median":
                medians[key] = entry[kind[2]]
            continue
        runs.setdefault(key, []).append(entry[kind[2]])
        if kind[5] in entry:
            cpu.setdefault(key, []).append(entry[kind[5]])
    summary = {}
    for key in set(runs) | set(medians):
        values = runs.get(key)
        if values:
            summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values),
                            "n": len(values)}
        else:
            summary[key] = {"median": medians[key], "min": None, "max": None, "n": None}
        summary[key]["cpu"] = statistics.median(cpu[key]) if cpu.get(key) else None
    return summary


def baseline(summary, benchmark, name):
    """(median, configuration) of a baseline; "best_raw" is the fastest raw configuration of this run."""
    if name == "best_raw":
        values = [(summary[(benchmark, c)]["median"], c) for c in RAW if (benchmark, c) in summary]
        return max(values) if values else (None, None)
    item = summary.get((benchmark, name))
    return (item["median"], name) if item else (None, None)


def fmt(value, divisor):
    if value is None:
        return "-"
    v = value / divisor
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}x"


def load_text(machine):
    parts = []
    for phase in ("before", "after"):
        if phase in machine:
            parts.append(f"{phase} " + ", ".join(f"{x:.2f}" for x in machine[phase]["loadavg"]))
    return "; ".join(parts)


def scenario_table(summary, benchmark, requests):
    _, title, _, divisor, unit, _, operation = next(b for b in BENCHMARKS if b[0] == benchmark)
    best_raw, best_name = baseline(summary, benchmark, "best_raw")
    event_raw, _ = baseline(summary, benchmark, "raw_event_per_io")
    asio, _ = baseline(summary, benchmark, "asio")
    lines = [f"| configuration | {unit} | min-max | x raw_event_per_io | x best raw ({best_name or '-'}) | x asio | "
             f"CPU us per {operation} | wineserver requests per {operation} |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for config, _family in CONFIGS:
        item = summary.get((benchmark, config))
        if item is None:
            continue
        spread = "-" if item["min"] is None else f"{fmt(item['min'], divisor)}-{fmt(item['max'], divisor)}"
        cpu = "-" if item["cpu"] is None else f"{item['cpu']:.0f}"
        counted = requests.get(f"{benchmark}/{config}")
        server = "-" if counted is None else f"{counted['total']:.1f}"
        lines.append(f"| {config} | {fmt(item['median'], divisor)} | {spread} | "
                     f"{fmt_ratio(ratio(item['median'], event_raw))} | {fmt_ratio(ratio(item['median'], best_raw))} | "
                     f"{fmt_ratio(ratio(item['median'], asio))} | {cpu} | {server} |")
    return lines


def wine_markdown(runs, requests):
    """runs: [(scenario, title, summary, machine, document)]"""
    lines = []
    first_machine = runs[0][3]
    m = first_machine.get("machine", {})
    lines.append(f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores (a virtual machine), "
                 f"{m.get('os', '?')}, kernel {m.get('kernel', '?')}, {m.get('wine', 'wine ?')}; "
                 f"mingw-w64 GCC 12, `-O3`; Google Benchmark from Debian's source package.")
    lines.append("")
    for scenario, title, summary, machine, _document in runs:
        reps = sorted({s["n"] for s in summary.values() if s["n"]})
        lines.append(f"Scenario **{scenario}** ({title}), run of {machine.get('before', {}).get('time', '?')}: "
                     f"medians of {', '.join(str(r) for r in reps) or '?'} repetitions, interleaved in random "
                     f"order; load average (1, 5, 15 min) {load_text(machine) or '?'}.")
        lines.append("")
        for benchmark, bench_title, _, _, unit, _, _ in BENCHMARKS:
            if any(k[0] == benchmark for k in summary):
                lines.append(f"*{bench_title}, {unit}, {scenario}*")
                lines.append("")
                lines.extend(scenario_table(summary, benchmark, requests))
                lines.append("")
    lines.append("CPU us: CPU time of the whole benchmark process (every thread, not the wineserver) per "
                 "operation, median. wineserver requests: counted in a separate run under WINEDEBUG=+server "
                 "(scripts/bench_wine_requests.py); they do not depend on the load or the scenario.")
    lines.append("")
    lines.append("**Targets** (ratios of medians within one run)")
    lines.append("")
    lines.append("| benchmark | target | " + " | ".join(scenario for scenario, *_ in runs) + " |")
    lines.append("|---|---|" + "---:|" * len(runs))
    for benchmark, config, base_name, minimum, meaning in TARGETS:
        cells = []
        for _scenario, _title, summary, _machine, _document in runs:
            item = summary.get((benchmark, config))
            base, chosen = baseline(summary, benchmark, base_name)
            r = ratio(item["median"] if item else None, base)
            if r is None:
                cells.append("-")
                continue
            against = f" vs {chosen}" if base_name == "best_raw" else ""
            cells.append(f"{r:.3f}x{against} " + ("met" if r >= minimum else "**missed**"))
        lines.append(f"| {benchmark} | {meaning} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def esc(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg_chart(runs):
    """One panel per benchmark; per configuration one bar per scenario (median, whisker min-max)."""
    width, label_w, chart_w = 780, 150, 520
    bar_h, pair_gap, panel_gap = 13, 9, 34
    panels = [b for b in BENCHMARKS if any(k[0] == b[0] for _, _, s, _, _ in runs for k in s)]
    row_h = len(runs) * bar_h + pair_gap
    height = 70 + len(panels) * (panel_gap + len(CONFIGS) * row_h) + 36
    scenario_text = "; ".join(f"{scenario}: {title}" for scenario, title, *_ in runs)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">'
           f'async_socket under Wine 8.0: loopback TCP, medians (whiskers: min-max)</text>',
           f'<text x="{width / 2}" y="40" text-anchor="middle" fill="#555">'
           f'{esc(runs[0][3].get("before", {}).get("time", ""))}; dark bars {esc(runs[0][0])}'
           + (f", light bars {esc(runs[1][0])}" if len(runs) > 1 else "") + '</text>',
           f'<text x="{width / 2}" y="56" text-anchor="middle" fill="#555">{esc(scenario_text)}</text>']
    y = 70
    for benchmark, title, _counter, divisor, unit, _cpu, _operation in panels:
        y += 22
        out.append(f'<text x="10" y="{y}" font-size="13" font-weight="bold">{esc(title)}, {esc(unit)}</text>')
        y += 8
        top = max((item["max"] or item["median"]) for _, _, s, _, _ in runs for (b, c), item in s.items()
                  if b == benchmark) or 1.0
        for config, family in CONFIGS:
            out.append(f'<text x="{label_w - 8}" y="{y + row_h / 2 + 1:.1f}" text-anchor="end">{config}</text>')
            for index, (_scenario, _title, summary, _machine, _document) in enumerate(runs):
                item = summary.get((benchmark, config))
                by = y + index * bar_h
                if item is None:
                    out.append(f'<text x="{label_w + 4}" y="{by + bar_h - 3}" fill="#999" font-size="10">'
                               f'not measured</text>')
                    continue
                w = chart_w * item["median"] / top
                out.append(f'<rect x="{label_w}" y="{by + 1}" width="{w:.1f}" height="{bar_h - 2}" '
                           f'fill="{COLORS[family][min(index, 1)]}"/>')
                if item["min"] is not None:
                    x1 = label_w + chart_w * item["min"] / top
                    x2 = label_w + chart_w * item["max"] / top
                    ym = by + bar_h / 2
                    out.append(f'<line x1="{x1:.1f}" y1="{ym}" x2="{x2:.1f}" y2="{ym}" stroke="black"/>')
                    for x in (x1, x2):
                        out.append(f'<line x1="{x:.1f}" y1="{by + 3}" x2="{x:.1f}" y2="{by + bar_h - 3}" '
                                   f'stroke="black"/>')
                end = label_w + chart_w * (item["max"] or item["median"]) / top
                out.append(f'<text x="{end + 5:.1f}" y="{by + bar_h - 3}" font-size="10">'
                           f'{fmt(item["median"], divisor)}</text>')
            y += row_h
        y += panel_gap - 22
    legend_y = height - 14
    x = label_w
    for family, label in (("library", "async_socket"), ("raw", "raw Win32 threadpool IO"), ("asio", "Asio")):
        out.append(f'<rect x="{x}" y="{legend_y - 10}" width="12" height="12" fill="{COLORS[family][0]}"/>')
        out.append(f'<rect x="{x + 12}" y="{legend_y - 10}" width="12" height="12" fill="{COLORS[family][1]}"/>')
        out.append(f'<text x="{x + 30}" y="{legend_y}">{label}</text>')
        x += 50 + 8 * len(label)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def native_markdown(document):
    lines = ["| benchmark | real time (median) | items/s (median) |", "|---|---:|---:|"]
    for entry in document.get("benchmarks", []):
        if entry.get("run_type") == "aggregate" and entry.get("aggregate_name") != "median":
            continue
        name = entry.get("run_name", entry["name"])
        time = f"{entry.get('real_time', 0):.1f} {entry.get('time_unit', '')}"
        items = entry.get("items_per_second")
        lines.append(f"| {name} | {time} | {'-' if items is None else f'{items:,.0f}'} |")
    return "\n".join(lines) + "\n"


def update_docs(docs_dir, table):
    path = os.path.join(docs_dir, "benchmarks.md")
    block = f"{BEGIN_MARKER}\n{table}\n![Wine benchmark chart](benchmarks-wine.svg)\n{END_MARKER}"
    if not os.path.exists(path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"# Benchmarks\n\n## Native\n\nTo be added.\n\n## Under Wine\n\n{block}\n")
        return True
    text = open(path, encoding="utf-8").read()
    begin, end = text.find(BEGIN_MARKER), text.find(END_MARKER)
    if begin < 0 or end < begin:
        print(f"bench_report: {path} has no {BEGIN_MARKER} ... {END_MARKER} markers; left alone", file=sys.stderr)
        return False
    with open(path, "w", encoding="utf-8") as f:
        f.write(text[:begin] + block + text[end + len(END_MARKER):])
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results")
    parser.add_argument("--docs", help="docs folder: write benchmarks-wine.svg and the table in benchmarks.md")
    args = parser.parse_args()

    found = False
    native_path = os.path.join(args.results, "native.json")
    if os.path.exists(native_path):
        found = True
        table = native_markdown(load_json(native_path))
        machine_path = os.path.join(args.results, "machine-native.json")
        if os.path.exists(machine_path):
            table = f"Load average {load_text(load_json(machine_path))}.\n\n" + table
        with open(os.path.join(args.results, "native.md"), "w", encoding="utf-8") as f:
            f.write(table)
        print("Native benchmarks (medians)\n")
        print(table)

    runs = []
    for scenario, file_name, machine_name, title in SCENARIOS:
        path = os.path.join(args.results, file_name)
        if os.path.exists(path):
            machine_path = os.path.join(args.results, machine_name)
            machine = load_json(machine_path) if os.path.exists(machine_path) else {}
            document = load_json(path)
            runs.append((scenario, title, summarise(document), machine, document))
    if runs:
        found = True
        requests_path = os.path.join(args.results, "wine-requests.json")
        requests = load_json(requests_path) if os.path.exists(requests_path) else {}
        table = wine_markdown(runs, requests)
        svg = svg_chart(runs)
        with open(os.path.join(args.results, "wine.md"), "w", encoding="utf-8") as f:
            f.write(table)
        with open(os.path.join(args.results, "benchmarks-wine.svg"), "w", encoding="utf-8") as f:
            f.write(svg)
        print("Windows benchmarks under Wine\n")
        print(table)
        if args.docs:
            with open(os.path.join(args.docs, "benchmarks-wine.svg"), "w", encoding="utf-8") as f:
                f.write(svg)
            if update_docs(args.docs, table):
                print(f"bench_report: wrote {args.docs}/benchmarks-wine.svg and the table in {args.docs}/benchmarks.md")

    if not found:
        print(f"bench_report: no native.json or wine*.json in {args.results}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
