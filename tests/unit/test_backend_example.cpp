// The worked example of docs/policies.md: a backend written from the concept alone, and the socket over it.
#include "../support/doc_example.hpp"
#include "../support/fixtures.hpp"

#include <doctest/doctest.h>

// docs/policies.md example begin
#include <async_socket/concepts.hpp>

#include <array>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>

// The engine: a byte stream in memory, of fixed capacity, that a socket reads back what it sent.
struct memory_stream
{
    static constexpr std::size_t capacity = 4096;
    std::mutex mutex;
    std::condition_variable idle;
    std::array<char, capacity> ring{};
    std::size_t head = 0; // the oldest byte not yet received
    std::size_t size = 0; // bytes sent and not yet received
};

// A backend over a memory_stream. A send always finishes during the call (completed_at_once) or is refused when
// the stream has no room for all of it; a receive finishes at once when bytes are there, else it waits (pending)
// for the next send, which completes it; cancel_all completes every waiting receive as cancelled.
class memory_stream_backend
{
public:
    using engine_type = memory_stream*;
    struct buffer_type
    {
        char* data;
        std::uint32_t length;
    };
    struct io_state // a receive waiting for bytes; the core keeps it in the IO's context
    {
        io_state* next;
        buffer_type* buffers;
        std::uint32_t count;
    };

    static constexpr bool completes_at_once = true;
    static constexpr std::uint32_t no_room = 105; // ENOBUFS, what this backend's "OS" answers when full

    memory_stream_backend() noexcept = default;
    memory_stream_backend(memory_stream_backend&& other) noexcept : stream_(other.stream_) {}

    bool attach(memory_stream* stream) noexcept
    {
        stream_ = stream;
        return true;
    }

    template <async_socket::io_completion_fn Completion>
    bool bind(SOCKET_HANDLE /*socket*/, void* owner) noexcept
    {
        complete_ = Completion;
        owner_ = owner;
        return true;
    }

    void unbind() noexcept {}

    static void set_buffer(buffer_type& buffer, void* memory, std::uint32_t length) noexcept
    {
        buffer = {static_cast<char*>(memory), length};
    }

    async_socket::submit_result submit_send(io_state& /*io*/, buffer_type* buffers, std::uint32_t count) noexcept
    {
        std::size_t total = 0;
        for (std::uint32_t i = 0; i < count; ++i)
        {
            total += buffers[i].length;
        }
        io_state* ready = nullptr;
        std::size_t ready_bytes = 0;
        {
            std::lock_guard lock(stream_->mutex);
            if (total > memory_stream::capacity - stream_->size)
            {
                return {async_socket::submit_status::refused, no_room}; // all or nothing: no partial send
            }
            for (std::uint32_t i = 0; i < count; ++i)
            {
                for (std::uint32_t j = 0; j < buffers[i].length; ++j)
                {
                    stream_->ring[(stream_->head + stream_->size++) % memory_stream::capacity] = buffers[i].data[j];
                }
            }
            if (waiting_ != nullptr)
            {
                ready = waiting_;
                waiting_ = ready->next;
                ready_bytes = take(*ready);
                ++running_;
            }
        }
        if (ready != nullptr)
        {
            finish(ready, {async_socket::io_outcome::success, 0, ready_bytes});
        }
        return {async_socket::submit_status::completed_at_once, static_cast<std::uint32_t>(total)};
    }

    async_socket::submit_result submit_receive(io_state& io, buffer_type* buffers, std::uint32_t count) noexcept
    {
        io = {nullptr, buffers, count};
        std::lock_guard lock(stream_->mutex);
        if (stream_->size != 0 && waiting_ == nullptr)
        {
            return {async_socket::submit_status::completed_at_once, static_cast<std::uint32_t>(take(io))};
        }
        io_state** last = &waiting_;
        while (*last != nullptr)
        {
            last = &(*last)->next;
        }
        *last = &io; // receives are served in the order they were made
        return {async_socket::submit_status::pending, 0};
    }

