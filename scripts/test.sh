#!/usr/bin/env bash
# The whole test suite, from a bare machine: installs what is missing, then
#   1. checks formatting (clang-format) and requirement traceability (scripts/check_requirements.py), and makes
#      the API reference (scripts/api-docs.sh: Doxygen, every public entity documented, warnings as errors),
#   2. builds and runs the native unit tests under AddressSanitizer + UndefinedBehaviorSanitizer,
#   3. builds and runs the concurrency tests under ThreadSanitizer, the native suite again built by clang (ASan+UBSan),
#      and fuzzes the buffer validation (60 s),
#   4. builds the optimised native build (benchmarks compile) and a consumer project in every way a user takes the
#      library in (find_package after install, add_subdirectory, FetchContent, the build tree, the Debian package),
#   5. cross-compiles for Windows with mingw-w64 (gcc, then clang over the same headers), runs the Windows tests
#      under Wine, and builds (does not run) the Wine benchmarks.
# Every stage runs even when an earlier one failed; the exit code is non-zero if any failed.
#   scripts/test.sh [--skip-wine] [--fresh]
#     --fresh  starts from what a new machine has of ours (scripts/install-deps.sh --fresh: no project cache,
#              no apt source entry of ours, empty apt lists), so that a missing install step shows here and
#              not on the next machine; CI (.ci/run) runs with it
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/consumers.sh
source scripts/lib/consumers.sh
# shellcheck source=lib/clang.sh
source scripts/lib/clang.sh

skip_wine=0
install_options=()
for argument in "$@"; do
    case "$argument" in
    --skip-wine) skip_wine=1 ;;
    --fresh) install_options=(--fresh) ;;
    *)
        echo "usage: scripts/test.sh [--skip-wine] [--fresh]" >&2
        exit 2
        ;;
    esac
done

jobs=$(nproc 2>/dev/null || echo 2)
failed_stages=()
tests_passed=0
tests_failed=0

stage() {
    local name=$1
    shift
    echo
    echo "=== $name"
    local started=$SECONDS
    if "$@"; then
        echo "=== $name: ok ($((SECONDS - started)) s)"
    else
        echo "=== $name: FAILED ($((SECONDS - started)) s)"
        failed_stages+=("$name")
    fi
}

# Runs ctest and adds its counts to the totals.
run_ctest() {
    local log
    log=$(mktemp)
    ctest "$@" 2>&1 | tee "$log"
    local status=${PIPESTATUS[0]}
    local line
    line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1)
    if [ -n "$line" ]; then
        local total failed
        total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$line")
        failed=$(sed -E 's/.*tests passed, ([0-9]+) tests? failed.*/\1/' <<<"$line")
        tests_passed=$((tests_passed + total - failed))
        tests_failed=$((tests_failed + failed))
    elif [ "$status" -ne 0 ]; then
        tests_failed=$((tests_failed + 1))
    fi
    rm -f "$log"
    return "$status"
}

build_preset() {
    cmake --preset "$1" >/dev/null && cmake --build --preset "$1" -j "$jobs"
}

native_asan() {
    build_preset asan && run_ctest --preset asan -j "$jobs"
}

native_tsan() {
    cmake --preset tsan >/dev/null && cmake --build --preset tsan -j "$jobs" --target concurrency_tests &&
        run_ctest --preset tsan -j "$jobs"
}

# The release build, then every way a user takes the library in (scripts/lib/consumers.sh).
release_and_consumers() {
    build_preset release && consumers_all build/release
}

windows_under_wine() {
    scripts/wine-run.sh --init && build_preset mingw && run_ctest --preset mingw -j "$jobs"
}

stage "install dependencies" scripts/install-deps.sh "${install_options[@]}"
stage "format" scripts/check-format.sh
stage "requirements" python3 scripts/check_requirements.py
stage "API reference (doxygen, warnings as errors)" scripts/api-docs.sh build/api-docs
stage "native unit tests (ASan+UBSan)" native_asan
stage "concurrency tests (TSan)" native_tsan
stage "native suite with clang (ASan+UBSan)" native_clang
stage "fuzzing (libFuzzer, bounded)" scripts/fuzz.sh --seconds 60
stage "release build and consumers" release_and_consumers
if [ "$skip_wine" -eq 0 ]; then
    stage "Windows tests under Wine" windows_under_wine
    stage "Windows tests built by clang, under Wine" windows_clang_under_wine
    stage "Wine benchmarks (build only)" scripts/bench.sh --build-only --skip-native
fi

echo
if [ ${#failed_stages[@]} -ne 0 ]; then
    echo "failed stages: ${failed_stages[*]}"
fi
echo "summary: $tests_passed passed, $tests_failed failed"
[ ${#failed_stages[@]} -eq 0 ]
