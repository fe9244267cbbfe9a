// async_socket: what co_await socket->async_send(buffers) / async_receive(buffers) / async_accept() /
// async_connect(address) waits on.
//
// The awaiter starts the IO in await_ready, before the coroutine suspends, with a handler (the C++ handler path
// of basic_async_socket) that holds only `this`, so the IO costs the context and nothing else; the coroutine
// frame holds the awaiter. An IO that finished during the call (inline, skip mode, a Linux send that went out at
// once) must not resume the coroutine from inside the call: a loop of such IO would nest one frame deeper each
// time. A handler that runs on the calling thread during the call knows it from a thread-local pointer to the
// awaiter whose call is running there: it only leaves its result, and await_ready returns true, so the coroutine
// goes on without suspending at all and with no atomic operation. A handler on any other thread races
// await_suspend on one word: whoever comes second knows the answer. The handler first: await_suspend returns
// false and the coroutine goes on, on this thread. await_suspend first: the handler resumes the coroutine, on the
// completion thread. A refused call gives an error result at once, whose error_code is the status
// (status_category()). With a stop_token the IO is started cancellable (a token stopped already gives
// io_completion::cancelled without starting anything).
#pragma once

#include <async_socket/concepts.hpp>
#include <async_socket/detail/no_error.hpp>
#include <async_socket/results.hpp>
#include <async_socket/status.hpp>
#include <async_socket/types.h>

#include <coroutine>
#include <cstdint>
#include <span>
#include <stop_token>
#include <type_traits>
#include <utility>

namespace async_socket::detail
{

// The awaiter whose await_suspend is inside its send_async/receive_async call on this thread (nullptr: none).
// Trivially destructible, as every thread_local of the library must be (mingw's emulated TLS).
inline thread_local const void* awaiter_in_call = nullptr;

// What one kind of IO gives the awaiter: its result type, how to start it with a handler (cancellable when `stop`
// can be stopped) and the result of a call that was refused. One per IO kind, below the awaiter.
template <class Socket, class SyncPolicy, class Operation>
class io_awaiter
{
public:
    using result_type = typename Operation::result_type;

    io_awaiter(Socket& socket, Operation operation, std::stop_token stop = {}) noexcept
        : socket_(&socket), operation_(operation), stop_(std::move(stop))
    {
    }
    io_awaiter(const io_awaiter&) = delete;
    io_awaiter& operator=(const io_awaiter&) = delete;

    // Starts the IO. True: it is over already (finished during the call, or refused), no need to suspend.
    [[nodiscard]] bool await_ready() noexcept
    {
        auto handler = [this](result_type result) noexcept
        {
            result_ = std::move(result);
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
        };
        const void* const outer = awaiter_in_call; // a call of another awaiter's, further up this thread's stack
        awaiter_in_call = this;
        status started = status::ok;
        if constexpr (cancellable_backend<typename Socket::backend_type>)
        {
            started = stop_.stop_possible() ? operation_.start(*socket_, handler, std::move(stop_))
                                            : operation_.start(*socket_, handler);
        }
        else
        {
            started = operation_.start(*socket_, handler);
        }
        awaiter_in_call = outer;
        if (started != status::ok)
        {
            result_ = Operation::refused(started == status::cancelled ? io_completion::cancelled : io_completion::error,
                                         make_error_code(started));
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
        return result_;
    }

private:
    static constexpr std::int32_t starting = 0;
    static constexpr std::int32_t finished_elsewhere = 1;
    static constexpr std::int32_t suspended = 2;

    Socket* socket_;
    Operation operation_;
    std::stop_token stop_;
    std::coroutine_handle<> waiting_;
    // Overwritten by the handler or by refused() before await_resume reads it.
    result_type result_ = Operation::refused(io_completion::error, no_error());
    typename SyncPolicy::word_type state_{starting};
    bool finished_in_call_ = false; // written and read by the calling thread only
};

// co_await socket->async_send(buffers) / async_receive(buffers).
template <bool IsSend>
struct transfer_operation
{
    using result_type = std::conditional_t<IsSend, send_result, receive_result>;
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
