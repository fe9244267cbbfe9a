// The benchmarks' shared main body (bench/linux, bench/native): hands the command line to Google Benchmark, runs
// the benchmarks it selects and shuts it down. Header-only; each bench's main registers or prepares first, then
// returns run_benchmarks(argc, argv).
#pragma once

#include <benchmark/benchmark.h>

namespace bench_common
{

// main's exit code: 1 when an argument is not Google Benchmark's, else 0 once the benchmarks have run.
inline int run_benchmarks(int argc, char** argv)
{
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
    {
        return 1;
    }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}

} // namespace bench_common
