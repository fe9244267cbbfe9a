// Integration tests of async_socket::win32_async_socket on real loopback TCP sockets: the Win32
// threadpool, Winsock and the library together (under Wine when cross compiling).
#include <async_socket/async_socket.hpp>

#include "support/buffers.hpp"
#include "support/engine_ref.hpp"
#include "support/loopback.hpp"

#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <span>
#include <thread>
#include <vector>

namespace
{

using async_socket::status;
using async_socket::win32_async_socket;
using win32_test::engine_ref;
using win32_test::make_bytes;

// Wine is slow; a deadline only ends a test that would otherwise hang.
constexpr double deadline_seconds = 60.0;

struct open_log
{
    std::atomic<int> calls{0};
    std::atomic<ASYNC_SOCKET_OPEN_RESULT> last{ASYNC_SOCKET_OPEN_RESULT_INVALID};

    static void callback(void* context, ASYNC_SOCKET_OPEN_RESULT result)
    {
        auto* self = static_cast<open_log*>(context);
        self->last = result;
        ++self->calls;
    }
};

struct send_log
{
    win32_test::waiter waiter;
    std::vector<ASYNC_SOCKET_SEND_RESULT> results; // guarded by waiter.mutex()

    static void callback(void* context, ASYNC_SOCKET_SEND_RESULT result)
    {
        auto* self = static_cast<send_log*>(context);
        self->waiter.update([&] { self->results.push_back(result); });
    }

    bool wait_for_count(std::size_t count)
    {
        return waiter.wait_for([&] { return results.size() >= count; }, deadline_seconds);
    }

    std::vector<ASYNC_SOCKET_SEND_RESULT> seen()
    {
        std::lock_guard lock(waiter.mutex());
        return results;
    }
};

struct receive_completion
{
    ASYNC_SOCKET_RECEIVE_RESULT result;
    std::uint32_t bytes;
};

struct receive_log
{
    win32_test::waiter waiter;
    std::vector<receive_completion> results; // guarded by waiter.mutex()

    static void callback(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes)
    {
        auto* self = static_cast<receive_log*>(context);
        self->waiter.update([&] { self->results.push_back({result, bytes}); });
    }

    bool wait_for_count(std::size_t count)
    {
        return waiter.wait_for([&] { return results.size() >= count; }, deadline_seconds);
    }

    std::vector<receive_completion> seen()
    {
        std::lock_guard lock(waiter.mutex());
        return results;
    }
};

// Winsock, an engine, a connected pair of SOCKETs and an async socket over each end (opened unless asked
// not to). Members are destroyed in reverse order: the async sockets before the SOCKETs they use.
struct loopback_sockets
{
    win32_test::wsa_session wsa;
    engine_ref engine;
    win32_test::socket_pair pair = win32_test::make_loopback_pair();
    open_log client_opened;
    open_log server_opened;
    win32_async_socket::handle client;
    win32_async_socket::handle server;

