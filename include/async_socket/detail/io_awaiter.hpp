// async_socket: what co_await socket->async_send(buffers) / async_receive(buffers) / async_accept() /
// async_connect(address) waits on.
//
// The awaiter starts the IO in await_ready, before the coroutine suspends. A send or a receive without a
// stop_token takes the socket's awaiter path: the IO's context holds only `this` and its completion calls
// complete(); the others go through the C++ handler path with a handler that holds only `this`. Either way the IO
// costs the context and nothing else; the coroutine frame holds the awaiter. An IO that finished during the call
// (inline, skip mode, a Linux send that went out at once) must not resume the coroutine from inside the call: a loop of
// such IO would nest one frame deeper each time. A handler that runs on the calling thread during the call knows it
// from a thread-local pointer to the awaiter whose call is running there: it only leaves its result, and await_ready
// returns true, so the coroutine goes on without suspending at all and with no atomic operation. A handler on any other
// thread races await_suspend on one word: whoever comes second knows the answer. The handler first: await_suspend
// returns false and the coroutine goes on, on this thread. await_suspend first: the handler resumes the coroutine, on
// the completion thread. A refused call gives an error result at once, whose error_code is the status
// (status_category()). With a stop_token the IO is started cancellable (a token stopped already gives
// io_completion::cancelled without starting anything); one made without a stop_token holds none.
#pragma once

#include <async_socket/concepts.hpp>
#include <async_socket/results.hpp>
#include <async_socket/status.hpp>
#include <async_socket/types.h>

#include <coroutine>
#include <cstdint>
#include <new>
#include <span>
#include <stop_token>
#include <system_error>
#include <type_traits>
#include <utility>

namespace async_socket::detail
{

// The awaiter whose await_suspend is inside its send_async/receive_async call on this thread (nullptr: none).
// Trivially destructible, as every thread_local of the library must be (mingw's emulated TLS).
inline thread_local const void* awaiter_in_call = nullptr;

// The stop_token of an awaiter made without one: nothing to hold, test or destroy per IO.
struct no_stop_token
{
};

// What one kind of IO gives the awaiter: its result type, how to start it with a handler (cancellable when `stop`
// can be stopped) and the result of a call that was refused. One per IO kind, below the awaiter. Cancellable: made
// with a std::stop_token (async_send(buffers, stop) and the like).
template <class Socket, class SyncPolicy, class Operation, bool Cancellable = false>
class io_awaiter
{
public:
    using result_type = typename Operation::result_type;

    // The operation is made in place from `what` (copied in, g++ moves a span through a temporary of the frame
    // with overlapping 16-byte copies that stall).
    template <class... What>
    explicit io_awaiter(Socket& socket, const What&... what) noexcept requires(!Cancellable)
        : operation_{what...}, socket_(&socket)
    {
    }
    template <class... What>
    io_awaiter(std::stop_token stop, Socket& socket, const What&... what) noexcept requires(Cancellable)
        : operation_{what...}, socket_(&socket), stop_(std::move(stop))
    {
    }
    io_awaiter(const io_awaiter&) = delete;
    io_awaiter& operator=(const io_awaiter&) = delete;

    // Starts the IO. True: it is over already (finished during the call, or refused), no need to suspend.
    [[nodiscard]] bool await_ready() noexcept
    {
        auto handler = [this](result_type result) noexcept { complete(result); };
        const void* const outer = awaiter_in_call; // a call of another awaiter's, further up this thread's stack
        awaiter_in_call = this;
        status started = status::ok;
        if constexpr (Cancellable)
        {
            started = stop_.stop_possible() ? operation_.start(*socket_, handler, std::move(stop_))
                                            : operation_.start(*socket_, handler);
        }
        else if constexpr (requires { operation_.start_awaited(*socket_, this); })
        {
            // The socket's awaiter path: the IO's context holds only `this`, and its completion calls complete().
            started = operation_.start_awaited(*socket_, this);
        }
        else
        {
            started = operation_.start(*socket_, handler);
        }
        awaiter_in_call = outer;
        if (started != status::ok)
        {
            result_.store(
                Operation::refused(started == status::cancelled ? io_completion::cancelled : io_completion::error,
                                   make_error_code(started)));
            return true;
        }
        return finished_in_call_;
    }

    // The IO is pending (or has just finished on another thread). False: it has, go on here.
    bool await_suspend(std::coroutine_handle<> waiting) noexcept
    {
        waiting_ = waiting;
        return SyncPolicy::compare_exchange(state_, suspended, starting) == starting;
    }

    [[nodiscard]] result_type await_resume() const noexcept
    {
        return result_.load();
    }

