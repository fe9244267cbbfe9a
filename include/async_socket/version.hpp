/// @file
/// async_socket: the library's version, in one place. CMake reads these three lines for the project version, so the
/// package config (find_package), the pkg-config file (async_socket.pc) and this header always agree
/// (tests/unit/test_version.cpp and the installed-package consumer check it).
#pragma once

/// The first number of the version (MAJOR.MINOR.PATCH).
#define ASYNC_SOCKET_VERSION_MAJOR 0
/// The second number of the version (MAJOR.MINOR.PATCH).
#define ASYNC_SOCKET_VERSION_MINOR 2
/// The third number of the version (MAJOR.MINOR.PATCH).
#define ASYNC_SOCKET_VERSION_PATCH 0

/// MAJOR * 10000 + MINOR * 100 + PATCH, for `#if` comparisons.
#define ASYNC_SOCKET_VERSION                                                                                           \
    (ASYNC_SOCKET_VERSION_MAJOR * 10000 + ASYNC_SOCKET_VERSION_MINOR * 100 + ASYNC_SOCKET_VERSION_PATCH)
