// async_socket: what co_await socket->async_send(buffers) / async_receive(buffers) waits on.
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

template <class Socket, class SyncPolicy, bool IsSend>
class io_awaiter
{
public:
    using result_type = std::conditional_t<IsSend, send_result, receive_result>;

    io_awaiter(Socket& socket, std::span<const ASYNC_SOCKET_BUFFER> buffers, std::stop_token stop = {}) noexcept
        : socket_(&socket), buffers_(buffers), stop_(std::move(stop))
    {
    }
    io_awaiter(const io_awaiter&) = delete;
    io_awaiter& operator=(const io_awaiter&) = delete;

    // Starts the IO. True: it is over already (finished during the call, or refused), no need to suspend.
    [[nodiscard]] bool await_ready() noexcept
    {
        auto handler = [this](result_type result) noexcept
        {
            result_ = result;
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
        const status started = start(handler);
        awaiter_in_call = outer;
        if (started != status::ok)
        {
            result_ = refused(started);
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
    template <class Handler>
    status start(Handler& handler) noexcept
    {
        if constexpr (cancellable_backend<typename Socket::backend_type>)
        {
            if (stop_.stop_possible())
            {
                if constexpr (IsSend)
                {
                    return socket_->send_async(buffers_, handler, std::move(stop_));
                }
                else
                {
                    return socket_->receive_async(buffers_, handler, std::move(stop_));
                }
            }
        }
        if constexpr (IsSend)
        {
            return socket_->send_async(buffers_, handler);
        }
        else
        {
            return socket_->receive_async(buffers_, handler);
        }
    }

    static constexpr std::int32_t starting = 0;
    static constexpr std::int32_t finished_elsewhere = 1;
    static constexpr std::int32_t suspended = 2;

    static result_type blank() noexcept
    {
        if constexpr (IsSend)
        {
            return {io_completion::error, no_error()};
        }
        else
        {
            return {io_completion::error, 0, no_error()};
        }
    }

    static result_type refused(status why) noexcept
    {
        const io_completion completion = why == status::cancelled ? io_completion::cancelled : io_completion::error;
        if constexpr (IsSend)
        {
            return {completion, make_error_code(why)};
        }
        else
        {
            return {completion, 0, make_error_code(why)};
        }
    }

    Socket* socket_;
    std::span<const ASYNC_SOCKET_BUFFER> buffers_;
    std::stop_token stop_;
    std::coroutine_handle<> waiting_;
    result_type result_ = blank(); // overwritten by the handler or refused() before await_resume reads it
    typename SyncPolicy::word_type state_{starting};
    bool finished_in_call_ = false; // written and read by the calling thread only
};

} // namespace async_socket::detail
