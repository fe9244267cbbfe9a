// async_socket: the library's configuration macros, defined once for every header.
#pragma once

// [[no_unique_address]]: an empty policy object (most AllocPolicy and ThreadpoolPolicy models) takes no
// room in the object that holds it. MSVC accepts the standard spelling but ignores it.
#if defined(_MSC_VER) && !defined(__clang__)
#define ASYNC_SOCKET_NO_UNIQUE_ADDRESS [[msvc::no_unique_address]]
#else
#define ASYNC_SOCKET_NO_UNIQUE_ADDRESS [[no_unique_address]]
#endif

// Per-IO steps called from one place per instantiation (check the buffers, make the context; make a C++ handler's
// result and run it). g++ and clang stop inlining them into a large caller (a coroutine's body, a handler's
// completion): out of line, the co_await path of bench_native ran about 70 more instructions per IO
// (docs/benchmarks.md). Forcing them inline adds no code: each has one caller.
#if defined(_MSC_VER) && !defined(__clang__)
#define ASYNC_SOCKET_ALWAYS_INLINE __forceinline
#elif defined(__GNUC__) || defined(__clang__)
#define ASYNC_SOCKET_ALWAYS_INLINE [[gnu::always_inline]] inline
#else
#define ASYNC_SOCKET_ALWAYS_INLINE inline
#endif
