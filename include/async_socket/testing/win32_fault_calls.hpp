/// @file
/// async_socket testing, Win32: a layer of Win32 calls that makes chosen calls fail, seeded, instead of calling
/// the OS.
///
/// win32_fault_calls<Inner> wraps any Win32 calls layer (Calls of win32_threadpool_backend, threadpool_backend.hpp):
/// the real threadpool one (detail::win32_threadpool_calls<Options>, threadpool.hpp), the completion-port one
/// (detail::win32_iocp_calls<Options>, iocp.hpp), or the fake. Each fallible call asks a win32_fault_plan first;
/// when the plan draws a fault the call returns the failure the real layer would report for it and the OS is
/// never called, otherwise the call goes to Inner unchanged:
///
/// | call (win32_fault_point)        | Win32 call                            | what a fault returns                  |
/// |---------------------------------|---------------------------------------|---------------------------------------|
/// | acquire_pool                    | execution_engine_win32_get_threadpool | false (create fails)                  |
/// | create_cleanup_group            | CreateThreadpoolCleanupGroup          | false (open fails)                    |
/// | create_io                       | CreateThreadpoolIo / CreateIoCompletionPort | false (open fails)              |
/// | set_skip_completion_on_success  | SetFileCompletionNotificationModes    | false (open fails)                    |
/// | create_event                    | CreateEvent                           | NULL; last_error() the plan's error   |
/// | send                            | WSASend                               | the plan's WSA error (as WSASend's) |
/// | receive                         | WSARecv                               | the plan's WSA error (as WSARecv's) |
/// | open_socket                     | WSASocketW (the socket of an accept)  | the plan's WSA error, no socket       |
/// | accept                          | AcceptEx                              | the plan's WSA error (at once)        |
/// | connect                         | ConnectEx                             | the plan's WSA error (at once)        |
///
/// A WSA error is returned as the real layer returns a call that failed with SOCKET_ERROR + WSAGetLastError.
///
/// The plan is owned by the test and shared by every socket's layer (thread-safe):
///   win32_fault_plan plan(seed);
///   plan.set_rate(win32_fault_point::send, 0.03);          // about 3 WSASend in 100 fail (WSAENOBUFS, WSAECONNRESET)
///   using calls = win32_fault_calls<detail::win32_threadpool_calls<win32_options{}>>;
///   using socket = basic_async_socket<win32_threadpool_backend<calls>, fault_alloc, win32_sync>;
///   auto s = socket::create(engine, handle, socket::backend_type(calls(&plan)), fault_alloc(&ledger));
///   ... plan.injected(win32_fault_point::send), plan.live_events() == 0 at the end ...
/// Besides the faults it counts what went through to the OS and is still held: events made and not closed,
/// bindings (CreateThreadpoolIo) not closed, cleanup groups not closed, IO started (StartThreadpoolIo) and neither
/// cancelled nor completed; a test checks them at 0 at the end.
///
/// Whether the k-th call of a kind fails depends only on the seed, the kind and k (splitmix64, fault_alloc.hpp),
/// not on the order in which threads make calls of other kinds. This header includes no Windows header: the
/// types come from Inner, and the error numbers are the documented Win32 values.
#pragma once

#include <async_socket/detail/config.hpp>
#include <async_socket/backend/win32/threadpool_backend.hpp>
#include <async_socket/socket_address.hpp>
#include <async_socket/testing/fault_alloc.hpp>
#include <async_socket/types.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <utility>

