/// @file
/// async_socket testing: a waiter that lets a test block until a condition holds (with a deadline) without ever
/// sleeping to "let things settle". Portable; only the standard library.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <utility>

/// What a user's tests of async_socket need: the fake Win32 OS (fake_os, fake_threadpool), the counting and failing
/// AllocPolicy (fault_alloc), connected loopback socket pairs and the waiter.
namespace async_socket::testing
{

/// Lets a test wait, with a deadline, for a condition that callbacks on other threads make true.
/// Callbacks change the shared state inside update(); the test calls wait_for(pred, seconds), which returns
/// as soon as pred() holds (true) or when the deadline passes (false). pred() runs under the waiter's mutex
/// and is also re-checked every 100 ms, so a missed wake costs time, never a hang.
///
/// update() wakes the waiting thread while it still holds the mutex, so the waiting thread sees the change
/// only once the notifier is done with the waiter: it may destroy the waiter (and whatever the callback
/// used) as soon as wait_for returns. A change made outside update() (e.g. to an atomic) followed by
/// notify() does not have that property: the waiting thread can see it on a re-check and return while the
/// notifier is still about to touch the waiter.
class waiter
{
public:
    /// Runs f() under the mutex and wakes the waiting thread, still under the mutex.
    template <class F>
    void update(F&& f)
    {
        std::lock_guard lock(mutex_);
        std::forward<F>(f)();
        changed_.notify_all();
    }

    /// Wakes the waiting thread (see the class comment for when that is safe).
    void notify()
    {
        update([] {});
    }

    /// Waits under the mutex until pred() is true (checked at each update and at least every 100 ms) or seconds
    /// have passed. Returns pred()'s last answer: false on a timeout.
    template <class Pred>
    [[nodiscard]] bool wait_for(Pred pred, double seconds)
    {
        const auto deadline =
            std::chrono::steady_clock::now() +
            std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(seconds));
        std::unique_lock lock(mutex_);
        while (!pred())
        {
            const auto now = std::chrono::steady_clock::now();
            if (now >= deadline)
            {
                return false;
            }
            const auto slice =
                std::min<std::chrono::steady_clock::duration>(deadline - now, std::chrono::milliseconds(100));
            changed_.wait_for(lock, slice);
        }
        return true;
    }

    /// The mutex update() and wait_for() use, for a test that reads shared state itself.
    std::mutex& mutex() noexcept
    {
        return mutex_;
    }

private:
    std::mutex mutex_;
    std::condition_variable changed_;
};

} // namespace async_socket::testing
