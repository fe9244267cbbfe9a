/** @file
 * async_socket: the C API of the async_socket contract, word for word, for C and C++ callers.
 *
 * Code written against spec/async_socket_win32_requirements.md compiles unchanged: the same handle,
 * types, result enums and functions (async_socket_create ... async_socket_receive_async), plus the
 * execution engine (execution_engine.h: execution_engine_create, execution_engine_dec_ref, ...).
 * - From C++ everything is inline: include the header and link ws2_32, synchronization and mswsock on Windows,
 *   liburing on Linux (the CMake target async_socket::async_socket does this).
 * - From C the header declares the functions and the async_socket::c_api library (one compiled C++ file,
 *   src/c_api.cpp, the same definitions with C linkage) provides them: link async_socket::c_api.
 *
 * ASYNC_SOCKET_HANDLE is a heap object holding an async_socket::win32_async_socket (Windows) or
 * linux_async_socket (Linux); the functions forward to it and turn its status into the spec's int (0 on success,
 * the non-zero status value on failure). Callbacks run on the execution engine's threads (on_open_complete on
 * the caller's thread). On Linux a socket descriptor is passed as async_socket_handle_from_fd(fd) (types.h).
 */
#ifndef ASYNC_SOCKET_C_API_H
#define ASYNC_SOCKET_C_API_H

#include <async_socket/execution_engine.h>
#include <async_socket/types.h>

/** An async socket of the C API: made by async_socket_create, freed by async_socket_destroy. */
typedef struct ASYNC_SOCKET* ASYNC_SOCKET_HANDLE;

#if ASYNC_SOCKET_C_DECLARATIONS
#ifdef __cplusplus
extern "C"
{
#endif

    /* What each function does is said at its definition below. */
    ASYNC_SOCKET_HANDLE async_socket_create(EXECUTION_ENGINE_HANDLE execution_engine,
                                            SOCKET_HANDLE socket_handle) ASYNC_SOCKET_C_NOEXCEPT;
    void async_socket_destroy(ASYNC_SOCKET_HANDLE async_socket) ASYNC_SOCKET_C_NOEXCEPT;
    int async_socket_open_async(ASYNC_SOCKET_HANDLE async_socket, ON_ASYNC_SOCKET_OPEN_COMPLETE on_open_complete,
                                void* on_open_complete_context) ASYNC_SOCKET_C_NOEXCEPT;
    void async_socket_close(ASYNC_SOCKET_HANDLE async_socket) ASYNC_SOCKET_C_NOEXCEPT;
    int async_socket_send_async(ASYNC_SOCKET_HANDLE async_socket, const ASYNC_SOCKET_BUFFER* buffers,
                                uint32_t buffer_count, ON_ASYNC_SOCKET_SEND_COMPLETE on_send_complete,
                                void* on_send_complete_context) ASYNC_SOCKET_C_NOEXCEPT;
    int async_socket_receive_async(ASYNC_SOCKET_HANDLE async_socket, ASYNC_SOCKET_BUFFER* buffers,
                                   uint32_t buffer_count, ON_ASYNC_SOCKET_RECEIVE_COMPLETE on_receive_complete,
                                   void* on_receive_complete_context) ASYNC_SOCKET_C_NOEXCEPT;

#ifdef __cplusplus
}
#endif
#endif

#ifdef __cplusplus

#ifdef _WIN32
#include <winsock2.h>
#include <windows.h>
#endif

#include <async_socket/async_socket.hpp>
#ifdef _WIN32
#include <async_socket/backend/win32/execution_engine.hpp>
#else
#include <async_socket/backend/linux/execution_engine.hpp>
#endif

#include <new>
#include <stdint.h>
#include <utility>

namespace async_socket::detail
{
// The socket type behind the C API, and the engine it is made on, per platform.
#ifdef _WIN32
using c_api_socket = win32_async_socket;
inline EXECUTION_ENGINE_HANDLE c_api_engine(EXECUTION_ENGINE_HANDLE engine) noexcept
{
    return engine;
}
#else
using c_api_socket = linux_async_socket;
inline linux_engine* c_api_engine(EXECUTION_ENGINE_HANDLE engine) noexcept
{
    return execution_engine_linux_get_engine(engine);
}
#endif
} // namespace async_socket::detail

/// What an ASYNC_SOCKET_HANDLE points at (C++ only): the owning handle of the platform's socket.
struct ASYNC_SOCKET
{
    async_socket::detail::c_api_socket::handle socket; ///< win32_async_socket (Windows) or linux_async_socket (Linux)
};

/// Makes a CLOSED async socket over socket_handle (an overlapped SOCKET, or a descriptor on Linux; it stays the
/// caller's) that runs its IO on execution_engine's threads, and takes a reference to the engine.
/// Returns NULL when execution_engine or socket_handle is NULL, or when memory cannot be had.
ASYNC_SOCKET_C_FUNCTION ASYNC_SOCKET_HANDLE async_socket_create(EXECUTION_ENGINE_HANDLE execution_engine,
                                                                SOCKET_HANDLE socket_handle) noexcept
{
    async_socket::detail::c_api_socket::handle made =
        async_socket::detail::c_api_socket::create(async_socket::detail::c_api_engine(execution_engine), socket_handle);
    if (!made)
    {
        return NULL;
    }
    ASYNC_SOCKET* result = new (std::nothrow) ASYNC_SOCKET{std::move(made)};
    return result;
}