namespace async_socket::testing
{

inline constexpr win32_error win32_not_enough_memory = 8;      ///< ERROR_NOT_ENOUGH_MEMORY
inline constexpr win32_error win32_no_system_resources = 1450; ///< ERROR_NO_SYSTEM_RESOURCES
inline constexpr win32_error wsa_no_buffers = 10055;           ///< WSAENOBUFS: no buffer space for the IO
inline constexpr win32_error wsa_too_many_sockets = 10024;     ///< WSAEMFILE: no socket descriptor left

/// A fallible call of a Win32 calls layer that win32_fault_calls can make fail.
enum class win32_fault_point : std::uint8_t
{
    acquire_pool,                   ///< execution_engine_win32_get_threadpool, at create
    create_cleanup_group,           ///< CreateThreadpoolCleanupGroup, at the first open
    create_io,                      ///< CreateThreadpoolIo (or CreateIoCompletionPort), at the first open
    set_skip_completion_on_success, ///< SetFileCompletionNotificationModes, at the first open in skip mode
    create_event,                   ///< CreateEvent, per IO when the layer uses events
    send,                           ///< WSASend, per send
    receive,                        ///< WSARecv, per receive
    open_socket,                    ///< WSASocketW, the socket each accept makes for AcceptEx
    accept,                         ///< AcceptEx, per accept (and per fresh AcceptEx after a skipped connection)
    connect,                        ///< ConnectEx, per connect
};

/// The number of win32_fault_point values.
inline constexpr std::size_t win32_fault_point_count = 10;

/// The name of a fault point as the Win32 call it stands for ("WSASend", ...).
[[nodiscard]] constexpr const char* to_string(win32_fault_point point) noexcept
{
    switch (point)
    {
    case win32_fault_point::acquire_pool:
        return "execution_engine_win32_get_threadpool";
    case win32_fault_point::create_cleanup_group:
        return "CreateThreadpoolCleanupGroup";
    case win32_fault_point::create_io:
        return "CreateThreadpoolIo";
    case win32_fault_point::set_skip_completion_on_success:
        return "SetFileCompletionNotificationModes";
    case win32_fault_point::create_event:
        return "CreateEvent";
    case win32_fault_point::send:
        return "WSASend";
    case win32_fault_point::receive:
        return "WSARecv";
    case win32_fault_point::open_socket:
        return "WSASocketW";
    case win32_fault_point::accept:
        return "AcceptEx";
    case win32_fault_point::connect:
        return "ConnectEx";
    }
    return "?";
}

/// Which calls fail and how, for every win32_fault_calls that shares it, and what they counted. Owned by the test;
/// every member is thread-safe. Rates start at 0 (no fault); the errors at the realistic ones: WSAENOBUFS and
/// WSAECONNRESET for send and receive (drawn in turn by the seed), ERROR_NOT_ENOUGH_MEMORY and
/// ERROR_NO_SYSTEM_RESOURCES for create_event, WSAEMFILE and WSAENOBUFS for open_socket, WSAENOBUFS for accept and
/// connect; the other points report no code (their calls return false).
class win32_fault_plan
{
public:
    /// The most errors one point draws from.
    static constexpr std::size_t max_errors = 4;

    /// A plan seeded with `seed`: the same seed makes the same calls fail.
    explicit win32_fault_plan(std::uint64_t seed = 1) noexcept : seed_(seed)
    {
        set_errors(win32_fault_point::send, {wsa_no_buffers, wsa_connection_reset});
        set_errors(win32_fault_point::receive, {wsa_no_buffers, wsa_connection_reset});
        set_errors(win32_fault_point::create_event, {win32_not_enough_memory, win32_no_system_resources});
        set_errors(win32_fault_point::open_socket, {wsa_too_many_sockets, wsa_no_buffers});
        set_errors(win32_fault_point::accept, {wsa_no_buffers});
        set_errors(win32_fault_point::connect, {wsa_no_buffers});
    }
    win32_fault_plan(const win32_fault_plan&) = delete;
    win32_fault_plan& operator=(const win32_fault_plan&) = delete;

    /// The seed given at construction.
    [[nodiscard]] std::uint64_t seed() const noexcept
    {
        return seed_;
    }

    /// Each later call at `point` fails with probability `rate` (0: never, 1: always).
    void set_rate(win32_fault_point point, double rate) noexcept
    {
        at(point).threshold.store(fault_threshold(rate));
    }

    /// set_rate(point, rate) for every point.
    void set_all_rates(double rate) noexcept
    {
        for (std::size_t i = 0; i < win32_fault_point_count; ++i)
        {
            set_rate(static_cast<win32_fault_point>(i), rate);
        }
    }

