// async_socket testing: the Win32 backend over Win32 calls that complete every IO inline, for benchmarks.
//
// inline_win32_calls keeps nothing but the completion routine given to create_io. send and receive call that
// routine with NO_ERROR and the full byte count (the sum of the buffer lengths) before they return
// win32_no_error, as a real completion may do on a threadpool thread before WSASend returns. There is no
// recording, no lock and no OS: what a benchmark measures over basic_inline_threadpool (the real Win32
// protocol, win32_threadpool_backend, over these calls) is the cost of the socket and of the Win32 protocol
// (checks, state, counter, context, event, result mapping) plus the AllocPolicy's. testing::fake_threadpool
// is the model to use in tests; this one is for measuring, here and in users' own benchmarks.
//
//   async_socket::testing::inline_engine engine;
//   auto socket = basic_async_socket<inline_threadpool, heap_alloc, std_sync>::create(&engine, s);
//
// UsesIoEvents selects the uses_io_events trait (threadpool_backend.hpp), so that both the event path and
// the no-event path of the core can be measured: with it, create_event returns a dummy non-null handle and
// close_event does nothing.
//
// The completion runs on the thread that calls send_async/receive_async, inside that call. A callback that
// starts the next IO from inside its completion therefore nests one level deeper per IO: chain a bounded
// number of IOs that way, or start the next one after send_async returns.
#pragma once

#include <async_socket/concepts.hpp>
#include <async_socket/backend/win32/threadpool_backend.hpp>
#include <async_socket/types.h>
#include <async_socket/testing/win32_stand_ins.hpp>

#include <cstddef>
#include <cstdint>

namespace async_socket::testing
{

// The engine of an inline socket: nothing but a non-null address to pass to create.
struct inline_engine
{
};

// Win32-shaped stand-ins, the fake policy's (testing/win32_stand_ins.hpp): inline_overlapped mirrors OVERLAPPED,
// inline_wsabuf mirrors WSABUF (len, buf).
using inline_overlapped = fake_overlapped;
using inline_wsabuf = fake_wsabuf;
using inline_event = fake_event; // 0 is "no event"

template <bool UsesIoEvents = false>
class inline_win32_calls : public stand_in_calls<inline_engine*>
{
public:
    // engine_type (inline_engine*), overlapped_type, buffer_type and event_type: stand_in_calls.

    static constexpr bool uses_io_events = UsesIoEvents;
    static constexpr bool skip_completion_on_success = false;

    // The dummy handle create_event returns when UsesIoEvents is true.
    static constexpr inline_event dummy_event = 1;

    inline_win32_calls() noexcept = default;

    bool acquire_pool(inline_engine* engine) noexcept
    {
        engine_ = engine;
        return true;
    }

    void initialize_environment() noexcept {}

    void set_callback_pool() noexcept {}

    bool create_cleanup_group() noexcept
    {
        return true;
    }

    // Keeps the completion routine and its context: send and receive call it.
    template <win32_completion_routine Completion>
    bool create_io(SOCKET_HANDLE /*socket*/, void* callback_context) noexcept
    {
        completion_ = Completion;
        callback_context_ = callback_context;
        return true;
    }

    void start_io() noexcept {}

    void cancel_io() noexcept {}

    // Every IO completed before its send/receive returned: nothing is ever outstanding.
    void wait_for_io_callbacks(bool /*cancel_pending*/) noexcept {}

    void close_io() noexcept
    {
        completion_ = nullptr;
        callback_context_ = nullptr;
    }

    void close_cleanup_group() noexcept {}

    void destroy_environment() noexcept {}

    inline_event create_event() noexcept
    {
        return dummy_event;
    }

    void close_event(inline_event /*event*/) noexcept {}

    win32_error last_error() const noexcept
    {
        return win32_no_error;
    }

    // set_overlapped_event and set_buffer: stand_in_calls (testing/win32_stand_ins.hpp).

    // WSASend that sends every byte at once: the completion runs, with NO_ERROR and the sum of the buffer
    // lengths, before this returns win32_no_error.
    win32_error send(SOCKET_HANDLE /*socket*/, inline_wsabuf* buffers, std::uint32_t count, std::uint32_t* /*bytes*/,
                     std::uint32_t /*flags*/, inline_overlapped* overlapped) noexcept
    {
        completion_(callback_context_, overlapped, win32_no_error, total_length(buffers, count));
        return win32_no_error;
    }

    // WSARecv that fills every buffer at once: as send.
    win32_error receive(SOCKET_HANDLE /*socket*/, inline_wsabuf* buffers, std::uint32_t count, std::uint32_t* /*bytes*/,
                        std::uint32_t* /*flags*/, inline_overlapped* overlapped) noexcept
    {
        completion_(callback_context_, overlapped, win32_no_error, total_length(buffers, count));
        return win32_no_error;
    }

    // Nothing is ever outstanding, so there is nothing to cancel.
    void cancel_socket_io(SOCKET_HANDLE /*socket*/) noexcept {}

    [[nodiscard]] inline_engine* engine() const noexcept
    {
        return engine_;
    }

private:
    static std::size_t total_length(const inline_wsabuf* buffers, std::uint32_t count) noexcept
    {
        std::size_t total = 0;
        for (std::uint32_t i = 0; i < count; ++i)
        {
            total += buffers[i].len;
        }
        return total;
    }

    inline_engine* engine_ = nullptr;
    win32_completion_routine completion_ = nullptr;
    void* callback_context_ = nullptr;
};

template <bool UsesIoEvents = false>
using basic_inline_threadpool = win32_threadpool_backend<inline_win32_calls<UsesIoEvents>>;

// No event per IO (the faster choice); basic_inline_threadpool<true> measures the spec's event path.
using inline_threadpool = basic_inline_threadpool<false>;
using inline_event_threadpool = basic_inline_threadpool<true>;

} // namespace async_socket::testing
