#!/usr/bin/env bash
# Counts the instructions one IO costs in bench_native, with callgrind: the inclusive instruction count of
# the benchmark's function divided by the number of IO completions it ran (calls of the backend's completion
# routine, on_io_complete, or the baseline's; one per IO, whatever kind of handler the user gave). Instruction counts
# do not depend on the load of the machine, unlike times. Setup (create, open, close) is included and
# amortised over the run's IOs; it adds well under one instruction per IO.
#
#   scripts/bench_native_callgrind.sh [BINARY] [BENCHMARK ...]
#   scripts/bench_native_callgrind.sh build/release/bench/bench_native send/baseline/1 send/heap_alloc/1
# Without benchmarks, the 1-buffer send and receive of every configuration.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=${1:-build/release/bench/bench_native}
shift || true
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    for direction in send receive; do
        for alloc in baseline heap_alloc recycling_pool_alloc std_allocator_alloc recycling_pool_alloc_shared_only \
            recycling_pool_alloc_mutex per_thread_sketch; do
            names+=("$direction/$alloc/1")
        done
    done
    names+=(send_with_event/heap_alloc/1 send_with_event/recycling_pool_alloc/1)
fi
command -v valgrind >/dev/null || {
    echo "bench_native_callgrind: valgrind is not installed" >&2
    exit 1
}

# The IO completions: the calls= lines that follow a cfn= line naming the completion routine.
count_callbacks='
import re, sys
names, callee, count = {}, "", 0
for line in open(sys.argv[1]):
    # Function names are compressed: the first fn= or cfn= line of an id names it, later ones give the id only.
    m = re.match(r"(c?)fn=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
    if m:
        if m.group(3):
            names[m.group(2)] = m.group(3)
        if m.group(1):
            callee = names.get(m.group(2), "")
        continue
    m = re.match(r"calls=(\d+)", line)
    if m and re.search(r"::on_io_complete<|baseline_complete", callee):
        count += int(m.group(1))
print(count)
'

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '| benchmark | instructions per IO |\n|---|---:|\n'
for name in "${names[@]}"; do
    out="$work/callgrind.out"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$binary" --benchmark_filter="^$name\$" \
        --benchmark_min_time=0.02 >/dev/null 2>&1
    # awk reads to the end: grep -m1 would close the pipe early, and pipefail would end the script on the SIGPIPE.
    total=$(callgrind_annotate --inclusive=yes "$out" 2>/dev/null | awk '/::bm_/ && !found { print $1; found = 1 }' | tr -d ,)
    ios=$(python3 -c "$count_callbacks" "$out")
    if [ -z "$total" ] || [ "${ios:-0}" -eq 0 ]; then
        printf '| %s | (no data) |\n' "$name"
    else
        python3 -c "print(f'| $name | {$total / $ios:.1f} |')"
    fi
done