    /// The errors a fault at `point` reports, one drawn per fault (the first max_errors; at least one is kept: an
    /// empty list leaves the point's errors as they were). Counts of earlier faults by error are reset.
    void set_errors(win32_fault_point point, std::initializer_list<win32_error> errors) noexcept
    {
        if (errors.size() == 0)
        {
            return;
        }
        point_state& state = at(point);
        std::size_t n = 0;
        for (win32_error error : errors)
        {
            if (n == max_errors)
            {
                break;
            }
            state.errors[n].store(error);
            state.by_error[n].store(0);
            ++n;
        }
        state.error_count.store(n);
    }

    /// Decides one call at `point`: 0 (win32_no_error) to make the call, else the error to report instead (one of the
    /// point's errors; ERROR_NOT_ENOUGH_MEMORY at a point that has none, whose call returns false). Counts the call,
    /// and the fault if one is drawn. What win32_fault_calls asks before each fallible call.
    [[nodiscard]] win32_error draw(win32_fault_point point) noexcept
    {
        point_state& state = at(point);
        const std::uint64_t k = state.calls.fetch_add(1);
        const std::uint64_t threshold = state.threshold.load();
        if (threshold == 0)
        {
            return win32_no_error;
        }
        const std::uint64_t r = splitmix64(seed_ + (static_cast<std::uint64_t>(point) + 1) * 0xD1B54A32D192ED03ull +
                                           k * 0x9E3779B97F4A7C15ull);
        if (!fault_drawn(r, threshold))
        {
            return win32_no_error;
        }
        state.injected.fetch_add(1);
        const std::size_t count = state.error_count.load();
        if (count == 0)
        {
            return win32_not_enough_memory; // a point with no error of its own (its call returns false)
        }
        const std::size_t which = static_cast<std::size_t>(splitmix64(r) % count);
        state.by_error[which].fetch_add(1);
        return state.errors[which].load();
    }

    /// Calls that reached the layer at `point` (faulted or not).
    [[nodiscard]] std::uint64_t calls(win32_fault_point point) const noexcept
    {
        return at(point).calls.load();
    }
    /// Calls at `point` that the plan made fail.
    [[nodiscard]] std::uint64_t injected(win32_fault_point point) const noexcept
    {
        return at(point).injected.load();
    }
    /// Faults at `point` that reported `error` (since the point's errors were last set).
    [[nodiscard]] std::uint64_t injected(win32_fault_point point, win32_error error) const noexcept
    {
        const point_state& state = at(point);
        std::uint64_t sum = 0;
        for (std::size_t i = 0; i < state.error_count.load(); ++i)
        {
            if (state.errors[i].load() == error)
            {
                sum += state.by_error[i].load();
            }
        }
        return sum;
    }
    /// Faults at every point.
    [[nodiscard]] std::uint64_t injected_total() const noexcept
    {
        std::uint64_t sum = 0;
        for (const point_state& state : points_)
        {
            sum += state.injected.load();
        }
        return sum;
    }

    /// Events create_event made (through the OS) and close_event has not taken back yet.
    [[nodiscard]] std::int64_t live_events() const noexcept
    {
        return live_events_.load();
    }
    /// Bindings create_io made (through the OS) and close_io has not closed yet.
    [[nodiscard]] std::int64_t live_bindings() const noexcept
    {
        return live_bindings_.load();
    }
    /// Cleanup groups create_cleanup_group made (through the OS) and close_cleanup_group has not closed yet.
    [[nodiscard]] std::int64_t live_cleanup_groups() const noexcept
    {
        return live_cleanup_groups_.load();
    }
    /// IO started (start_io) and neither cancelled (cancel_io) nor completed through the completion routine.
    [[nodiscard]] std::int64_t outstanding_io() const noexcept
    {
        return outstanding_io_.load();
    }
    /// Completions the OS delivered through the layer's completion routine.
    [[nodiscard]] std::uint64_t completions() const noexcept
    {
        return completions_.load();
    }
    /// send/receive calls that went to the OS and were accepted (their completion will come).
    [[nodiscard]] std::uint64_t accepted_by_os() const noexcept
    {
        return accepted_by_os_.load();
    }

