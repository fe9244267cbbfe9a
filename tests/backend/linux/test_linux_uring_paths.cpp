// Where io_uring IO runs and completes (backend.hpp, submit): on the ring's worker a new IO goes straight on the
// ring and completes on a later turn, never inside the call that started it; on any other thread an IO the
// system call finishes at once is handed to the worker to complete there, still the head of its queue, so that
// later IO of its direction waits behind it and every IO completes once, in order. A stop or a close that comes
// while such an IO waits for its worker does not change its outcome: its bytes have gone.
#include <async_socket/async_socket.hpp>
#include <async_socket/testing/linux_loopback.hpp>
#include <async_socket/testing/waiter.hpp>

#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <stop_token>
#include <thread>
#include <vector>

#include <sys/socket.h>

namespace
{

using async_socket::linux_async_socket;
using async_socket::linux_engine;
using async_socket::linux_io_choice;
using async_socket::linux_io_mechanism;
using async_socket::receive_result;
using async_socket::send_result;
using async_socket::status;
using async_socket::testing::waiter;

constexpr double deadline_seconds = 60.0;

struct ring_world
{
    linux_engine::handle engine = linux_engine::create({.thread_count = 1, .io = linux_io_choice::io_uring});
    async_socket::testing::fd_pair pair = async_socket::testing::make_loopback_fd_pair();
    linux_async_socket::handle socket;

    ring_world()
    {
        if (engine == nullptr)
        {
            return;
        }
        REQUIRE(pair.valid());
        socket = linux_async_socket::create(engine.get(), async_socket_handle_from_fd(pair.client));
        REQUIRE(socket != nullptr);
        REQUIRE(socket->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) == status::ok);
    }
    [[nodiscard]] bool refused() const noexcept
    {
        return engine == nullptr;
    }
};

// Reads exactly `count` bytes from a blocking descriptor (the peer end), with SO_RCVTIMEO as the deadline.
std::vector<std::uint8_t> read_exactly(int fd, std::size_t count)
{
    timeval limit{static_cast<long>(deadline_seconds), 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    std::vector<std::uint8_t> got(count);
    std::size_t have = 0;
    while (have < count)
    {
        const ssize_t n = recv(fd, got.data() + have, count - have, 0);
        if (n <= 0)
        {
            got.resize(have);
            break;
        }
        have += static_cast<std::size_t>(n);
    }
    return got;
}

// Holds the engine's only worker inside a callback until released: what is handed to it meanwhile waits.
struct worker_holder
{
    async_socket::testing::fd_pair pair = async_socket::testing::make_loopback_fd_pair();
    linux_async_socket::handle socket;
    std::uint8_t in = 0;
    ASYNC_SOCKET_BUFFER buffer{&in, 1};
    waiter wake;
    bool holding = false;
    std::atomic<bool> release{false};

    explicit worker_holder(linux_engine& engine)
    {
        REQUIRE(pair.valid());
        socket = linux_async_socket::create(&engine, async_socket_handle_from_fd(pair.client));
        REQUIRE(socket != nullptr);
        REQUIRE(socket->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) == status::ok);
        REQUIRE(socket->receive_async(std::span<const ASYNC_SOCKET_BUFFER>(&buffer, 1),
                                      [this](receive_result) noexcept
                                      {
                                          wake.update([&] { holding = true; });
                                          release.wait(false); // bounded: the test releases it on every path
                                      }) == status::ok);
        const std::uint8_t byte = 1;
        REQUIRE(send(pair.server, &byte, 1, MSG_NOSIGNAL) == 1);
        REQUIRE(wake.wait_for([&] { return holding; }, deadline_seconds));
    }
    void let_go() noexcept
    {
        release.store(true);
        release.notify_all();
    }
    ~worker_holder()
    {
        let_go();
    }
};

} // namespace

TEST_CASE("io_uring: sends that finish at once on a user thread complete on the worker, once each and in order")
{
    ring_world w;
    if (w.refused())
    {
        MESSAGE("io_uring refused here");
        return;
    }
    constexpr int sends = 64;
    constexpr std::size_t each = 16;
    std::array<std::array<std::uint8_t, each>, sends> data{};
    std::array<ASYNC_SOCKET_BUFFER, sends> buffers{};
    waiter wake;
    std::vector<int> order;       // guarded by wake
    int on_worker = 0;            // guarded by wake
    int inside_call = 0;          // guarded by wake
    int not_ok = 0;               // guarded by wake
    std::atomic<int> calling{-1}; // the send whose send_async is running on this thread
    for (int i = 0; i < sends; ++i)
    {
        data[static_cast<std::size_t>(i)].fill(static_cast<std::uint8_t>(i));
        buffers[static_cast<std::size_t>(i)] = {data[static_cast<std::size_t>(i)].data(), each};
    }
    for (int i = 0; i < sends; ++i)
    {
        calling.store(i);
        REQUIRE(w.socket->send_async(std::span<const ASYNC_SOCKET_BUFFER>(&buffers[static_cast<std::size_t>(i)], 1),
                                     [&, i](send_result result) noexcept
                                     {
                                         const bool worker = w.engine->runs_this_thread();
                                         const bool inside = calling.load() == i && !worker;
                                         wake.update(
                                             [&]
                                             {
                                                 order.push_back(i);
                                                 on_worker += worker ? 1 : 0;
                                                 inside_call += inside ? 1 : 0;
                                                 not_ok += result.ok() ? 0 : 1;
                                             });
                                     }) == status::ok);
        calling.store(-1);
    }
    REQUIRE(wake.wait_for([&] { return order.size() == static_cast<std::size_t>(sends); }, deadline_seconds));
    CHECK(on_worker == sends);
    CHECK(inside_call == 0);
    CHECK(not_ok == 0);
    for (int i = 0; i < sends; ++i)
    {
        CHECK(order[static_cast<std::size_t>(i)] == i);
    }
    const std::vector<std::uint8_t> got = read_exactly(w.pair.server, sends * each);
    REQUIRE(got.size() == sends * each);
    for (std::size_t b = 0; b < got.size(); ++b)
    {
        if (got[b] != static_cast<std::uint8_t>(b / each))
        {
            FAIL_CHECK("byte " << b << " is " << int{got[b]});
            break;
        }
    }
}

