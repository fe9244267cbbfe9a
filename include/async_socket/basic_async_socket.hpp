/// @file
/// async_socket: basic_async_socket, the asynchronous socket of the async_socket contract.
///
/// All the logic lives here: argument checks, the CLOSED/OPENING/OPEN/CLOSING state machine, the
/// pending-call counter that close waits on, the overflow checks and the completion routine that maps
/// classified OS results to the spec's results. The OS sits behind the Backend (one IO's whole OS protocol),
/// memory behind AllocPolicy and atomics behind SyncPolicy (see concepts.hpp), so the same code runs on every
/// backend and against fakes.
///
/// Guarantees:
/// - Every send_async/receive_async that returns status::ok gets exactly one completion callback, on a
///   threadpool thread (or wherever the Backend delivers completions). A call that fails gets
///   none.
/// - close() cancels outstanding IO, waits for every callback to finish and leaves the socket CLOSED and
///   ready to be opened again. An IO that fails while the socket is closing completes with BECAUSE_CLOSE.
/// - All members are noexcept and may be called from any thread.
///
/// Deviation from the spec (docs/requirements.md, docs/design.md): the backend binds the socket at the first
/// open and keeps the binding until destroy (on Win32 the threadpool IO, its cleanup group and environment),
/// not made in every open and released in every close. A socket handle is bound to one completion port for
/// life, so a second CreateThreadpoolIo on it fails: closing the threadpool IO in close would make reopening
/// impossible. For the same reason a SOCKET can serve only one basic_async_socket in its life.
///
/// Longer than 500 lines on purpose: one state machine whose transitions are read together, with about 150
/// lines of the spec's own requirement text quoted beside the code that does it (the Codes_ markers).
#pragma once

#include <async_socket/detail/config.hpp>
#include <async_socket/detail/no_error.hpp>

#include <async_socket/detail/io_awaiter.hpp>
#include <async_socket/detail/io_context.hpp>
#include <async_socket/concepts.hpp>
#include <async_socket/results.hpp>
#include <async_socket/status.hpp>
#include <async_socket/types.h>

#include <algorithm>
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <new>
#include <span>
#include <stop_token>
#include <system_error>
#include <type_traits>
#include <utility>

namespace async_socket
{

/// The state of a basic_async_socket (state()): the spec's state machine.
enum class socket_state : std::int32_t
{
    closed = 0,  ///< made, or closed: open_async may be called
    opening = 1, ///< open_async is under way
    open = 2,    ///< send and receive may be called
    closing = 3, ///< close is cancelling the outstanding IO and waiting for its callbacks
};

namespace detail
{
/// Every socket whose completion callback this thread is running, innermost first: a callback may start IO on
/// another socket that finishes at once and runs that socket's callback nested in its own, so several sockets
/// can be in a callback on one thread. close() or destroy of any of them from there would wait for a callback
/// further out on this very thread, so it is refused. The frames live on the stack (a thread_local pointer,
/// trivially destructible: mingw's thread_local with a destructor is unreliable).
struct dispatch_frame
{
    const void* socket;
    const dispatch_frame* outer;
};
inline thread_local const dispatch_frame* dispatch_frames = nullptr;

class dispatch_scope
{
public:
    explicit dispatch_scope(const void* socket) noexcept : frame_{socket, dispatch_frames}
    {
        dispatch_frames = &frame_;
    }
    ~dispatch_scope()
    {
        dispatch_frames = frame_.outer;
    }
    dispatch_scope(const dispatch_scope&) = delete;
    dispatch_scope& operator=(const dispatch_scope&) = delete;

private:
    dispatch_frame frame_;
};

/// True when this thread is inside a completion callback of `socket`, at any depth.
[[nodiscard]] inline bool dispatching(const void* socket) noexcept
{
    for (const dispatch_frame* frame = dispatch_frames; frame != nullptr; frame = frame->outer)
    {
        if (frame->socket == socket)
        {
            return true;
        }
    }
    return false;
}

[[noreturn]] inline void usage_violation(const char* what) noexcept
{
    std::fputs("async_socket: usage violation: ", stderr);
    std::fputs(what, stderr);
    std::fputs("\n", stderr);
    std::abort();
}
} // namespace detail

namespace detail
{
/// A C++ handler of an IO: called once with the IO's result, never throwing; moved or copied into the IO's context.
template <class Handler, class Result>
concept io_handler = std::is_nothrow_invocable_v < std::decay_t<Handler>
&, Result > &&std::constructible_from<std::decay_t<Handler>, Handler>&&
                std::is_nothrow_destructible_v<std::decay_t<Handler>>;

/// The category of a backend's OS codes: its own when it names one (errno values on Linux), the system's otherwise
/// (Win32 error codes, which the fakes use too).
template <class Backend>
const std::error_category& os_error_category() noexcept
{
    if constexpr (requires {
                      {
                          Backend::error_category()
                          } -> std::convertible_to<const std::error_category&>;
                  })
    {
        return Backend::error_category();
    }
    else
    {
        return std::system_category();
    }
}
} // namespace detail

/// The asynchronous socket of the async_socket contract over a Backend (the OS), an AllocPolicy (memory) and a
/// SyncPolicy (atomics); see the top of this file for what it guarantees. Made by create, owned by its handle.
template <class Backend, class AllocPolicy, class SyncPolicy>
class basic_async_socket
{
    static_assert(check_backend<Backend>());
    static_assert(check_alloc_policy<AllocPolicy>());
    static_assert(check_sync_policy<SyncPolicy>());

public:
    using backend_type = Backend;                      ///< the Backend policy (socket_backend)
    using alloc_type = AllocPolicy;                    ///< the AllocPolicy (alloc_policy)
    using sync_type = SyncPolicy;                      ///< the SyncPolicy (sync_policy)
    using engine_type = typename Backend::engine_type; ///< what create takes to find the OS's machinery

    /// The deleter of handle: destroys the socket (as async_socket_destroy does).
    struct destroyer
    {
        /// destroy(socket).
        void operator()(basic_async_socket* socket) const noexcept
        {
            destroy(socket);
        }
    };
    /// The owner of a socket: create returns one; resetting it destroys the socket.
    using handle = std::unique_ptr<basic_async_socket, destroyer>;

    /// The bytes a send_async or receive_async with a C callback over `buffer_count` buffers takes from AllocPolicy
    /// for its context (a C++ handler adds its own size, aligned for it): the size to give a pool's reserve.
    [[nodiscard]] static constexpr std::uint64_t io_context_size(std::uint32_t buffer_count) noexcept
    {
        return layout::size(buffer_count);
    }