    /// Counted by win32_fault_calls: an event made (+1) or closed (-1).
    void note_event(std::int64_t change) noexcept
    {
        live_events_.fetch_add(change);
    }
    /// Counted by win32_fault_calls: a binding made (+1) or closed (-1).
    void note_binding(std::int64_t change) noexcept
    {
        live_bindings_.fetch_add(change);
    }
    /// Counted by win32_fault_calls: a cleanup group made (+1) or closed (-1).
    void note_cleanup_group(std::int64_t change) noexcept
    {
        live_cleanup_groups_.fetch_add(change);
    }
    /// Counted by win32_fault_calls: an IO started (+1), cancelled or completed (-1).
    void note_io(std::int64_t change) noexcept
    {
        outstanding_io_.fetch_add(change);
    }
    /// Counted by win32_fault_calls: a completion delivered.
    void note_completion() noexcept
    {
        completions_.fetch_add(1);
    }
    /// Counted by win32_fault_calls: a send or receive accepted by the OS.
    void note_accepted() noexcept
    {
        accepted_by_os_.fetch_add(1);
    }

private:
    struct point_state
    {
        std::atomic<std::uint64_t> threshold{0};
        std::atomic<std::uint64_t> calls{0};
        std::atomic<std::uint64_t> injected{0};
        std::atomic<std::size_t> error_count{0};
        std::array<std::atomic<win32_error>, max_errors> errors{};
        std::array<std::atomic<std::uint64_t>, max_errors> by_error{};
    };

    point_state& at(win32_fault_point point) noexcept
    {
        return points_[static_cast<std::size_t>(point)];
    }
    const point_state& at(win32_fault_point point) const noexcept
    {
        return points_[static_cast<std::size_t>(point)];
    }

    std::uint64_t seed_;
    std::array<point_state, win32_fault_point_count> points_{};
    std::atomic<std::int64_t> live_events_{0};
    std::atomic<std::int64_t> live_bindings_{0};
    std::atomic<std::int64_t> live_cleanup_groups_{0};
    std::atomic<std::int64_t> outstanding_io_{0};
    std::atomic<std::uint64_t> completions_{0};
    std::atomic<std::uint64_t> accepted_by_os_{0};
};

namespace detail
{
/// The error of the last create_event fault on this thread, for last_error() right after it (0: none). Trivially
/// destructible, as mingw's thread_local needs.
inline thread_local win32_error fault_last_error = 0;
} // namespace detail

/// A Win32 calls layer (win32_threadpool_calls) that asks a win32_fault_plan before each fallible call of Inner and
/// reports the plan's failure instead of calling the OS when it draws one (see the header comment). Without a plan
/// (default constructed) it is Inner unchanged. One object per socket, like Inner; the plan outlives it.
template <class Inner>
class win32_fault_calls
{
    static_assert(win32_threadpool_calls<Inner>, "Inner must model win32_threadpool_calls (threadpool_backend.hpp)");

public:
    using inner_type = Inner;                                ///< the wrapped layer
    using engine_type = typename Inner::engine_type;         ///< Inner's
    using overlapped_type = typename Inner::overlapped_type; ///< Inner's
    using buffer_type = typename Inner::buffer_type;         ///< Inner's
    using event_type = typename Inner::event_type;           ///< Inner's

    static constexpr bool uses_io_events = Inner::uses_io_events;                         ///< Inner's
    static constexpr bool skip_completion_on_success = Inner::skip_completion_on_success; ///< Inner's

