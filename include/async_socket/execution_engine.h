/** @file
 * async_socket: the execution engine of the async_socket contract, its C types and functions, on every platform.
 *
 * An execution engine runs the completions of the sockets made over it on its threads: a Win32 threadpool
 * (backend/win32/execution_engine.hpp) or the Linux engine's workers (backend/linux/execution_engine.hpp). The
 * handle, the parameters and the functions are the same everywhere; only the default thread count differs.
 *
 * From C++ the functions are inline (the platform's header defines them, nothing to link). From C they are
 * declared here and defined by the compiled async_socket::c_api library (src/c_api.cpp); see c_api.h.
 */
#ifndef ASYNC_SOCKET_EXECUTION_ENGINE_H
#define ASYNC_SOCKET_EXECUTION_ENGINE_H

#include <async_socket/types.h>

#include <stdint.h>

#ifdef __cplusplus
extern "C"
{
#endif

    /** A reference-counted execution engine (execution_engine_create, execution_engine_inc_ref,
     * execution_engine_dec_ref). */
    typedef struct EXECUTION_ENGINE* EXECUTION_ENGINE_HANDLE;

    /** The engine's threads. Win32: the threadpool's minimum, and its maximum (EXECUTION_ENGINE_NO_MAX_THREAD_COUNT,
     * 0, leaves the OS's maximum in place; otherwise it must be >= min_thread_count). Linux: min_thread_count
     * workers (0: one per core); max_thread_count 0 or >= min_thread_count, a fixed pool does not grow. */
    typedef struct EXECUTION_ENGINE_PARAMETERS_TAG
    {
        uint32_t min_thread_count; /**< the fewest threads (Linux: the workers; 0: one per core) */
        uint32_t max_thread_count; /**< the most threads; EXECUTION_ENGINE_NO_MAX_THREAD_COUNT: no maximum */
    } EXECUTION_ENGINE_PARAMETERS;

#ifdef __cplusplus
}
#endif

/** max_thread_count value meaning "no maximum". */
#define EXECUTION_ENGINE_NO_MAX_THREAD_COUNT 0
/** What execution_engine_create(NULL) uses: 4 threads at least on Win32, one worker per core on Linux. */
#ifdef _WIN32
#define EXECUTION_ENGINE_DEFAULT_MIN_THREAD_COUNT 4
#else
#define EXECUTION_ENGINE_DEFAULT_MIN_THREAD_COUNT 0
#endif
/** What execution_engine_create(NULL) uses as max_thread_count: no maximum. */
#define EXECUTION_ENGINE_DEFAULT_MAX_THREAD_COUNT EXECUTION_ENGINE_NO_MAX_THREAD_COUNT

#if ASYNC_SOCKET_C_DECLARATIONS
#ifdef __cplusplus
extern "C"
{
#endif

    /** Makes an engine with one reference (NULL parameters: the defaults). NULL on invalid parameters or when
     * the OS refuses. */
    EXECUTION_ENGINE_HANDLE
    execution_engine_create(const EXECUTION_ENGINE_PARAMETERS* parameters) ASYNC_SOCKET_C_NOEXCEPT;
    /** Adds a reference. NULL: does nothing. */
    void execution_engine_inc_ref(EXECUTION_ENGINE_HANDLE execution_engine) ASYNC_SOCKET_C_NOEXCEPT;
    /** Drops a reference; the last one ends the engine once the sockets made on it are gone. NULL: does nothing. */
    void execution_engine_dec_ref(EXECUTION_ENGINE_HANDLE execution_engine) ASYNC_SOCKET_C_NOEXCEPT;

#ifdef __cplusplus
}
#endif
#endif

#endif /* ASYNC_SOCKET_EXECUTION_ENGINE_H */