    explicit loopback_sockets(bool open = true)
    {
        REQUIRE(wsa.ok());
        REQUIRE(engine.engine != nullptr);
        REQUIRE(pair.valid());
        client = win32_async_socket::create(engine.engine, win32_test::as_handle(pair.client));
        server = win32_async_socket::create(engine.engine, win32_test::as_handle(pair.server));
        REQUIRE(client);
        REQUIRE(server);
        if (open)
        {
            REQUIRE(client->open_async(&open_log::callback, &client_opened) == status::ok);
            REQUIRE(server->open_async(&open_log::callback, &server_opened) == status::ok);
        }
    }
};

// Sends the buffers as one IO and waits for its completion; returns the result.
ASYNC_SOCKET_SEND_RESULT send_and_wait(win32_async_socket& socket, std::span<const ASYNC_SOCKET_BUFFER> buffers)
{
    send_log log;
    const status sent =
        socket.send_async(buffers.data(), static_cast<std::uint32_t>(buffers.size()), &send_log::callback, &log);
    REQUIRE(sent == status::ok);
    REQUIRE(log.wait_for_count(1));
    const auto results = log.seen();
    CHECK(results.size() == 1);
    return results.front();
}

// Receives into the regions, in order, until all of them are full: the first receive scatters over every
// region, and when it brings fewer bytes, the next ones cover what is left. Returns false on a receive that
// fails or brings 0 bytes.
bool receive_into(win32_async_socket& socket, std::span<const ASYNC_SOCKET_BUFFER> regions)
{
    const std::size_t total = win32_test::total_length(regions);
    std::size_t filled = 0;
    while (filled < total)
    {
        std::vector<ASYNC_SOCKET_BUFFER> rest = win32_test::regions_from(regions, filled);
        receive_log log;
        const status posted =
            socket.receive_async(rest.data(), static_cast<std::uint32_t>(rest.size()), &receive_log::callback, &log);
        if (posted != status::ok || !log.wait_for_count(1))
        {
            return false;
        }
        const receive_completion done = log.seen().front();
        if (done.result != ASYNC_SOCKET_RECEIVE_OK || done.bytes == 0)
        {
            return false;
        }
        filled += done.bytes;
    }
    return filled == total;
}

// Sends `size` pattern bytes from one socket as one buffer and checks that the other receives them.
void exchange(win32_async_socket& from, win32_async_socket& to, std::size_t size, std::size_t first_offset = 0)
{
    std::vector<std::uint8_t> sent = make_bytes(size, first_offset);
    std::vector<std::uint8_t> received(size);
    const ASYNC_SOCKET_BUFFER out{sent.data(), static_cast<std::uint32_t>(size)};
    const ASYNC_SOCKET_BUFFER in{received.data(), static_cast<std::uint32_t>(size)};
    // The receiver thread only records; doctest is called on this thread (its thread-local state at a thread's
    // exit crashes under mingw-w64's emulated TLS, seen with -s).
    bool received_all = false;
    std::thread receiver([&] { received_all = receive_into(to, std::span(&in, 1)); });
    CHECK(send_and_wait(from, std::span(&out, 1)) == ASYNC_SOCKET_SEND_OK);
    receiver.join();
    CHECK(received_all);
    CHECK(received == sent);
}

} // namespace