    /// No plan: every call goes to Inner.
    win32_fault_calls() noexcept = default;
    /// Faults (and counts) as `plan` says; plan may be nullptr (no plan).
    explicit win32_fault_calls(win32_fault_plan* plan) noexcept : plan_(plan) {}
    /// Only before the socket binds (create moves the backend in): the completion context is `this` after it.
    win32_fault_calls(win32_fault_calls&& other) noexcept
        : inner_(std::move(other.inner_)), plan_(other.plan_), context_(other.context_)
    {
    }
    win32_fault_calls& operator=(win32_fault_calls&&) = delete;
    win32_fault_calls(const win32_fault_calls&) = delete;
    win32_fault_calls& operator=(const win32_fault_calls&) = delete;
    ~win32_fault_calls() = default;

    /// The wrapped layer.
    [[nodiscard]] Inner& inner() noexcept
    {
        return inner_;
    }
    /// The plan (nullptr: none).
    [[nodiscard]] win32_fault_plan* plan() const noexcept
    {
        return plan_;
    }

    /// Inner's acquire_pool, or false on a fault (the engine is not touched).
    bool acquire_pool(engine_type engine) noexcept
    {
        if (draw(win32_fault_point::acquire_pool) != win32_no_error)
        {
            return false;
        }
        return inner_.acquire_pool(engine);
    }

    /// Inner's (cannot fail).
    void initialize_environment() noexcept
    {
        inner_.initialize_environment();
    }

    /// Inner's (cannot fail).
    void set_callback_pool() noexcept
    {
        inner_.set_callback_pool();
    }

    /// Inner's create_cleanup_group, or false on a fault (no cleanup group is made).
    bool create_cleanup_group() noexcept
    {
        if (draw(win32_fault_point::create_cleanup_group) != win32_no_error)
        {
            return false;
        }
        const bool made = inner_.create_cleanup_group();
        if (made && plan_ != nullptr)
        {
            plan_->note_cleanup_group(+1);
        }
        return made;
    }

    /// Inner's create_io, its completions counted on the way to Completion; or false on a fault (the socket is not
    /// bound, so a later open can still bind it).
    template <win32_completion_routine Completion>
    bool create_io(SOCKET_HANDLE socket, void* callback_context) noexcept
    {
        if (draw(win32_fault_point::create_io) != win32_no_error)
        {
            return false;
        }
        context_ = callback_context;
        const bool made = inner_.template create_io<&win32_fault_calls::counted_completion<Completion>>(socket, this);
        if (made && plan_ != nullptr)
        {
            plan_->note_binding(+1);
        }
        return made;
    }

    /// Inner's, counted.
    void close_io() noexcept
    {
        inner_.close_io();
        if (plan_ != nullptr)
        {
            plan_->note_binding(-1);
        }
    }

    /// Inner's, counted.
    void close_cleanup_group() noexcept
    {
        inner_.close_cleanup_group();
        if (plan_ != nullptr)
        {
            plan_->note_cleanup_group(-1);
        }
    }

    /// Inner's (cannot fail).
    void destroy_environment() noexcept
    {
        inner_.destroy_environment();
    }

    /// Inner's, counted as an IO outstanding.
    void start_io() noexcept
    {
        if (plan_ != nullptr)
        {
            plan_->note_io(+1);
        }
        inner_.start_io();
    }

    /// Inner's, counted.
    void cancel_io() noexcept
    {
        inner_.cancel_io();
        if (plan_ != nullptr)
        {
            plan_->note_io(-1);
        }
    }

    /// Inner's.
    void wait_for_io_callbacks(bool cancel_pending) noexcept
    {
        inner_.wait_for_io_callbacks(cancel_pending);
    }

    /// Inner's create_event; on a fault a value-initialised event (NULL), with the plan's error for last_error().
    event_type create_event() noexcept
    {
        if (const win32_error error = draw(win32_fault_point::create_event); error != win32_no_error)
        {
            detail::fault_last_error = error;
            return event_type{};
        }
        event_type event = inner_.create_event();
        if (event != event_type{} && plan_ != nullptr)
        {
            plan_->note_event(+1);
        }
        return event;
    }

    /// Inner's, counted.
    void close_event(event_type event) noexcept
    {
        inner_.close_event(event);
        if (plan_ != nullptr)
        {
            plan_->note_event(-1);
        }
    }

