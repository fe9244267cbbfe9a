/// @file
/// async_socket: the Win32 backend over threadpool IO, the only part of the library that talks to Windows.
///
/// win32_threadpool_calls<win32_options{...}> is win32_threadpool_backend (threadpool_backend.hpp: the protocol
/// of one IO, the spec's call sequence) over detail::win32_threadpool_calls, the real Win32 calls: one object per
/// socket, each member one Win32 call with no logic. It keeps a reference to its execution engine from
/// acquire_pool until it is destroyed, so the pool outlives every threadpool IO made on it.
///
/// The options pick how IO is done; win32_threadpool (the default options) is the spec's behaviour:
/// - events = per_io: an event per IO, made and closed around it (SRS 01_057/080/068).
///   events = none: no event (uses_io_events = false, hEvent stays NULL). Threadpool IO completes through
///   the completion port and never needs it; under Wine CreateEvent + CloseHandle cost about 70 us per IO.
///   events = recycled: an event per IO as the spec says, taken from and given back to a few kept by the
///   policy, so that in steady state no event is made or closed.
/// - skip_completion_on_success = true: the socket is put in FILE_SKIP_COMPLETION_PORT_ON_SUCCESS mode at
///   its first open; an IO that finishes at once is then completed by the core on the calling thread
///   instead of going through the pool (submit_status::completed_at_once, concepts.hpp).
///
/// Choices:
/// - The cleanup group is created (SRS 01_037) but not attached to the callback environment
///   (no SetThreadpoolCallbackCleanupGroup). The threadpool IO is released one by one, in the order
///   cancel -> WaitForThreadpoolIoCallbacks -> CloseThreadpoolIo; a member of a cleanup group must instead be
///   released by CloseThreadpoolCleanupGroupMembers and never closed by itself, which would split its
///   teardown between two owners.
/// - The per-IO event is a manual-reset event (CreateEventW(NULL, TRUE, FALSE, NULL)): the OS resets the
///   OVERLAPPED's event when an IO starts and sets it when the IO ends, and the OVERLAPPED documentation
///   asks for a manual-reset event there (WSACreateEvent makes the same kind). Nothing waits on it: the
///   completion reaches the threadpool through the completion port.
/// - A socket is bound to one completion port for life: a second CreateThreadpoolIo on the same SOCKET
///   fails (ERROR_INVALID_PARAMETER, 87, under Wine 8.0). The backend therefore binds once per socket object
///   (create_io at the first open) and calls close_io at destroy.
#pragma once

#include <async_socket/detail/config.hpp>

#include <winsock2.h>
#include <windows.h>

