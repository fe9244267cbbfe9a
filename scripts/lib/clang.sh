# shellcheck shell=bash
# The suite built by a second compiler, clang, for scripts/test.sh (sourced, not run; it uses that script's
# build_preset and run_ctest).
#
#   native_clang                  the clang preset: every native target built by clang++ with libstdc++,
#                                 the native tests run under ASan+UBSan
#   windows_clang_under_wine      the clang-mingw preset: the Windows tests built by clang over mingw-w64
#                                 (cmake/toolchain-clang-mingw-w64.cmake), run under Wine as the mingw preset's

native_clang() {
    build_preset clang && run_ctest --preset clang -j "$jobs"
}

windows_clang_under_wine() {
    scripts/wine-run.sh --init && build_preset clang-mingw && run_ctest --preset clang-mingw -j "$jobs"
}