    void cancel_all() noexcept
    {
        io_state* cancelled = nullptr;
        {
            std::lock_guard lock(stream_->mutex);
            cancelled = waiting_;
            waiting_ = nullptr;
            for (io_state* io = cancelled; io != nullptr; io = io->next)
            {
                ++running_;
            }
        }
        while (cancelled != nullptr)
        {
            io_state* next = cancelled->next; // read first: the completion frees the context holding io_state
            finish(cancelled, {async_socket::io_outcome::cancelled, 0, 0});
            cancelled = next;
        }
    }

    // Returns once no receive waits and no completion runs (close calls cancel_all first).
    void drain() noexcept
    {
        std::unique_lock lock(stream_->mutex);
        stream_->idle.wait(lock, [this] { return waiting_ == nullptr && running_ == 0; });
    }

private:
    // Under the lock: moves the oldest bytes into a receive's buffers, in order; returns how many.
    std::size_t take(io_state& io) noexcept
    {
        std::size_t moved = 0;
        for (std::uint32_t i = 0; i < io.count && stream_->size != 0; ++i)
        {
            for (std::uint32_t j = 0; j < io.buffers[i].length && stream_->size != 0; ++j, ++moved, --stream_->size)
            {
                io.buffers[i].data[j] = stream_->ring[stream_->head];
                stream_->head = (stream_->head + 1) % memory_stream::capacity;
            }
        }
        return moved;
    }

    // Outside the lock: the core's completion routine, once per pending IO; then drain may see it done.
    void finish(io_state* io, async_socket::io_result result) noexcept
    {
        complete_(owner_, io, result);
        std::lock_guard lock(stream_->mutex);
        if (--running_ == 0)
        {
            stream_->idle.notify_all();
        }
    }

    memory_stream* stream_ = nullptr;
    async_socket::io_completion_fn complete_ = nullptr;
    void* owner_ = nullptr;
    io_state* waiting_ = nullptr; // receives that wait for bytes, oldest first (guarded by stream_->mutex)
    int running_ = 0;             // completions running outside the lock (guarded by stream_->mutex)
};

static_assert(async_socket::check_backend<memory_stream_backend>());
// docs/policies.md example end

#include <async_socket/basic_async_socket.hpp>
#include <async_socket/sync/std_sync.hpp>

#include <cstring>
#include <string>

using namespace test_support;

namespace
{
using memory_socket = async_socket::basic_async_socket<memory_stream_backend, fault_alloc, async_socket::std_sync>;

struct memory_fixture
{
    memory_stream stream;
    alloc_ledger ledger;
    open_recorder opened;
    memory_socket::handle socket = memory_socket::create(&stream, fake_socket(1), {}, fault_alloc{&ledger});

    memory_fixture()
    {
        REQUIRE(socket);
        REQUIRE(socket->open_async(&open_recorder::callback, &opened) == status::ok);
    }
};
} // namespace

TEST_CASE("memory_stream_backend (docs/policies.md): a send finishes at once and the receive after it gets the "
          "bytes at once, across its buffers")
{
    memory_fixture f;
    char message[] = "hello, backend";
    ASYNC_SOCKET_BUFFER out[2] = {{message, 7}, {message + 7, 7}};
    send_recorder sent;
    REQUIRE(f.socket->send_async(out, 2, &send_recorder::callback, &sent) == status::ok);
    REQUIRE(sent.results.size() == 1);
    CHECK(sent.results[0] == ASYNC_SOCKET_SEND_OK);

    char first[5] = {};
    char second[20] = {};
    ASYNC_SOCKET_BUFFER in[2] = {{first, sizeof(first)}, {second, sizeof(second)}};
    receive_recorder received;
    REQUIRE(f.socket->receive_async(in, 2, &receive_recorder::callback, &received) == status::ok);
    REQUIRE(received.results.size() == 1);
    CHECK(received.results[0].result == ASYNC_SOCKET_RECEIVE_OK);
    CHECK(received.results[0].bytes == 14);
    CHECK(std::string(first, 5) + std::string(second, 9) == "hello, backend");

    f.socket.reset();
    CHECK(f.ledger.live_blocks() == 0);
}

