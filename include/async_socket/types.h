/** @file
 * async_socket: the vocabulary types of the async_socket contract.
 *
 * These are the spec's own names and layouts (ASYNC_SOCKET_BUFFER, the three result enums, the three
 * callback typedefs). They are plain C so that the C-style API in <async_socket/c_api.h> and the C++
 * template in <async_socket/async_socket.hpp> share them: a callback written against the spec can be
 * handed to either without a cast or a wrapper.
 */
#ifndef ASYNC_SOCKET_TYPES_H
#define ASYNC_SOCKET_TYPES_H

#include <stdint.h>

/** How the functions of the C API (c_api.h, execution_engine.h) reach a program:
 * - from C++ (the default): inline definitions in the headers; nothing to link;
 * - from C: declarations only; the compiled async_socket::c_api library (src/c_api.cpp) defines them;
 * - in that library's one C++ file, which defines ASYNC_SOCKET_C_API_DEFINE first: the declarations with C
 *   linkage, then the same definitions as for C++ but with C linkage (so the compiler checks that the two agree). */
#if !defined(__cplusplus) || defined(ASYNC_SOCKET_C_API_DEFINE)
#define ASYNC_SOCKET_C_DECLARATIONS 1
#else
#define ASYNC_SOCKET_C_DECLARATIONS 0
#endif
#ifdef __cplusplus
/** `noexcept` on the C API's declarations from C++, nothing from C. */
#define ASYNC_SOCKET_C_NOEXCEPT noexcept
#ifdef ASYNC_SOCKET_C_API_DEFINE
/** What precedes each C API definition: `inline` from C++, `extern "C"` in the compiled async_socket::c_api library. */
#define ASYNC_SOCKET_C_FUNCTION extern "C"
#else
#define ASYNC_SOCKET_C_FUNCTION inline
#endif
#else
#define ASYNC_SOCKET_C_NOEXCEPT
#endif

#ifdef __cplusplus
extern "C"
{
#endif

    /** The caller's socket (a Win32 SOCKET on Windows, a descriptor on Linux), passed through as an opaque
     * pointer-sized value. NULL is "no socket" everywhere (the spec refuses it). */
    typedef void* SOCKET_HANDLE;

    /** A Linux socket descriptor as a SOCKET_HANDLE: the descriptor plus one, so that descriptor 0 is a valid,
     * non-NULL handle and -1 (what a failed socket() returns) becomes NULL, which create refuses. */
    static inline SOCKET_HANDLE async_socket_handle_from_fd(int fd)
    {
        return fd < 0 ? (SOCKET_HANDLE)0 : (SOCKET_HANDLE)((intptr_t)fd + 1);
    }

    /** The descriptor of a handle made by async_socket_handle_from_fd; -1 for NULL. */
    static inline int async_socket_fd_from_handle(SOCKET_HANDLE handle)
    {
        return (int)((intptr_t)handle - 1);
    }

    /* Each enum starts with an _INVALID value, as the seed's enum macro did, so that 0 is never a result. */

    /** How an open ended, as given to ON_ASYNC_SOCKET_OPEN_COMPLETE. Starts with an _INVALID value, as the seed's
     * enum macro did, so that 0 is never a result. */
    typedef enum ASYNC_SOCKET_OPEN_RESULT_TAG
    {
        ASYNC_SOCKET_OPEN_RESULT_INVALID, /**< never a result: the zero value */
        ASYNC_SOCKET_OPEN_OK,             /**< the socket is OPEN */
        ASYNC_SOCKET_OPEN_ERROR           /**< the open failed; the socket stays CLOSED */
    } ASYNC_SOCKET_OPEN_RESULT;

    /** How a send ended, as given to ON_ASYNC_SOCKET_SEND_COMPLETE. */
    typedef enum ASYNC_SOCKET_SEND_RESULT_TAG
    {
        ASYNC_SOCKET_SEND_RESULT_INVALID, /**< never a result: the zero value */
        ASYNC_SOCKET_SEND_OK,             /**< every byte of every buffer was sent */
        ASYNC_SOCKET_SEND_ERROR,          /**< the OS failed the send, or sent other than the buffers' total */
        ASYNC_SOCKET_SEND_BECAUSE_CLOSE   /**< the send failed while the socket was closing */
    } ASYNC_SOCKET_SEND_RESULT;

    /** How a receive ended, as given to ON_ASYNC_SOCKET_RECEIVE_COMPLETE. */
    typedef enum ASYNC_SOCKET_RECEIVE_RESULT_TAG
    {
        ASYNC_SOCKET_RECEIVE_RESULT_INVALID, /**< never a result: the zero value */
        ASYNC_SOCKET_RECEIVE_OK,             /**< bytes_received bytes arrived; 0: the peer shut down its side */
        ASYNC_SOCKET_RECEIVE_ERROR,          /**< the OS failed it, or reported more bytes than fit */
        ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE   /**< the receive failed while the socket was closing */
    } ASYNC_SOCKET_RECEIVE_RESULT;

    /** Called once when an open ends, with the context given to the open and its result. */
    typedef void (*ON_ASYNC_SOCKET_OPEN_COMPLETE)(void* context, ASYNC_SOCKET_OPEN_RESULT open_result);
    /** Called exactly once for every send that was started (the call returned 0), with its context and result. */
    typedef void (*ON_ASYNC_SOCKET_SEND_COMPLETE)(void* context, ASYNC_SOCKET_SEND_RESULT send_result);
    /** Called exactly once for every receive that was started, with its context, its result and the number of bytes
     * written into the buffers (meaningful with ASYNC_SOCKET_RECEIVE_OK). */
    typedef void (*ON_ASYNC_SOCKET_RECEIVE_COMPLETE)(void* context, ASYNC_SOCKET_RECEIVE_RESULT receive_result,
                                                     uint32_t bytes_received);

    /** One piece of a scatter/gather payload: `length` bytes at `buffer`. */
    typedef struct ASYNC_SOCKET_BUFFER_TAG
    {
        void* buffer;    /**< the first byte */
        uint32_t length; /**< how many bytes, from buffer on */
    } ASYNC_SOCKET_BUFFER;

#ifdef __cplusplus
}
#endif

#endif /* ASYNC_SOCKET_TYPES_H */
