#!/usr/bin/env python3
"""Counts the wineserver requests each configuration of bench_loopback.exe makes per round trip / per MiB.

    scripts/bench_wine_requests.py BENCH_LOOPBACK_EXE [--filter REGEX] [--out FILE.json]

Under Wine most of the cost of socket IO is requests to the wineserver (a separate process: each request is
a round trip over a Unix socket, with a switch to the server and back). Their number per operation does
not depend on the machine's load, so it explains the timings of scripts/bench.sh where those are noisy.

bench_loopback.exe runs once under WINEDEBUG=+server with --mark_timed_region: the timed loop of each
benchmark is framed by two marks (named events) in the request trace, and the requests between them,
divided by the work done in the loop, are the steady-state cost per operation.

Uses the Wine prefix of scripts/bench.sh ($ASYNC_SOCKET_BENCH_WINEPREFIX, by default
~/.cache/async_socket/wine64-bench; it must exist). The wineserver traces requests only when it was
started with +server, so this first waits until that prefix's server has ended (wineserver -w): nothing
else should use the prefix meanwhile.
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys

REQUEST = re.compile(r"^[0-9a-f]+: (\w+)\((?!\) =)")
MARK = re.compile(r'name=L"async_socket_bench_mark:(begin|end):([^:"]+):(\d+)"')
PINGPONG_ITERATIONS = 5  # of 100 round trips
STREAM_ITERATIONS = 4  # of 4 MiB


def wine_env(debug):
    """The environment scripts/wine-run.sh sets up, with WINEDEBUG=debug, in the benchmarks' prefix."""
    env = dict(os.environ)
    home = env.get("HOME", "/root")
    env["WINEDEBUG"] = debug
    env["WINEARCH"] = "win64"
    env["WINEPREFIX"] = env.get("ASYNC_SOCKET_BENCH_WINEPREFIX",
                                os.path.join(home, ".cache/async_socket/wine64-bench"))
    env["WINEDLLOVERRIDES"] = "mscoree,mshtml="
    return env


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exe")
    parser.add_argument("--filter", default=".", help="Google Benchmark filter (regex)")
    parser.add_argument("--out", help="write the counts as JSON")
    args = parser.parse_args()

    env = wine_env("+server")
    if not os.path.exists(os.path.join(env["WINEPREFIX"], "system.reg")):
        print(f"bench_wine_requests: no Wine prefix in {env['WINEPREFIX']} (run scripts/bench.sh first)",
              file=sys.stderr)
        return 1
    subprocess.run(["wineserver", "-w"], env=wine_env("-all"), check=False)
    command = ["wine", args.exe, "--mark_timed_region", f"--benchmark_filter={args.filter}",
               f"--pingpong_iterations={PINGPONG_ITERATIONS}", f"--stream_iterations={STREAM_ITERATIONS}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True,
                               errors="replace")
    results = {}
    current = None  # (benchmark, operations, Counter)
    for line in process.stderr:
        mark = MARK.search(line)
        if mark:
            what, name, operations = mark.group(1), mark.group(2), int(mark.group(3))
            if what == "begin":
                current = (name, operations, collections.Counter())
            elif current is not None and current[0] == name:
                benchmark, operations, counts = current
                counts["close_handle"] -= 1  # the begin mark's own
                if benchmark.startswith("stream"):
                    work, unit = operations / (1024.0 * 1024.0), "MiB"
                else:
                    work, unit = float(operations), "round trip"
                per_op = {k: v / work for k, v in counts.items() if v / work >= 0.05}
                results[benchmark] = {"unit": unit, "total": sum(per_op.values()),
                                      "requests": dict(sorted(per_op.items(), key=lambda kv: -kv[1]))}
                top = ", ".join(f"{k} {v:.1f}" for k, v in list(results[benchmark]["requests"].items())[:6])
                print(f"{benchmark:32s} {results[benchmark]['total']:7.1f} per {unit}: {top}", flush=True)
                current = None
            continue
        if current is not None:
            request = REQUEST.match(line)
            if request:
                current[2][request.group(1)] += 1
    process.wait()
    if process.returncode != 0:
        print(f"bench_wine_requests: {args.exe} ended with status {process.returncode}", file=sys.stderr)
        return 1
    if not results:
        print("bench_wine_requests: no marked timed region in the trace (is the wineserver started with "
              "+server, and does the program know --mark_timed_region?)", file=sys.stderr)
        return 1
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
