// async_socket: what co_await socket->async_send(buffers) / async_receive(buffers) waits on.
//
// The awaiter starts the IO in await_suspend with a handler (the C++ handler path of basic_async_socket) that
// holds only `this`, so the IO costs the context and nothing else; the coroutine frame holds the awaiter. An IO
// that finished during the call (inline, or skip mode) must not resume the coroutine from inside await_suspend:
// a loop of such IO would nest one frame deeper each time. So the handler and await_suspend race on one word:
// whoever comes second knows the answer. The handler first (still inside the call): await_suspend returns false
// and the coroutine goes on without suspending, on this thread. await_suspend first: the handler resumes the
// coroutine, on the completion thread. A refused call resumes at once with an error result whose error_code is
// the status (status_category()). With a stop_token the IO is started cancellable (a token stopped already gives
// io_completion::cancelled without starting anything).
#pragma once

#include <async_socket/concepts.hpp>
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

    [[nodiscard]] bool await_ready() const noexcept
    {
        return false;
    }

    bool await_suspend(std::coroutine_handle<> waiting) noexcept
    {
        waiting_ = waiting;
        auto handler = [this](result_type result) noexcept
        {
            result_ = result;
            if (SyncPolicy::compare_exchange(state_, finished_during_call, starting) != starting)
            {
                // await_suspend has returned: the coroutine waits for this resume. Nothing of `this` after it.
                waiting_.resume();
            }
        };
        status started = status::ok;
        if constexpr (cancellable_backend<typename Socket::backend_type>)
        {
            if (stop_.stop_possible())
            {
                if constexpr (IsSend)
                {
                    started = socket_->send_async(buffers_, handler, std::move(stop_));
                }
                else
                {
                    started = socket_->receive_async(buffers_, handler, std::move(stop_));
                }
                return finish_start(started);
            }
        }
        if constexpr (IsSend)
        {
            started = socket_->send_async(buffers_, handler);
        }
        else
        {
            started = socket_->receive_async(buffers_, handler);
        }
        return finish_start(started);
    }

    [[nodiscard]] result_type await_resume() const noexcept
    {
        return result_;
    }

private:
    bool finish_start(status started) noexcept
    {
        if (started != status::ok)
        {
            result_ = refused(started);
            return false;
        }
        // false: the handler ran already (during the call, or on another thread since); go on here.
        return SyncPolicy::compare_exchange(state_, suspended, starting) == starting;
    }

    static constexpr std::int32_t starting = 0;
    static constexpr std::int32_t finished_during_call = 1;
    static constexpr std::int32_t suspended = 2;

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
    result_type result_{};
    typename SyncPolicy::word_type state_{starting};
};

} // namespace async_socket::detail