    /// Makes a CLOSED socket over `socket_handle`, which stays the caller's (it is never closed here).
    /// Returns null when engine or socket_handle is null, or when memory or the pool cannot be had.
    [[nodiscard]] static handle create(engine_type engine, SOCKET_HANDLE socket_handle, Backend backend = {},
                                       AllocPolicy alloc = {}) noexcept
    {
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_002: [ If execution_engine is NULL, async_socket_create shall fail and
        // return NULL. ]
        if (engine == engine_type{})
        {
            return nullptr;
        }
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_034: [ If socket_handle is NULL, async_socket_create shall fail and return
        // NULL. ]
        if (socket_handle == nullptr)
        {
            return nullptr;
        }
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_001: [ async_socket_create shall allocate a new async socket and on success
        // shall return a non-NULL handle. ]
        void* memory = alloc.allocate(sizeof(basic_async_socket));
        if (memory == nullptr)
        {
            // Codes_SRS_ASYNC_SOCKET_WIN32_01_003: [ If any error occurs, async_socket_create shall fail and return
            // NULL. ]
            return nullptr;
        }
        auto* socket = ::new (memory) basic_async_socket(socket_handle, std::move(backend), alloc);
        // The backend takes what it needs from the engine (on Win32: its pool, SRS 01_035).
        if (!socket->backend_.attach(engine))
        {
            // Codes_SRS_ASYNC_SOCKET_WIN32_01_003: [ If any error occurs, async_socket_create shall fail and return
            // NULL. ]
            destroy(socket);
            return nullptr;
        }
        return handle(socket);
    }

    /// Destroys a socket made by create (what handle's deleter does). Waits while the socket is OPENING or
    /// CLOSING, closes it if OPEN, then releases everything. Must not be called from one of this socket's
    /// own completion callbacks (that would free the socket under the running callback): doing so aborts
    /// with a message.
    static void destroy(basic_async_socket* socket) noexcept
    {
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_004: [ If async_socket is NULL, async_socket_destroy shall return. ]
        if (socket == nullptr)
        {
            return;
        }
        AllocPolicy alloc = socket->alloc_;
        socket->~basic_async_socket();
        alloc.deallocate(socket, sizeof(basic_async_socket));
    }

    /// Opens the socket: binds it with the backend (first open only) and moves it to OPEN, then calls
    /// on_open_complete(context, ASYNC_SOCKET_OPEN_OK) on the calling thread before returning ok.
    /// Fails (and calls nothing) on a null callback, when not CLOSED, or when the OS refuses.
    [[nodiscard]] status open_async(ON_ASYNC_SOCKET_OPEN_COMPLETE on_open_complete,
                                    void* on_open_complete_context) noexcept
    {
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_008: [ If on_open_complete is NULL, async_socket_open_async shall fail and
        // return a non-zero value. ]
        if (on_open_complete == nullptr)
        {
            return status::invalid_argument;
        }
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_009: [ on_open_complete_context shall be allowed to be NULL. ]

        // Codes_SRS_ASYNC_SOCKET_WIN32_01_023: [ Otherwise, async_socket_open_async shall switch the state to
        // OPENING. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_015: [ If async_socket is already OPEN or OPENING, async_socket_open_async
        // shall fail and return a non-zero value. ]
        if (!transition(socket_state::closed, socket_state::opening))
        {
            return status::invalid_state;
        }

        if (!bound_ && !bind_backend())
        {
            // Codes_SRS_ASYNC_SOCKET_WIN32_01_039: [ If any error occurs, async_socket_open_async shall fail and
            // return a non-zero value. ]
            set_state(socket_state::closed);
            return status::os_error;
        }

        // Codes_SRS_ASYNC_SOCKET_WIN32_01_094: [ async_socket_open_async shall set the state to OPEN. ]
        set_state(socket_state::open);

        // Codes_SRS_ASYNC_SOCKET_WIN32_01_017: [ On success async_socket_open_async shall call
        // on_open_complete_context with ASYNC_SOCKET_OPEN_OK. ]
        on_open_complete(on_open_complete_context, ASYNC_SOCKET_OPEN_OK);

        // Codes_SRS_ASYNC_SOCKET_WIN32_01_014: [ On success, async_socket_open_async shall return 0. ]
        return status::ok;
    }

    /// Closes an OPEN socket: waits for send_async/receive_async calls under way, cancels the socket's
    /// outstanding IO, waits for every completion callback to finish, and leaves the socket CLOSED (it can
    /// be opened again). Returns invalid_state when the socket was not OPEN, and called_from_callback
    /// (doing nothing) when called from one of this socket's own completion callbacks.
    status close() noexcept
    {
        if (detail::dispatching(this) || completing_at_once_here())
        {
            return status::called_from_callback;
        }

        // Codes_SRS_ASYNC_SOCKET_WIN32_01_019: [ Otherwise, async_socket_close shall switch the state to
        // CLOSING. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_022: [ If async_socket is not OPEN, async_socket_close shall return. ]
        if (!transition(socket_state::open, socket_state::closing))
        {
            return status::invalid_state;
        }

        // Codes_SRS_ASYNC_SOCKET_WIN32_01_020: [ async_socket_close shall wait for all executing
        // async_socket_send_async and async_socket_receive_async APIs. ]
        wait_for_api_calls();

        // Every IO now started has been issued; cancel them all so that the wait below cannot hang on a
        // receive that never gets data. They complete with an error, reported as BECAUSE_CLOSE.
        backend_.cancel_all();

        // Then wait for every callback (on Win32 WaitForThreadpoolIoCallbacks, SRS 01_040).
        backend_.drain();

        // Codes_SRS_ASYNC_SOCKET_WIN32_01_021: [ Then async_socket_close shall close the async socket, leaving it in
        // a state where an async_socket_open_async can be performed. ]
        // The socket stays bound until destroy (see the header comment and release_backend).
        set_state(socket_state::closed);
        return status::ok;
    }

    /// Sends the bytes of `buffer_count` buffers, in order, as one IO. The buffers' memory must stay valid
    /// until on_send_complete runs; the array `buffers` itself may be reused as soon as this returns.
    [[nodiscard]] status send_async(const ASYNC_SOCKET_BUFFER* buffers, std::uint32_t buffer_count,
                                    ON_ASYNC_SOCKET_SEND_COMPLETE on_send_complete,
                                    void* on_send_complete_context) noexcept
    {
        return submit<detail::io_kind::send>(buffers, buffer_count, on_send_complete, on_send_complete_context);
    }

    /// Receives into `buffer_count` buffers, filled in order, as one IO; the callback reports how many bytes
    /// arrived (0 with ASYNC_SOCKET_RECEIVE_OK: the peer shut down its side). The buffers' memory must stay
    /// valid until on_receive_complete runs; the array `buffers` itself may be reused once this returns.
    [[nodiscard]] status receive_async(ASYNC_SOCKET_BUFFER* buffers, std::uint32_t buffer_count,
                                       ON_ASYNC_SOCKET_RECEIVE_COMPLETE on_receive_complete,
                                       void* on_receive_complete_context) noexcept
    {
        return submit<detail::io_kind::receive>(buffers, buffer_count, on_receive_complete,
                                                on_receive_complete_context);
    }

    /// The same IO with a C++ handler: any nothrow invocable taking a send_result (a lambda with captures, a
    /// function object, a function). It is moved (or copied, from an lvalue) into the IO's context, which is
    /// sized for it, runs exactly once on the completion thread and is destroyed after it ran; when the call
    /// fails it is destroyed without running. A handler that throws while it is copied or moved in fails the
    /// call with handler_threw (std::bad_alloc: out_of_memory). `buffers`: a span, or anything contiguous that
    /// converts to one (an array, a std::vector of ASYNC_SOCKET_BUFFER); as for the C form, only the bytes
    /// must stay valid until the handler runs.
    template <class Handler>
    requires detail::io_handler<Handler, send_result>
    [[nodiscard]] status send_async(std::span<const ASYNC_SOCKET_BUFFER> buffers, Handler&& handler) noexcept
    {
        return submit_with_handler<detail::io_kind::send>(buffers, std::forward<Handler>(handler));
    }

    /// Receives with a C++ handler that takes a receive_result (see the send above).
    template <class Handler>
    requires detail::io_handler<Handler, receive_result>
    [[nodiscard]] status receive_async(std::span<const ASYNC_SOCKET_BUFFER> buffers, Handler&& handler) noexcept
    {
        return submit_with_handler<detail::io_kind::receive>(buffers, std::forward<Handler>(handler));
    }

    /// The same, cancellable through `stop` (per-IO cancellation; the backend must be a cancellable_backend, as
    /// every backend of the project is). Once a stop is requested the IO, if still pending, completes as
    /// io_completion::cancelled (error: the OS's cancel code, 995 on Win32, ECANCELED on Linux) and the socket
    /// stays open for the next IO. A stop that races the IO's own end gives exactly one of the two outcomes. A send
    /// cancelled part-way may have sent part of its bytes. A token stopped already fails the call with
    /// status::cancelled: nothing is started and the handler is not called. The handler may run on the thread that
    /// requests the stop (a backend may complete the cancelled IO there), or on this thread during the call.
    template <class Handler>
    requires detail::io_handler<Handler, send_result> && cancellable_backend<Backend>
    [[nodiscard]] status send_async(std::span<const ASYNC_SOCKET_BUFFER> buffers, Handler&& handler,
                                    std::stop_token stop) noexcept
    {
        return submit_cancellable<detail::io_kind::send>(buffers, std::forward<Handler>(handler), stop);
    }

    /// Receives, cancellable through `stop` (see the send above).
    template <class Handler>
    requires detail::io_handler<Handler, receive_result> && cancellable_backend<Backend>
    [[nodiscard]] status receive_async(std::span<const ASYNC_SOCKET_BUFFER> buffers, Handler&& handler,
                                       std::stop_token stop) noexcept
    {
        return submit_cancellable<detail::io_kind::receive>(buffers, std::forward<Handler>(handler), stop);
    }

    /// For coroutines: co_await socket->async_send(buffers) gives the send_result. The coroutine resumes on the
    /// completion thread, or goes on without suspending when the IO finished during the call (no recursion, so a
    /// loop of such IO does not grow the stack); a refused call gives completion error with the status as its
    /// error_code. Works with any coroutine type; nothing is allocated besides the IO's context. The buffers'
    /// memory must stay valid until the co_await returns.
    [[nodiscard]] detail::io_awaiter<basic_async_socket, SyncPolicy, detail::transfer_operation<true>>
    async_send(std::span<const ASYNC_SOCKET_BUFFER> buffers) noexcept
    {
        return detail::io_awaiter<basic_async_socket, SyncPolicy, detail::transfer_operation<true>>(*this, buffers);
    }

    /// co_await socket->async_receive(buffers) gives the receive_result (see async_send).
    [[nodiscard]] detail::io_awaiter<basic_async_socket, SyncPolicy, detail::transfer_operation<false>>
    async_receive(std::span<const ASYNC_SOCKET_BUFFER> buffers) noexcept
    {
        return detail::io_awaiter<basic_async_socket, SyncPolicy, detail::transfer_operation<false>>(*this, buffers);
    }

    /// Cancellable through `stop`, as send_async with a stop_token: a cancelled IO gives io_completion::cancelled,
    /// a token stopped already gives cancelled with status::cancelled as its error_code.
    [[nodiscard]] detail::io_awaiter<basic_async_socket, SyncPolicy, detail::transfer_operation<true>, true>
    async_send(std::span<const ASYNC_SOCKET_BUFFER> buffers,
               std::stop_token stop) noexcept requires cancellable_backend<Backend>
    {
        return {std::move(stop), *this, buffers};
    }

    /// Cancellable through `stop`, as async_send with a stop_token is.
    [[nodiscard]] detail::io_awaiter<basic_async_socket, SyncPolicy, detail::transfer_operation<false>, true>
    async_receive(std::span<const ASYNC_SOCKET_BUFFER> buffers,
                  std::stop_token stop) noexcept requires cancellable_backend<Backend>
    {
        return {std::move(stop), *this, buffers};
    }

    /// Accepts one connection on a listening socket (beyond the contract; a backend with accept, as every backend of
    /// the project has). The socket given to create must be bound and listening, and this socket OPEN. `handler`
    /// (any nothrow invocable taking an accept_result) is held in the IO's context like a send's and runs exactly
    /// once: ok with the new connected socket, which is then the handler's to use (create) and to close; error with
    /// the OS's code when the accept failed (an error that concerns only that incoming connection, a reset or abort
    /// before it was accepted, leaves the listener as it was: accept again); because_close when close cut it. Several
    /// accepts may be pending; they complete in the order they were started. Linux: the listening descriptor is
    /// made non-blocking (O_NONBLOCK) and accepted ones are close-on-exec.
    template <class Handler>
    requires detail::io_handler<Handler, accept_result> && accepting_backend<Backend>
    [[nodiscard]] status accept_async(Handler&& handler) noexcept
    {
        return submit_operation<detail::io_kind::accept>(
            nullptr, handler_binder<detail::io_kind::accept, Handler>{std::addressof(handler)});
    }

    /// Accepts, cancellable through `stop` as send_async with a stop_token is; a cancelled accept leaves no socket.
    template <class Handler>
    requires detail::io_handler<Handler, accept_result> && accepting_backend<Backend> && cancellable_backend<Backend>
    [[nodiscard]] status accept_async(Handler&& handler, std::stop_token stop) noexcept
    {
        return submit_operation<detail::io_kind::accept>(
            nullptr, cancellable_binder<detail::io_kind::accept, Handler>{std::addressof(handler), &stop});
    }

    /// Connects the socket given to create (a TCP socket not yet connected; on Win32 bound or not: an unbound one
    /// is bound to the wildcard address of its family first) to `address`, IPv4 or IPv6 (beyond the contract). This
    /// socket must be OPEN. `handler` (a nothrow invocable taking a connect_result) runs exactly once: ok when
    /// connected (send and receive may follow at once), error with the OS's code (ECONNREFUSED, WSAECONNREFUSED,
    /// ETIMEDOUT...), because_close when close cut it. An empty address fails the call with invalid_argument. Linux:
    /// the descriptor is made non-blocking (O_NONBLOCK).
    template <class Handler>
    requires detail::io_handler<Handler, connect_result> && connecting_backend<Backend>
    [[nodiscard]] status connect_async(const socket_address& address, Handler&& handler) noexcept
    {
        return submit_operation<detail::io_kind::connect>(
            &address, handler_binder<detail::io_kind::connect, Handler>{std::addressof(handler)});
    }

    /// Connects, cancellable through `stop` as send_async with a stop_token is.
    template <class Handler>
    requires detail::io_handler<Handler, connect_result> && connecting_backend<Backend> && cancellable_backend<Backend>
    [[nodiscard]] status connect_async(const socket_address& address, Handler&& handler, std::stop_token stop) noexcept
    {
        return submit_operation<detail::io_kind::connect>(
            &address, cancellable_binder<detail::io_kind::connect, Handler>{std::addressof(handler), &stop});
    }

    /// co_await socket->async_accept() gives the accept_result (see accept_async; resumption as for async_send).
    [[nodiscard]] detail::io_awaiter<basic_async_socket, SyncPolicy, detail::accept_operation>
    async_accept() noexcept requires accepting_backend<Backend>
    {
        return detail::io_awaiter<basic_async_socket, SyncPolicy, detail::accept_operation>(*this);
    }

    /// Cancellable through `stop`, as async_send with a stop_token is.
    [[nodiscard]] detail::io_awaiter<basic_async_socket, SyncPolicy, detail::accept_operation, true>
    async_accept(std::stop_token stop) noexcept requires accepting_backend<Backend> && cancellable_backend<Backend>
    {
        return {std::move(stop), *this};
    }

    /// co_await socket->async_connect(address) gives the connect_result (see connect_async).
    [[nodiscard]] detail::io_awaiter<basic_async_socket, SyncPolicy, detail::connect_operation>
    async_connect(const socket_address& address) noexcept requires connecting_backend<Backend>
    {
        return detail::io_awaiter<basic_async_socket, SyncPolicy, detail::connect_operation>(*this, address);
    }

    /// Cancellable through `stop`, as async_send with a stop_token is.
    [[nodiscard]] detail::io_awaiter<basic_async_socket, SyncPolicy, detail::connect_operation, true>
    async_connect(const socket_address& address,
                  std::stop_token stop) noexcept requires connecting_backend<Backend> && cancellable_backend<Backend>
    {
        return {std::move(stop), *this, address};
    }

    /// Opens with a C++ handler, called with ASYNC_SOCKET_OPEN_OK on this thread before ok is returned (the
    /// handler is called where it is: open completes during the call).
    template <class Handler>
    requires std::is_nothrow_invocable_v<Handler&, ASYNC_SOCKET_OPEN_RESULT>
    [[nodiscard]] status open_async(Handler&& on_open) noexcept
    {
        using handler_type = std::remove_reference_t<Handler>;
        return open_async([](void* context, ASYNC_SOCKET_OPEN_RESULT result) noexcept
                          { (*static_cast<handler_type*>(context))(result); },
                          const_cast<void*>(static_cast<const volatile void*>(std::addressof(on_open))));
    }

    /// The state now (it may change as soon as it is read when other threads use the socket).
    [[nodiscard]] socket_state state() const noexcept
    {
        return static_cast<socket_state>(SyncPolicy::load(state_));
    }

    /// The socket handle given to create.
    [[nodiscard]] SOCKET_HANDLE socket_handle() const noexcept
    {
        return socket_;
    }

    /// The policy objects, for tests and for policies that report statistics.
    [[nodiscard]] Backend& backend() noexcept
    {
        return backend_;
    }
    /// The AllocPolicy object, for tests and statistics.
    [[nodiscard]] AllocPolicy& allocator() noexcept
    {
        return alloc_;
    }

    basic_async_socket(const basic_async_socket&) = delete;
    basic_async_socket& operator=(const basic_async_socket&) = delete;

private:
    using io_state = typename Backend::io_state;
    using buffer_type = typename Backend::buffer_type;
    using context_header = detail::io_context_header<io_state>;
    using layout = detail::io_context_layout<context_header, buffer_type>;

    static constexpr bool skip_mode = completes_at_once<Backend>();

    /// A backend that completes IO at once: one complete_at_once running on this thread, for one socket. An IO of that
    /// socket that finishes at once while it runs (started from a callback it called) is appended here and completed
    /// when that callback returns, so that a chain of such IO does not recurse without bound. The frames of one thread
    /// form a stack, at most one per socket; a frame runs inside the send_async/receive_async that made it, so close()
    /// of its socket (on another thread) waits for it through the pending-call count.
    struct inline_frame
    {
        const basic_async_socket* owner;
        context_header* head;
        context_header* tail;
        inline_frame* outer;
    };
    static inline thread_local inline_frame* inline_frames_ = nullptr;

    /// True when this thread is completing, at once, an IO of this socket: close() would then wait for the
    /// send_async/receive_async further out on this very thread.
    [[nodiscard]] bool completing_at_once_here() const noexcept
    {
        if constexpr (skip_mode)
        {
            for (const inline_frame* frame = inline_frames_; frame != nullptr; frame = frame->outer)
            {
                if (frame->owner == this)
                {
                    return true;
                }
            }
        }
        return false;
    }

    basic_async_socket(SOCKET_HANDLE socket, Backend&& backend, const AllocPolicy& alloc) noexcept
        : socket_(socket), backend_(std::move(backend)), alloc_(alloc)
    {
    }

    ~basic_async_socket()
    {
        if (detail::dispatching(this) || completing_at_once_here())
        {
            detail::usage_violation("a socket was destroyed from inside one of its own completion callbacks");
        }

        // Codes_SRS_ASYNC_SOCKET_WIN32_01_093: [ While async_socket is OPENING or CLOSING, async_socket_destroy shall
        // wait for the open to complete either successfully or with error. ]
        for (std::int32_t seen = SyncPolicy::load(state_); seen == static_cast<std::int32_t>(socket_state::opening) ||
                                                           seen == static_cast<std::int32_t>(socket_state::closing);
             seen = SyncPolicy::load(state_))
        {
            SyncPolicy::wait(state_, seen);
        }

        // Codes_SRS_ASYNC_SOCKET_WIN32_01_006: [ async_socket_destroy shall perform an implicit close if
        // async_socket is OPEN. ]
        (void)close();

        // Codes_SRS_ASYNC_SOCKET_WIN32_01_005: [ Otherwise, async_socket_destroy shall free all resources
        // associated with async_socket. ]
        release_backend();
    }

    /// send_async and receive_async: one path, the direction a template parameter. Each step carries the
    /// markers of both directions' requirements.
    template <detail::io_kind Kind, class Callback>
    status submit(const ASYNC_SOCKET_BUFFER* buffers, std::uint32_t buffer_count, Callback on_complete,
                  void* on_complete_context) noexcept
    {
        return submit_io<Kind>(buffers, buffer_count,
                               c_callback_binder<Kind, Callback>{{}, on_complete, on_complete_context});
    }

    template <detail::io_kind Kind, class Handler>
    status submit_with_handler(std::span<const ASYNC_SOCKET_BUFFER> buffers, Handler&& handler) noexcept
    {
        if (buffers.size() > UINT32_MAX)
        {
            return status::size_overflow;
        }
        return submit_io<Kind>(buffers.data(), static_cast<std::uint32_t>(buffers.size()),
                               handler_binder<Kind, Handler>{std::addressof(handler)});
    }

    /// The awaiters' path (co_await async_send/async_receive without a stop_token, detail/io_awaiter.hpp): the
    /// context holds a pointer to the awaiter and its completion calls awaiter->complete(result), so there is no
    /// handler object to place in the context, move out and destroy per IO.
    template <bool IsSend, class Awaiter>
    status start_awaited(std::span<const ASYNC_SOCKET_BUFFER> buffers, Awaiter* awaiter) noexcept
    {
        constexpr detail::io_kind kind = IsSend ? detail::io_kind::send : detail::io_kind::receive;
        if (buffers.size() > UINT32_MAX)
        {
            return status::size_overflow;
        }
        return submit_io<kind>(buffers.data(), static_cast<std::uint32_t>(buffers.size()),
                               awaiter_binder<kind, Awaiter>{{}, awaiter});
    }
    template <bool IsSend>
    friend struct detail::transfer_operation;

    template <detail::io_kind Kind, class Handler>
    status submit_cancellable(std::span<const ASYNC_SOCKET_BUFFER> buffers, Handler&& handler,
                              std::stop_token& stop) noexcept
    {
        if (buffers.size() > UINT32_MAX)
        {
            return status::size_overflow;
        }
        return submit_io<Kind>(buffers.data(), static_cast<std::uint32_t>(buffers.size()),
                               cancellable_binder<Kind, Handler>{std::addressof(handler), &stop});
    }

    /// The hooks of a binder that has nothing to undo, to check first or to do when the backend takes the IO.
    struct binder_without_hooks
    {
        static void unbind(context_header*) noexcept {}
        static constexpr status ready() noexcept
        {
            return status::ok;
        }
        static void pending(basic_async_socket&, context_header*) noexcept {}
        static void at_once(context_header*) noexcept {}
    };

    /// Who is told of an IO's completion, as submit_io stores it in the context: the spec's callback and its
    /// context, a C++ handler (held in the context after the buffer array), possibly with a stop_token, or an
    /// awaiter (its address where the callback context goes).
    /// Besides bind/unbind a binder has two hooks: pending (the backend accepted the IO) and at_once (it finished
    /// during the call).
    template <detail::io_kind Kind, class Callback>
    struct c_callback_binder : binder_without_hooks
    {
        Callback on_complete;
        void* on_complete_context;
        static constexpr std::size_t storage_size = 0;
        static constexpr std::size_t storage_alignment = 1;

        [[nodiscard]] bool valid() const noexcept
        {
            return on_complete != nullptr;
        }
        [[nodiscard]] status bind(context_header* context) const noexcept
        {
            if constexpr (Kind == detail::io_kind::send)
            {
                context->on_send_complete = on_complete;
            }
            else
            {
                context->on_receive_complete = on_complete;
            }
            context->callback_context = on_complete_context;
            return status::ok;
        }
    };

    template <detail::io_kind Kind, class Awaiter>
    struct awaiter_binder : binder_without_hooks
    {
        Awaiter* awaiter;
        static constexpr std::size_t storage_size = 0;
        static constexpr std::size_t storage_alignment = 1;

        [[nodiscard]] static constexpr bool valid() noexcept
        {
            return true;
        }
        [[nodiscard]] status bind(context_header* context) const noexcept
        {
            context->callback_context = awaiter;
            context->complete_handler = &complete_awaiter<Kind, Awaiter>;
            return status::ok;
        }
    };

    /// The completion of an awaiter's IO: the result is made, the context freed, then the awaiter told.
    template <detail::io_kind Kind, class Awaiter>
    static void complete_awaiter(void* owner, context_header* context, io_result result, bool closing) noexcept
    {
        const auto handed = make_result<Kind>(context, result, closing, false); // before the context goes
        auto* awaiter = static_cast<Awaiter*>(context->callback_context);
        static_cast<basic_async_socket*>(owner)->dealloc_context(context);
        awaiter->complete(handed);
    }

    template <detail::io_kind Kind, class Handler>
    struct handler_binder
    {
        using handler_type = std::decay_t<Handler>;
        static_assert(alignof(handler_type) <= alignof(std::max_align_t),
                      "a handler aligned beyond std::max_align_t does not fit in an IO context");
        std::remove_reference_t<Handler>* source;
        static constexpr std::size_t storage_size = sizeof(handler_type);
        static constexpr std::size_t storage_alignment = alignof(handler_type);

        [[nodiscard]] bool valid() const noexcept
        {
            if constexpr (std::is_pointer_v<handler_type> || std::is_member_pointer_v<handler_type>)
            {
                return *source != nullptr;
            }
            else
            {
                return true;
            }
        }
        [[nodiscard]] status bind(context_header* context) const noexcept
        {
            const status made = construct_handler<handler_type>(handler_storage(context, storage_alignment),
                                                                std::forward<Handler>(*source));
            if (made == status::ok)
            {
                context->complete_handler = &complete_with_handler<Kind, handler_type>;
            }
            return made;
        }
        static void unbind(context_header* context) noexcept
        {
            std::launder(static_cast<handler_type*>(handler_storage(context, storage_alignment)))->~handler_type();
        }
        static constexpr status ready() noexcept
        {
            return status::ok;
        }
        static void pending(basic_async_socket&, context_header*) noexcept {}
        static void at_once(context_header*) noexcept {}
    };

    /// Moves or copies a handler into its place in the context; a throw becomes the call's status.
    template <class HandlerType, class Source>
    static status construct_handler(void* storage, Source&& source) noexcept
    {
#if defined(__cpp_exceptions)
        try
        {
            ::new (storage) HandlerType(std::forward<Source>(source));
        }
        catch (const std::bad_alloc&)
        {
            return status::out_of_memory;
        }
        catch (...)
        {
            return status::handler_threw;
        }
#else
        ::new (storage) HandlerType(std::forward<Source>(source));
#endif
        return status::ok;
    }

    /// Per-IO cancellation: the block after the handler of a cancellable IO. The stop_callback (which calls
    /// Backend::cancel_one) can only be registered once the backend has accepted the IO, and by then the IO may
    /// have completed on another thread. So the submitter and the completion count down `arm` from 2: the
    /// completion that comes first leaves its result here, and whichever of the two comes second finishes the IO
    /// (unregisters the stop_callback, frees the context, runs the handler). Unregistering waits for a cancel_one
    /// under way on another thread, so cancel_one never sees a freed context.
    struct cancel_block
    {
        /// What the stop_callback runs: marks the cancel requested and asks the backend to cancel the IO.
        struct canceller
        {
            basic_async_socket* socket; ///< the IO's socket
            context_header* context;    ///< the IO's context
            cancel_block* block;        ///< the block in that context
            /// Requests the cancel, then Backend::cancel_one.
            void operator()() const noexcept
            {
                block->requested.store(true, std::memory_order_release);
                socket->backend_.cancel_one(context->io); // may complete the IO on this thread: nothing after it
            }
        };
        using callback_type = std::stop_callback<canceller>;

        typename SyncPolicy::word_type arm;
        std::atomic<bool> requested;
        bool armed;   ///< the stop_callback is registered
        bool closing; ///< the completion's, when it came first
        io_result result;
        alignas(callback_type) std::byte callback[sizeof(callback_type)];

        callback_type* registered() noexcept
        {
            return std::launder(reinterpret_cast<callback_type*>(callback));
        }
    };

    template <detail::io_kind Kind, class Handler>
    struct cancellable_binder
    {
        using handler_type = std::decay_t<Handler>;
        static_assert(alignof(handler_type) <= alignof(std::max_align_t),
                      "a handler aligned beyond std::max_align_t does not fit in an IO context");
        std::remove_reference_t<Handler>* source;
        std::stop_token* stop;
        static constexpr std::size_t storage_alignment = std::max(alignof(handler_type), alignof(cancel_block));
        static constexpr std::size_t block_offset = detail::round_up(sizeof(handler_type), alignof(cancel_block));
        static constexpr std::size_t storage_size = block_offset + sizeof(cancel_block);

        static handler_type* handler_of(context_header* context) noexcept
        {
            return std::launder(static_cast<handler_type*>(handler_storage(context, storage_alignment)));
        }
        static cancel_block* block_of(context_header* context) noexcept
        {
            return std::launder(reinterpret_cast<cancel_block*>(
                static_cast<std::byte*>(handler_storage(context, storage_alignment)) + block_offset));
        }

        [[nodiscard]] bool valid() const noexcept
        {
            return handler_binder<Kind, Handler>{source}.valid();
        }
        [[nodiscard]] status ready() const noexcept
        {
            return stop->stop_requested() ? status::cancelled : status::ok;
        }
        [[nodiscard]] status bind(context_header* context) const noexcept
        {
            const status made = construct_handler<handler_type>(handler_storage(context, storage_alignment),
                                                                std::forward<Handler>(*source));
            if (made != status::ok)
            {
                return made;
            }
            auto* block = ::new (static_cast<std::byte*>(handler_storage(context, storage_alignment)) + block_offset)
                cancel_block;
            SyncPolicy::store(block->arm, 2);
            block->requested.store(false, std::memory_order_relaxed);
            block->armed = false;
            block->closing = false;
            block->result = io_result{io_outcome::success, 0, 0};
            context->complete_handler = &complete;
            return status::ok;
        }
        static void unbind(context_header* context) noexcept
        {
            block_of(context)->~cancel_block();
            handler_of(context)->~handler_type();
        }
        /// The IO is accepted: register the stop_callback (it runs at once if a stop came meanwhile), then count
        /// down; a completion that came first left the IO to this thread.
        void pending(basic_async_socket& socket, context_header* context) const noexcept
        {
            cancel_block* block = block_of(context);
            if (stop->stop_possible())
            {
                ::new (block->callback) typename cancel_block::callback_type(
                    std::move(*stop), typename cancel_block::canceller{&socket, context, block});
                block->armed = true;
            }
            if (SyncPolicy::decrement(block->arm) == 0)
            {
                detail::dispatch_scope scope(&socket);
                finish(&socket, context);
            }
        }
        /// Finished during the call: no stop_callback; only the completion counts down.
        static void at_once(context_header* context) noexcept
        {
            SyncPolicy::store(block_of(context)->arm, 1);
        }

        static void complete(void* owner, context_header* context, io_result result, bool closing) noexcept
        {
            cancel_block* block = block_of(context);
            block->result = result;
            block->closing = closing;
            if (SyncPolicy::decrement(block->arm) == 0)
            {
                finish(static_cast<basic_async_socket*>(owner), context);
            }
        }

        static void finish(basic_async_socket* socket, context_header* context) noexcept
        {
            cancel_block* block = block_of(context);
            if (block->armed)
            {
                std::destroy_at(block->registered()); // waits for a cancel_one under way on another thread
            }
            const io_result result = block->result;
            const bool closing = block->closing;
            const bool cancelled =
                block->requested.load(std::memory_order_acquire) && result.outcome == io_outcome::cancelled && !closing;
            block->~cancel_block();
            finish_with_handler<Kind>(socket, context, handler_of(context), result, closing, cancelled);
        }
    };

    template <detail::io_kind Kind, class Binder>
    status submit_io(const ASYNC_SOCKET_BUFFER* buffers, std::uint32_t buffer_count, const Binder& binder) noexcept
    {
        constexpr bool is_send = Kind == detail::io_kind::send;
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_025: [ If buffers is NULL, async_socket_send_async shall fail and return a
        // non-zero value. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_085: [ If buffer_count is 0, async_socket_send_async shall fail and return
        // a non-zero value. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_089: [ If any of the buffers in payload has buffer set to NULL,
        // async_socket_send_async shall fail and return a non-zero value. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_090: [ If any of the buffers in payload has length set to 0,
        // async_socket_send_async shall fail and return a non-zero value. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_101: [ If the sum of buffer lengths for all the buffers in payload is
        // greater than UINT32_MAX, async_socket_send_async shall fail and return a non-zero value. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_074: [ If buffers is NULL, async_socket_receive_async shall fail and return
        // a non-zero value. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_086: [ If buffer_count is 0, async_socket_receive_async shall fail and
        // return a non-zero value. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_091: [ If any of the buffers in payload has buffer set to NULL,
        // async_socket_receive_async shall fail and return a non-zero value. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_092: [ If any of the buffers in payload has length set to 0,
        // async_socket_receive_async shall fail and return a non-zero value. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_096: [ If the sum of buffer lengths for all the buffers in payload is
        // greater than UINT32_MAX, async_socket_receive_async shall fail and return a non-zero value. ]
        std::uint32_t total_length = 0;
        if (status checked = check_buffers(buffers, buffer_count, total_length); checked != status::ok)
        {
            return checked;
        }
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_026: [ If on_send_complete is NULL, async_socket_send_async shall fail and
        // return a non-zero value. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_075: [ If on_receive_complete is NULL, async_socket_receive_async shall
        // fail and return a non-zero value. ]
        if (!binder.valid())
        {
            return status::invalid_argument;
        }
        if (status ready = binder.ready(); ready != status::ok)
        {
            return ready;
        }
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_027: [ on_send_complete_context shall be allowed to be NULL. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_076: [ on_receive_complete_context shall be allowed to be NULL. ]

        api_call_guard guard(*this);
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_097: [ If async_socket is not OPEN, async_socket_send_async shall fail and
        // return a non-zero value. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_098: [ If async_socket is not OPEN, async_socket_receive_async shall fail
        // and return a non-zero value. ]
        if (!guard.socket_is_open())
        {
            return status::invalid_state;
        }

        // Codes_SRS_ASYNC_SOCKET_WIN32_01_028: [ Otherwise async_socket_send_async shall create a context for the
        // send where the payload, on_send_complete and on_send_complete_context shall be stored. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_050: [ The context shall also allocate enough memory to keep an array of
        // buffer_count WSABUF items. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_103: [ If the amount of memory needed to allocate the context and the WSABUF
        // items is exceeding UINT32_MAX, async_socket_send_async shall fail and return a non-zero value. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_077: [ Otherwise async_socket_receive_async shall create a context for the
        // send where the payload, on_receive_complete and on_receive_complete_context shall be stored. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_078: [ The context shall also allocate enough memory to keep an array of
        // buffer_count WSABUF items. ]
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_104: [ If the amount of memory needed to allocate the context and the
        // WSABUF items is exceeding UINT32_MAX, async_socket_receive_async shall fail and return a non-zero value. ]
        // (The buffers are pointed at the payload by Backend::set_buffer, SRS 01_056/079.)
        context_header* context = nullptr;
        if (status made = make_context(buffers, buffer_count, total_length, Kind, Binder::storage_size,
                                       Binder::storage_alignment, context);
            made != status::ok)
        {
            // Codes_SRS_ASYNC_SOCKET_WIN32_01_029: [ If any error occurs, async_socket_send_async shall fail and
            // return a non-zero value. ]
            // Codes_SRS_ASYNC_SOCKET_WIN32_01_084: [ If any error occurs, async_socket_receive_async shall fail and
            // return a non-zero value. ]
            return made;
        }
        if (status bound = binder.bind(context); bound != status::ok)
        {
            dealloc_context(context);
            return bound;
        }

        // The backend starts the IO (on Win32: the event, StartThreadpoolIo, WSASend/WSARecv, SRS 01_057/060/061
        // and 01_080/081/082; CancelThreadpoolIo when it fails, SRS 01_062/054).
        submit_result started{};
        if constexpr (is_send)
        {
            started = backend_.submit_send(context->io, layout::buffers(context), buffer_count);
        }
        else
        {
            started = backend_.submit_receive(context->io, layout::buffers(context), buffer_count);
        }
        return conclude_submit(context, binder, started);
    }

    /// What the backend's answer to a submit means for the call (every kind of IO).
    template <class Binder>
    status conclude_submit(context_header* context, const Binder& binder, submit_result started) noexcept
    {
        if (started.status == submit_status::pending)
        {
            // The context now belongs to the completion; it may already be freed (a cancellable IO's binder holds
            // it until its stop_callback is registered).
            binder.pending(*this, context);
            // Codes_SRS_ASYNC_SOCKET_WIN32_01_045: [ On success, async_socket_send_async shall return 0. ]
            // Codes_SRS_ASYNC_SOCKET_WIN32_01_083: [ On success, async_socket_receive_async shall return 0. ]
            return status::ok;
        }
        if (skip_mode && started.status == submit_status::completed_at_once)
        {
            Binder::at_once(context);
            complete_at_once(context, started.value);
            return status::ok;
        }
        // Refused: no completion will come (SRS 01_029/084: any error fails the call).
        Binder::unbind(context);
        dealloc_context(context);
        return status::os_error;
    }

    /// The backend's block of an accept or a connect (accept_area, connect_area).
    template <detail::io_kind Kind>
    static auto operation_area_of() noexcept
    {
        if constexpr (Kind == detail::io_kind::accept)
        {
            return std::type_identity<typename Backend::accept_area>{};
        }
        else
        {
            return std::type_identity<typename Backend::connect_area>{};
        }
    }
    template <detail::io_kind Kind>
    using operation_area = typename decltype(operation_area_of<Kind>())::type;

    /// An accept's or connect's area sits where a send's buffer array would: this many buffer_type places hold it,
    /// so that the handler after it is found as for a send (handler_storage).
    template <class Area>
    static constexpr std::uint32_t area_slots = static_cast<std::uint32_t>((sizeof(Area) + sizeof(buffer_type) - 1) /
                                                                           sizeof(buffer_type));

    template <class Area>
    static Area* area_of(context_header* context) noexcept
    {
        static_assert(layout::buffers_offset % alignof(Area) == 0, "the backend's area is aligned beyond its buffers");
        return std::launder(reinterpret_cast<Area*>(layout::buffers(context)));
    }

    /// accept_async and connect_async: one path like a send's, with the backend's area in place of the buffers.
    template <detail::io_kind Kind, class Binder>
    status submit_operation(const socket_address* address, const Binder& binder) noexcept
    {
        using area_type = operation_area<Kind>;
        if (!binder.valid() || (address != nullptr && address->empty()))
        {
            return status::invalid_argument;
        }
        if (status ready = binder.ready(); ready != status::ok)
        {
            return ready;
        }
        api_call_guard guard(*this);
        if (!guard.socket_is_open())
        {
            return status::invalid_state;
        }
        context_header* context = nullptr;
        if (status made = allocate_context(area_slots<area_type>, 0, Kind, Binder::storage_size,
                                           Binder::storage_alignment, context);
            made != status::ok)
        {
            return made;
        }
        area_type* area = ::new (static_cast<void*>(layout::buffers(context))) area_type;
        if (status bound = binder.bind(context); bound != status::ok)
        {
            dealloc_context(context);
            return bound;
        }
        submit_result started{};
        if constexpr (Kind == detail::io_kind::accept)
        {
            started = backend_.submit_accept(context->io, *area);
        }
        else
        {
            started = backend_.submit_connect(context->io, *area, *address);
        }
        return conclude_submit(context, binder, started);
    }

    /// Counts a send_async/receive_async under way, so that close can wait for it (SRS 01_020). The count is
    /// raised before the state is read and lowered on every way out: close switches to CLOSING first and
    /// then waits for zero, so no call can slip past a close.
    ///
    /// A closer that waits adds closer_waiting to the count, so the call that lowers the count to
    /// closer_waiting knows from the decrement's own result that it must wake it: nothing of the socket is
    /// read after the decrement (the closer may return and the socket be destroyed at once), and calls
    /// pay no wake when nobody closes.
    static constexpr std::int32_t closer_waiting = 0x40000000;

    class api_call_guard
    {
    public:
        explicit api_call_guard(basic_async_socket& socket) noexcept
            : calls_(socket.pending_calls_), state_(socket.state_)
        {
            SyncPolicy::increment(calls_);
        }
        ~api_call_guard()
        {
            if (SyncPolicy::decrement(calls_) == closer_waiting)
            {
                SyncPolicy::wake_all(calls_); // by address only
            }
        }
        api_call_guard(const api_call_guard&) = delete;
        api_call_guard& operator=(const api_call_guard&) = delete;

        [[nodiscard]] bool socket_is_open() const noexcept
        {
            return SyncPolicy::load(state_) == static_cast<std::int32_t>(socket_state::open);
        }

    private:
        typename SyncPolicy::word_type& calls_;
        typename SyncPolicy::word_type& state_;
    };

    /// close: waits until no send_async/receive_async is under way (SRS 01_020).
    void wait_for_api_calls() noexcept
    {
        add_to_calls(closer_waiting);
        for (std::int32_t calls = SyncPolicy::load(pending_calls_); calls != closer_waiting;
             calls = SyncPolicy::load(pending_calls_))
        {
            SyncPolicy::wait(pending_calls_, calls);
        }
        add_to_calls(-closer_waiting);
    }

    /// Adds to the count with a compare-exchange loop: calls may raise and lower it meanwhile.
    void add_to_calls(std::int32_t amount) noexcept
    {
        std::int32_t seen = SyncPolicy::load(pending_calls_);
        for (;;)
        {
            const std::int32_t previous = SyncPolicy::compare_exchange(pending_calls_, seen + amount, seen);
            if (previous == seen)
            {
                return;
            }
            seen = previous;
        }
    }

    bool transition(socket_state from, socket_state to) noexcept
    {
        return SyncPolicy::compare_exchange(state_, static_cast<std::int32_t>(to), static_cast<std::int32_t>(from)) ==
               static_cast<std::int32_t>(from);
    }

    void set_state(socket_state to) noexcept
    {
        SyncPolicy::store(state_, static_cast<std::int32_t>(to));
        SyncPolicy::wake_all(state_);
    }

    /// The backend's binding is made once and kept until destroy (see the header comment).
    bool bind_backend() noexcept
    {
        if (!backend_.template bind<&basic_async_socket::on_io_complete>(socket_, this))
        {
            return false;
        }
        bound_ = true;
        return true;
    }

    void release_backend() noexcept
    {
        if (bound_)
        {
            backend_.unbind();
            bound_ = false;
        }
    }

    /// Validates a payload and sums its lengths (SRS 01_025/085/089/090/101 and 01_074/086/091/092/096).
    ASYNC_SOCKET_ALWAYS_INLINE static status
    check_buffers(const ASYNC_SOCKET_BUFFER* buffers, std::uint32_t buffer_count, std::uint32_t& total_length) noexcept
    {
        if (buffers == nullptr || buffer_count == 0)
        {
            return status::invalid_argument;
        }
        std::uint64_t total = 0;
        for (std::uint32_t i = 0; i < buffer_count; ++i)
        {
            if (buffers[i].buffer == nullptr || buffers[i].length == 0)
            {
                return status::invalid_argument;
            }
            total += buffers[i].length;
        }
        if (total > UINT32_MAX)
        {
            return status::size_overflow;
        }
        total_length = static_cast<std::uint32_t>(total);
        return status::ok;
    }

    /// Allocates a context with `buffer_count` OS buffers pointing at `buffers`. Its io_state is the
    /// backend's to initialise when it submits.
    /// `handler_size` more bytes (aligned to `handler_alignment`) after the buffer array hold a C++ handler.
    ASYNC_SOCKET_ALWAYS_INLINE status make_context(const ASYNC_SOCKET_BUFFER* buffers, std::uint32_t buffer_count,
                                                   std::uint32_t total_length, detail::io_kind kind,
                                                   std::size_t handler_size, std::size_t handler_alignment,
                                                   context_header*& context) noexcept
    {
        context_header* made = nullptr;
        if (status allocated =
                allocate_context(buffer_count, total_length, kind, handler_size, handler_alignment, made);
            allocated != status::ok)
        {
            return allocated;
        }
        buffer_type* os_buffers = layout::buffers(made);
        for (std::uint32_t i = 0; i < buffer_count; ++i)
        {
            Backend::set_buffer(*::new (&os_buffers[i]) buffer_type{}, buffers[i].buffer, buffers[i].length);
        }
        context = made;
        return status::ok;
    }

    /// A context with room for `buffer_count` OS buffers (not yet made) and `handler_size` bytes of handler.
    ASYNC_SOCKET_ALWAYS_INLINE status allocate_context(std::uint32_t buffer_count, std::uint32_t total_length,
                                                       detail::io_kind kind, std::size_t handler_size,
                                                       std::size_t handler_alignment, context_header*& context) noexcept
    {
        std::uint64_t size = layout::size(buffer_count);
        if (handler_size != 0)
        {
            size = detail::round_up(size, handler_alignment) + handler_size;
        }
        if (size > UINT32_MAX)
        {
            return status::size_overflow;
        }
        void* memory = alloc_.allocate(static_cast<std::size_t>(size));
        if (memory == nullptr)
        {
            return status::out_of_memory;
        }
        // Field by field rather than value-initialised: g++ zeroes a whole header with `rep stosq`, slow to
        // start on a block this short (about 12 instructions per IO, docs/benchmarks.md).
        auto* made = ::new (memory) context_header;
        made->callback_context = nullptr;
        made->on_send_complete = nullptr;
        made->on_receive_complete = nullptr;
        made->complete_handler = nullptr;
        made->context_size = static_cast<std::uint32_t>(size);
        made->total_length = total_length;
        made->buffer_count = buffer_count;
        made->kind = kind;
        made->bytes_at_once = 0;
        made->next_at_once = nullptr;
        context = made;
        return status::ok;
    }

    void dealloc_context(context_header* context) noexcept
    {
        const std::size_t size = context->context_size;
        context->~context_header();
        alloc_.deallocate(context, size);
    }

    /// Where a C++ handler lives in its context: after the buffer array.
    static void* handler_storage(context_header* context, std::size_t alignment) noexcept
    {
        return reinterpret_cast<std::byte*>(context) + detail::round_up(layout::size(context->buffer_count), alignment);
    }

    /// The completion of an IO with a C++ handler: the handler leaves the context, the context is freed (so that
    /// the handler can start the next IO in the same memory), then the handler runs and is destroyed. A handler
    /// whose move may throw runs where it is instead, and the context goes after it.
    template <detail::io_kind Kind, class Handler>
    static void complete_with_handler(void* owner, context_header* context, io_result result, bool closing) noexcept
    {
        finish_with_handler<Kind>(static_cast<basic_async_socket*>(owner), context,
                                  std::launder(static_cast<Handler*>(handler_storage(context, alignof(Handler)))),
                                  result, closing, false);
    }

    template <detail::io_kind Kind, class Handler>
    ASYNC_SOCKET_ALWAYS_INLINE static void finish_with_handler(basic_async_socket* self, context_header* context,
                                                               Handler* stored, io_result result, bool closing,
                                                               bool cancelled) noexcept
    {
        auto handed = make_result<Kind>(context, result, closing, cancelled); // before the context goes
        if constexpr (std::is_nothrow_move_constructible_v<Handler>)
        {
            Handler handler(std::move(*stored));
            stored->~Handler();
            self->dealloc_context(context);
            handler(std::move(handed));
        }
        else
        {
            (*stored)(std::move(handed));
            stored->~Handler();
            self->dealloc_context(context);
        }
    }

    /// What a C++ handler of an IO of kind Kind is given. `cancelled`: the IO's stop_token asked for it and the
    /// backend reported it cancelled (close wins over it). An accepted socket is taken from the backend's area here,
    /// once, and only for a successful accept.
    template <detail::io_kind Kind>
    ASYNC_SOCKET_ALWAYS_INLINE static auto make_result(context_header* context, io_result result, bool closing,
                                                       bool cancelled) noexcept
    {
        std::error_code error = detail::no_error(); // not `error;`: that calls std::system_category() per IO
        if (result.outcome != io_outcome::success && result.os_code != 0)
        {
            error = std::error_code(static_cast<int>(result.os_code), detail::os_error_category<Backend>());
        }
        const std::uint32_t total_length = context->total_length;
        if constexpr (Kind == detail::io_kind::send)
        {
            const ASYNC_SOCKET_SEND_RESULT mapped = map_send_result(result, total_length, closing);
            return send_result{cancelled                           ? io_completion::cancelled
                               : mapped == ASYNC_SOCKET_SEND_OK    ? io_completion::ok
                               : mapped == ASYNC_SOCKET_SEND_ERROR ? io_completion::error
                                                                   : io_completion::because_close,
                               error};
        }
        else if constexpr (Kind == detail::io_kind::receive)
        {
            const receive_outcome mapped = map_receive_result(result, total_length, closing);
            return receive_result{cancelled                                     ? io_completion::cancelled
                                  : mapped.result == ASYNC_SOCKET_RECEIVE_OK    ? io_completion::ok
                                  : mapped.result == ASYNC_SOCKET_RECEIVE_ERROR ? io_completion::error
                                                                                : io_completion::because_close,
                                  mapped.bytes, error};
        }
        else
        {
            // An accept or a connect that succeeded is ok even when close came meanwhile (as a send is): an
            // accepted socket is never lost.
            const io_completion completion = cancelled                               ? io_completion::cancelled
                                             : result.outcome == io_outcome::success ? io_completion::ok
                                             : closing                               ? io_completion::because_close
                                                                                     : io_completion::error;
            if constexpr (Kind == detail::io_kind::accept)
            {
                accept_result accepted{completion, nullptr, {}, error};
                if (completion == io_completion::ok)
                {
                    accepted.socket = Backend::take_accepted(*area_of<operation_area<Kind>>(context), accepted.peer);
                }
                return accepted;
            }
            else
            {
                return connect_result{completion, error};
            }
        }
    }

    /// The IO finished at once and no completion will be delivered for it (the backend has undone what it
    /// started). It is completed here, on the calling thread, like any other: once, context freed first.
    void complete_at_once(context_header* context, std::uint32_t bytes) noexcept
    {
        context->bytes_at_once = bytes;
        context->next_at_once = nullptr;
        for (inline_frame* frame = inline_frames_; frame != nullptr; frame = frame->outer)
        {
            if (frame->owner == this)
            {
                // This socket's complete_at_once further out on this thread runs it when its callback returns.
                if (frame->tail != nullptr)
                {
                    frame->tail->next_at_once = context;
                }
                else
                {
                    frame->head = context;
                }
                frame->tail = context;
                return;
            }
        }
        inline_frame frame{this, context, context, inline_frames_};
        inline_frames_ = &frame;
        while (frame.head != nullptr)
        {
            context_header* next = frame.head;
            frame.head = next->next_at_once;
            if (frame.head == nullptr)
            {
                frame.tail = nullptr;
            }
            on_io_complete(this, &next->io, io_result{io_outcome::success, 0, next->bytes_at_once});
        }
        inline_frames_ = frame.outer;
    }

    /// The completion routine for every IO of this socket (given to Backend::bind).
    static void on_io_complete(void* owner, void* io, io_result result) noexcept
    {
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_063: [ If overlapped is NULL, on_io_complete shall return. ]
        if (io == nullptr)
        {
            return;
        }
        auto* self = static_cast<basic_async_socket*>(owner);
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_064: [ overlapped shall be used to determine the context of the IO. ]
        // (The io_state, whose first member is the OVERLAPPED on Win32, is the context's first member.)
        auto* context = reinterpret_cast<context_header*>(io);

        const bool closing = SyncPolicy::load(self->state_) == static_cast<std::int32_t>(socket_state::closing);
        const detail::io_kind kind = context->kind;
        const std::uint32_t total_length = context->total_length;
        void* const user_context = context->callback_context;
        const ON_ASYNC_SOCKET_SEND_COMPLETE on_send_complete = context->on_send_complete;
        const ON_ASYNC_SOCKET_RECEIVE_COMPLETE on_receive_complete = context->on_receive_complete;
        if (context->complete_handler != nullptr)
        {
            // A C++ handler: its completion frees the context before the handler runs, as below (SRS 01_072).
            detail::dispatch_scope scope(self);
            context->complete_handler(self, context, result, closing);
            return;
        }

        // The context is released before the user's callback runs, so that the callback can start the next IO
        // and reuse the memory. (The backend has closed the IO's event already, SRS 01_068.)
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_072: [ on_io_complete shall free the IO context. ]
        self->dealloc_context(context);

        detail::dispatch_scope scope(self);
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_065: [ If the context of the IO indicates that a send has completed: ]
        if (kind == detail::io_kind::send)
        {
            on_send_complete(user_context, map_send_result(result, total_length, closing));
        }
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_071: [ If the context of the IO indicates that a receive has completed: ]
        else
        {
            const receive_outcome outcome = map_receive_result(result, total_length, closing);
            on_receive_complete(user_context, outcome.result, outcome.bytes);
        }
    }

public:
    /// The result mapping of on_io_complete, exposed so that it can be checked on its own.
    static ASYNC_SOCKET_SEND_RESULT map_send_result(io_result result, std::uint32_t total_length, bool closing) noexcept
    {
        if (result.outcome != io_outcome::success)
        {
            // An IO that fails while the socket is closing was (almost always) cancelled by close.
            // Codes_SRS_ASYNC_SOCKET_WIN32_01_067: [ If io_result is not NO_ERROR, the on_send_complete callback
            // passed to async_socket_send_async shall be called with on_send_complete_context as argument and
            // ASYNC_SOCKET_SEND_ERROR. ]
            return closing ? ASYNC_SOCKET_SEND_BECAUSE_CLOSE : ASYNC_SOCKET_SEND_ERROR;
        }
        if (result.bytes != total_length)
        {
            // Codes_SRS_ASYNC_SOCKET_WIN32_01_102: [ If io_result is NO_ERROR, but the number of bytes send is
            // different than the sum of all buffer sizes passed to async_socket_send_async, the on_send_complete
            // callback passed to async_socket_send_async shall be called with on_send_complete_context as context
            // and ASYNC_SOCKET_SEND_ERROR. ]
            return ASYNC_SOCKET_SEND_ERROR;
        }
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_066: [ If io_result is NO_ERROR, the on_send_complete callback passed to
        // async_socket_send_async shall be called with on_send_complete_context as argument and
        // ASYNC_SOCKET_SEND_OK. ]
        return ASYNC_SOCKET_SEND_OK;
    }

    /// What map_receive_result gives: the C result and the byte count for the callback.
    struct receive_outcome
    {
        ASYNC_SOCKET_RECEIVE_RESULT result; ///< the result the callback gets
        std::uint32_t bytes;                ///< the bytes_received the callback gets
    };

    /// The result mapping of a receive, exposed so that it can be checked on its own: BECAUSE_CLOSE or ERROR (0
    /// bytes) for a failed IO, depending on closing; ERROR with the reported count when it exceeds total_length;
    /// else OK with the count.
    static receive_outcome map_receive_result(io_result result, std::uint32_t total_length, bool closing) noexcept
    {
        const std::size_t bytes_transferred = result.bytes;
        if (result.outcome != io_outcome::success)
        {
            // Codes_SRS_ASYNC_SOCKET_WIN32_01_070: [ If io_result is not NO_ERROR, the on_receive_complete callback
            // passed to async_socket_receive_async shall be called with on_receive_complete_context as context,
            // ASYNC_SOCKET_RECEIVE_ERROR as result and 0 for bytes_received. ]
            return {closing ? ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE : ASYNC_SOCKET_RECEIVE_ERROR, 0};
        }
        if (bytes_transferred > total_length)
        {
            // Codes_SRS_ASYNC_SOCKET_WIN32_01_095: [If io_result is NO_ERROR, but the number of bytes received is
            // greater than the sum of all buffer sizes passed to async_socket_receive_async, the on_receive_complete
            // callback passed to async_socket_receive_async shall be called with on_receive_complete_context as
            // context, ASYNC_SOCKET_RECEIVE_ERROR as result and number_of_bytes_transferred for bytes_received. ]
            const auto reported =
                bytes_transferred > UINT32_MAX ? UINT32_MAX : static_cast<std::uint32_t>(bytes_transferred);
            return {ASYNC_SOCKET_RECEIVE_ERROR, reported};
        }
        // Codes_SRS_ASYNC_SOCKET_WIN32_01_069: [ If io_result is NO_ERROR, the on_receive_complete callback passed
        // to async_socket_receive_async shall be called with on_receive_complete_context as context,
        // ASYNC_SOCKET_RECEIVE_OK as result and number_of_bytes_transferred as bytes_received. ]
        return {ASYNC_SOCKET_RECEIVE_OK, static_cast<std::uint32_t>(bytes_transferred)};
    }

private:
    SOCKET_HANDLE socket_;
    ASYNC_SOCKET_NO_UNIQUE_ADDRESS Backend backend_;
    ASYNC_SOCKET_NO_UNIQUE_ADDRESS AllocPolicy alloc_;
    mutable typename SyncPolicy::word_type state_{static_cast<std::int32_t>(socket_state::closed)};
    mutable typename SyncPolicy::word_type pending_calls_{0};
    bool bound_ = false; ///< the backend's binding exists (made at the first open, released at destroy)
};

} // namespace async_socket
