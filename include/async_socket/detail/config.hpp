// async_socket: the library's configuration macros, defined once for every header.
#pragma once

// [[no_unique_address]]: an empty policy object (most AllocPolicy and ThreadpoolPolicy models) takes no
// room in the object that holds it. MSVC accepts the standard spelling but ignores it.
#if defined(_MSC_VER) && !defined(__clang__)
#define ASYNC_SOCKET_NO_UNIQUE_ADDRESS [[msvc::no_unique_address]]
#else
#define ASYNC_SOCKET_NO_UNIQUE_ADDRESS [[no_unique_address]]
#endif
