// The conformance suite: what every real backend must do over real loopback TCP, written once as doctest
// TEST_CASE_TEMPLATE_DEFINEs over a Platform type. A platform's test file includes this header and instantiates
// the suite with ASYNC_SOCKET_CONFORMANCE_SUITE(its platforms); see tests/backend/linux/test_linux_conformance.cpp
// (epoll and io_uring) and tests/backend/win32/test_win32_conformance.cpp (threadpool IO and completion port).
//
// A Platform provides:
//   using socket_type        a basic_async_socket over the backend
//   using engine_handle      owns an engine; engine(handle) gives socket_type::create's first argument
//   static engine_handle make_engine()
//   using raw_pair           a connected loopback pair of raw sockets (client end for the async socket,
//                            server end driven with blocking calls as the peer); raw_pair::valid()
//   static raw_pair make_pair()
//   static SOCKET_HANDLE client_handle(const raw_pair&)
//   static long peer_send(const raw_pair&, const void*, std::size_t)     blocking; bytes sent or -1
//   static long peer_receive(const raw_pair&, void*, std::size_t)        blocking; bytes, 0 at end, -1
//   static void peer_shutdown_send(const raw_pair&), peer_reset(raw_pair&)  (reset: SO_LINGER 0, close)
//   static void peer_shutdown_both(const raw_pair&)   ends a peer_receive blocked on another thread (it returns)
// and may provide:
//   static const char* skip_reason(const char* test_id)  null to run the case; else the case is skipped with a
//                            doctest MESSAGE naming the reason (the host refuses the platform, e.g. no IPv6,
//                            or a probed limitation of the host, e.g. of Wine, that the case would trip on)
// Every wait has a deadline; a helper thread never runs a doctest assertion (it records, the test checks).
#pragma once

#include <async_socket/async_socket.hpp>
#include <async_socket/testing/waiter.hpp>

#include "task.hpp" // examples/task.hpp: the examples' minimal coroutine task type

#include <doctest/doctest.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stop_token>
#include <thread>
#include <vector>

namespace conformance
{

using async_socket::status;
using async_socket::testing::waiter;

// Wine and sanitizers are slow; a deadline only ends a test that would otherwise hang.
constexpr double deadline_seconds = 60.0;

// Bytes a test can check one by one: byte i of stream `seed` is a function of both.
inline std::uint8_t pattern(std::uint64_t seed, std::uint64_t i) noexcept
{
    const std::uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ULL ^ (seed * 0xBF58476D1CE4E5B9ULL);
    return static_cast<std::uint8_t>(x >> 56);
}

inline std::vector<std::uint8_t> pattern_bytes(std::uint64_t seed, std::size_t count)
{
    std::vector<std::uint8_t> bytes(count);
    for (std::size_t i = 0; i < count; ++i)
    {
        bytes[i] = pattern(seed, i);
    }
    return bytes;
}

// What the callbacks of one socket saw; the test reads it through the waiter.
struct io_log
{
    waiter wake;
    int opens_ok = 0;
    int sends_ok = 0;
    int sends_error = 0;
    int sends_because_close = 0;
    int receives_ok = 0;
    int receives_error = 0;
    int receives_because_close = 0;
    int receives_of_zero = 0;
    std::uint64_t bytes_received = 0;
    int invalid = 0;

    static void on_open(void* context, ASYNC_SOCKET_OPEN_RESULT result) noexcept
    {
        auto* log = static_cast<io_log*>(context);
        log->wake.update([&] { (result == ASYNC_SOCKET_OPEN_OK ? log->opens_ok : log->invalid) += 1; });
    }
    static void on_send(void* context, ASYNC_SOCKET_SEND_RESULT result) noexcept
    {
        auto* log = static_cast<io_log*>(context);
        log->wake.update(
            [&]
            {
                switch (result)
                {
                case ASYNC_SOCKET_SEND_OK:
                    ++log->sends_ok;
                    break;
                case ASYNC_SOCKET_SEND_ERROR:
                    ++log->sends_error;
                    break;
                case ASYNC_SOCKET_SEND_BECAUSE_CLOSE:
                    ++log->sends_because_close;
                    break;
                default:
                    ++log->invalid;
                    break;
                }
            });
    }
    static void on_receive(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes) noexcept
    {
        auto* log = static_cast<io_log*>(context);
        log->wake.update(
            [&]
            {
                switch (result)
                {
                case ASYNC_SOCKET_RECEIVE_OK:
                    ++log->receives_ok;
                    log->bytes_received += bytes;
                    log->receives_of_zero += bytes == 0 ? 1 : 0;
                    break;
                case ASYNC_SOCKET_RECEIVE_ERROR:
                    ++log->receives_error;
                    break;
                case ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE:
                    ++log->receives_because_close;
                    break;
                default:
                    ++log->invalid;
                    break;
                }
            });
    }

