# shellcheck shell=bash
# Every way a user takes async_socket in, each tried by the consumer project tests/consumer (a C++ and a C program,
# built and run), for scripts/test.sh (sourced, not run; from the repository's root).
#
#   consumers_all BUILD_DIR   all of the modes below, each named as it goes; status 1 if any failed
#
# BUILD_DIR is a configured and built top-level tree (build/release): it is installed, exported and packaged.
# Each mode builds in a build/consumer-* directory of its own, afresh (a kept cache would keep async_socket_DIR
# from an earlier run and build against stale headers). A mode prints its build's output only when it fails.

# shellcheck source=apt.sh
source scripts/lib/apt.sh # apt_as_root

consumer_modes=(
    "installed:find_package after cmake --install, and pkg-config"
    "subdirectory:add_subdirectory of the source tree"
    "fetchcontent:FetchContent from the local source tree"
    "build_tree:find_package of the build tree (async_socket_DIR)"
    "debian:the Debian package (CPack), installed with dpkg in /usr"
)

# consumer_build DIR [CMAKE_ARGUMENT...]: configures tests/consumer in DIR, builds it, runs both programs.
consumer_build() {
    local dir=$1
    shift
    rm -rf "$dir"
    mkdir -p "$dir"
    cmake -S tests/consumer -B "$dir" "$@" >"$dir/consumer.log" 2>&1 &&
        cmake --build "$dir" -j "${jobs:-2}" >>"$dir/consumer.log" 2>&1 || {
        cat "$dir/consumer.log"
        return 1
    }
    "$dir/consumer" && "$dir/consumer_c"
}

# pkg_config_consumers PC_DIR OUT_DIR: the .pc files' version is the header's, and a C++ and a C program build with
# their flags alone (PC_DIR empty: pkg-config's own search path, as for a system package).
pkg_config_consumers() {
    local pc_dir=$1 out=$2 header_version
    header_version=$(sed -n 's/^#define ASYNC_SOCKET_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)$/\2/p' \
        include/async_socket/version.hpp | paste -sd.)
    [ "$(PKG_CONFIG_PATH="$pc_dir" pkg-config --modversion async_socket)" = "$header_version" ] || {
        echo "pkg-config: async_socket.pc does not say version $header_version" >&2
        return 1
    }
    mkdir -p "$out"
    # shellcheck disable=SC2046 # the flags are words
    g++ -std=c++20 tests/consumer/main.cpp $(PKG_CONFIG_PATH="$pc_dir" pkg-config --cflags --libs async_socket) \
        -o "$out/consumer_pkg_config" && "$out/consumer_pkg_config" &&
        gcc -std=c11 tests/c/test_c_api.c $(PKG_CONFIG_PATH="$pc_dir" pkg-config --cflags --libs async_socket_c_api) \
            -o "$out/consumer_c_pkg_config" && "$out/consumer_c_pkg_config" >/dev/null
}

consumer_installed() {
    local prefix result=0
    prefix=$(mktemp -d)
    cmake --install "$1" --prefix "$prefix" >/dev/null &&
        consumer_build build/consumer-installed -DCMAKE_PREFIX_PATH="$prefix" &&
        pkg_config_consumers "$(dirname "$(find "$prefix" -name async_socket.pc | head -n 1)")" \
            build/consumer-installed || result=1
    rm -rf "$prefix"
    return "$result"
}

consumer_subdirectory() {
    consumer_build build/consumer-subdirectory -DASYNC_SOCKET_CONSUMER_MODE=subdirectory
}

consumer_fetchcontent() {
    consumer_build build/consumer-fetchcontent -DASYNC_SOCKET_CONSUMER_MODE=fetchcontent
}

consumer_build_tree() {
    consumer_build build/consumer-build-tree -Dasync_socket_DIR="$PWD/$1"
}

consumer_deb_package=""

# Status 0 when the package is on the machine in any state but gone (a failed dpkg -i leaves it unpacked).
consumer_deb_present() {
    local status
    status=$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) || return 1
    [ -n "$status" ] && [ "$status" != not-installed ] && [ "$status" != config-files ]
}

# Removes the package this script installed, if it is still there.
consumer_deb_remove() {
    if [ -n "$consumer_deb_package" ] && consumer_deb_present "$consumer_deb_package"; then
        apt_as_root dpkg -r "$consumer_deb_package" >/dev/null
    fi
}

consumer_debian() {
    local out=build/consumer-deb deb
    rm -rf "$out"
    mkdir -p "$out"
    cpack --config "$1/CPackConfig.cmake" -G DEB -B "$out/package" >"$out/cpack.log" 2>&1 || {
        cat "$out/cpack.log"
        return 1
    }
    deb=$(find "$out/package" -maxdepth 1 -name '*.deb' | head -n 1)
    consumer_deb_package=$(dpkg-deb -f "$deb" Package) || return 1
    dpkg-deb -f "$deb" Package Version Architecture Maintainer Depends
    # Someone else's install of it is left alone rather than replaced and then removed.
    if consumer_deb_present "$consumer_deb_package"; then
        echo "$consumer_deb_package is installed already; remove it (dpkg -r $consumer_deb_package) to test the package" >&2
        consumer_deb_package=""
        return 1
    fi
    # The machine is left as it was, also when the stage is interrupted.
    trap consumer_deb_remove EXIT
    trap 'consumer_deb_remove; exit 130' INT TERM
    local result=0 file
    apt_as_root dpkg -i "$deb" >"$out/dpkg.log" 2>&1 || {
        cat "$out/dpkg.log"
        result=1
    }
    if [ "$result" -eq 0 ]; then
        for file in '/usr/include/async_socket/async_socket\.hpp' '/usr/include/async_socket/c_api\.h' \
            '/usr/lib/.*/?cmake/async_socket/async_socketConfig\.cmake' '/usr/lib/.*pkgconfig/async_socket\.pc' \
            '/usr/lib/.*pkgconfig/async_socket_c_api\.pc' '/usr/lib/.*libasync_socket_c_api\.a'; do
            dpkg -L "$consumer_deb_package" | grep -Eq "^$file\$" || {
                echo "dpkg -L $consumer_deb_package: no $file" >&2
                result=1
            }
        done
    fi
    # Found in /usr by CMake's and pkg-config's own search paths, with nothing said of where.
    [ "$result" -eq 0 ] && consumer_build "$out/consumer" &&
        grep -q '^async_socket_DIR:PATH=/usr/lib/' "$out/consumer/CMakeCache.txt" &&
        pkg-config --variable=pcfiledir async_socket | grep -q '^/usr/lib/' &&
        pkg_config_consumers "" "$out/consumer" || {
        result=1
        grep '^async_socket_DIR:' "$out/consumer/CMakeCache.txt" 2>/dev/null
        pkg-config --variable=pcfiledir async_socket
    }
    consumer_deb_remove || result=1
    trap - EXIT INT TERM
    if consumer_deb_present "$consumer_deb_package"; then
        echo "dpkg -r $consumer_deb_package did not remove it" >&2
        result=1
    fi
    consumer_deb_package=""
    return "$result"
}

consumers_all() {
    local build=$1 entry mode failed=()
    for entry in "${consumer_modes[@]}"; do
        mode=${entry%%:*}
        echo "--- consumer: ${entry#*:}"
        if "consumer_$mode" "$build"; then
            echo "--- consumer: $mode: ok"
        else
            echo "--- consumer: $mode: FAILED"
            failed+=("$mode")
        fi
    done
    [ ${#failed[@]} -eq 0 ] || {
        echo "consumers failed: ${failed[*]}" >&2
        return 1
    }
}