TEST_CASE("memory_stream_backend: a receive made first waits, and the next send completes it, once")
{
    memory_fixture f;
    char in[8] = {};
    ASYNC_SOCKET_BUFFER into{in, sizeof(in)};
    receive_recorder received;
    REQUIRE(f.socket->receive_async(&into, 1, &receive_recorder::callback, &received) == status::ok);
    CHECK(received.results.empty());
    CHECK(f.ledger.live_blocks() == 2); // the socket and the waiting receive's context

    char message[] = "abc";
    ASYNC_SOCKET_BUFFER out{message, 3};
    send_recorder sent;
    REQUIRE(f.socket->send_async(&out, 1, &send_recorder::callback, &sent) == status::ok);
    REQUIRE(received.results.size() == 1);
    CHECK(received.results[0].result == ASYNC_SOCKET_RECEIVE_OK);
    CHECK(received.results[0].bytes == 3);
    CHECK(std::memcmp(in, "abc", 3) == 0);
    REQUIRE(sent.results.size() == 1);
    CHECK(sent.results[0] == ASYNC_SOCKET_SEND_OK);
    CHECK(f.ledger.live_blocks() == 1);
}

TEST_CASE("memory_stream_backend: close with receives waiting reports BECAUSE_CLOSE once each; the socket reopens")
{
    memory_fixture f;
    char a[4] = {};
    char b[4] = {};
    ASYNC_SOCKET_BUFFER into_a{a, sizeof(a)};
    ASYNC_SOCKET_BUFFER into_b{b, sizeof(b)};
    receive_recorder received;
    REQUIRE(f.socket->receive_async(&into_a, 1, &receive_recorder::callback, &received) == status::ok);
    REQUIRE(f.socket->receive_async(&into_b, 1, &receive_recorder::callback, &received) == status::ok);
    REQUIRE(f.socket->close() == status::ok);
    REQUIRE(received.results.size() == 2);
    CHECK(received.results[0].result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);
    CHECK(received.results[1].result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);
    CHECK(f.ledger.live_blocks() == 1);

    open_recorder reopened;
    REQUIRE(f.socket->open_async(&open_recorder::callback, &reopened) == status::ok);
    char message[] = "again";
    ASYNC_SOCKET_BUFFER out{message, 5};
    send_recorder sent;
    REQUIRE(f.socket->send_async(&out, 1, &send_recorder::callback, &sent) == status::ok);
    receive_recorder after;
    REQUIRE(f.socket->receive_async(&into_a, 1, &receive_recorder::callback, &after) == status::ok);
    REQUIRE(after.results.size() == 1);
    CHECK(after.results[0].bytes == 4);
    CHECK(std::memcmp(a, "agai", 4) == 0);
}

TEST_CASE("memory_stream_backend: a send the stream has no room for is refused whole, with no callback")
{
    memory_fixture f;
    static char big[memory_stream::capacity + 1] = {};
    ASYNC_SOCKET_BUFFER out{big, sizeof(big)};
    send_recorder sent;
    CHECK(f.socket->send_async(&out, 1, &send_recorder::callback, &sent) == status::os_error);
    CHECK(sent.results.empty());
    CHECK(f.stream.size == 0);
    CHECK(f.ledger.live_blocks() == 1); // the refused IO's context is freed
}

TEST_CASE("the memory_stream_backend of docs/policies.md is the code compiled and tested here, word for word")
{
    const std::string mismatch = compare_doc_example(__FILE__, "policies.md", "memory_stream_backend");
    CHECK_MESSAGE(mismatch.empty(), mismatch);
}