    [[nodiscard]] int sends() const noexcept
    {
        return sends_ok + sends_error + sends_because_close;
    }
    [[nodiscard]] int receives() const noexcept
    {
        return receives_ok + receives_error + receives_because_close;
    }

    template <class Pred>
    [[nodiscard]] bool wait(Pred pred, double seconds = deadline_seconds)
    {
        return wake.wait_for([&] { return pred(*this); }, seconds);
    }
};

// Why platform P skips test `test_id`, or null to run it (P::skip_reason where P has one).
template <class P>
const char* skip_reason(const char* test_id)
{
    if constexpr (requires { P::skip_reason(test_id); })
    {
        return P::skip_reason(test_id);
    }
    else
    {
        return nullptr;
    }
}

// The first statement of every test: a case the platform skips ends here, with a MESSAGE, never a silent pass.
#define CONFORMANCE_RUN_UNLESS_SKIPPED(P, test_id)                                                                     \
    if (const char* conformance_skip_reason = ::conformance::skip_reason<P>(#test_id))                                 \
    {                                                                                                                  \
        MESSAGE("skipped on this platform: " << doctest::String(conformance_skip_reason));                             \
        return;                                                                                                        \
    }                                                                                                                  \
    else                                                                                                               \
        static_cast<void>(0)

// An engine, a loopback pair and an open async socket over its client end.
template <class P>
struct connected
{
    typename P::engine_handle engine = P::make_engine();
    typename P::raw_pair pair = P::make_pair();
    typename P::socket_type::handle socket;
    io_log log;

    connected()
    {
        REQUIRE(pair.valid());
        socket = P::socket_type::create(P::engine(engine), P::client_handle(pair));
        REQUIRE(socket != nullptr);
        REQUIRE(socket->open_async(&io_log::on_open, &log) == status::ok);
        REQUIRE(log.opens_ok == 1);
    }

    status send(const ASYNC_SOCKET_BUFFER* buffers, std::uint32_t count)
    {
        return socket->send_async(buffers, count, &io_log::on_send, &log);
    }
    status receive(ASYNC_SOCKET_BUFFER* buffers, std::uint32_t count)
    {
        return socket->receive_async(buffers, count, &io_log::on_receive, &log);
    }
};

// Reads exactly `count` bytes from the peer end (on a helper thread); records how many came.
template <class P>
struct peer_reader
{
    std::vector<std::uint8_t> bytes;
    std::atomic<std::size_t> got{0};
    std::thread thread;

    peer_reader(const typename P::raw_pair& pair, std::size_t count, std::size_t chunk = 65536)
        : bytes(count), pair_(&pair)
    {
        thread = std::thread(
            [this, &pair, count, chunk]
            {
                std::size_t at = 0;
                while (at < count)
                {
                    const std::size_t want = count - at < chunk ? count - at : chunk;
                    const long n = P::peer_receive(pair, bytes.data() + at, want);
                    if (n <= 0)
                    {
                        break;
                    }
                    at += static_cast<std::size_t>(n);
                    got.store(at);
                }
            });
    }
    // Still reading here only when the test ended early (a failed REQUIRE): the bytes it waits for will not come,
    // so its blocking receive is ended rather than left to the watchdog.
    ~peer_reader()
    {
        if (thread.joinable() && got.load() < bytes.size())
        {
            P::peer_shutdown_both(*pair_);
        }
        join();
    }
    void join()
    {
        if (thread.joinable())
        {
            thread.join();
        }
    }

private:
    const typename P::raw_pair* pair_;
};

TEST_CASE_TEMPLATE_DEFINE("a send and a receive complete once each, with every byte", P, conformance_round_trip)
{
    CONFORMANCE_RUN_UNLESS_SKIPPED(P, conformance_round_trip);
    connected<P> c;
    std::vector<std::uint8_t> out = pattern_bytes(1, 1000);
    ASYNC_SOCKET_BUFFER send_buffer{out.data(), static_cast<std::uint32_t>(out.size())};
    REQUIRE(c.send(&send_buffer, 1) == status::ok);
    std::vector<std::uint8_t> seen(out.size());
    std::size_t at = 0;
    while (at < seen.size())
    {
        const long n = P::peer_receive(c.pair, seen.data() + at, seen.size() - at);
        REQUIRE(n > 0);
        at += static_cast<std::size_t>(n);
    }
    CHECK(seen == out);
    REQUIRE(c.log.wait([](const io_log& l) { return l.sends() == 1; }));
    CHECK(c.log.sends_ok == 1);

    std::vector<std::uint8_t> in(64);
    ASYNC_SOCKET_BUFFER receive_buffer{in.data(), static_cast<std::uint32_t>(in.size())};
    REQUIRE(c.receive(&receive_buffer, 1) == status::ok);
    const std::vector<std::uint8_t> reply = pattern_bytes(2, 40);
    REQUIRE(P::peer_send(c.pair, reply.data(), reply.size()) == 40);
    REQUIRE(c.log.wait([](const io_log& l) { return l.receives() == 1 && l.bytes_received == 40; }));
    CHECK(c.log.receives_ok == 1);
    CHECK(std::memcmp(in.data(), reply.data(), reply.size()) == 0);
    CHECK(c.socket->close() == status::ok);
    CHECK(c.log.sends() == 1);
    CHECK(c.log.receives() == 1);
    CHECK(c.log.invalid == 0);
}

TEST_CASE_TEMPLATE_DEFINE("scatter/gather over more buffers than IOV_MAX, checked byte by byte", P,
                          conformance_many_buffers)
{
    CONFORMANCE_RUN_UNLESS_SKIPPED(P, conformance_many_buffers);
    connected<P> c;
    constexpr std::uint32_t count = 3000; // IOV_MAX is 1024 on Linux
    constexpr std::size_t piece = 7;
    std::vector<std::uint8_t> out = pattern_bytes(3, count * piece);
    std::vector<ASYNC_SOCKET_BUFFER> send_buffers(count);
    for (std::uint32_t i = 0; i < count; ++i)
    {
        send_buffers[i] = {out.data() + i * piece, static_cast<std::uint32_t>(piece)};
    }
    {
        peer_reader<P> reader(c.pair, out.size());
        REQUIRE(c.send(send_buffers.data(), count) == status::ok);
        REQUIRE(c.log.wait([](const io_log& l) { return l.sends() == 1; }));
        reader.join();
        CHECK(c.log.sends_ok == 1);
        CHECK(reader.got.load() == out.size());
        CHECK(reader.bytes == out);
    }

    // A receive into many small buffers fills them in order (not only the first).
    std::vector<std::uint8_t> in(count * piece);
    std::vector<ASYNC_SOCKET_BUFFER> receive_buffers(count);
    for (std::uint32_t i = 0; i < count; ++i)
    {
        receive_buffers[i] = {in.data() + i * piece, static_cast<std::uint32_t>(piece)};
    }
    const std::vector<std::uint8_t> reply = pattern_bytes(4, 5000);
    REQUIRE(P::peer_send(c.pair, reply.data(), reply.size()) == static_cast<long>(reply.size()));
    std::uint64_t total = 0;
    for (int round = 0; round < 100 && total < reply.size(); ++round)
    {
        const int before = c.log.receives();
        // Each receive continues where the last one ended.
        std::size_t first = static_cast<std::size_t>(total) / piece;
        std::vector<ASYNC_SOCKET_BUFFER> rest;
        for (std::size_t i = first; i < count; ++i)
        {
            rest.push_back(receive_buffers[i]);
        }
        const std::size_t skip = static_cast<std::size_t>(total) % piece;
        rest[0].buffer = static_cast<std::uint8_t*>(rest[0].buffer) + skip;
        rest[0].length -= static_cast<std::uint32_t>(skip);
        REQUIRE(c.receive(rest.data(), static_cast<std::uint32_t>(rest.size())) == status::ok);
        REQUIRE(c.log.wait([before](const io_log& l) { return l.receives() == before + 1; }));
        REQUIRE(c.log.receives_ok == before + 1);
        total = c.log.bytes_received;
    }
    CHECK(total == reply.size());
    CHECK(std::memcmp(in.data(), reply.data(), reply.size()) == 0);
}

TEST_CASE_TEMPLATE_DEFINE("a large send to a slow reader reports OK once every byte went out", P,
                          conformance_large_send)
{
    CONFORMANCE_RUN_UNLESS_SKIPPED(P, conformance_large_send);
    connected<P> c;
    const std::vector<std::uint8_t> out = pattern_bytes(5, 16u << 20);
    ASYNC_SOCKET_BUFFER buffers[2] = {{const_cast<std::uint8_t*>(out.data()), 8u << 20},
                                      {const_cast<std::uint8_t*>(out.data()) + (8u << 20), 8u << 20}};
    REQUIRE(c.send(buffers, 2) == status::ok);
    // Nobody reads yet: the socket buffers hold far less than 16 MiB, so the send cannot have completed.
    CHECK_FALSE(c.log.wait([](const io_log& l) { return l.sends() != 0; }, 0.2));
    peer_reader<P> reader(c.pair, out.size(), 4096);
    REQUIRE(c.log.wait([](const io_log& l) { return l.sends() == 1; }));
    reader.join();
    CHECK(c.log.sends_ok == 1);
    CHECK(reader.got.load() == out.size());
    CHECK(reader.bytes == out);
}

TEST_CASE_TEMPLATE_DEFINE("a pending receive is not starved by a pending send on the same socket", P,
                          conformance_both_directions)
{
    CONFORMANCE_RUN_UNLESS_SKIPPED(P, conformance_both_directions);
    connected<P> c;
    const std::vector<std::uint8_t> out = pattern_bytes(6, 32u << 20);
    ASYNC_SOCKET_BUFFER send_buffer{const_cast<std::uint8_t*>(out.data()), static_cast<std::uint32_t>(out.size())};
    REQUIRE(c.send(&send_buffer, 1) == status::ok); // stays pending: the peer does not read
    std::uint8_t in[16] = {};
    ASYNC_SOCKET_BUFFER receive_buffer{in, sizeof in};
    REQUIRE(c.receive(&receive_buffer, 1) == status::ok);
    const std::uint8_t hello[5] = {'h', 'e', 'l', 'l', 'o'};
    REQUIRE(P::peer_send(c.pair, hello, sizeof hello) == 5);
    REQUIRE(c.log.wait([](const io_log& l) { return l.receives() == 1; }));
    CHECK(c.log.receives_ok == 1);
    CHECK(c.log.bytes_received == 5);
    CHECK(std::memcmp(in, hello, 5) == 0);
    CHECK(c.log.sends() == 0);
    // Close with the send pending: it completes once, as because-close, and close returns.
    CHECK(c.socket->close() == status::ok);
    CHECK(c.log.sends() == 1);
    CHECK(c.log.sends_because_close == 1);
}

TEST_CASE_TEMPLATE_DEFINE("close with a receive pending reports BECAUSE_CLOSE once; the socket opens again", P,
                          conformance_close_reopen)
{
    CONFORMANCE_RUN_UNLESS_SKIPPED(P, conformance_close_reopen);
    connected<P> c;
    std::uint8_t in[8] = {};
    ASYNC_SOCKET_BUFFER receive_buffer{in, sizeof in};
    REQUIRE(c.receive(&receive_buffer, 1) == status::ok);
    CHECK(c.socket->close() == status::ok);
    CHECK(c.log.receives() == 1);
    CHECK(c.log.receives_because_close == 1);
    CHECK(c.socket->receive_async(&receive_buffer, 1, &io_log::on_receive, &c.log) != status::ok);

    REQUIRE(c.socket->open_async(&io_log::on_open, &c.log) == status::ok);
    REQUIRE(c.receive(&receive_buffer, 1) == status::ok);
    const std::uint8_t bytes[3] = {7, 8, 9};
    REQUIRE(P::peer_send(c.pair, bytes, 3) == 3);
    REQUIRE(c.log.wait([](const io_log& l) { return l.receives() == 2; }));
    CHECK(c.log.receives_ok == 1);
    CHECK(c.log.bytes_received == 3);
    CHECK(in[2] == 9);
}

TEST_CASE_TEMPLATE_DEFINE("bytes that arrive with the peer's FIN come before the end of the stream", P,
                          conformance_data_with_fin)
{
    CONFORMANCE_RUN_UNLESS_SKIPPED(P, conformance_data_with_fin);
    connected<P> c;
    const std::uint8_t bytes[4] = {1, 2, 3, 4};
    REQUIRE(P::peer_send(c.pair, bytes, 4) == 4);
    P::peer_shutdown_send(c.pair);
    std::uint8_t in[16] = {};
    ASYNC_SOCKET_BUFFER receive_buffer{in, sizeof in};
    std::uint64_t total = 0;
    for (int round = 0; round < 10 && c.log.receives_of_zero == 0; ++round)
    {
        REQUIRE(c.receive(&receive_buffer, 1) == status::ok);
        REQUIRE(c.log.wait([round](const io_log& l) { return l.receives() == round + 1; }));
        total = c.log.bytes_received;
    }
    CHECK(total == 4);
    CHECK(c.log.receives_of_zero == 1);
    CHECK(c.log.receives_ok == c.log.receives());
    CHECK(in[3] == 4);
}

TEST_CASE_TEMPLATE_DEFINE("a peer that resets fails the IO with an error and never ends the process", P,
                          conformance_peer_reset)
{
    CONFORMANCE_RUN_UNLESS_SKIPPED(P, conformance_peer_reset);
    connected<P> c;
    std::uint8_t in[8] = {};
    ASYNC_SOCKET_BUFFER receive_buffer{in, sizeof in};
    REQUIRE(c.receive(&receive_buffer, 1) == status::ok);
    P::peer_reset(c.pair);
    REQUIRE(c.log.wait([](const io_log& l) { return l.receives() == 1; }));
    CHECK(c.log.receives_error == 1);
    // Sends to the reset connection fail (refused at the call or completed with an error), with no signal.
    std::vector<std::uint8_t> out = pattern_bytes(7, 1000);
    ASYNC_SOCKET_BUFFER send_buffer{out.data(), static_cast<std::uint32_t>(out.size())};
    int refused = 0;
    for (int i = 0; i < 4; ++i)
    {
        refused += c.send(&send_buffer, 1) != status::ok ? 1 : 0;
    }
    REQUIRE(c.log.wait([refused](const io_log& l) { return l.sends() + refused == 4; }));
    CHECK(c.log.sends_ok == 0);
    CHECK(c.socket->close() == status::ok);
}

TEST_CASE_TEMPLATE_DEFINE("a receive loop re-armed from its own callbacks moves 4 MiB in order", P,
                          conformance_rearm_from_callback)
{
    CONFORMANCE_RUN_UNLESS_SKIPPED(P, conformance_rearm_from_callback);
    struct loop
    {
        typename P::socket_type* socket = nullptr;
        std::vector<std::uint8_t> in = std::vector<std::uint8_t>(4u << 20);
        ASYNC_SOCKET_BUFFER buffer{};
        std::uint64_t at = 0;
        bool failed = false;
        bool ended = false;
        waiter wake;

        status arm() noexcept
        {
            const std::size_t left = in.size() - static_cast<std::size_t>(at);
            buffer = {in.data() + at, static_cast<std::uint32_t>(left < 1000 ? left : 1000)};
            return socket->receive_async(&buffer, 1, &on_receive, this);
        }
        // Touches nothing of the loop after re-arming: the next callback may run at once on another thread.
        static void on_receive(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes) noexcept
        {
            auto* self = static_cast<loop*>(context);
            self->at += bytes;
            const bool failed = result != ASYNC_SOCKET_RECEIVE_OK || bytes == 0;
            if (failed || self->at == self->in.size() || self->arm() != status::ok)
            {
                self->wake.update(
                    [&]
                    {
                        self->failed = failed || self->at != self->in.size();
                        self->ended = true;
                    });
            }
        }
    };
    connected<P> c;
    loop l;
    l.socket = c.socket.get();
    const std::vector<std::uint8_t> out = pattern_bytes(8, l.in.size());
    REQUIRE(l.arm() == status::ok);
    std::thread writer(
        [&]
        {
            std::size_t at = 0;
            while (at < out.size())
            {
                const long n = P::peer_send(c.pair, out.data() + at, out.size() - at < 30000 ? out.size() - at : 30000);
                if (n <= 0)
                {
                    break;
                }
                at += static_cast<std::size_t>(n);
            }
        });
    REQUIRE(l.wake.wait_for([&] { return l.ended; }, deadline_seconds));
    writer.join();
    CHECK_FALSE(l.failed);
    CHECK(l.at == out.size());
    CHECK(l.in == out);
}

TEST_CASE_TEMPLATE_DEFINE("close racing completions: exactly one callback per IO in 2000 rounds", P,
                          conformance_close_race)
{
    CONFORMANCE_RUN_UNLESS_SKIPPED(P, conformance_close_race);
    connected<P> c;
    std::uint8_t in[4] = {};
    ASYNC_SOCKET_BUFFER receive_buffer{in, sizeof in};
    const std::uint8_t one = 0x5A;
    int accepted = 0;
    for (int round = 0; round < 2000; ++round)
    {
        if (round != 0)
        {
            REQUIRE(c.socket->open_async(&io_log::on_open, &c.log) == status::ok);
        }
        accepted += c.receive(&receive_buffer, 1) == status::ok ? 1 : 0;
        std::thread peer([&] { (void)P::peer_send(c.pair, &one, 1); });
        if (round % 2 == 0)
        {
            peer.join();
        }
        REQUIRE(c.socket->close() == status::ok);
        if (peer.joinable())
        {
            peer.join();
        }
        REQUIRE(c.log.receives() == accepted); // close waited for every callback
    }
    CHECK(accepted == 2000);
    CHECK(c.log.receives_error == 0);
    CHECK(c.log.invalid == 0);
    CHECK(c.log.receives_ok + c.log.receives_because_close == 2000);
    CHECK(c.log.receives_ok > 0);
}

TEST_CASE_TEMPLATE_DEFINE("an IO started on a thread that has ended since still completes", P, conformance_thread_ends)
{
    CONFORMANCE_RUN_UNLESS_SKIPPED(P, conformance_thread_ends);
    connected<P> c;
    std::uint8_t in[8] = {};
    ASYNC_SOCKET_BUFFER receive_buffer{in, sizeof in};
    status started = status::invalid_state;
    std::thread([&] { started = c.receive(&receive_buffer, 1); }).join();
    REQUIRE(started == status::ok);
    const std::uint8_t bytes[2] = {0xAB, 0xCD};
    REQUIRE(P::peer_send(c.pair, bytes, 2) == 2);
    REQUIRE(c.log.wait([](const io_log& l) { return l.receives() == 1; }));
    CHECK(c.log.receives_ok == 1);
    CHECK(c.log.bytes_received == 2);
    CHECK(in[1] == 0xCD);
}

// What a C++ handler saw: its one result.
template <class Result>
struct handler_seen
{
    waiter wake;
    int calls = 0;
    Result last{};

    auto handler() noexcept
    {
        return [this](Result r) noexcept
        {
            wake.update(
                [&]
                {
                    ++calls;
                    last = r;
                });
        };
    }
    bool one_call()
    {
        return wake.wait_for([&] { return calls >= 1; }, deadline_seconds) && calls == 1;
    }
};

TEST_CASE_TEMPLATE_DEFINE("C++ handlers carry the bytes, the outcome and the OS's own error", P, conformance_handlers)
{
    CONFORMANCE_RUN_UNLESS_SKIPPED(P, conformance_handlers);
    using backend = typename P::socket_type::backend_type;
    connected<P> c;

    std::vector<std::uint8_t> out = pattern_bytes(11, 3000);
    ASYNC_SOCKET_BUFFER out_buffers[2] = {{out.data(), 1000}, {out.data() + 1000, 2000}};
    handler_seen<async_socket::send_result> sent;
    {
        peer_reader<P> reader(c.pair, out.size());
        REQUIRE(c.socket->send_async(out_buffers, sent.handler()) == status::ok);
        REQUIRE(sent.one_call());
        reader.join();
        CHECK(reader.got.load() == out.size());
        CHECK(reader.bytes == out);
    }
    CHECK(sent.last.ok());
    CHECK_FALSE(sent.last.error);

    std::uint8_t in[64] = {};
    ASYNC_SOCKET_BUFFER in_buffer{in, sizeof in};
    handler_seen<async_socket::receive_result> received;
    REQUIRE(c.socket->receive_async(std::span<const ASYNC_SOCKET_BUFFER>(&in_buffer, 1), received.handler()) ==
            status::ok);
    const std::uint8_t hello[5] = {'h', 'e', 'l', 'l', 'o'};
    REQUIRE(P::peer_send(c.pair, hello, sizeof hello) == 5);
    REQUIRE(received.one_call());
    CHECK(received.last.ok());
    CHECK(received.last.bytes == 5);
    CHECK(std::memcmp(in, hello, 5) == 0);

    // Close with a receive pending: because_close, with the OS's code of the cancelled IO.
    handler_seen<async_socket::receive_result> cut;
    REQUIRE(c.socket->receive_async(std::span<const ASYNC_SOCKET_BUFFER>(&in_buffer, 1), cut.handler()) == status::ok);
    CHECK(c.socket->close() == status::ok);
    CHECK(cut.calls == 1); // close returns after the handler ran
    CHECK(cut.last.completion == async_socket::io_completion::because_close);
    CHECK(static_cast<bool>(cut.last.error));
    CHECK(cut.last.error.category() == async_socket::detail::os_error_category<backend>());

    // Reopened, a peer's reset fails the pending receive with an error the OS named.
    REQUIRE(c.socket->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) == status::ok);
    handler_seen<async_socket::receive_result> reset;
    REQUIRE(c.socket->receive_async(std::span<const ASYNC_SOCKET_BUFFER>(&in_buffer, 1), reset.handler()) ==
            status::ok);
    P::peer_reset(c.pair);
    REQUIRE(reset.one_call());
    CHECK(reset.last.completion == async_socket::io_completion::error);
    CHECK(static_cast<bool>(reset.last.error));
    CHECK(reset.last.error.category() == async_socket::detail::os_error_category<backend>());
    MESSAGE("a peer's reset reached the handler as " << reset.last.error.value() << " ("
                                                     << doctest::String(reset.last.error.message().c_str()) << ")");
    CHECK(c.socket->close() == status::ok);
}

template <class Socket>
example::task send_then_receive(Socket& socket, std::span<const ASYNC_SOCKET_BUFFER> out,
                                std::span<const ASYNC_SOCKET_BUFFER> in, async_socket::send_result& sent,
                                async_socket::receive_result& received, std::thread::id& resumed_on)
{
    sent = co_await socket.async_send(out);
    received = co_await socket.async_receive(in);
    resumed_on = std::this_thread::get_id();
}

TEST_CASE_TEMPLATE_DEFINE("a coroutine sends, then receives what the peer sent, resumed on the engine's thread", P,
                          conformance_coroutine)
{
    CONFORMANCE_RUN_UNLESS_SKIPPED(P, conformance_coroutine);
    connected<P> c;
    std::vector<std::uint8_t> out = pattern_bytes(13, 100000);
    ASYNC_SOCKET_BUFFER out_buffer{out.data(), static_cast<std::uint32_t>(out.size())};
    std::uint8_t in[16] = {};
    ASYNC_SOCKET_BUFFER in_buffer{in, sizeof in};
    async_socket::send_result sent{};
    async_socket::receive_result received{};
    std::thread::id resumed_on;
    {
        peer_reader<P> reader(c.pair, out.size());
        example::task running =
            send_then_receive(*c.socket, std::span<const ASYNC_SOCKET_BUFFER>(&out_buffer, 1),
                              std::span<const ASYNC_SOCKET_BUFFER>(&in_buffer, 1), sent, received, resumed_on);
        running.start();
        reader.join();
        CHECK(reader.got.load() == out.size());
        CHECK(reader.bytes == out);
        const std::uint8_t reply[3] = {1, 2, 3};
        REQUIRE(P::peer_send(c.pair, reply, sizeof reply) == 3);
        REQUIRE(running.wait_for(deadline_seconds));
    }
    CHECK(sent.ok());
    CHECK(received.ok());
    CHECK(received.bytes == 3);
    CHECK(in[2] == 3);
    CHECK(resumed_on != std::this_thread::get_id()); // the receive waited for the peer: resumed by the engine
    CHECK(c.socket->close() == status::ok);
}

template <class Socket>
example::task receive_until_stopped(Socket& socket, std::span<const ASYNC_SOCKET_BUFFER> in, std::stop_token stop,
                                    async_socket::receive_result& received)
{
    received = co_await socket.async_receive(in, std::move(stop));
}

TEST_CASE_TEMPLATE_DEFINE("a stop_token cancels one pending receive; the socket stays open for the next IO", P,
                          conformance_cancel_one)
{
    CONFORMANCE_RUN_UNLESS_SKIPPED(P, conformance_cancel_one);
    using backend = typename P::socket_type::backend_type;
    connected<P> c;
    std::uint8_t in[16] = {};
    ASYNC_SOCKET_BUFFER in_buffer{in, sizeof in};
    const std::span<const ASYNC_SOCKET_BUFFER> in_span(&in_buffer, 1);

    std::stop_source stop;
    handler_seen<async_socket::receive_result> cancelled;
    REQUIRE(c.socket->receive_async(in_span, cancelled.handler(), stop.get_token()) == status::ok);
    CHECK(stop.request_stop());
    REQUIRE(cancelled.one_call());
    CHECK(cancelled.last.completion == async_socket::io_completion::cancelled);
    CHECK(cancelled.last.c_result() == ASYNC_SOCKET_RECEIVE_ERROR);
    CHECK(static_cast<bool>(cancelled.last.error));
    CHECK(cancelled.last.error.category() == async_socket::detail::os_error_category<backend>());
    MESSAGE("a cancelled receive reached the handler as " << cancelled.last.error.value());
    CHECK(c.socket->state() == async_socket::socket_state::open);

    // A token stopped already: refused, nothing started.
    handler_seen<async_socket::receive_result> refused;
    CHECK(c.socket->receive_async(in_span, refused.handler(), stop.get_token()) == status::cancelled);
    CHECK(refused.calls == 0);

    // The same socket, next IO: the peer's bytes arrive whole (the cancelled receive took none).
    std::stop_source unused;
    handler_seen<async_socket::receive_result> next;
    REQUIRE(c.socket->receive_async(in_span, next.handler(), unused.get_token()) == status::ok);
    const std::uint8_t hello[5] = {'h', 'e', 'l', 'l', 'o'};
    REQUIRE(P::peer_send(c.pair, hello, sizeof hello) == 5);
    REQUIRE(next.one_call());
    CHECK(next.last.ok());
    CHECK(next.last.bytes == 5);
    CHECK(std::memcmp(in, hello, 5) == 0);
    unused.request_stop(); // after the IO completed: nothing happens
    CHECK(next.calls == 1);

    // A coroutine's receive, cancelled while it waits.
    std::stop_source coroutine_stop;
    async_socket::receive_result received{};
    example::task running = receive_until_stopped(*c.socket, in_span, coroutine_stop.get_token(), received);
    running.start();
    coroutine_stop.request_stop();
    REQUIRE(running.wait_for(deadline_seconds));
    CHECK(received.completion == async_socket::io_completion::cancelled);
    CHECK(c.socket->close() == status::ok);
}

TEST_CASE_TEMPLATE_DEFINE("a stop racing the receive's own completion: exactly one outcome per IO in 2000 rounds", P,
                          conformance_cancel_race)
{
    CONFORMANCE_RUN_UNLESS_SKIPPED(P, conformance_cancel_race);
    connected<P> c;
    constexpr int rounds = 2000;
    std::uint8_t in[4] = {};
    ASYNC_SOCKET_BUFFER in_buffer{in, sizeof in};
    const std::span<const ASYNC_SOCKET_BUFFER> in_span(&in_buffer, 1);
    int ok = 0;
    int cancelled = 0;
    int other = 0;
    int lost_or_duplicated = 0;
    for (int round = 0; round < rounds; ++round)
    {
        // Each round the peer sends one byte while the stop comes: late (every other round, after the send) or
        // early. The byte is received exactly once: by the cancellable receive, or by the next one.
        std::stop_source stop;
        handler_seen<async_socket::receive_result> seen;
        REQUIRE(c.socket->receive_async(in_span, seen.handler(), stop.get_token()) == status::ok);
        const std::uint8_t one = static_cast<std::uint8_t>(round);
        std::thread peer([&] { (void)P::peer_send(c.pair, &one, 1); });
        if (round % 2 == 0)
        {
            peer.join();
        }
        stop.request_stop();
        if (peer.joinable())
        {
            peer.join();
        }
        REQUIRE(seen.one_call());
        std::uint32_t got = 0;
        if (seen.last.completion == async_socket::io_completion::ok)
        {
            ++ok;
            got = seen.last.bytes;
        }
        else if (seen.last.completion == async_socket::io_completion::cancelled)
        {
            ++cancelled;
            handler_seen<async_socket::receive_result> rest; // the byte is still in the socket
            REQUIRE(c.socket->receive_async(in_span, rest.handler()) == status::ok);
            REQUIRE(rest.one_call());
            got = rest.last.ok() ? rest.last.bytes : 0;
        }
        else
        {
            ++other;
        }
        lost_or_duplicated += got == 1 && in[0] == one ? 0 : 1;
    }
    MESSAGE("2000 stops racing receives: " << ok << " completed, " << cancelled << " cancelled");
    CHECK(other == 0);
    CHECK(lost_or_duplicated == 0);
    CHECK(ok + cancelled == rounds);
    CHECK(ok > 0);
    CHECK(cancelled > 0);
    CHECK(c.socket->close() == status::ok);
}

} // namespace conformance

// Every conformance test, for TEST_CASE_TEMPLATE_INVOKE(..., platforms) in a platform's test file.
#define ASYNC_SOCKET_CONFORMANCE_SUITE(...)                                                                            \
    namespace conformance                                                                                              \
    {                                                                                                                  \
    TEST_CASE_TEMPLATE_INVOKE(conformance_round_trip, __VA_ARGS__);                                                    \
    TEST_CASE_TEMPLATE_INVOKE(conformance_many_buffers, __VA_ARGS__);                                                  \
    TEST_CASE_TEMPLATE_INVOKE(conformance_large_send, __VA_ARGS__);                                                    \
    TEST_CASE_TEMPLATE_INVOKE(conformance_both_directions, __VA_ARGS__);                                               \
    TEST_CASE_TEMPLATE_INVOKE(conformance_close_reopen, __VA_ARGS__);                                                  \
    TEST_CASE_TEMPLATE_INVOKE(conformance_data_with_fin, __VA_ARGS__);                                                 \
    TEST_CASE_TEMPLATE_INVOKE(conformance_peer_reset, __VA_ARGS__);                                                    \
    TEST_CASE_TEMPLATE_INVOKE(conformance_rearm_from_callback, __VA_ARGS__);                                           \
    TEST_CASE_TEMPLATE_INVOKE(conformance_close_race, __VA_ARGS__);                                                    \
    TEST_CASE_TEMPLATE_INVOKE(conformance_thread_ends, __VA_ARGS__);                                                   \
    TEST_CASE_TEMPLATE_INVOKE(conformance_handlers, __VA_ARGS__);                                                      \
    TEST_CASE_TEMPLATE_INVOKE(conformance_coroutine, __VA_ARGS__);                                                     \
    TEST_CASE_TEMPLATE_INVOKE(conformance_cancel_one, __VA_ARGS__);                                                    \
    TEST_CASE_TEMPLATE_INVOKE(conformance_cancel_race, __VA_ARGS__);                                                   \
    }
