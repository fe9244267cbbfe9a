# shellcheck shell=bash
# Configuring a CMake build for Windows with the project's mingw-w64 toolchain file, for the project's scripts
# (sourced, not run).
#
#   mingw_configure SOURCE BUILD [CMAKE_ARGUMENT...]   cmake -S SOURCE -B BUILD in Release with
#                                                      cmake/toolchain-mingw-w64.cmake, then the arguments

mingw_toolchain="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/cmake/toolchain-mingw-w64.cmake"

mingw_configure() {
    local source=$1 build=$2
    shift 2
    cmake -S "$source" -B "$build" -DCMAKE_TOOLCHAIN_FILE="$mingw_toolchain" -DCMAKE_BUILD_TYPE=Release "$@"
}
