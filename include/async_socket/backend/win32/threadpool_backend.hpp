/// @file
/// async_socket, Win32 backend: the protocol of one IO over threadpool IO, written against a layer of Win32 calls.
///
/// win32_threadpool_backend<Calls> models the backend concept (concepts.hpp). It owns the spec's whole Win32
/// sequence: at the first open InitializeThreadpoolEnvironment, SetThreadpoolCallbackPool,
/// CreateThreadpoolCleanupGroup, CreateThreadpoolIo (and skip mode); per IO CreateEvent, StartThreadpoolIo,
/// WSASend/WSARecv, CancelThreadpoolIo on failure, CloseHandle; at close CancelIoEx and
/// WaitForThreadpoolIoCallbacks; at destroy CloseThreadpoolIo, CloseThreadpoolCleanupGroup,
/// DestroyThreadpoolEnvironment. Each of those is one member of Calls and keeps no logic:
///   - detail::win32_threadpool_calls (threadpool.hpp) makes the real calls;
///   - detail::win32_iocp_calls (iocp.hpp) binds to a plain completion port instead of a threadpool IO;
///   - testing::basic_fake_threadpool_calls (testing/fake_threadpool.hpp) records them and models the OS, so
///     that the order of the calls is tested natively, without Windows.
/// This header includes no Windows header for that reason: the types come from Calls.
///
/// A Win32 result is classified here, once (classify_win32_error); the core never sees a Win32 number other than
/// as io_result::os_code.
#pragma once

