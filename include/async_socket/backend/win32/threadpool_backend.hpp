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
///
/// Accept and connect (accepting_backend, connecting_backend) come with a calls layer that also models
/// win32_connection_calls (the real ones and the fake do): AcceptEx and ConnectEx through the same StartThreadpoolIo /
/// CancelThreadpoolIo / skip-on-success protocol as WSARecv, the extension functions loaded once per socket
/// (WSAIoctl), the accept socket made per accept (WSASocketW) and closed here on any outcome but success, a
/// connection reset before it was accepted skipped with a fresh AcceptEx, SO_UPDATE_ACCEPT_CONTEXT /
/// SO_UPDATE_CONNECT_CONTEXT after success, and a ConnectEx failure reported with its WSA code (WSAECONNREFUSED, not
/// the completion's ERROR_CONNECTION_REFUSED).
#pragma once

#include <async_socket/concepts.hpp>
#include <async_socket/detail/config.hpp>
#include <async_socket/detail/io_context.hpp>
#include <async_socket/socket_address.hpp>
#include <async_socket/types.h>

#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <thread>
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
inline constexpr win32_error win32_unexpected_network_error = 59; ///< ERROR_UNEXP_NET_ERR (Wine: an accept's reset)
inline constexpr win32_error wsa_invalid_argument = 10022;        ///< WSAEINVAL: getsockname of a socket not yet bound
/// The bytes AcceptEx writes per address: sizeof(SOCKADDR_STORAGE) + 16, as its documentation asks.
inline constexpr std::uint32_t win32_accept_address_length = 128 + 16;
/// AcceptEx's output buffer: the local then the remote address, no received data (dwReceiveDataLength 0).
inline constexpr std::uint32_t win32_accept_output_size = 2 * win32_accept_address_length;
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

