#!/usr/bin/env bash
# Installs what building and testing async_socket needs, from Debian's archive, when it is missing.
#   scripts/install-deps.sh            native tools, Google Benchmark, doctest, mingw-w64 and Wine
# Safe to run again: it installs only what is absent and runs `apt-get update` only then.
set -euo pipefail

packages=(
    cmake make g++ clang clang-format python3   # native build, sanitizers, formatting, scripts
    libclang-rt-14-dev                          # libFuzzer and the sanitizer runtimes for clang
    doctest-dev libbenchmark-dev                # test and benchmark frameworks
    g++-mingw-w64-x86-64-posix                  # Windows cross compiler (posix threads)
    wine wine64                                 # runs the Windows tests and example
)

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q "${missing[@]}"