#include <async_socket/concepts.hpp>
#include <async_socket/detail/config.hpp>
#include <async_socket/detail/io_context.hpp>
#include <async_socket/types.h>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace async_socket
{

/// A Win32 error code as the OS reports it for an IO: 0 (NO_ERROR) is success.
using win32_error = std::uint32_t;
inline constexpr win32_error win32_no_error = 0;              ///< NO_ERROR: the IO succeeded
inline constexpr win32_error win32_operation_aborted = 995;   ///< ERROR_OPERATION_ABORTED: cancelled (CancelIoEx)
inline constexpr win32_error win32_netname_deleted = 64;      ///< ERROR_NETNAME_DELETED: a reset, as a completion says
inline constexpr win32_error win32_connection_aborted = 1236; ///< ERROR_CONNECTION_ABORTED
inline constexpr win32_error wsa_connection_reset = 10054;    ///< WSAECONNRESET
inline constexpr win32_error wsa_connection_aborted = 10053;  ///< WSAECONNABORTED
/// What Calls::send/receive answer, in skip mode, for an IO that finished during the call; never a Win32 code.
inline constexpr win32_error win32_completed_at_once = 0xFFFFFFFFu;

/// The routine a Calls layer's create_io registers: the OS's completion of one IO, before classification.
using win32_completion_routine = void (*)(void* context, void* overlapped, win32_error io_result,
                                          std::size_t bytes_transferred) noexcept;

/// The io_outcome of a Win32 IO result: success for NO_ERROR, cancelled for ERROR_OPERATION_ABORTED, reset for a
/// reset or aborted connection (ERROR_NETNAME_DELETED, ERROR_CONNECTION_ABORTED, WSAECONNRESET, WSAECONNABORTED),
/// other for anything else.
[[nodiscard]] constexpr io_outcome classify_win32_error(win32_error code) noexcept
{
    if (code == win32_no_error) [[likely]]
    {
        return io_outcome::success; // first, alone: the one test on the path of almost every IO
    }
    switch (code)
    {
    case win32_operation_aborted:
        return io_outcome::cancelled;
    case win32_netname_deleted:
    case win32_connection_aborted:
    case wsa_connection_reset:
    case wsa_connection_aborted:
        return io_outcome::reset;
    default:
        return io_outcome::other;
    }
}

namespace detail
{
void probe_win32_completion(void*, void*, win32_error, std::size_t) noexcept; ///< never defined
} // namespace detail

// ---------------------------------------------------------------------------------------------------
/// The member types and traits of a Win32 calls layer: engine_type, overlapped_type (standard layout), buffer_type,
/// event_type (regular), uses_io_events and skip_completion_on_success. The first part of win32_threadpool_calls,
/// which this text describes whole.
///
/// The Win32 calls a win32_threadpool_backend makes (Calls). One object per socket, holding that socket's OS
/// state; each member is one Win32 call:
///   acquire_pool(engine) -> bool        execution_engine_win32_get_threadpool
///   initialize_environment()            InitializeThreadpoolEnvironment
///   set_callback_pool()                 SetThreadpoolCallbackPool (the pool from acquire_pool)
///   create_cleanup_group() -> bool      CreateThreadpoolCleanupGroup
///   create_io<Fn>(socket, ctx) -> bool  CreateThreadpoolIo; Fn(ctx, overlapped, error, bytes) per completion
///   start_io() / cancel_io()            StartThreadpoolIo / CancelThreadpoolIo
///   wait_for_io_callbacks(cancel)       WaitForThreadpoolIoCallbacks
///   close_io()                          CloseThreadpoolIo
///   close_cleanup_group()               CloseThreadpoolCleanupGroup
///   destroy_environment()               DestroyThreadpoolEnvironment
///   create_event() -> event_type        CreateEvent (value-initialised on failure; last_error() says why)
///   close_event(event)                  CloseHandle
///   last_error() -> win32_error         GetLastError, after a failed create_event
///   static set_overlapped_event(ov, e)  zero the OVERLAPPED and set its hEvent (no OS call)
///   static set_buffer(buf, p, len)      fill one WSABUF (no OS call)
///   send(s, bufs, n, bytes, flags, ov)  WSASend without completion routine; receive(s, ..., &flags, ov) WSARecv.
///                                       win32_no_error when the IO was accepted (WSA_IO_PENDING is not an
///                                       error), win32_completed_at_once in skip mode for an IO done at once
///                                       (its byte count in *bytes), else the error code.
///   cancel_socket_io(s)                 CancelIoEx(s, NULL)
///   cancel_overlapped_io(s, ov)         optional: CancelIoEx(s, ov), for per-IO cancellation (cancel_one)
/// Traits: static constexpr bool uses_io_events (false: no event per IO, hEvent stays NULL) and
/// skip_completion_on_success (true: set_skip_completion_on_success(socket) -> bool is called at the first open,
/// SetFileCompletionNotificationModes, and send/receive may answer win32_completed_at_once).
// ---------------------------------------------------------------------------------------------------
template <class T>
concept win32_calls_types = requires
{
    typename T::engine_type;
    typename T::overlapped_type;
    typename T::buffer_type;
    typename T::event_type;
    {
        T::uses_io_events
        } -> std::convertible_to<bool>;
    {
        T::skip_completion_on_success
        } -> std::convertible_to<bool>;
}
&&std::is_standard_layout_v<typename T::overlapped_type>&& std::regular<typename T::event_type>;

/// A Win32 calls layer (Calls of win32_threadpool_backend): the types of win32_calls_types, a noexcept move
/// constructor and every call listed at win32_calls_types, each noexcept and with the result type shown there;
/// set_skip_completion_on_success too when skip_completion_on_success is true.
template <class T>
concept win32_threadpool_calls = win32_calls_types<T> && std::is_nothrow_move_constructible_v<T> &&
    requires(T& calls, typename T::engine_type engine, SOCKET_HANDLE socket, void* context, bool cancel_pending,
             typename T::event_type event, typename T::overlapped_type& overlapped, typename T::buffer_type* buffers,
             void* memory, std::uint32_t count, std::uint32_t* bytes, std::uint32_t flags, std::uint32_t* flags_in_out)
{
    // clang-format off
    { calls.acquire_pool(engine) } noexcept -> std::same_as<bool>;
    { calls.initialize_environment() } noexcept;
    { calls.set_callback_pool() } noexcept;
    { calls.create_cleanup_group() } noexcept -> std::same_as<bool>;
    { calls.template create_io<&detail::probe_win32_completion>(socket, context) } noexcept -> std::same_as<bool>;
    { calls.close_io() } noexcept;
    { calls.close_cleanup_group() } noexcept;
    { calls.destroy_environment() } noexcept;
    { calls.start_io() } noexcept;
    { calls.cancel_io() } noexcept;
    { calls.wait_for_io_callbacks(cancel_pending) } noexcept;
    { calls.create_event() } noexcept -> std::same_as<typename T::event_type>;
    { calls.close_event(event) } noexcept;
    { calls.last_error() } noexcept -> std::same_as<win32_error>;
    { T::set_overlapped_event(overlapped, event) } noexcept;
    { T::set_buffer(*buffers, memory, count) } noexcept;
    { calls.send(socket, buffers, count, bytes, flags, &overlapped) } noexcept -> std::same_as<win32_error>;
    { calls.receive(socket, buffers, count, bytes, flags_in_out, &overlapped) } noexcept -> std::same_as<win32_error>;
    { calls.cancel_socket_io(socket) } noexcept;
    // clang-format on
} &&(!T::skip_completion_on_success || requires(T & calls, SOCKET_HANDLE socket) {
    {
        calls.set_skip_completion_on_success(socket)
    }
    noexcept->std::same_as<bool>;
});

/// The backend over threadpool IO (or a completion port), given its layer of Win32 calls.
template <class Calls>
class win32_threadpool_backend
{
    static_assert(win32_threadpool_calls<Calls>, "Calls must model win32_threadpool_calls (threadpool_backend.hpp)");

public:
    using calls_type = Calls;                                ///< the layer of Win32 calls
    using engine_type = typename Calls::engine_type;         ///< what create takes (EXECUTION_ENGINE_HANDLE, ...)
    using buffer_type = typename Calls::buffer_type;         ///< one scatter/gather item (WSABUF)
    using overlapped_type = typename Calls::overlapped_type; ///< the OS's per-IO block (OVERLAPPED)
    using event_type = typename Calls::event_type;           ///< the event an IO may carry (HANDLE)

    /// The OVERLAPPED first: the completion's OVERLAPPED* is the io_state's address.
    struct io_state
    {
        overlapped_type overlapped; ///< what WSASend/WSARecv are given
        event_type event;           ///< the IO's event, when Calls::uses_io_events; else unused
    };

    /// Whether each IO carries an event (the calls layer's trait).
    static constexpr bool uses_io_events = Calls::uses_io_events;
    /// Whether an IO done at once is completed by the core (FILE_SKIP_COMPLETION_PORT_ON_SUCCESS is set).
    static constexpr bool completes_at_once = Calls::skip_completion_on_success;

    win32_threadpool_backend() noexcept = default;
    /// A backend over this calls layer (a fake one in tests).
    explicit win32_threadpool_backend(Calls calls) noexcept : calls_(std::move(calls)) {}
    /// Only moved before the socket binds (create moves it in): the completion context is `this`.
    win32_threadpool_backend(win32_threadpool_backend&& other) noexcept
        : calls_(std::move(other.calls_)), socket_(other.socket_), owner_(other.owner_)
    {
    }
    win32_threadpool_backend& operator=(win32_threadpool_backend&&) = delete;

    /// The calls layer, for tests (the fake's fake_os) and for statistics.
    [[nodiscard]] Calls& calls() noexcept
    {
        return calls_;
    }

    /// Takes the threadpool (and a reference) from the engine; false when it has none.
    bool attach(engine_type engine) noexcept
    {
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_035: [ Otherwise, async_socket_open_async shall obtain the PTP_POOL from
        // the execution engine passed to async_socket_create by calling execution_engine_win32_get_threadpool. ]
        return calls_.acquire_pool(engine);
    }

    /// Made once, at the first open, and kept until destroy: a SOCKET binds to one completion port for life.
    template <io_completion_fn Completion>
    bool bind(SOCKET_HANDLE socket, void* owner) noexcept
    {
        socket_ = socket;
        owner_ = owner;
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_016: [ Otherwise async_socket_open_async shall initialize a thread pool
        // environment by calling InitializeThreadpoolEnvironment. ]
        calls_.initialize_environment();
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_036: [ async_socket_open_async shall set the thread pool for the
        // environment to the pool obtained from the execution engine by calling SetThreadpoolCallbackPool. ]
        calls_.set_callback_pool();
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_037: [ async_socket_open_async shall create a threadpool cleanup group by
        // calling CreateThreadpoolCleanupGroup. ]
        if (!calls_.create_cleanup_group())
        {
            calls_.destroy_environment();
            return false;
        }
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_058: [ async_socket_open_async shall create a threadpool IO by calling
        // CreateThreadpoolIo and passing socket_handle, the callback environment to it and on_io_complete as
        // callback. ]
        if (!calls_.template create_io<&win32_threadpool_backend::on_io_complete<Completion>>(socket, this))
        {
            calls_.close_cleanup_group();
            calls_.destroy_environment();
            return false;
        }
        if constexpr (completes_at_once)
        {
            // An IO that finishes at once then completes without a trip through the pool.
            if (!calls_.set_skip_completion_on_success(socket))
            {
                calls_.close_io();
                calls_.close_cleanup_group();
                calls_.destroy_environment();
                return false;
            }
        }
        return true;
    }

    /// Closes the threadpool IO, the cleanup group and the environment that bind made.
    void unbind() noexcept
    {
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_059: [ async_socket_close shall close the threadpool IO created in
        // async_socket_open_async by calling CloseThreadpoolIo. ]
        calls_.close_io();
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_041: [ async_socket_close shall close the threadpool cleanup group by
        // calling CloseThreadpoolCleanupGroup. ]
        calls_.close_cleanup_group();
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_042: [ async_socket_close shall destroy the thread pool environment
        // created in async_socket_open_async. ]
        calls_.destroy_environment();
    }

    /// Starts one WSASend of the count buffers.
    submit_result submit_send(io_state& io, buffer_type* buffers, std::uint32_t count) noexcept
    {
        return submit<detail::io_kind::send>(io, buffers, count);
    }

    /// Starts one WSARecv into the count buffers.
    submit_result submit_receive(io_state& io, buffer_type* buffers, std::uint32_t count) noexcept
    {
        return submit<detail::io_kind::receive>(io, buffers, count);
    }

    /// CancelIoEx: every outstanding IO of the socket completes, aborted (reported BECAUSE_CLOSE by the core).
    void cancel_all() noexcept
    {
        calls_.cancel_socket_io(socket_);
    }

    /// Per-IO cancellation (a calls layer that has cancel_overlapped_io): CancelIoEx with the IO's OVERLAPPED. The
    /// IO completes through the pool as aborted (995), or as it was going to if it had finished already.
    void cancel_one(io_state& io) noexcept requires
        requires(Calls& calls, SOCKET_HANDLE socket, overlapped_type* overlapped)
    {
        {
            calls.cancel_overlapped_io(socket, overlapped)
        }
        noexcept;
    }
    {
        calls_.cancel_overlapped_io(socket_, &io.overlapped);
    }

    /// WaitForThreadpoolIoCallbacks: returns once no completion of the socket is outstanding or running.
    void drain() noexcept
    {
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_040: [ async_socket_close shall wait for any executing callbacks by
        // calling WaitForThreadpoolIoCallbacks, passing FALSE as fCancelPendingCallbacks. ]
        calls_.wait_for_io_callbacks(false);
    }

    /// Points one WSABUF at length bytes at memory.
    static void set_buffer(buffer_type& buffer, void* memory, std::uint32_t length) noexcept
    {
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_056: [ async_socket_send_async shall set the WSABUF items to point to the
        // memory/length of the buffers in payload. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_079: [ async_socket_receive_async shall set the WSABUF items to point to
        // the memory/length of the buffers in payload. ]
        Calls::set_buffer(buffer, memory, length);
    }

private:
    template <detail::io_kind Kind>
    submit_result submit(io_state& io, buffer_type* buffers, std::uint32_t count) noexcept
    {
        event_type event{};
        if constexpr (uses_io_events)
        {
            // Codes_SRS_ASYNC_SOCKET_WIN32_01_057: [ An event to be used for the OVERLAPPED structure passed to
            // WSASend shall be created and stored in the context. ]
            // Codes_SRS_ASYNC_SOCKET_WIN32_01_080: [ An event to be used for the OVERLAPPED structure passed to
            // WSARecv shall be created and stored in the context. ]
            event = calls_.create_event();
            if (event == event_type{})
            {
                return {submit_status::refused, calls_.last_error()};
            }
        }
        Calls::set_overlapped_event(io.overlapped, event);
        if constexpr (uses_io_events)
        {
            io.event = event; // read back by release_event only
        }

        // Codes_SRS_ASYNC_SOCKET_WIN32_01_060: [ An asynchronous IO shall be started by calling
        // StartThreadpoolIo. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_081: [ An asynchronous IO shall be started by calling
        // StartThreadpoolIo. ]
        calls_.start_io();
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_061: [ The WSABUF array associated with the context shall be sent by
        // calling WSASend and passing to it the OVERLAPPED structure with the event that was just created, dwFlags
        // set to 0, lpNumberOfBytesSent set to NULL and lpCompletionRoutine set to NULL. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_082: [ A receive shall be started for the WSABUF array associated with the
        // context calling WSARecv and passing to it the OVERLAPPED structure with the event that was just created,
        // dwFlags set to 0, lpNumberOfBytesSent set to NULL and lpCompletionRoutine set to NULL.. ]
        // (In skip mode the call is given a byte count to fill: an IO done at once reports it there.)
        std::uint32_t bytes_at_once = 0;
        std::uint32_t* const bytes = completes_at_once ? &bytes_at_once : nullptr;
        win32_error started = win32_no_error;
        if constexpr (Kind == detail::io_kind::send)
        {
            started = calls_.send(socket_, buffers, count, bytes, 0, &io.overlapped);
        }
        else
        {
            std::uint32_t flags = 0;
            started = calls_.receive(socket_, buffers, count, bytes, &flags, &io.overlapped);
        }
        if (started == win32_no_error)
        {
            return {submit_status::pending, 0}; // io belongs to the completion now; it may already be freed
        }
        // Done at once (skip mode: no completion will come) or refused: the StartThreadpoolIo is undone.
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_062: [ If net_comm_send_async fails, async_socket_send_async shall call
        // CancelThreadpoolIo and return MU_FAILURE. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_054: [ If WSARecv fails, async_socket_receive_async shall call
        // CancelThreadpoolIo. ]
        calls_.cancel_io();
        release_event(io);
        if (completes_at_once && started == win32_completed_at_once)
        {
            return {submit_status::completed_at_once, bytes_at_once};
        }
        return {submit_status::refused, started};
    }

    void release_event(io_state& io) noexcept
    {
        if constexpr (uses_io_events)
        {
            calls_.close_event(io.event);
        }
    }

    /// The completion every IO of this socket gets from the OS (registered by create_io with this backend as
    /// context): the event is closed before the core frees the context and runs the user's callback.
    template <io_completion_fn Completion>
    static void on_io_complete(void* context, void* overlapped, win32_error io_result,
                               std::size_t bytes_transferred) noexcept
    {
        auto* self = static_cast<win32_threadpool_backend*>(context);
        auto* io = static_cast<io_state*>(overlapped); // the OVERLAPPED is io_state's first member
        if (io != nullptr)
        {
            // Codes_SRS_ASYNC_SOCKET_WIN32_01_068: [ on_io_complete shall close the event handle created in
            // async_socket_send_async/async_socket_receive_async. ]
            self->release_event(*io);
        }
        Completion(self->owner_, io, io_result_of(io_result, bytes_transferred));
    }

    static io_result io_result_of(win32_error code, std::size_t bytes) noexcept
    {
        return {classify_win32_error(code), code, bytes};
    }

    ASYNC_SOCKET_NO_UNIQUE_ADDRESS Calls calls_;
    SOCKET_HANDLE socket_ = nullptr;
    void* owner_ = nullptr;
};

} // namespace async_socket