#include <async_socket/concepts.hpp>
#include <async_socket/types.h>
#include <async_socket/backend/win32/execution_engine.hpp>
#include <async_socket/backend/win32/socket_calls.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace async_socket
{

namespace detail
{
/// The Win32 calls of threadpool IO, configured by Options (see the header comment).
template <win32_options Options>
class win32_threadpool_calls : public win32_socket_calls<Options>
{
    using socket_calls = detail::win32_socket_calls<Options>;

public:
    using engine_type = EXECUTION_ENGINE_HANDLE;

    win32_threadpool_calls() noexcept = default;
    win32_threadpool_calls(win32_threadpool_calls&& other) noexcept
        : socket_calls(std::move(other)), engine_(std::exchange(other.engine_, nullptr)),
          pool_(std::exchange(other.pool_, nullptr)), environment_(other.environment_),
          cleanup_group_(std::exchange(other.cleanup_group_, nullptr)), io_(std::exchange(other.io_, nullptr))
    {
    }
    win32_threadpool_calls& operator=(win32_threadpool_calls&&) = delete;
    win32_threadpool_calls(const win32_threadpool_calls&) = delete;
    win32_threadpool_calls& operator=(const win32_threadpool_calls&) = delete;

    /// Drops the reference to the execution engine taken by acquire_pool.
    ~win32_threadpool_calls()
    {
        execution_engine_dec_ref(engine_);
    }

    /// execution_engine_win32_get_threadpool, and a reference to the engine (dropped by the destructor).
    /// Fails when the engine has no pool.
    bool acquire_pool(EXECUTION_ENGINE_HANDLE engine) noexcept
    {
        PTP_POOL pool = execution_engine_win32_get_threadpool(engine);
        if (pool == nullptr)
        {
            return false;
        }
        execution_engine_inc_ref(engine);
        execution_engine_dec_ref(engine_);
        engine_ = engine;
        pool_ = pool;
        return true;
    }

    /// InitializeThreadpoolEnvironment. Cannot fail.
    void initialize_environment() noexcept
    {
        InitializeThreadpoolEnvironment(&environment_);
    }

    /// SetThreadpoolCallbackPool with the pool from acquire_pool. Cannot fail.
    void set_callback_pool() noexcept
    {
        SetThreadpoolCallbackPool(&environment_, pool_);
    }

    /// CreateThreadpoolCleanupGroup. Fails when the OS has no memory for it.
    bool create_cleanup_group() noexcept
    {
        cleanup_group_ = CreateThreadpoolCleanupGroup();
        return cleanup_group_ != nullptr;
    }

    /// CreateThreadpoolIo on the socket, in this environment; every completion calls
    /// Completion(callback_context, overlapped, io_result, bytes) on a pool thread. Fails when the socket
    /// is not an overlapped handle or was bound to a completion port before.
    template <win32_completion_routine Completion>
    bool create_io(SOCKET_HANDLE socket, void* callback_context) noexcept
    {
        io_ = CreateThreadpoolIo(socket_calls::to_handle(socket), &on_io_complete<Completion>, callback_context,
                                 &environment_);
        return io_ != nullptr;
    }

    /// StartThreadpoolIo: before every WSASend/WSARecv. Cannot fail.
    void start_io() noexcept
    {
        StartThreadpoolIo(io_);
    }

    /// CancelThreadpoolIo: after a WSASend/WSARecv that failed at once. Cannot fail.
    void cancel_io() noexcept
    {
        CancelThreadpoolIo(io_);
    }

    /// WaitForThreadpoolIoCallbacks. Blocks while an IO is outstanding (unless cancel_pending); must not be
    /// called from one of this IO's callbacks.
    void wait_for_io_callbacks(bool cancel_pending) noexcept
    {
        WaitForThreadpoolIoCallbacks(io_, cancel_pending ? TRUE : FALSE);
    }

    /// CloseThreadpoolIo. Cannot fail.
    void close_io() noexcept
    {
        CloseThreadpoolIo(io_);
        io_ = nullptr;
    }

    /// CloseThreadpoolCleanupGroup. Cannot fail.
    void close_cleanup_group() noexcept
    {
        CloseThreadpoolCleanupGroup(cleanup_group_);
        cleanup_group_ = nullptr;
    }

    /// DestroyThreadpoolEnvironment. Cannot fail.
    void destroy_environment() noexcept
    {
        DestroyThreadpoolEnvironment(&environment_);
    }

private:
    /// The PTP_WIN32_IO_CALLBACK the pool calls; hands the completion to the core's routine.
    template <win32_completion_routine Completion>
    static VOID CALLBACK on_io_complete(PTP_CALLBACK_INSTANCE /*instance*/, PVOID context, PVOID overlapped,
                                        ULONG io_result, ULONG_PTR bytes_transferred, PTP_IO /*io*/) noexcept
    {
        Completion(context, overlapped, static_cast<win32_error>(io_result),
                   static_cast<std::size_t>(bytes_transferred));
    }

    EXECUTION_ENGINE_HANDLE engine_ = nullptr;
    PTP_POOL pool_ = nullptr;
    TP_CALLBACK_ENVIRON environment_{};
    PTP_CLEANUP_GROUP cleanup_group_ = nullptr;
    PTP_IO io_ = nullptr;
};

} // namespace detail

/// The Win32 backend over threadpool IO, configured by Options.
template <win32_options Options = win32_options{}>
using basic_win32_threadpool = win32_threadpool_backend<detail::win32_threadpool_calls<Options>>;

/// The spec's behaviour: an event made and closed per IO, every completion through the pool.
using win32_threadpool = basic_win32_threadpool<>;

static_assert(check_backend<win32_threadpool>());
static_assert(accepting_backend<win32_threadpool> && connecting_backend<win32_threadpool> &&
              cancellable_backend<win32_threadpool>);
static_assert(check_backend<basic_win32_threadpool<win32_options{.events = win32_event_mode::recycled}>>());
static_assert(
    check_backend<
        basic_win32_threadpool<win32_options{.events = win32_event_mode::none, .skip_completion_on_success = true}>>());

} // namespace async_socket
