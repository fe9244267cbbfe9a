/// @file
/// async_socket: the execution engine of the C API on Linux: the contract's EXECUTION_ENGINE_HANDLE over a
/// linux_engine (engine.hpp), with the same functions and parameters as on Win32 (c-pal's Linux port keeps them
/// too). The engine's workers are a fixed number of threads: min_thread_count of them (0: one per core).
///
/// Thread safety: execution_engine_inc_ref, execution_engine_dec_ref and execution_engine_linux_get_engine may be
/// called concurrently on the same engine.
#pragma once

#include <async_socket/backend/linux/engine.hpp>
#include <async_socket/execution_engine.h>

#include <atomic>
#include <new>
#include <stdint.h>

/// What an EXECUTION_ENGINE_HANDLE points at on Linux: a reference count over one linux_engine.
struct EXECUTION_ENGINE
{
    std::atomic<uint32_t> reference_count;  ///< execution_engine_inc_ref / dec_ref; the last one ends the engine
    async_socket::linux_engine* engine;     ///< the engine's own reference, dropped with the last handle reference
    EXECUTION_ENGINE_PARAMETERS parameters; ///< the parameters it was made with (the defaults filled in)
};

/// Makes an engine with one reference: io_uring, or epoll where the kernel refuses io_uring (linux_engine). Fails
/// (NULL) when max_thread_count is not 0 and is below min_thread_count, when min_thread_count is above
/// linux_engine::max_thread_count, or when memory, the ring or the threads cannot be had.
ASYNC_SOCKET_C_FUNCTION EXECUTION_ENGINE_HANDLE
execution_engine_create(const EXECUTION_ENGINE_PARAMETERS* parameters) noexcept
{
    EXECUTION_ENGINE_PARAMETERS chosen{EXECUTION_ENGINE_DEFAULT_MIN_THREAD_COUNT,
                                       EXECUTION_ENGINE_DEFAULT_MAX_THREAD_COUNT};
    if (parameters != NULL)
    {
        chosen = *parameters;
    }
    if (chosen.max_thread_count != EXECUTION_ENGINE_NO_MAX_THREAD_COUNT &&
        chosen.max_thread_count < chosen.min_thread_count)
    {
        return NULL;
    }
    async_socket::linux_engine::handle made =
        async_socket::linux_engine::create({.thread_count = chosen.min_thread_count});
    if (!made)
    {
        return NULL;
    }
    auto* engine = new (std::nothrow) EXECUTION_ENGINE{{1}, made.get(), chosen};
    if (engine == NULL)
    {
        return NULL;
    }
    (void)made.release(); // the EXECUTION_ENGINE holds the reference now
    return engine;
}

/// Adds a reference. Does nothing when execution_engine is NULL.
ASYNC_SOCKET_C_FUNCTION void execution_engine_inc_ref(EXECUTION_ENGINE_HANDLE execution_engine) noexcept
{
    if (execution_engine != NULL)
    {
        execution_engine->reference_count.fetch_add(1, std::memory_order_relaxed);
    }
}

/// Drops a reference; the last one drops the engine's (its workers end once the last socket made on it is gone).
/// Does nothing when execution_engine is NULL.
ASYNC_SOCKET_C_FUNCTION void execution_engine_dec_ref(EXECUTION_ENGINE_HANDLE execution_engine) noexcept
{
    if (execution_engine != NULL && execution_engine->reference_count.fetch_sub(1, std::memory_order_acq_rel) == 1)
    {
        async_socket::linux_engine::release(execution_engine->engine);
        delete execution_engine;
    }
}

/// The linux_engine, valid while the caller holds a reference. NULL when execution_engine is NULL.
inline async_socket::linux_engine* execution_engine_linux_get_engine(EXECUTION_ENGINE_HANDLE execution_engine) noexcept
{
    return execution_engine == NULL ? NULL : execution_engine->engine;
}
