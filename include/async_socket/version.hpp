// async_socket: the library's version, in one place. CMake reads these three lines for the project version, so the
// package config (find_package), the pkg-config file (async_socket.pc) and this header always agree
// (tests/unit/test_version.cpp and the installed-package consumer check it).
#pragma once

#define ASYNC_SOCKET_VERSION_MAJOR 0
#define ASYNC_SOCKET_VERSION_MINOR 2
#define ASYNC_SOCKET_VERSION_PATCH 0

// MAJOR * 10000 + MINOR * 100 + PATCH, for #if comparisons.
#define ASYNC_SOCKET_VERSION                                                                                           \
    (ASYNC_SOCKET_VERSION_MAJOR * 10000 + ASYNC_SOCKET_VERSION_MINOR * 100 + ASYNC_SOCKET_VERSION_PATCH)