TEST_CASE("open calls on_open_complete with ASYNC_SOCKET_OPEN_OK before it returns")
{
    loopback_sockets sockets(false);
    open_log opened;

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_017: [ On success async_socket_open_async shall call
    // on_open_complete_context with ASYNC_SOCKET_OPEN_OK. ]
    REQUIRE(sockets.client->open_async(&open_log::callback, &opened) == status::ok);

    CHECK(opened.calls == 1);
    CHECK(opened.last == ASYNC_SOCKET_OPEN_OK);
    CHECK(sockets.client->state() == async_socket::socket_state::open);
}

TEST_CASE("one buffer each way arrives byte for byte")
{
    loopback_sockets sockets;

    SUBCASE("client to server")
    {
        exchange(*sockets.client, *sockets.server, 1000);
    }
    SUBCASE("server to client")
    {
        exchange(*sockets.server, *sockets.client, 1000);
    }
    SUBCASE("a single byte")
    {
        exchange(*sockets.client, *sockets.server, 1);
    }
}

TEST_CASE("several buffers each way are gathered on send and scattered on receive in order")
{
    loopback_sockets sockets;
    for (auto [from, to] :
         {std::pair{sockets.client.get(), sockets.server.get()}, std::pair{sockets.server.get(), sockets.client.get()}})
    {
        // Three separate send buffers (1 + 100 + 4096 bytes) and four separate receive buffers of other sizes.
        const std::vector<std::uint8_t> all = make_bytes(1 + 100 + 4096, 7);
        std::vector<std::uint8_t> a(all.begin(), all.begin() + 1);
        std::vector<std::uint8_t> b(all.begin() + 1, all.begin() + 101);
        std::vector<std::uint8_t> c(all.begin() + 101, all.end());
        const std::array<ASYNC_SOCKET_BUFFER, 3> out = {{{a.data(), static_cast<std::uint32_t>(a.size())},
                                                         {b.data(), static_cast<std::uint32_t>(b.size())},
                                                         {c.data(), static_cast<std::uint32_t>(c.size())}}};

        std::vector<std::uint8_t> r1(7), r2(2000), r3(2189), r4(1);
        const std::array<ASYNC_SOCKET_BUFFER, 4> in = {{{r1.data(), static_cast<std::uint32_t>(r1.size())},
                                                        {r2.data(), static_cast<std::uint32_t>(r2.size())},
                                                        {r3.data(), static_cast<std::uint32_t>(r3.size())},
                                                        {r4.data(), static_cast<std::uint32_t>(r4.size())}}};

        bool received_all = false; // checked on this thread, as in exchange()
        // `to` by an init-capture: clang before 16 cannot capture a structured binding.
        std::thread receiver([&, to = to] { received_all = receive_into(*to, in); });
        CHECK(send_and_wait(*from, out) == ASYNC_SOCKET_SEND_OK);
        receiver.join();
        CHECK(received_all);

        std::vector<std::uint8_t> joined;
        for (const auto* part : {&r1, &r2, &r3, &r4})
        {
            joined.insert(joined.end(), part->begin(), part->end());
        }
        CHECK(joined == all);
    }
}

TEST_CASE("a receive posted before the data is sent completes when the data arrives")
{
    loopback_sockets sockets;
    std::vector<std::uint8_t> received(64);
    ASYNC_SOCKET_BUFFER in{received.data(), static_cast<std::uint32_t>(received.size())};
    receive_log log;
    REQUIRE(sockets.server->receive_async(&in, 1, &receive_log::callback, &log) == status::ok);
    CHECK(log.seen().empty()); // nothing was sent yet

    std::vector<std::uint8_t> sent = make_bytes(64);
    const ASYNC_SOCKET_BUFFER out{sent.data(), static_cast<std::uint32_t>(sent.size())};
    CHECK(send_and_wait(*sockets.client, std::span(&out, 1)) == ASYNC_SOCKET_SEND_OK);

    REQUIRE(log.wait_for_count(1));
    const receive_completion done = log.seen().front();
    REQUIRE(done.result == ASYNC_SOCKET_RECEIVE_OK);
    REQUIRE(done.bytes > 0);
    CHECK(std::memcmp(received.data(), sent.data(), done.bytes) == 0);
    if (done.bytes < sent.size())
    {
        const ASYNC_SOCKET_BUFFER rest{received.data() + done.bytes,
                                       static_cast<std::uint32_t>(sent.size() - done.bytes)};
        CHECK(receive_into(*sockets.server, std::span(&rest, 1)));
        CHECK(received == sent);
    }
}

TEST_CASE("close with a receive pending returns and completes the receive once with BECAUSE_CLOSE")
{
    loopback_sockets sockets;
    std::vector<std::uint8_t> received(64);
    ASYNC_SOCKET_BUFFER in{received.data(), static_cast<std::uint32_t>(received.size())};
    receive_log log;
    REQUIRE(sockets.server->receive_async(&in, 1, &receive_log::callback, &log) == status::ok);

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_040: [ async_socket_close shall wait for any executing callbacks by calling
    // WaitForThreadpoolIoCallbacks, passing FALSE as fCancelPendingCallbacks. ]
    CHECK(sockets.server->close() == status::ok);

    // close waited for the callback: it has run by now, once.
    const auto seen = log.seen();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);
    CHECK(seen[0].bytes == 0);
    CHECK(sockets.server->state() == async_socket::socket_state::closed);

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_098: [ If async_socket is not OPEN, async_socket_receive_async shall fail and
    // return a non-zero value. ]
    CHECK(sockets.server->receive_async(&in, 1, &receive_log::callback, &log) == status::invalid_state);
    // Tests_SRS_ASYNC_SOCKET_WIN32_01_022: [ If async_socket is not OPEN, async_socket_close shall return. ]
    CHECK(sockets.server->close() == status::invalid_state);
    CHECK(log.seen().size() == 1);
}

TEST_CASE("close with sends in flight from several threads completes every accepted send exactly once")
{
    loopback_sockets sockets;
    constexpr int thread_count = 4;
    constexpr int max_sends_per_thread = 256;
    constexpr std::uint32_t chunk = 32 * 1024;
    const std::vector<std::uint8_t> payload = make_bytes(chunk);

    struct send_token
    {
        std::atomic<int> completions{0};
        std::atomic<ASYNC_SOCKET_SEND_RESULT> result{ASYNC_SOCKET_SEND_RESULT_INVALID};
    };
    static constexpr ON_ASYNC_SOCKET_SEND_COMPLETE on_send = [](void* context, ASYNC_SOCKET_SEND_RESULT result)
    {
        auto* token = static_cast<send_token*>(context);
        token->result = result;
        ++token->completions;
    };

    std::vector<std::unique_ptr<send_token[]>> tokens;
    for (int t = 0; t < thread_count; ++t)
    {
        tokens.push_back(std::make_unique<send_token[]>(max_sends_per_thread));
    }
    std::array<std::atomic<int>, thread_count> accepted{};
    std::atomic<int> total_accepted{0};
    win32_test::waiter progress;

    // The server never reads: the sends fill the loopback buffers and stay pending.
    std::vector<std::thread> senders;
    for (int t = 0; t < thread_count; ++t)
    {
        senders.emplace_back(
            [&, t]
            {
                for (int i = 0; i < max_sends_per_thread; ++i)
                {
                    const ASYNC_SOCKET_BUFFER buffer{const_cast<std::uint8_t*>(payload.data()), chunk};
                    if (sockets.client->send_async(&buffer, 1, on_send, &tokens[t][i]) != status::ok)
                    {
                        break;
                    }
                    ++accepted[t];
                    progress.update([&] { ++total_accepted; });
                }
            });
    }
    REQUIRE(progress.wait_for([&] { return total_accepted >= thread_count * 4; }, deadline_seconds));

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_020: [ async_socket_close shall wait for all executing async_socket_send_async
    // and async_socket_receive_async APIs. ]
    CHECK(sockets.client->close() == status::ok);
    for (auto& sender : senders)
    {
        sender.join();
    }

    int because_close = 0;
    for (int t = 0; t < thread_count; ++t)
    {
        for (int i = 0; i < max_sends_per_thread; ++i)
        {
            const send_token& token = tokens[t][i];
            if (i < accepted[t])
            {
                REQUIRE(token.completions == 1);
                const ASYNC_SOCKET_SEND_RESULT result = token.result;
                CHECK((result == ASYNC_SOCKET_SEND_OK || result == ASYNC_SOCKET_SEND_BECAUSE_CLOSE));
                because_close += result == ASYNC_SOCKET_SEND_BECAUSE_CLOSE ? 1 : 0;
            }
            else
            {
                REQUIRE(token.completions == 0);
            }
        }
    }
    MESSAGE("sends accepted: " << total_accepted.load() << ", completed with BECAUSE_CLOSE: " << because_close);
}

TEST_CASE("a socket closed with a receive pending can be opened again and sends and receives")
{
    loopback_sockets sockets;
    exchange(*sockets.client, *sockets.server, 100);

    std::vector<std::uint8_t> received(16);
    ASYNC_SOCKET_BUFFER in{received.data(), static_cast<std::uint32_t>(received.size())};
    receive_log log;
    REQUIRE(sockets.server->receive_async(&in, 1, &receive_log::callback, &log) == status::ok);
    CHECK(sockets.server->close() == status::ok);
    CHECK(sockets.client->close() == status::ok);
    REQUIRE(log.seen().size() == 1);
    CHECK(log.seen()[0].result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_021: [ Then async_socket_close shall close the async socket, leaving it in a
    // state where an async_socket_open_async can be performed. ]
    open_log reopened;
    REQUIRE(sockets.server->open_async(&open_log::callback, &reopened) == status::ok);
    REQUIRE(sockets.client->open_async(&open_log::callback, &reopened) == status::ok);
    CHECK(reopened.calls == 2);

    exchange(*sockets.client, *sockets.server, 5000, 100);
    exchange(*sockets.server, *sockets.client, 5000, 200);

    // And once more, to be sure the binding survives any number of cycles.
    CHECK(sockets.server->close() == status::ok);
    REQUIRE(sockets.server->open_async(&open_log::callback, &reopened) == status::ok);
    exchange(*sockets.client, *sockets.server, 10, 300);
}

TEST_CASE("destroy while open closes the socket and completes a pending receive with BECAUSE_CLOSE")
{
    loopback_sockets sockets;
    std::vector<std::uint8_t> received(16);
    ASYNC_SOCKET_BUFFER in{received.data(), static_cast<std::uint32_t>(received.size())};
    receive_log log;
    REQUIRE(sockets.server->receive_async(&in, 1, &receive_log::callback, &log) == status::ok);

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_006: [ async_socket_destroy shall perform an implicit close if async_socket is
    // OPEN. ]
    sockets.server.reset();

    const auto seen = log.seen();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);

    // The SOCKET is still the caller's and still works.
    const char byte = 'x';
    CHECK(send(sockets.pair.server, &byte, 1, 0) == 1);
}

TEST_CASE("a peer's orderly shutdown completes a receive with OK and 0 bytes")
{
    loopback_sockets sockets;
    std::vector<std::uint8_t> received(16);
    ASYNC_SOCKET_BUFFER in{received.data(), static_cast<std::uint32_t>(received.size())};
    receive_log log;
    REQUIRE(sockets.server->receive_async(&in, 1, &receive_log::callback, &log) == status::ok);

    REQUIRE(shutdown(sockets.pair.client, SD_SEND) == 0);

    REQUIRE(log.wait_for_count(1));
    const receive_completion done = log.seen().front();
    CHECK(done.result == ASYNC_SOCKET_RECEIVE_OK);
    CHECK(done.bytes == 0);
}

TEST_CASE("a peer's reset completes a pending receive with ERROR and the socket still closes")
{
    loopback_sockets sockets;
    sockets.client.reset(); // the peer is the raw SOCKET from here on

    std::vector<std::uint8_t> received(16);
    ASYNC_SOCKET_BUFFER in{received.data(), static_cast<std::uint32_t>(received.size())};
    receive_log log;
    REQUIRE(sockets.server->receive_async(&in, 1, &receive_log::callback, &log) == status::ok);

    const linger abort_on_close{1, 0};
    REQUIRE(setsockopt(sockets.pair.client, SOL_SOCKET, SO_LINGER, reinterpret_cast<const char*>(&abort_on_close),
                       sizeof(abort_on_close)) == 0);
    sockets.pair.close_client();

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_070: [ If io_result is not NO_ERROR, the on_receive_complete callback passed
    // to async_socket_receive_async shall be called with on_receive_complete_context as context,
    // ASYNC_SOCKET_RECEIVE_ERROR as result and 0 for bytes_received. ]
    REQUIRE(log.wait_for_count(1));
    const receive_completion done = log.seen().front();
    CHECK(done.result == ASYNC_SOCKET_RECEIVE_ERROR);
    CHECK(done.bytes == 0);

    // A send on the reset connection either fails at once or completes with ERROR; nothing crashes.
    std::vector<std::uint8_t> sent = make_bytes(16);
    const ASYNC_SOCKET_BUFFER out{sent.data(), static_cast<std::uint32_t>(sent.size())};
    send_log sends;
    const status sent_status = sockets.server->send_async(&out, 1, &send_log::callback, &sends);
    if (sent_status == status::ok)
    {
        REQUIRE(sends.wait_for_count(1));
        CHECK(sends.seen().front() != ASYNC_SOCKET_SEND_OK);
    }
    else
    {
        CHECK(sent_status == status::os_error);
    }
    CHECK(sockets.server->close() == status::ok);
    CHECK(log.seen().size() == 1);
}

TEST_CASE("a 16 MiB stream sent in chunks arrives byte for byte through pipelined receives")
{
    loopback_sockets sockets;
    constexpr std::size_t total = 16u * 1024 * 1024;
    constexpr std::size_t send_chunk = 256 * 1024;
    constexpr std::size_t receive_size = 64 * 1024;
    constexpr std::size_t send_window = 4;
    constexpr std::size_t receive_window = 4;
    const std::vector<std::uint8_t> source = make_bytes(total);

    struct pending_receive
    {
        std::vector<std::uint8_t> buffer = std::vector<std::uint8_t>(receive_size);
        bool done = false;
        ASYNC_SOCKET_RECEIVE_RESULT result = ASYNC_SOCKET_RECEIVE_RESULT_INVALID;
        std::uint32_t bytes = 0;
        win32_test::waiter* waiter = nullptr;
    };
    struct pending_send
    {
        bool done = false;
        ASYNC_SOCKET_SEND_RESULT result = ASYNC_SOCKET_SEND_RESULT_INVALID;
        win32_test::waiter* waiter = nullptr;
    };
    static constexpr ON_ASYNC_SOCKET_RECEIVE_COMPLETE on_receive =
        [](void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes)
    {
        auto* receive = static_cast<pending_receive*>(context);
        receive->waiter->update(
            [&]
            {
                receive->result = result;
                receive->bytes = bytes;
                receive->done = true;
            });
    };
    static constexpr ON_ASYNC_SOCKET_SEND_COMPLETE on_send = [](void* context, ASYNC_SOCKET_SEND_RESULT result)
    {
        auto* send = static_cast<pending_send*>(context);
        send->waiter->update(
            [&]
            {
                send->result = result;
                send->done = true;
            });
    };

    win32_test::waiter waiter;
    std::deque<pending_receive> receives; // in the order they were posted, which is the order they fill
    std::deque<pending_send> sends;
    std::size_t next_receive_to_check = 0;
    std::size_t sent_offset = 0;
    std::size_t sends_done = 0;
    std::size_t received = 0;
    bool mismatch = false;

    const auto post_receive = [&]
    {
        pending_receive& receive = receives.emplace_back();
        receive.waiter = &waiter;
        ASYNC_SOCKET_BUFFER in{receive.buffer.data(), static_cast<std::uint32_t>(receive.buffer.size())};
        REQUIRE(sockets.server->receive_async(&in, 1, on_receive, &receive) == status::ok);
    };
    const auto post_send = [&]
    {
        pending_send& send = sends.emplace_back();
        send.waiter = &waiter;
        const std::size_t size = std::min(send_chunk, total - sent_offset);
        ASYNC_SOCKET_BUFFER out{const_cast<std::uint8_t*>(source.data() + sent_offset),
                                static_cast<std::uint32_t>(size)};
        REQUIRE(sockets.client->send_async(&out, 1, on_send, &send) == status::ok);
        sent_offset += size;
    };

    for (std::size_t i = 0; i < receive_window; ++i)
    {
        post_receive();
    }
    while (received < total && !mismatch)
    {
        while (sent_offset < total && sends.size() - sends_done < send_window)
        {
            post_send();
        }
        REQUIRE(waiter.wait_for(
            [&]
            { return receives[next_receive_to_check].done || (sends_done < sends.size() && sends[sends_done].done); },
            deadline_seconds));

        std::unique_lock lock(waiter.mutex());
        while (sends_done < sends.size() && sends[sends_done].done)
        {
            REQUIRE(sends[sends_done].result == ASYNC_SOCKET_SEND_OK);
            ++sends_done;
        }
        if (!receives[next_receive_to_check].done)
        {
            continue;
        }
        const pending_receive& receive = receives[next_receive_to_check];
        REQUIRE(receive.result == ASYNC_SOCKET_RECEIVE_OK);
        REQUIRE(receive.bytes > 0); // the peer does not shut down before the end
        REQUIRE(received + receive.bytes <= total);
        mismatch = std::memcmp(receive.buffer.data(), source.data() + received, receive.bytes) != 0;
        received += receive.bytes;
        ++next_receive_to_check;
        lock.unlock();
        if (received < total)
        {
            post_receive(); // keeps receive_window receives posted
        }
    }
    CHECK_FALSE(mismatch);
    CHECK(received == total);
    REQUIRE(waiter.wait_for([&] { return sends.back().done; }, deadline_seconds));

    // The receives still posted complete with BECAUSE_CLOSE.
    CHECK(sockets.server->close() == status::ok);
    for (std::size_t i = next_receive_to_check; i < receives.size(); ++i)
    {
        std::lock_guard lock(waiter.mutex());
        CHECK(receives[i].done);
        CHECK(receives[i].result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);
    }
    MESSAGE("16 MiB arrived in " << next_receive_to_check << " receives");
}

TEST_CASE("close from inside one of the socket's own callbacks is refused and does not deadlock")
{
    loopback_sockets sockets;
    struct context_type
    {
        win32_async_socket* socket = nullptr;
        std::atomic<int> close_status{-1};
        win32_test::waiter waiter;
    } context;
    context.socket = sockets.server.get();
    static constexpr ON_ASYNC_SOCKET_RECEIVE_COMPLETE on_receive =
        [](void* raw, ASYNC_SOCKET_RECEIVE_RESULT, std::uint32_t)
    {
        auto* self = static_cast<context_type*>(raw);
        const auto closed = static_cast<int>(self->socket->close());
        self->waiter.update([&] { self->close_status = closed; });
    };

    std::vector<std::uint8_t> received(16);
    ASYNC_SOCKET_BUFFER in{received.data(), static_cast<std::uint32_t>(received.size())};
    REQUIRE(sockets.server->receive_async(&in, 1, on_receive, &context) == status::ok);
    std::vector<std::uint8_t> sent = make_bytes(16);
    const ASYNC_SOCKET_BUFFER out{sent.data(), static_cast<std::uint32_t>(sent.size())};
    CHECK(send_and_wait(*sockets.client, std::span(&out, 1)) == ASYNC_SOCKET_SEND_OK);

    REQUIRE(context.waiter.wait_for([&] { return context.close_status != -1; }, deadline_seconds));
    CHECK(context.close_status == static_cast<int>(status::called_from_callback));
    CHECK(sockets.server->state() == async_socket::socket_state::open);
    CHECK(sockets.server->close() == status::ok);
}

TEST_CASE("invalid arguments and states are refused with an error and no callback")
{
    loopback_sockets sockets(false);
    std::vector<std::uint8_t> bytes(16);
    ASYNC_SOCKET_BUFFER good{bytes.data(), 16};
    send_log sends;
    receive_log receives;

    SUBCASE("create")
    {
        // Tests_SRS_ASYNC_SOCKET_WIN32_01_002: [ If execution_engine is NULL, async_socket_create shall fail and
        // return NULL. ]
        CHECK_FALSE(win32_async_socket::create(nullptr, win32_test::as_handle(sockets.pair.client)));
        // Tests_SRS_ASYNC_SOCKET_WIN32_01_034: [ If socket_handle is NULL, async_socket_create shall fail and
        // return NULL. ]
        CHECK_FALSE(win32_async_socket::create(sockets.engine.engine, nullptr));
    }
    SUBCASE("open")
    {
        // Tests_SRS_ASYNC_SOCKET_WIN32_01_008: [ If on_open_complete is NULL, async_socket_open_async shall fail
        // and return a non-zero value. ]
        CHECK(sockets.client->open_async(nullptr, nullptr) == status::invalid_argument);
        // Tests_SRS_ASYNC_SOCKET_WIN32_01_009: [ on_open_complete_context shall be allowed to be NULL. ]
        CHECK(sockets.client->open_async([](void*, ASYNC_SOCKET_OPEN_RESULT) {}, nullptr) == status::ok);
        // Tests_SRS_ASYNC_SOCKET_WIN32_01_015: [ If async_socket is already OPEN or OPENING,
        // async_socket_open_async shall fail and return a non-zero value. ]
        open_log opened;
        CHECK(sockets.client->open_async(&open_log::callback, &opened) == status::invalid_state);
        CHECK(opened.calls == 0);
    }
    SUBCASE("open of a handle that is not a socket fails with the OS's error")
    {
        auto not_a_socket =
            win32_async_socket::create(sockets.engine.engine, reinterpret_cast<SOCKET_HANDLE>(std::uintptr_t{0x7ff0}));
        REQUIRE(not_a_socket);
        open_log opened;
        // Tests_SRS_ASYNC_SOCKET_WIN32_01_039: [ If any error occurs, async_socket_open_async shall fail and
        // return a non-zero value. ]
        CHECK(not_a_socket->open_async(&open_log::callback, &opened) == status::os_error);
        CHECK(opened.calls == 0);
        CHECK(not_a_socket->state() == async_socket::socket_state::closed);
    }
    SUBCASE("a second async socket over the same SOCKET cannot open: the SOCKET is bound for life")
    {
        REQUIRE(sockets.client->open_async(&open_log::callback, &sockets.client_opened) == status::ok);
        auto second = win32_async_socket::create(sockets.engine.engine, win32_test::as_handle(sockets.pair.client));
        REQUIRE(second);
        open_log opened;
        CHECK(second->open_async(&open_log::callback, &opened) == status::os_error);
        CHECK(opened.calls == 0);
    }
    SUBCASE("send and receive before open")
    {
        // Tests_SRS_ASYNC_SOCKET_WIN32_01_097: [ If async_socket is not OPEN, async_socket_send_async shall fail
        // and return a non-zero value. ]
        CHECK(sockets.client->send_async(&good, 1, &send_log::callback, &sends) == status::invalid_state);
        CHECK(sockets.client->receive_async(&good, 1, &receive_log::callback, &receives) == status::invalid_state);
    }
    SUBCASE("send and receive arguments")
    {
        REQUIRE(sockets.client->open_async(&open_log::callback, &sockets.client_opened) == status::ok);
        ASYNC_SOCKET_BUFFER null_buffer{nullptr, 16};
        ASYNC_SOCKET_BUFFER zero_length{bytes.data(), 0};
        std::array<ASYNC_SOCKET_BUFFER, 2> too_long = {{{bytes.data(), UINT32_MAX}, {bytes.data(), 2}}};
        auto& socket = *sockets.client;

        // Tests_SRS_ASYNC_SOCKET_WIN32_01_025: [ If buffers is NULL, async_socket_send_async shall fail and return a
        // non-zero value. ]
        CHECK(socket.send_async(nullptr, 1, &send_log::callback, &sends) == status::invalid_argument);
        // Tests_SRS_ASYNC_SOCKET_WIN32_01_085: [ If buffer_count is 0, async_socket_send_async shall fail and return a
        // non-zero value. ]
        CHECK(socket.send_async(&good, 0, &send_log::callback, &sends) == status::invalid_argument);
        // Tests_SRS_ASYNC_SOCKET_WIN32_01_089: [ If any of the buffers in payload has buffer set to NULL,
        // async_socket_send_async shall fail and return a non-zero value. ]
        CHECK(socket.send_async(&null_buffer, 1, &send_log::callback, &sends) == status::invalid_argument);
        // Tests_SRS_ASYNC_SOCKET_WIN32_01_090: [ If any of the buffers in payload has length set to 0,
        // async_socket_send_async shall fail and return a non-zero value. ]
        CHECK(socket.send_async(&zero_length, 1, &send_log::callback, &sends) == status::invalid_argument);
        // Tests_SRS_ASYNC_SOCKET_WIN32_01_101: [ If the sum of buffer lengths for all the buffers in payload is greater
        // than UINT32_MAX, async_socket_send_async shall fail and return a non-zero value. ]
        CHECK(socket.send_async(too_long.data(), 2, &send_log::callback, &sends) == status::size_overflow);
        // Tests_SRS_ASYNC_SOCKET_WIN32_01_026: [ If on_send_complete is NULL, async_socket_send_async shall fail and
        // return a non-zero value. ]
        CHECK(socket.send_async(&good, 1, nullptr, &sends) == status::invalid_argument);
        // Tests_SRS_ASYNC_SOCKET_WIN32_01_074: [ If buffers is NULL, async_socket_receive_async shall fail and return a
        // non-zero value. ]
        CHECK(socket.receive_async(nullptr, 1, &receive_log::callback, &receives) == status::invalid_argument);
        // Tests_SRS_ASYNC_SOCKET_WIN32_01_086: [ If buffer_count is 0, async_socket_receive_async shall fail and return
        // a non-zero value. ]
        CHECK(socket.receive_async(&good, 0, &receive_log::callback, &receives) == status::invalid_argument);
        // Tests_SRS_ASYNC_SOCKET_WIN32_01_091: [ If any of the buffers in payload has buffer set to NULL,
        // async_socket_receive_async shall fail and return a non-zero value. ]
        CHECK(socket.receive_async(&null_buffer, 1, &receive_log::callback, &receives) == status::invalid_argument);
        // Tests_SRS_ASYNC_SOCKET_WIN32_01_092: [ If any of the buffers in payload has length set to 0,
        // async_socket_receive_async shall fail and return a non-zero value. ]
        CHECK(socket.receive_async(&zero_length, 1, &receive_log::callback, &receives) == status::invalid_argument);
        // Tests_SRS_ASYNC_SOCKET_WIN32_01_096: [ If the sum of buffer lengths for all the buffers in payload is greater
        // than UINT32_MAX, async_socket_receive_async shall fail and return a non-zero value. ]
        CHECK(socket.receive_async(too_long.data(), 2, &receive_log::callback, &receives) == status::size_overflow);
        // Tests_SRS_ASYNC_SOCKET_WIN32_01_075: [ If on_receive_complete is NULL, async_socket_receive_async shall fail
        // and return a non-zero value. ]
        CHECK(socket.receive_async(&good, 1, nullptr, &receives) == status::invalid_argument);

        // Tests_SRS_ASYNC_SOCKET_WIN32_01_027: [ on_send_complete_context shall be allowed to be NULL. ]
        struct null_context_record
        {
            std::atomic<int> calls{0};
            std::atomic<bool> context_was_null{false};
            std::atomic<ASYNC_SOCKET_SEND_RESULT> result{ASYNC_SOCKET_SEND_RESULT_INVALID};
            win32_test::waiter waiter;
        };
        static null_context_record record;
        REQUIRE(socket.send_async(
                    &good, 1,
                    [](void* context, ASYNC_SOCKET_SEND_RESULT result)
                    {
                        record.waiter.update(
                            [&]
                            {
                                record.context_was_null = context == nullptr;
                                record.result = result;
                                ++record.calls;
                            });
                    },
                    nullptr) == status::ok);
        REQUIRE(record.waiter.wait_for([] { return record.calls == 1; }, deadline_seconds));
        CHECK(record.context_was_null);
        CHECK(record.result == ASYNC_SOCKET_SEND_OK);
    }
    CHECK(sends.seen().empty());
    CHECK(receives.seen().empty());
}