namespace
{

// A chain of 1-byte sends, each started by the previous one's callback on the worker.
struct send_chain
{
    static constexpr int length = 200;
    linux_async_socket* socket = nullptr;
    linux_engine* socket_engine = nullptr;
    std::uint8_t byte = 0x33;
    ASYNC_SOCKET_BUFFER buffer{&byte, 1};
    waiter wake;
    int done = 0;          // guarded by wake
    int not_ok = 0;        // guarded by wake
    int on_worker = 0;     // guarded by wake
    int inside_call = 0;   // worker only; read once done == length (written before that update)
    int depth = 0;         // worker only: this chain's send_async calls under way
    int failed_starts = 0; // worker only

    static void on_sent(void* context, ASYNC_SOCKET_SEND_RESULT result) noexcept
    {
        auto* self = static_cast<send_chain*>(context);
        const bool worker = self->socket_engine->runs_this_thread();
        self->inside_call += self->depth != 0 ? 1 : 0;
        int finished = 0;
        self->wake.update(
            [&]
            {
                finished = ++self->done;
                self->not_ok += result == ASYNC_SOCKET_SEND_OK ? 0 : 1;
                self->on_worker += worker ? 1 : 0;
            });
        if (finished < length && result == ASYNC_SOCKET_SEND_OK)
        {
            ++self->depth;
            if (self->socket->send_async(&self->buffer, 1, &on_sent, self) != status::ok)
            {
                ++self->failed_starts;
            }
            --self->depth;
        }
    }
};

} // namespace

TEST_CASE("io_uring: an IO started by a callback on the worker completes on a later turn, not inside the call")
{
    ring_world w;
    if (w.refused())
    {
        MESSAGE("io_uring refused here");
        return;
    }
    send_chain chain;
    chain.socket = w.socket.get();
    chain.socket_engine = w.engine.get();
    REQUIRE(w.socket->send_async(&chain.buffer, 1, &send_chain::on_sent, &chain) == status::ok);
    REQUIRE(chain.wake.wait_for([&] { return chain.done == send_chain::length; }, deadline_seconds));
    CHECK(chain.on_worker == send_chain::length);
    CHECK(chain.inside_call == 0);
    CHECK(chain.failed_starts == 0);
    CHECK(chain.not_ok == 0);
    CHECK(read_exactly(w.pair.server, send_chain::length).size() == send_chain::length);
}

TEST_CASE("io_uring: a stop or a close while a finished send waits for its worker leaves it a success, once")
{
    ring_world w;
    if (w.refused())
    {
        MESSAGE("io_uring refused here");
        return;
    }
    worker_holder held(*w.engine);
    std::array<std::uint8_t, 8> out{1, 2, 3, 4, 5, 6, 7, 8};
    ASYNC_SOCKET_BUFFER buffer{out.data(), out.size()};
    waiter wake;
    int calls = 0; // guarded by wake
    std::optional<send_result> seen;

    SUBCASE("stop requested")
    {
        std::stop_source stop;
        REQUIRE(w.socket->send_async(
                    std::span<const ASYNC_SOCKET_BUFFER>(&buffer, 1),
                    [&](send_result result) noexcept
                    {
                        wake.update(
                            [&]
                            {
                                ++calls;
                                seen = result;
                            });
                    },
                    stop.get_token()) == status::ok);
        // The bytes went during the call (loopback has room); the completion waits for the held worker.
        CHECK(read_exactly(w.pair.server, out.size()).size() == out.size());
        stop.request_stop();
        held.let_go();
    }
    SUBCASE("closed from another thread")
    {
        REQUIRE(w.socket->send_async(std::span<const ASYNC_SOCKET_BUFFER>(&buffer, 1),
                                     [&](send_result result) noexcept
                                     {
                                         wake.update(
                                             [&]
                                             {
                                                 ++calls;
                                                 seen = result;
                                             });
                                     }) == status::ok);
        CHECK(read_exactly(w.pair.server, out.size()).size() == out.size());
        status closed = status::invalid_state;
        std::thread closer([&] { closed = w.socket->close(); }); // waits for the held worker
        held.let_go();
        closer.join();
        CHECK(closed == status::ok);
    }
    REQUIRE(wake.wait_for([&] { return calls >= 1; }, deadline_seconds));
    CHECK(calls == 1);
    REQUIRE(seen.has_value());
    CHECK(seen->ok());
}