    // The IO's completion (its handler's body, or the socket's awaiter path): leaves the result, then either lets
    // await_ready see it (this thread, during the call) or resumes the coroutine (once await_suspend has run).
    void complete(const result_type& result) noexcept
    {
        result_.store(result);
        if (awaiter_in_call == this)
        {
            finished_in_call_ = true; // this thread, during the call: await_ready reads it after the call
            return;
        }
        if (SyncPolicy::compare_exchange(state_, finished_elsewhere, starting) != starting)
        {
            // await_suspend has returned: the coroutine waits for this resume. Nothing of `this` after it.
            waiting_.resume();
        }
    }

private:
    static constexpr std::int32_t starting = 0;
    static constexpr std::int32_t finished_elsewhere = 1;
    static constexpr std::int32_t suspended = 2;

    Operation operation_; // before socket_: g++ then copies a span whole, not half of it beside socket_
    Socket* socket_;
    [[no_unique_address]] std::conditional_t<Cancellable, std::stop_token, no_stop_token> stop_;
    std::coroutine_handle<> waiting_;
    // Written by the handler or with refused() before await_resume reads it; not initialised before (a result
    // made only to be overwritten costs a call per IO for its error_code).
    typename Operation::result_slot result_;
    typename SyncPolicy::word_type state_{starting};
    bool finished_in_call_ = false; // written and read by the calling thread only
};

// Where an awaiter keeps its result between the handler and await_resume: the whole result, left uninitialised until
// the handler (or a refused call) stores it. Result types are trivially destructible.
template <class Result>
class whole_result_slot
{
public:
    static_assert(std::is_trivially_destructible_v<Result>);
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): written by store() before load() reads it
    whole_result_slot() noexcept {}

    void store(const Result& result) noexcept
    {
        ::new (static_cast<void*>(&value_)) Result(result);
    }
    [[nodiscard]] Result load() const noexcept
    {
        return value_;
    }

private:
    union
    {
        Result value_;
    };
};

// The result of a send or a receive, field by field. Stored whole, the handler writes it as a byte, a word and a
// pointer and await_resume reads it back with 16-byte copies that overlap those stores: each such load waits for
// the stores to retire (no store-to-load forwarding), several ns per IO on the coroutine path. Fields stored and
// loaded one by one forward.
template <class Result>
class transfer_result_slot
{
public:
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): written by store() before load() reads it
    transfer_result_slot() noexcept {}

    void store(const Result& result) noexcept
    {
        completion_ = result.completion;
        if constexpr (requires { result.bytes; })
        {
            bytes_ = result.bytes;
        }
        code_ = result.error.value();
        category_ = &result.error.category();
    }
    [[nodiscard]] Result load() const noexcept
    {
        if constexpr (requires(Result r) { r.bytes; })
        {
            return Result{completion_, bytes_, std::error_code(code_, *category_)};
        }
        else
        {
            return Result{completion_, std::error_code(code_, *category_)};
        }
    }

private:
    io_completion completion_;
    std::uint32_t bytes_;
    int code_;
    const std::error_category* category_;
};

// co_await socket->async_send(buffers) / async_receive(buffers).
template <bool IsSend>
struct transfer_operation
{
    using result_type = std::conditional_t<IsSend, send_result, receive_result>;
    using result_slot = transfer_result_slot<result_type>;
    std::span<const ASYNC_SOCKET_BUFFER> buffers;

    template <class Socket, class Handler, class... Stop>
    status start(Socket& socket, Handler& handler, Stop&&... stop) const noexcept
    {
        if constexpr (IsSend)
        {
            return socket.send_async(buffers, handler, std::forward<Stop>(stop)...);
        }
        else
        {
            return socket.receive_async(buffers, handler, std::forward<Stop>(stop)...);
        }
    }
    // Without a stop_token: the awaiter itself is what the completion calls (no handler object in the context).
    template <class Socket, class Awaiter>
    status start_awaited(Socket& socket, Awaiter* awaiter) const noexcept
    {
        return socket.template start_awaited<IsSend>(buffers, awaiter);
    }
    static result_type refused(io_completion completion, std::error_code error) noexcept
    {
        if constexpr (IsSend)
        {
            return {completion, error};
        }
        else
        {
            return {completion, 0, error};
        }
    }
};

// co_await socket->async_accept().
struct accept_operation
{
    using result_type = accept_result;
    using result_slot = whole_result_slot<result_type>;

    template <class Socket, class Handler, class... Stop>
    status start(Socket& socket, Handler& handler, Stop&&... stop) const noexcept
    {
        return socket.accept_async(handler, std::forward<Stop>(stop)...);
    }
    static result_type refused(io_completion completion, std::error_code error) noexcept
    {
        return {completion, nullptr, {}, error};
    }
};

// co_await socket->async_connect(address). Held by value: the awaiter may outlive the caller's address.
struct connect_operation
{
    using result_type = connect_result;
    using result_slot = whole_result_slot<result_type>;
    socket_address address;

    template <class Socket, class Handler, class... Stop>
    status start(Socket& socket, Handler& handler, Stop&&... stop) const noexcept
    {
        return socket.connect_async(address, handler, std::forward<Stop>(stop)...);
    }
    static result_type refused(io_completion completion, std::error_code error) noexcept
    {
        return {completion, error};
    }
};

} // namespace async_socket::detail
