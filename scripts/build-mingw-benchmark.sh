#!/usr/bin/env bash
# Builds Google Benchmark for Windows x64 (mingw-w64, static libraries) from Debian's `benchmark` source
# package, for the benchmarks that run under Wine (bench/win32). Also makes sure libasio-dev (the Asio
# baseline of those benchmarks) is installed.
#   scripts/build-mingw-benchmark.sh            prints the install prefix on its last line
#
# Debian ships no mingw build of Google Benchmark, but its source cross-compiles with the project's
# toolchain file (cmake/toolchain-mingw-w64.cmake). When apt knows no source packages yet, a deb-src entry
# is derived from the machine's own apt sources (the entries of this Debian release); writing it refreshes
# apt's lists (scripts/lib/apt.sh does that after every change to the sources).
#
# Environment:
#   ASYNC_SOCKET_MINGW_BENCHMARK_PREFIX  where to install (default ~/.cache/async_socket/mingw-benchmark)
#   ASYNC_SOCKET_CACHE                   cache folder for the sources and the build (default ~/.cache/async_socket)
#
# Idempotent: when the prefix already holds the package it returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
project_dir=$(pwd)

cache_dir="${ASYNC_SOCKET_CACHE:-${HOME:-/root}/.cache/async_socket}"
prefix="${ASYNC_SOCKET_MINGW_BENCHMARK_PREFIX:-$cache_dir/mingw-benchmark}"
source_root="$cache_dir/benchmark-src"
build_dir="$cache_dir/benchmark-mingw-build"

die() {
    echo "build-mingw-benchmark: error: $*" >&2
    exit 1
}
note() {
    echo "build-mingw-benchmark: $*" >&2
}

# shellcheck source=lib/apt.sh
source "$project_dir/scripts/lib/apt.sh"
# shellcheck source=lib/mingw.sh
source "$project_dir/scripts/lib/mingw.sh"

# Packages this script (and the Asio baseline) need.
apt_require libasio-dev dpkg-dev cmake make g++-mingw-w64-x86-64-posix ||
    die "installing libasio-dev dpkg-dev cmake make g++-mingw-w64-x86-64-posix failed"

config="$prefix/lib/cmake/benchmark/benchmarkConfig.cmake"
if [ -f "$config" ] && [ -f "$prefix/lib/libbenchmark.a" ]; then
    echo "$prefix"
    exit 0
fi

command -v x86_64-w64-mingw32-g++-posix >/dev/null || die "x86_64-w64-mingw32-g++-posix not found (scripts/install-deps.sh)"

# --- the source package ---------------------------------------------------------------------------
# Writes deb-src entries mirroring the enabled `deb` entries of this release (one-line and deb822 files)
# into /etc/apt/sources.list.d/async-socket-deb-src.sources.
add_deb_src_entry() {
    local codename
    # shellcheck source=/dev/null
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ -n "$codename" ] || die "cannot tell the Debian release (VERSION_CODENAME in /etc/os-release)"
    local entries
    entries=$(
        python3 - "$codename" <<'EOF'
import glob, re, sys
codename = sys.argv[1]
stanzas = []  # (uris, suites, components, signed_by)

def belongs(suites):
    return any(s == codename or s.startswith(codename + "-") or s.startswith(codename + "/") for s in suites)

# One-line format: deb [options] uri suite component...
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError:
        continue
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        signed_by = ""
        options = re.match(r"deb\s+\[([^\]]*)\]\s*(.*)", line)
        if options:
            for option in options.group(1).split():
                if option.startswith("signed-by="):
                    signed_by = option.split("=", 1)[1]
            rest = options.group(2).split()
        else:
            rest = line.split()[1:]
        if len(rest) >= 3 and belongs([rest[1]]):
            stanzas.append(([rest[0]], [rest[1]], rest[2:], signed_by))

# deb822 format.
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    if path.endswith("async-socket-deb-src.sources"):
        continue
    try:
        text = open(path, encoding="utf-8").read()
    except OSError:
        continue
    for block in re.split(r"\n\s*\n", text):
        fields = {}
        for line in block.splitlines():
            if line.startswith("#") or ":" not in line or line[0].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        suites = fields.get("suites", "").split()
        if belongs(suites) and fields.get("uris") and fields.get("components"):
            stanzas.append((fields["uris"].split(), suites, fields["components"].split(), fields.get("signed-by", "")))

out = []
for uris, suites, components, signed_by in stanzas:
    out.append("Types: deb-src\nURIs: %s\nSuites: %s\nComponents: %s" % (" ".join(uris), " ".join(suites), " ".join(components)))
    if signed_by:
        out[-1] += "\nSigned-By: %s" % signed_by
print("\n\n".join(out))
EOF
    )
    [ -n "$entries" ] || die "no apt source of Debian $codename found to derive a deb-src entry from (/etc/apt/sources.list, /etc/apt/sources.list.d/)"
    note "adding deb-src entries to /etc/apt/sources.list.d/async-socket-deb-src.sources:"
    local line
    while IFS= read -r line; do
        echo "    $line" >&2
    done <<<"$entries"
    apt_write_source async-socket-deb-src.sources \
        "$(printf '# Added by async_socket scripts/build-mingw-benchmark.sh (source of Google Benchmark for mingw).\n%s' "$entries")" ||
        die "writing the deb-src entry or refreshing apt's lists failed"
}

