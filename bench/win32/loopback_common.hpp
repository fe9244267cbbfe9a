// bench_loopback: what the protocols and transports share (sizes, the workload, the end-of-batch signal, the
// completion a transport reports to).
#pragma once

#include <async_socket/async_socket.hpp>

#include <atomic>
#include <cstdint>

namespace bench_loopback
{

using async_socket::status;

constexpr std::uint32_t message_size = 64;
constexpr std::uint32_t block_size = 64 * 1024;
constexpr std::uint32_t stream_depth = 4; // sends in flight
constexpr DWORD batch_timeout_ms = 60'000;

// Threads of the pool of every threadpool configuration: the execution engine's default minimum.
constexpr DWORD pool_min_threads = EXECUTION_ENGINE_DEFAULT_MIN_THREAD_COUNT;

// How much each benchmark does; --quick shrinks it for a smoke run.
struct workload
{
    std::uint32_t pingpong_batch = 100;     // round trips per iteration
    std::uint32_t pingpong_iterations = 30; // 3,000 round trips: 1.5 to 4 s under Wine
    std::uint32_t stream_batch_blocks = 64; // 4 MiB per iteration
    std::uint32_t stream_iterations = 30;   // 120 MiB: 0.3 to 1.5 s under Wine
    bool mark_timed_region = false;         // --mark_timed_region (scripts/bench_wine_requests.py)
};
inline workload work;

// ---------------------------------------------------------------------------------------------------------
// The end of a batch, signalled from completion callbacks to the benchmark thread.
class batch_signal
{
public:
    batch_signal() : event_(CreateEventW(nullptr, FALSE, FALSE, nullptr)) {}
    ~batch_signal()
    {
        if (event_ != nullptr)
        {
            CloseHandle(event_);
        }
    }
    batch_signal(const batch_signal&) = delete;
    batch_signal& operator=(const batch_signal&) = delete;

    [[nodiscard]] bool valid() const noexcept
    {
        return event_ != nullptr;
    }

    // The batch ends after `parts` calls of arrive().
    void arm(int parts) noexcept
    {
        parts_.store(parts, std::memory_order_release);
    }

    // One part of the batch is done; the last one wakes the benchmark thread. The caller touches nothing of
    // the benchmark after this.
    void arrive() noexcept
    {
        if (parts_.fetch_sub(1, std::memory_order_acq_rel) == 1)
        {
            SetEvent(event_);
        }
    }

    // An IO failed. Ignored once the connection is being shut down (cancelled IO is expected then).
    void fail(const char* what) noexcept
    {
        if (stopping_.load(std::memory_order_acquire))
        {
            return;
        }
        const char* expected = nullptr;
        (void)failure_.compare_exchange_strong(expected, what, std::memory_order_acq_rel);
        SetEvent(event_);
    }

    void stop() noexcept
    {
        stopping_.store(true, std::memory_order_release);
    }

    // Waits for the batch; nullptr on success, else what went wrong.
    const char* wait() noexcept
    {
        const DWORD waited = WaitForSingleObject(event_, batch_timeout_ms);
        if (const char* failure = failure_.load(std::memory_order_acquire); failure != nullptr)
        {
            return failure;
        }
        return waited == WAIT_OBJECT_0 ? nullptr : "timed out waiting for the batch";
    }

private:
    HANDLE event_;
    std::atomic<int> parts_{0};
    std::atomic<bool> stopping_{false};
    std::atomic<const char*> failure_{nullptr};
};

// ---------------------------------------------------------------------------------------------------------
// The transport interface the protocols use; one implementation per configuration.
//
//   bool send(const void* data, std::uint32_t length, const completion* done) noexcept
//   bool receive(void* data, std::uint32_t length, const completion* done) noexcept
//
// Each starts one IO and returns true, then calls (*done)(ok, bytes) exactly once when it completes (on any
// thread, possibly before send/receive returns); or returns false and calls nothing. A send completes with
// ok only when every byte was sent; a receive reports how many bytes arrived (up to length).
struct completion
{
    void (*fn)(void* owner, bool ok, std::uint32_t bytes) noexcept;
    void* owner;

    void operator()(bool ok, std::uint32_t bytes) const noexcept
    {
        fn(owner, ok, bytes);
    }
};

} // namespace bench_loopback
