#!/usr/bin/env bash
# Makes the API reference from the public headers with Doxygen (docs/Doxyfile), warnings as errors.
#   scripts/api-docs.sh [OUTPUT_DIR]     OUTPUT_DIR/html/index.html; build/api-docs by default
# Every public type, function, macro and policy concept must be documented: an undocumented one, a wrong
# @param or any other Doxygen warning is printed and makes the exit status non-zero (WARN_AS_ERROR). The
# detail headers and namespaces are not documented. The version on the pages is read from
# include/async_socket/version.hpp. Needs doxygen (Debian: apt-get install doxygen); builds nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -gt 1 ]; then
    echo "usage: scripts/api-docs.sh [OUTPUT_DIR]" >&2
    exit 2
fi
output_dir=${1:-build/api-docs}

if ! command -v doxygen >/dev/null 2>&1; then
    echo "api-docs: doxygen not found: install doxygen (Debian: apt-get install doxygen)" >&2
    exit 1
fi

version_part() {
    sed -n "s/^#define ASYNC_SOCKET_VERSION_$1 \([0-9][0-9]*\)\$/\1/p" include/async_socket/version.hpp
}
major=$(version_part MAJOR)
minor=$(version_part MINOR)
patch=$(version_part PATCH)
if [ -z "$major" ] || [ -z "$minor" ] || [ -z "$patch" ]; then
    echo "api-docs: cannot read the version from include/async_socket/version.hpp" >&2
    exit 1
fi

mkdir -p "$output_dir"
output_dir=$(cd "$output_dir" && pwd)
# A fresh html/ each time, so that a page of something removed since does not linger.
rm -rf "$output_dir/html"

# Doxygen prints its warnings on stderr (QUIET = YES keeps stdout for errors); with WARN_AS_ERROR =
# FAIL_ON_WARNINGS it finishes the run, then exits non-zero when there was any.
export ASYNC_SOCKET_API_DOCS_DIR="$output_dir"
export ASYNC_SOCKET_VERSION="$major.$minor.$patch"
if ! doxygen docs/Doxyfile; then
    echo "api-docs: doxygen failed or warned (see above): document what it names" >&2
    exit 1
fi
if [ ! -f "$output_dir/html/index.html" ]; then
    echo "api-docs: doxygen did not write $output_dir/html/index.html" >&2
    exit 1
fi
echo "api-docs: $output_dir/html/index.html (async_socket $ASYNC_SOCKET_VERSION)"