find_source_dir() {
    if [ -d "$source_root" ]; then
        find "$source_root" -mindepth 1 -maxdepth 1 -type d -name 'benchmark-*' | sort | tail -1
    fi
}

source_dir=$(find_source_dir)
if [ -z "$source_dir" ]; then
    if ! apt-cache showsrc benchmark 2>/dev/null | grep -q '^Package: benchmark'; then
        # Either no entry of ours yet, or one whose lists were never fetched (or were emptied): (re)writing it
        # refreshes the lists either way.
        add_deb_src_entry
        apt-cache showsrc benchmark 2>/dev/null | grep -q '^Package: benchmark' ||
            die "apt knows no source package 'benchmark' even after adding deb-src entries (see above)"
    fi
    mkdir -p "$source_root"
    note "apt-get source benchmark (into $source_root)"
    (cd "$source_root" && apt-get source -q benchmark >&2) || die "apt-get source benchmark failed"
    source_dir=$(find_source_dir)
    [ -n "$source_dir" ] || die "apt-get source benchmark left no benchmark-* folder in $source_root"
fi
note "source: $source_dir"
# Debian's packaging passes the version in (its patch stops CMake from reading Git tags); do the same.
upstream_version=${source_dir##*/benchmark-}

# --- cross-compile and install --------------------------------------------------------------------
# The feature checks of Google Benchmark's CMake run small programs; the toolchain's emulator runs them
# under Wine, so create the Wine prefix first.
"$project_dir/scripts/wine-run.sh" --init

rm -rf "$build_dir"
note "configuring (mingw-w64, Release, static)"
mingw_configure "$source_dir" "$build_dir" \
    -DCMAKE_INSTALL_PREFIX="$prefix" \
    -DGIT_VERSION="$upstream_version" \
    -DBUILD_SHARED_LIBS=OFF \
    -DBENCHMARK_ENABLE_TESTING=OFF \
    -DBENCHMARK_ENABLE_GTEST_TESTS=OFF \
    -DBENCHMARK_ENABLE_WERROR=OFF \
    -DBENCHMARK_ENABLE_LTO=OFF \
    -DBENCHMARK_ENABLE_INSTALL=ON \
    -DBENCHMARK_INSTALL_DOCS=OFF \
    -DBENCHMARK_ENABLE_DOXYGEN=OFF >&2 || die "configuring Google Benchmark for mingw failed (log above)"
note "building"
cmake --build "$build_dir" -j "$(nproc 2>/dev/null || echo 2)" >&2 || die "building Google Benchmark for mingw failed"
cmake --install "$build_dir" >&2 || die "installing Google Benchmark into $prefix failed"
[ -f "$config" ] || die "install finished but $config is missing"
note "installed into $prefix"
echo "$prefix"