    /// The error of this thread's last create_event fault, once; else Inner's (GetLastError).
    win32_error last_error() const noexcept
    {
        if (const win32_error injected = std::exchange(detail::fault_last_error, win32_no_error);
            injected != win32_no_error)
        {
            return injected;
        }
        return inner_.last_error();
    }

    /// Inner's (no OS call).
    static void set_overlapped_event(overlapped_type& overlapped, event_type event) noexcept
    {
        Inner::set_overlapped_event(overlapped, event);
    }

    /// Inner's (no OS call).
    static void set_buffer(buffer_type& buffer, void* memory, std::uint32_t length) noexcept
    {
        Inner::set_buffer(buffer, memory, length);
    }

    /// Inner's send (WSASend); on a fault the plan's WSA error, as the real layer returns a WSASend that failed
    /// with SOCKET_ERROR (*bytes_sent, when given, set to 0), and nothing is sent.
    win32_error send(SOCKET_HANDLE socket, buffer_type* buffers, std::uint32_t count, std::uint32_t* bytes_sent,
                     std::uint32_t flags, overlapped_type* overlapped) noexcept
    {
        if (const win32_error error = draw(win32_fault_point::send); error != win32_no_error)
        {
            if (bytes_sent != nullptr)
            {
                *bytes_sent = 0;
            }
            return error;
        }
        return accepted(inner_.send(socket, buffers, count, bytes_sent, flags, overlapped));
    }

    /// Inner's receive (WSARecv); on a fault the plan's WSA error as send reports it, and nothing is received.
    win32_error receive(SOCKET_HANDLE socket, buffer_type* buffers, std::uint32_t count, std::uint32_t* bytes_received,
                        std::uint32_t* flags, overlapped_type* overlapped) noexcept
    {
        if (const win32_error error = draw(win32_fault_point::receive); error != win32_no_error)
        {
            if (bytes_received != nullptr)
            {
                *bytes_received = 0;
            }
            return error;
        }
        return accepted(inner_.receive(socket, buffers, count, bytes_received, flags, overlapped));
    }

    /// Inner's (CancelIoEx(socket, NULL)).
    void cancel_socket_io(SOCKET_HANDLE socket) noexcept
    {
        inner_.cancel_socket_io(socket);
    }

    /// Inner's, when Inner has it (CancelIoEx(socket, overlapped)).
    void cancel_overlapped_io(SOCKET_HANDLE socket, overlapped_type* overlapped) noexcept requires
        requires(Inner& inner, SOCKET_HANDLE s, overlapped_type* o)
    {
        {
            inner.cancel_overlapped_io(s, o)
        }
        noexcept;
    }
    {
        inner_.cancel_overlapped_io(socket, overlapped);
    }

    /// Inner's, or false on a fault (the socket's mode is not changed). Only in skip mode.
    bool set_skip_completion_on_success(SOCKET_HANDLE socket) noexcept requires(Inner::skip_completion_on_success)
    {
        if (draw(win32_fault_point::set_skip_completion_on_success) != win32_no_error)
        {
            return false;
        }
        return inner_.set_skip_completion_on_success(socket);
    }

