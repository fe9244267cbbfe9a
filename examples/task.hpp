// A minimal coroutine task type of the examples' own, to show that the library's awaitables
// (socket->async_send / async_receive) need no particular coroutine library: any type with a promise works.
//
//   example::task run(socket_type& socket) { auto r = co_await socket.async_receive(buffers); ... }
//   example::task t = run(socket);
//   t.start();                   // runs until its first suspension (or to the end)
//   t.wait_for(seconds);         // true once the coroutine has finished
//
// The coroutine starts suspended, runs on whatever thread resumes it (the IO's completion thread) and signals
// its end; the task owns the frame and destroys it. Exceptions end the program (the library's IO never throws).
#pragma once

#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <exception>
#include <mutex>
#include <utility>

namespace example
{

class task
{
public:
    struct promise_type
    {
        std::mutex mutex;
        std::condition_variable finished_changed;
        bool finished = false; // guarded by mutex

        task get_return_object() noexcept
        {
            return task(std::coroutine_handle<promise_type>::from_promise(*this));
        }
        std::suspend_always initial_suspend() noexcept
        {
            return {};
        }
        // Suspends at the end so that the task, not the coroutine, frees the frame; then says it has finished.
        struct final_awaiter
        {
            [[nodiscard]] bool await_ready() const noexcept
            {
                return false;
            }
            void await_suspend(std::coroutine_handle<promise_type> self) const noexcept
            {
                promise_type& promise = self.promise();
                std::lock_guard<std::mutex> hold(promise.mutex);
                promise.finished = true;
                promise.finished_changed.notify_all();
            }
            void await_resume() const noexcept {}
        };
        final_awaiter final_suspend() noexcept
        {
            return {};
        }
        void return_void() noexcept {}
        void unhandled_exception() noexcept
        {
            std::terminate();
        }
    };

    task(task&& other) noexcept : coroutine_(std::exchange(other.coroutine_, nullptr)) {}
    task& operator=(task&&) = delete;
    ~task()
    {
        // Only a finished (or never started) coroutine may be destroyed: wait_for must have said true.
        if (coroutine_)
        {
            coroutine_.destroy();
        }
    }

    void start() noexcept
    {
        coroutine_.resume();
    }

    // True once the coroutine has run to its end, within `seconds`.
    [[nodiscard]] bool wait_for(double seconds) const
    {
        promise_type& promise = coroutine_.promise();
        std::unique_lock<std::mutex> hold(promise.mutex);
        return promise.finished_changed.wait_for(hold, std::chrono::duration<double>(seconds),
                                                 [&] { return promise.finished; });
    }

private:
    explicit task(std::coroutine_handle<promise_type> coroutine) noexcept : coroutine_(coroutine) {}
    std::coroutine_handle<promise_type> coroutine_;
};

} // namespace example