/// Frees the async socket: waits while it is OPENING or CLOSING, closes it if OPEN (pending IO completes
/// with ..._BECAUSE_CLOSE first). Must not be called from one of its own callbacks. NULL: does nothing.
ASYNC_SOCKET_C_FUNCTION void async_socket_destroy(ASYNC_SOCKET_HANDLE async_socket) noexcept
{
    // Codes_SRS_ASYNC_SOCKET_WIN32_01_004: [ If async_socket is NULL, async_socket_destroy shall return. ]
    if (async_socket == NULL)
    {
        return;
    }
    delete async_socket;
}

/// Opens the async socket; on_open_complete runs with ASYNC_SOCKET_OPEN_OK before this returns 0.
/// Fails (non-zero, no callback) on a NULL async_socket or on_open_complete, when not CLOSED, or when the
/// OS refuses to bind the socket to the threadpool.
ASYNC_SOCKET_C_FUNCTION int async_socket_open_async(ASYNC_SOCKET_HANDLE async_socket,
                                                    ON_ASYNC_SOCKET_OPEN_COMPLETE on_open_complete,
                                                    void* on_open_complete_context) noexcept
{
    // Codes_SRS_ASYNC_SOCKET_WIN32_01_007: [ If async_socket is NULL, async_socket_open_async shall fail and return
    // a non-zero value. ]
    if (async_socket == NULL)
    {
        return static_cast<int>(async_socket::status::invalid_argument);
    }
    return static_cast<int>(async_socket->socket->open_async(on_open_complete, on_open_complete_context));
}

/// Closes an OPEN async socket: waits for send/receive calls under way, cancels outstanding IO (it completes
/// with ..._BECAUSE_CLOSE), waits for all callbacks, and leaves the socket ready to be opened again.
/// Does nothing when async_socket is NULL or not OPEN, or when called from one of its own callbacks.
ASYNC_SOCKET_C_FUNCTION void async_socket_close(ASYNC_SOCKET_HANDLE async_socket) noexcept
{
    // Codes_SRS_ASYNC_SOCKET_WIN32_01_018: [ If async_socket is NULL, async_socket_close shall return. ]
    if (async_socket == NULL)
    {
        return;
    }
    (void)async_socket->socket->close();
}

/// Sends the buffers, in order, as one IO; on_send_complete runs exactly once, on a threadpool thread, when
/// 0 is returned. The buffers' memory must live until then. Fails (non-zero, no callback) on invalid
/// arguments, when not OPEN, when memory or an event cannot be had, or when WSASend fails at once.
ASYNC_SOCKET_C_FUNCTION int async_socket_send_async(ASYNC_SOCKET_HANDLE async_socket,
                                                    const ASYNC_SOCKET_BUFFER* buffers, uint32_t buffer_count,
                                                    ON_ASYNC_SOCKET_SEND_COMPLETE on_send_complete,
                                                    void* on_send_complete_context) noexcept
{
    // Codes_SRS_ASYNC_SOCKET_WIN32_01_024: [ If async_socket is NULL, async_socket_send_async shall fail and return
    // a non-zero value. ]
    if (async_socket == NULL)
    {
        return static_cast<int>(async_socket::status::invalid_argument);
    }
    return static_cast<int>(
        async_socket->socket->send_async(buffers, buffer_count, on_send_complete, on_send_complete_context));
}

/// Receives into the buffers, filled in order, as one IO; on_receive_complete runs exactly once, on a
/// threadpool thread, when 0 is returned (ASYNC_SOCKET_RECEIVE_OK with 0 bytes: the peer shut down its
/// side). Fails (non-zero, no callback) as async_socket_send_async does, with WSARecv.
ASYNC_SOCKET_C_FUNCTION int async_socket_receive_async(ASYNC_SOCKET_HANDLE async_socket, ASYNC_SOCKET_BUFFER* buffers,
                                                       uint32_t buffer_count,
                                                       ON_ASYNC_SOCKET_RECEIVE_COMPLETE on_receive_complete,
                                                       void* on_receive_complete_context) noexcept
{
    // Codes_SRS_ASYNC_SOCKET_WIN32_01_073: [ If async_socket is NULL, async_socket_receive_async shall fail and
    // return a non-zero value. ]
    if (async_socket == NULL)
    {
        return static_cast<int>(async_socket::status::invalid_argument);
    }
    return static_cast<int>(
        async_socket->socket->receive_async(buffers, buffer_count, on_receive_complete, on_receive_complete_context));
}

#endif /* __cplusplus */

#endif /* ASYNC_SOCKET_C_API_H */