    // ---- accept and connect (win32_connection_calls), when Inner has them: WSASocketW, AcceptEx and ConnectEx
    // can be faulted; the rest is forwarded -------------------------------------------------------------------
    /// Inner's (WSAIoctl for AcceptEx, GetAcceptExSockaddrs, ConnectEx).
    win32_error load_extensions(SOCKET_HANDLE socket) noexcept requires win32_connection_calls<Inner>
    {
        return inner_.load_extensions(socket);
    }
    /// Inner's (getsockname).
    win32_error local_address(SOCKET_HANDLE socket,
                              socket_address& address) noexcept requires win32_connection_calls<Inner>
    {
        return inner_.local_address(socket, address);
    }
    /// Inner's (bind to the wildcard address).
    win32_error bind_wildcard(SOCKET_HANDLE socket,
                              std::uint16_t family) noexcept requires win32_connection_calls<Inner>
    {
        return inner_.bind_wildcard(socket, family);
    }
    /// Inner's (WSASocketW); on a fault the plan's error and no socket is made.
    win32_error open_socket(std::uint16_t family, SOCKET_HANDLE* made) noexcept requires win32_connection_calls<Inner>
    {
        if (const win32_error error = draw(win32_fault_point::open_socket); error != win32_no_error)
        {
            *made = nullptr;
            return error;
        }
        return inner_.open_socket(family, made);
    }
    /// Inner's (closesocket).
    void close_socket(SOCKET_HANDLE socket) noexcept requires win32_connection_calls<Inner>
    {
        inner_.close_socket(socket);
    }
    /// Inner's (AcceptEx), counted as an IO accepted like a send; on a fault the plan's WSA error, as an AcceptEx
    /// that failed at once (nothing accepted: the connection, if any, stays queued).
    win32_error accept(SOCKET_HANDLE listener, SOCKET_HANDLE accepted_socket, void* output, std::uint32_t* bytes,
                       overlapped_type* overlapped) noexcept requires win32_connection_calls<Inner>
    {
        if (const win32_error error = draw(win32_fault_point::accept); error != win32_no_error)
        {
            if (bytes != nullptr)
            {
                *bytes = 0;
            }
            return error;
        }
        return accepted(inner_.accept(listener, accepted_socket, output, bytes, overlapped));
    }
    /// Inner's (GetAcceptExSockaddrs).
    void accepted_peer(void* output, socket_address& peer) noexcept requires win32_connection_calls<Inner>
    {
        inner_.accepted_peer(output, peer);
    }
    /// Inner's (SO_UPDATE_ACCEPT_CONTEXT).
    win32_error update_accept_context(SOCKET_HANDLE accepted_socket,
                                      SOCKET_HANDLE listener) noexcept requires win32_connection_calls<Inner>
    {
        return inner_.update_accept_context(accepted_socket, listener);
    }
    /// Inner's (ConnectEx), counted as an IO accepted like a send; on a fault the plan's WSA error, as a ConnectEx
    /// that failed at once (no connection attempt).
    win32_error connect(SOCKET_HANDLE socket, const socket_address& address, std::uint32_t* bytes,
                        overlapped_type* overlapped) noexcept requires win32_connection_calls<Inner>
    {
        if (const win32_error error = draw(win32_fault_point::connect); error != win32_no_error)
        {
            if (bytes != nullptr)
            {
                *bytes = 0;
            }
            return error;
        }
        return accepted(inner_.connect(socket, address, bytes, overlapped));
    }
    /// Inner's (SO_UPDATE_CONNECT_CONTEXT).
    win32_error update_connect_context(SOCKET_HANDLE socket) noexcept requires win32_connection_calls<Inner>
    {
        return inner_.update_connect_context(socket);
    }

private:
    win32_error draw(win32_fault_point point) noexcept
    {
        return plan_ == nullptr ? win32_no_error : plan_->draw(point);
    }

    win32_error accepted(win32_error started) noexcept
    {
        if (started == win32_no_error && plan_ != nullptr)
        {
            plan_->note_accepted();
        }
        return started;
    }

    /// The routine registered with Inner: counts the completion, then hands it to the backend's.
    template <win32_completion_routine Completion>
    static void counted_completion(void* context, void* overlapped, win32_error io_result,
                                   std::size_t bytes_transferred) noexcept
    {
        auto* self = static_cast<win32_fault_calls*>(context);
        if (self->plan_ != nullptr)
        {
            self->plan_->note_io(-1);
            self->plan_->note_completion();
        }
        Completion(self->context_, overlapped, io_result, bytes_transferred);
    }

    ASYNC_SOCKET_NO_UNIQUE_ADDRESS Inner inner_;
    win32_fault_plan* plan_ = nullptr;
    void* context_ = nullptr;
};

} // namespace async_socket::testing