/// The optional calls of a Win32 calls layer for accept and connect (a layer that has them makes
/// win32_threadpool_backend model accepting_backend and connecting_backend). Each is one Win32 call, no logic; those
/// that return win32_error return win32_no_error on success, else the WSA error (WSAGetLastError):
///   load_extensions(s)                 WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER) for AcceptEx,
///                                      GetAcceptExSockaddrs and ConnectEx; the backend calls it once per socket
///   local_address(s, address)          getsockname (WSAEINVAL: the socket is not bound)
///   bind_wildcard(s, family)           bind to the wildcard address of family (AF_INET, AF_INET6), port 0
///   open_socket(family, &made)         WSASocketW(family, SOCK_STREAM, IPPROTO_TCP, NULL, 0, WSA_FLAG_OVERLAPPED)
///   close_socket(s)                    closesocket
///   accept(listener, s, output, bytes, ov)   AcceptEx into win32_accept_output_size bytes at output, no data;
///                                      answers as send does (win32_completed_at_once in skip mode)
///   accepted_peer(output, peer)        GetAcceptExSockaddrs: the remote address of a completed AcceptEx
///   update_accept_context(s, listener) setsockopt(s, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, &listener)
///   connect(s, address, bytes, ov)     ConnectEx without data; answers as send does
///   update_connect_context(s)          setsockopt(s, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, NULL, 0)
template <class T>
concept win32_connection_calls = win32_threadpool_calls<T> &&
    requires(T& calls, SOCKET_HANDLE socket, SOCKET_HANDLE* made, std::uint16_t family, socket_address& address,
             const socket_address& target, void* output, std::uint32_t* bytes, typename T::overlapped_type& overlapped)
{
    // clang-format off
    { calls.load_extensions(socket) } noexcept -> std::same_as<win32_error>;
    { calls.local_address(socket, address) } noexcept -> std::same_as<win32_error>;
    { calls.bind_wildcard(socket, family) } noexcept -> std::same_as<win32_error>;
    { calls.open_socket(family, made) } noexcept -> std::same_as<win32_error>;
    { calls.close_socket(socket) } noexcept;
    { calls.accept(socket, socket, output, bytes, &overlapped) } noexcept -> std::same_as<win32_error>;
    { calls.accepted_peer(output, address) } noexcept;
    { calls.update_accept_context(socket, socket) } noexcept -> std::same_as<win32_error>;
    { calls.connect(socket, target, bytes, &overlapped) } noexcept -> std::same_as<win32_error>;
    { calls.update_connect_context(socket) } noexcept -> std::same_as<win32_error>;
    // clang-format on
};

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
        void* area;                 ///< an accept's accept_area or a connect's connect_area; nullptr for a send/receive
        std::uint32_t op;           ///< what the IO is (a send or receive, an accept, a connect)
    };

    /// An accept's block (in the IO context): the socket AcceptEx fills and AcceptEx's output buffer.
    struct accept_area
    {
        SOCKET_HANDLE accepted;       ///< the socket made for this accept (WSASocketW); closed here unless handed over
        socket_address peer;          ///< after success: the remote address (GetAcceptExSockaddrs)
        std::uint32_t cancel_epoch;   ///< the backend's count of cancel_all when the accept started
        std::uint32_t stop_requested; ///< cancel_one asked for it (read and written under the backend's lock)
        alignas(8) unsigned char output[win32_accept_output_size]; ///< AcceptEx's local and remote addresses
    };

    /// A connect's block (in the IO context): the address, which ConnectEx needs until it completes.
    struct connect_area
    {
        socket_address address; ///< where the socket connects
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
        : calls_(std::move(other.calls_)), socket_(other.socket_), owner_(other.owner_),
          extensions_(other.extensions_.load()), listener_family_(other.listener_family_.load())
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

    /// Starts one AcceptEx on the listening socket (a calls layer with win32_connection_calls): a new overlapped
    /// socket of the listener's family is made for it (WSASocketW) and kept in `area`. On success the completion makes
    /// it an accepted socket (SO_UPDATE_ACCEPT_CONTEXT) and reads the peer's address (GetAcceptExSockaddrs); on any
    /// other outcome the socket is closed here. A completion that concerns only the incoming connection
    /// (ERROR_NETNAME_DELETED, WSAECONNRESET, WSAECONNABORTED, ERROR_CONNECTION_ABORTED, and Wine's
    /// ERROR_UNEXP_NET_ERR: it was reset before it was accepted) is not reported: the socket is closed and a fresh
    /// AcceptEx, with a new socket, waits for the next connection.
    submit_result submit_accept(io_state& io, accept_area& area) noexcept requires win32_connection_calls<Calls>
    {
        if (const win32_error loaded = ensure_extensions(); loaded != win32_no_error)
        {
            return {submit_status::refused, loaded};
        }
        if (listener_family_.load(std::memory_order_acquire) == 0)
        {
            socket_address local;
            if (const win32_error error = calls_.local_address(socket_, local); error != win32_no_error)
            {
                return {submit_status::refused, error};
            }
            listener_family_.store(local.family(), std::memory_order_release);
        }
        area.accepted = nullptr;
        area.peer = socket_address{};
        area.stop_requested = 0;
        area.cancel_epoch = cancel_epoch_.load(std::memory_order_acquire);
        io.area = &area;
        io.op = op_accept;
        submit_result started{};
        for (int attempt = 0; attempt < max_immediate_accept_retries; ++attempt)
        {
            started = start_accept(io, area);
            if (started.status != submit_status::refused || !error_of_one_connection(started.value))
            {
                break;
            }
        }
        return started;
    }

    /// The socket a successful accept made (now the caller's) and its peer's address.
    static SOCKET_HANDLE take_accepted(accept_area& area, socket_address& peer) noexcept
    {
        peer = area.peer;
        return std::exchange(area.accepted, nullptr);
    }

    /// Starts one ConnectEx of the socket to `address` (a calls layer with win32_connection_calls). A socket that is
    /// not bound (getsockname: WSAEINVAL) is bound first to the wildcard address of the target's family; on success
    /// the completion sets SO_UPDATE_CONNECT_CONTEXT, so that the socket works as a connected one.
    submit_result submit_connect(io_state& io, connect_area& area,
                                 const socket_address& address) noexcept requires win32_connection_calls<Calls>
    {
        if (const win32_error loaded = ensure_extensions(); loaded != win32_no_error)
        {
            return {submit_status::refused, loaded};
        }
        socket_address local;
        if (const win32_error error = calls_.local_address(socket_, local); error != win32_no_error)
        {
            if (error != wsa_invalid_argument)
            {
                return {submit_status::refused, error};
            }
            if (const win32_error bound = calls_.bind_wildcard(socket_, address.family()); bound != win32_no_error)
            {
                return {submit_status::refused, bound};
            }
        }
        area.address = address;
        io.area = &area;
        io.op = op_connect;
        if (const win32_error failed = prepare_overlapped(io); failed != win32_no_error)
        {
            return {submit_status::refused, failed};
        }
        calls_.start_io();
        std::uint32_t bytes_at_once = 0;
        const win32_error started =
            calls_.connect(socket_, area.address, completes_at_once ? &bytes_at_once : nullptr, &io.overlapped);
        if (started == win32_no_error)
        {
            return {submit_status::pending, 0};
        }
        calls_.cancel_io();
        release_event(io);
        if (completes_at_once && started == win32_completed_at_once)
        {
            const win32_error updated = calls_.update_connect_context(socket_);
            return updated == win32_no_error ? submit_result{submit_status::completed_at_once, 0}
                                             : submit_result{submit_status::refused, updated};
        }
        return {submit_status::refused, started};
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
        {
            // An accept between two AcceptEx (a connection reset before it was accepted) sees the new count and
            // ends instead of starting another, which this CancelIoEx could miss.
            lock_guard lock(lock_);
            cancel_epoch_.fetch_add(1, std::memory_order_acq_rel);
        }
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
        if (io.op == op_accept)
        {
            // Seen by an accept about to start another AcceptEx (see cancel_all); the IO's context is alive here.
            lock_guard lock(lock_);
            static_cast<accept_area*>(io.area)->stop_requested = 1;
        }
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
    static constexpr std::uint32_t op_io = 0;      ///< io_state::op of a send or a receive
    static constexpr std::uint32_t op_accept = 1;  ///< io_state::op of an accept
    static constexpr std::uint32_t op_connect = 2; ///< io_state::op of a connect
    /// AcceptEx refused at once for a reason of one connection only: tried again this many times in all.
    static constexpr int max_immediate_accept_retries = 8;

    /// A tiny lock (no OS call) around the checks of cancel_all / cancel_one against an accept that starts another
    /// AcceptEx; held for a few instructions, or for one AcceptEx call, never while a completion routine runs.
    class lock_guard
    {
    public:
        explicit lock_guard(std::atomic<bool>& flag) noexcept : flag_(flag)
        {
            while (flag_.exchange(true, std::memory_order_acquire))
            {
                std::this_thread::yield();
            }
        }
        ~lock_guard()
        {
            flag_.store(false, std::memory_order_release);
        }
        lock_guard(const lock_guard&) = delete;
        lock_guard& operator=(const lock_guard&) = delete;

    private:
        std::atomic<bool>& flag_;
    };

    /// ERROR_NETNAME_DELETED, WSAECONNRESET, WSAECONNABORTED, ERROR_CONNECTION_ABORTED: an incoming connection
    /// went away before it was accepted; the listener is as it was. ERROR_UNEXP_NET_ERR too: what Wine (8.0) completes
    /// an AcceptEx with when the client reset the connection before it was accepted.
    static constexpr bool error_of_one_connection(win32_error code) noexcept
    {
        return code == win32_netname_deleted || code == wsa_connection_reset || code == wsa_connection_aborted ||
               code == win32_connection_aborted || code == win32_unexpected_network_error;
    }

    /// A ConnectEx completion reports the OS's Win32 code (ERROR_CONNECTION_REFUSED, ...); a caller of connect
    /// expects the WSA code WSAGetOverlappedResult would give (WSAECONNREFUSED, ...), as a synchronous connect does.
    static constexpr win32_error wsa_error_of_connect(win32_error code) noexcept
    {
        switch (code)
        {
        case 1225:        // ERROR_CONNECTION_REFUSED
            return 10061; // WSAECONNREFUSED
        case 1231:        // ERROR_NETWORK_UNREACHABLE
            return 10051; // WSAENETUNREACH
        case 1232:        // ERROR_HOST_UNREACHABLE
            return 10065; // WSAEHOSTUNREACH
        case 121:         // ERROR_SEM_TIMEOUT
            return 10060; // WSAETIMEDOUT
        default:
            return code;
        }
    }

    /// WSAIoctl for the extension functions, once per socket (several threads may ask at once: one loads, the
    /// others wait for it). A failure is not kept: the next accept or connect tries again.
    win32_error ensure_extensions() noexcept requires win32_connection_calls<Calls>
    {
        for (;;)
        {
            std::uint8_t state = extensions_.load(std::memory_order_acquire);
            if (state == extensions_loaded)
            {
                return win32_no_error;
            }
            if (state == extensions_none &&
                extensions_.compare_exchange_strong(state, extensions_loading, std::memory_order_acq_rel))
            {
                const win32_error loaded = calls_.load_extensions(socket_);
                extensions_.store(loaded == win32_no_error ? extensions_loaded : extensions_none,
                                  std::memory_order_release);
                return loaded;
            }
            std::this_thread::yield();
        }
    }

    /// The event (when the layer uses them) and the zeroed OVERLAPPED of one IO; the error of CreateEvent, if any.
    win32_error prepare_overlapped(io_state& io) noexcept
    {
        event_type event{};
        if constexpr (uses_io_events)
        {
            event = calls_.create_event();
            if (event == event_type{})
            {
                return calls_.last_error();
            }
        }
        Calls::set_overlapped_event(io.overlapped, event);
        if constexpr (uses_io_events)
        {
            io.event = event;
        }
        return win32_no_error;
    }

    /// One AcceptEx with a new socket in area.accepted. Refused: nothing is left (the socket is closed).
    submit_result start_accept(io_state& io, accept_area& area) noexcept requires win32_connection_calls<Calls>
    {
        SOCKET_HANDLE made = nullptr;
        if (const win32_error error = calls_.open_socket(listener_family_.load(std::memory_order_acquire), &made);
            error != win32_no_error)
        {
            return {submit_status::refused, error};
        }
        area.accepted = made;
        if (const win32_error failed = prepare_overlapped(io); failed != win32_no_error)
        {
            drop_accepted(area);
            return {submit_status::refused, failed};
        }
        calls_.start_io();
        std::uint32_t bytes_at_once = 0;
        const win32_error started =
            calls_.accept(socket_, made, area.output, completes_at_once ? &bytes_at_once : nullptr, &io.overlapped);
        if (started == win32_no_error)
        {
            return {submit_status::pending, 0}; // io and area belong to the completion now
        }
        calls_.cancel_io();
        release_event(io);
        if (completes_at_once && started == win32_completed_at_once)
        {
            if (const win32_error finished = finish_accept(area); finished != win32_no_error)
            {
                return {submit_status::refused, finished};
            }
            return {submit_status::completed_at_once, 0};
        }
        drop_accepted(area);
        return {submit_status::refused, started};
    }

    /// After a successful AcceptEx: SO_UPDATE_ACCEPT_CONTEXT and the peer's address. On failure the socket is closed.
    win32_error finish_accept(accept_area& area) noexcept requires win32_connection_calls<Calls>
    {
        if (const win32_error updated = calls_.update_accept_context(area.accepted, socket_); updated != win32_no_error)
        {
            drop_accepted(area);
            return updated;
        }
        calls_.accepted_peer(area.output, area.peer);
        return win32_no_error;
    }

    void drop_accepted(accept_area& area) noexcept requires win32_connection_calls<Calls>
    {
        if (area.accepted != nullptr)
        {
            calls_.close_socket(std::exchange(area.accepted, nullptr));
        }
    }

    /// An accept's completion, before the core sees it: the code the core is given (the accept then completes), or
    /// nothing when a fresh AcceptEx was started for the next connection (its own completion will come).
    bool complete_accept(io_state& io, win32_error& code) noexcept requires win32_connection_calls<Calls>
    {
        auto& area = *static_cast<accept_area*>(io.area);
        if (code == win32_no_error)
        {
            code = finish_accept(area);
            return true;
        }
        drop_accepted(area);
        for (int attempt = 0; attempt < max_immediate_accept_retries && error_of_one_connection(code); ++attempt)
        {
            // Skipped like Linux's ECONNABORTED: a fresh AcceptEx, unless close or the IO's stop_token came since
            // the accept started (their CancelIoEx may have found nothing to cancel). Under the lock, so that a
            // cancel after the check finds the new AcceptEx.
            lock_guard lock(lock_);
            if (area.stop_requested != 0 || area.cancel_epoch != cancel_epoch_.load(std::memory_order_acquire))
            {
                code = win32_operation_aborted;
                return true;
            }
            const submit_result started = start_accept(io, area);
            if (started.status == submit_status::pending)
            {
                return false; // io and area belong to the new AcceptEx's completion now
            }
            code = started.status == submit_status::completed_at_once ? win32_no_error : started.value;
        }
        return true;
    }

    template <detail::io_kind Kind>
    submit_result submit(io_state& io, buffer_type* buffers, std::uint32_t count) noexcept
    {
        io.op = op_io;
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
            if constexpr (win32_connection_calls<Calls>)
            {
                if (io->op == op_accept)
                {
                    if (!self->complete_accept(*io, io_result))
                    {
                        return; // a fresh AcceptEx waits for the next connection
                    }
                }
                else if (io->op == op_connect)
                {
                    io_result = io_result == win32_no_error ? self->calls_.update_connect_context(self->socket_)
                                                            : wsa_error_of_connect(io_result);
                }
            }
        }
        Completion(self->owner_, io, io_result_of(io_result, bytes_transferred));
    }

    static io_result io_result_of(win32_error code, std::size_t bytes) noexcept
    {
        return {classify_win32_error(code), code, bytes};
    }

    static constexpr std::uint8_t extensions_none = 0;
    static constexpr std::uint8_t extensions_loading = 1;
    static constexpr std::uint8_t extensions_loaded = 2;

    ASYNC_SOCKET_NO_UNIQUE_ADDRESS Calls calls_;
    SOCKET_HANDLE socket_ = nullptr;
    void* owner_ = nullptr;
    std::atomic<std::uint8_t> extensions_{extensions_none}; ///< WSAIoctl of the extension functions done
    std::atomic<std::uint16_t> listener_family_{0};         ///< the listener's address family, once an accept asked
    std::atomic<std::uint32_t> cancel_epoch_{0};            ///< cancel_all calls so far
    std::atomic<bool> lock_{false};                         ///< see lock_guard
};

} // namespace async_socket
