/// @file
/// async_socket: the Win32 execution engine of the async_socket contract.
///
/// An execution engine owns one Win32 threadpool (PTP_POOL) with a minimum and an optional maximum number of
/// threads. Sockets made over an engine run their IO completions on its pool and keep a reference to it, so
/// the pool lives until the last socket and the last user reference are gone. The handle and parameters are
/// the C types of the contract (execution_engine.h); the functions are inline C++ (nothing to link but kernel32), or
/// C functions in the async_socket::c_api library.
///
/// Thread safety: execution_engine_inc_ref, execution_engine_dec_ref and
/// execution_engine_win32_get_threadpool may be called concurrently on the same engine.
#pragma once

#include <winsock2.h>
#include <windows.h>

#include <async_socket/execution_engine.h>

#include <stdint.h>
#include <stdlib.h>

#if defined(_WIN32_WINNT) && _WIN32_WINNT < 0x0602
#error "async_socket needs _WIN32_WINNT >= 0x0602 (Windows 8): threadpool IO and WaitOnAddress"
#endif

/// What an EXECUTION_ENGINE_HANDLE points at on Windows: a reference count over one Win32 threadpool.
struct EXECUTION_ENGINE
{
    volatile LONG reference_count;          ///< execution_engine_inc_ref / dec_ref; the last one ends the engine
    PTP_POOL pool;                          ///< the threadpool the sockets' IO completes on
    EXECUTION_ENGINE_PARAMETERS parameters; ///< the parameters it was made with (the defaults filled in)
};

/// Makes an engine with one reference and its own threadpool sized by `parameters` (NULL: minimum
/// EXECUTION_ENGINE_DEFAULT_MIN_THREAD_COUNT threads, no maximum).
/// Fails (NULL) when max_thread_count is not 0 and is below min_thread_count, when a count does not fit
/// in a DWORD the pool accepts, when memory or the pool cannot be had, or when the OS refuses the minimum
/// (SetThreadpoolThreadMinimum).
ASYNC_SOCKET_C_FUNCTION EXECUTION_ENGINE_HANDLE
execution_engine_create(const EXECUTION_ENGINE_PARAMETERS* parameters) noexcept
{
    EXECUTION_ENGINE_PARAMETERS chosen;
    if (parameters == NULL)
    {
        chosen.min_thread_count = EXECUTION_ENGINE_DEFAULT_MIN_THREAD_COUNT;
        chosen.max_thread_count = EXECUTION_ENGINE_DEFAULT_MAX_THREAD_COUNT;
    }
    else
    {
        chosen = *parameters;
    }
    if (chosen.max_thread_count != EXECUTION_ENGINE_NO_MAX_THREAD_COUNT &&
        chosen.max_thread_count < chosen.min_thread_count)
    {
        return NULL;
    }
    // SetThreadpoolThreadMaximum takes a DWORD but the pool keeps the count as a LONG.
    if (chosen.min_thread_count > static_cast<uint32_t>(MAXLONG) ||
        chosen.max_thread_count > static_cast<uint32_t>(MAXLONG))
    {
        return NULL;
    }

    EXECUTION_ENGINE* engine = static_cast<EXECUTION_ENGINE*>(malloc(sizeof(EXECUTION_ENGINE)));
    if (engine == NULL)
    {
        return NULL;
    }
    engine->reference_count = 1;
    engine->parameters = chosen;
    engine->pool = CreateThreadpool(NULL);
    if (engine->pool == NULL)
    {
        free(engine);
        return NULL;
    }
    // The maximum first, so that the minimum is set against the maximum the caller asked for.
    if (chosen.max_thread_count != EXECUTION_ENGINE_NO_MAX_THREAD_COUNT)
    {
        SetThreadpoolThreadMaximum(engine->pool, chosen.max_thread_count);
    }
    if (!SetThreadpoolThreadMinimum(engine->pool, chosen.min_thread_count))
    {
        CloseThreadpool(engine->pool);
        free(engine);
        return NULL;
    }
    return engine;
}

/// Adds a reference. Does nothing when execution_engine is NULL.
ASYNC_SOCKET_C_FUNCTION void execution_engine_inc_ref(EXECUTION_ENGINE_HANDLE execution_engine) noexcept
{
    if (execution_engine != NULL)
    {
        (void)InterlockedIncrement(&execution_engine->reference_count);
    }
}

/// Drops a reference; the last one closes the threadpool (CloseThreadpool: callbacks already queued still
/// run) and frees the engine. Does nothing when execution_engine is NULL.
ASYNC_SOCKET_C_FUNCTION void execution_engine_dec_ref(EXECUTION_ENGINE_HANDLE execution_engine) noexcept
{
    if (execution_engine != NULL && InterlockedDecrement(&execution_engine->reference_count) == 0)
    {
        CloseThreadpool(execution_engine->pool);
        free(execution_engine);
    }
}

/// The engine's threadpool, valid while the caller holds a reference to the engine. NULL when
/// execution_engine is NULL.
inline PTP_POOL execution_engine_win32_get_threadpool(EXECUTION_ENGINE_HANDLE execution_engine) noexcept
{
    return execution_engine == NULL ? NULL : execution_engine->pool;
}
