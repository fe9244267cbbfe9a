// The receive hint of the Linux backend over real loopback TCP: a receive that filled its buffers learns from
// TCP_INQ whether it left bytes in the socket, and when it left none the next receive waits for the next edge
// (epoll) instead of a try that would find nothing. This target builds the backend with its OS-call hook
// (ASYNC_SOCKET_LINUX_FAULT_HOOKS) only to count the backend's recvmsg calls; no fault is injected.
//
// - an exchange of exact-size messages on epoll: about one recvmsg per message (two before the hint: a try that
//   found nothing, then the one after the edge), every byte checked;
// - messages that are already queued behind a full receive are taken at once, in order (io_uring and epoll);
// - the end of stream after a full receive, whether the FIN came with the data or later (io_uring and epoll);
// - a socket that is not TCP (an AF_UNIX stream pair) refuses TCP_INQ and its receives go on as before;
// - TCP_INQ is set while the socket lives and unset when it is destroyed: the descriptor goes back as it came
//   (and one the owner had set stays set).
// Every wait has a deadline; handlers only record, the main thread checks.
#include <async_socket/async_socket.hpp>
#include <async_socket/testing/linux_fault_hook.hpp>
#include <async_socket/testing/linux_loopback.hpp>
#include <async_socket/testing/waiter.hpp>

#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

namespace
{

using async_socket::io_completion;
using async_socket::linux_async_socket;
using async_socket::linux_engine;
using async_socket::linux_io_choice;
using async_socket::receive_result;
using async_socket::status;
using async_socket::testing::linux_fault_plan;
using async_socket::testing::linux_os_call;
using async_socket::testing::waiter;

static_assert(linux_fault_plan::hooks_compiled_in, "this target must define ASYNC_SOCKET_LINUX_FAULT_HOOKS");

constexpr double deadline_seconds = 60.0;
constexpr std::size_t message_size = 64;

bool refused(linux_io_choice io)
{
    return io == linux_io_choice::io_uring && linux_engine::create({.thread_count = 1, .io = io}) == nullptr;
}

std::string name_of(linux_io_choice io)
{
    return io == linux_io_choice::io_uring ? "io_uring" : "epoll";
}

// The mechanisms this kernel runs: io_uring (unless refused, said with a MESSAGE) and epoll.
std::vector<linux_io_choice> mechanisms()
{
    std::vector<linux_io_choice> runnable;
    if (refused(linux_io_choice::io_uring))
    {
        MESSAGE("io_uring refused by this kernel: its half skipped");
    }
    else
    {
        runnable.push_back(linux_io_choice::io_uring);
    }
    runnable.push_back(linux_io_choice::epoll);
    return runnable;
}

// An engine and a connected loopback TCP pair.
struct tcp_rig
{
    linux_engine::handle engine;
    async_socket::testing::fd_pair pair;

    explicit tcp_rig(linux_io_choice io, std::uint32_t threads = 1)
        : engine(linux_engine::create({.thread_count = threads, .io = io})),
          pair(async_socket::testing::make_loopback_fd_pair(AF_INET))
    {
        REQUIRE(engine != nullptr);
        REQUIRE(pair.valid());
    }
};

std::uint8_t byte_of(std::uint32_t message, std::size_t i) noexcept
{
    return static_cast<std::uint8_t>((message * 131U + i * 7U + 1U) & 0xFFU);
}

std::array<std::uint8_t, message_size> message_of(std::uint32_t message) noexcept
{
    std::array<std::uint8_t, message_size> bytes{};
    for (std::size_t i = 0; i < message_size; ++i)
    {
        bytes[i] = byte_of(message, i);
    }
    return bytes;
}

// Sends all of `length` bytes on a blocking descriptor; false on an error.
bool send_all(int fd, const void* data, std::size_t length)
{
    const auto* at = static_cast<const std::uint8_t*>(data);
    while (length != 0)
    {
        const ssize_t sent = ::send(fd, at, length, MSG_NOSIGNAL);
        if (sent <= 0)
        {
            return false;
        }
        at += sent;
        length -= static_cast<std::size_t>(sent);
    }
    return true;
}

int tcp_inq_of(int fd)
{
    int value = -1;
    socklen_t length = sizeof value;
    return ::getsockopt(fd, IPPROTO_TCP, TCP_INQ, &value, &length) == 0 ? value : -1;
}

// One receive of exactly message_size bytes into `into`, and what its handler saw.
struct one_receive
{
    waiter wake;
    std::optional<receive_result> result; // guarded by wake
    int calls = 0;                        // guarded by wake

    status start(linux_async_socket& socket, std::uint8_t* into)
    {
        const std::array<ASYNC_SOCKET_BUFFER, 1> buffers{{{into, static_cast<std::uint32_t>(message_size)}}};
        return socket.receive_async(buffers,
                                    [this](receive_result r) noexcept
                                    {
                                        wake.update(
                                            [&]
                                            {
                                                result = r;
                                                ++calls;
                                            });
                                    });
    }
    bool arrived()
    {
        return wake.wait_for([&] { return result.has_value(); }, deadline_seconds);
    }
};

linux_async_socket::handle make_open(linux_engine* engine, int fd)
{
    linux_async_socket::handle made = linux_async_socket::create(engine, async_socket_handle_from_fd(fd));
    REQUIRE(made != nullptr);
    REQUIRE(made->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) == status::ok);
    return made;
}

// Receives message `index` and checks it byte by byte. The peer sends it before the receive starts, or after
// (peer_after).
void receive_checked(linux_async_socket& socket, int peer, std::uint32_t index, bool peer_after)
{
    const std::array<std::uint8_t, message_size> out = message_of(index);
    if (!peer_after)
    {
        REQUIRE(send_all(peer, out.data(), out.size()));
    }
    std::array<std::uint8_t, message_size> in{};
    one_receive receive;
    REQUIRE(receive.start(socket, in.data()) == status::ok);
    if (peer_after)
    {
        REQUIRE(send_all(peer, out.data(), out.size()));
    }
    REQUIRE(receive.arrived());
    REQUIRE(receive.result->completion == io_completion::ok);
    REQUIRE(receive.result->bytes == message_size);
    CHECK(receive.calls == 1);
    CHECK(std::memcmp(in.data(), out.data(), message_size) == 0);
}

} // namespace

TEST_CASE("epoll: exact-size messages cost one recvmsg each once TCP_INQ says nothing is left")
{
    constexpr std::uint32_t warm = 4; // the first full receive asks for TCP_INQ; the next learns the hint
    constexpr std::uint32_t messages = 400;
    tcp_rig rig(linux_io_choice::epoll);
    async_socket::testing::fd_pair& pair = rig.pair;
    linux_async_socket::handle socket = make_open(rig.engine.get(), pair.client);

    linux_fault_plan plan; // every rate 0: it only counts
    linux_fault_plan::installation on(plan);
    for (std::uint32_t i = 0; i < warm; ++i)
    {
        receive_checked(*socket, pair.server, i, true);
    }
    CHECK(tcp_inq_of(pair.client) == 1);
    const std::uint64_t before = plan.calls(linux_os_call::recvmsg);
    for (std::uint32_t i = warm; i < warm + messages; ++i)
    {
        // The receive starts before the peer sends: the try the hint saves would find nothing.
        receive_checked(*socket, pair.server, i, true);
    }
    const std::uint64_t calls = plan.calls(linux_os_call::recvmsg) - before;
    MESSAGE("recvmsg calls for ", messages, " messages: ", calls);
    CHECK(calls >= messages);                 // each message is read by one recvmsg at least
    CHECK(calls <= messages + messages / 10); // without the hint: 2 per message (an EAGAIN, then the read)
    CHECK(plan.injected_total() == 0);
}

TEST_CASE("messages queued behind a full receive are taken at once and in order")
{
    for (const linux_io_choice io : mechanisms())
    {
        CAPTURE(name_of(io));
        tcp_rig rig(io, 2);
        async_socket::testing::fd_pair& pair = rig.pair;
        linux_async_socket::handle socket = make_open(rig.engine.get(), pair.client);
        std::uint32_t index = 0;
        for (std::uint32_t burst = 1; burst <= 8; ++burst)
        {
            // `burst` messages in one go, then as many full receives: all but the last leave bytes behind.
            std::vector<std::uint8_t> bytes;
            for (std::uint32_t i = 0; i < burst; ++i)
            {
                const std::array<std::uint8_t, message_size> one = message_of(index + i);
                bytes.insert(bytes.end(), one.begin(), one.end());
            }
            REQUIRE(send_all(pair.server, bytes.data(), bytes.size()));
            for (std::uint32_t i = 0; i < burst; ++i)
            {
                std::array<std::uint8_t, message_size> in{};
                one_receive receive;
                REQUIRE(receive.start(*socket, in.data()) == status::ok);
                REQUIRE(receive.arrived());
                REQUIRE(receive.result->completion == io_completion::ok);
                REQUIRE(receive.result->bytes == message_size);
                const std::array<std::uint8_t, message_size> expected = message_of(index + i);
                CHECK(std::memcmp(in.data(), expected.data(), message_size) == 0);
            }
            index += burst;
            // Then one that must wait for its bytes (the hint says nothing is left).
            receive_checked(*socket, pair.server, index++, true);
        }
    }
}

TEST_CASE("the end of stream after a full receive: FIN with the data, or later")
{
    for (const linux_io_choice io : mechanisms())
    {
        for (const bool fin_later : {false, true})
        {
            CAPTURE(name_of(io));
            CAPTURE(fin_later);
            tcp_rig rig(io);
            async_socket::testing::fd_pair& pair = rig.pair;
            linux_async_socket::handle socket = make_open(rig.engine.get(), pair.client);
            // Warm: TCP_INQ asked for and seen, so that the full receive below has its hint.
            receive_checked(*socket, pair.server, 0, true);
            receive_checked(*socket, pair.server, 1, true);
            const std::array<std::uint8_t, message_size> last = message_of(2);
            REQUIRE(send_all(pair.server, last.data(), last.size()));
            if (!fin_later)
            {
                REQUIRE(::shutdown(pair.server, SHUT_WR) == 0);
            }
            std::array<std::uint8_t, message_size> in{};
            one_receive full;
            REQUIRE(full.start(*socket, in.data()) == status::ok);
            REQUIRE(full.arrived());
            REQUIRE(full.result->completion == io_completion::ok);
            REQUIRE(full.result->bytes == message_size);
            CHECK(std::memcmp(in.data(), last.data(), message_size) == 0);
            one_receive end;
            REQUIRE(end.start(*socket, in.data()) == status::ok);
            if (fin_later)
            {
                REQUIRE(::shutdown(pair.server, SHUT_WR) == 0);
            }
            REQUIRE(end.arrived());
            CHECK(end.result->completion == io_completion::ok);
            CHECK(end.result->bytes == 0);
            CHECK(end.result->end_of_stream());
            CHECK(end.calls == 1);
        }
    }
}

TEST_CASE("a socket that is not TCP refuses TCP_INQ and its full receives go on")
{
    for (const linux_io_choice io : mechanisms())
    {
        CAPTURE(name_of(io));
        linux_engine::handle engine = linux_engine::create({.thread_count = 1, .io = io});
        REQUIRE(engine != nullptr);
        int ends[2] = {-1, -1};
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends) == 0);
        {
            linux_async_socket::handle socket = make_open(engine.get(), ends[0]);
            for (std::uint32_t i = 0; i < 50; ++i)
            {
                receive_checked(*socket, ends[1], i, (i % 2) == 0);
            }
        }
        (void)::close(ends[0]);
        (void)::close(ends[1]);
    }
}

TEST_CASE("TCP_INQ is set while the socket lives and unset when it is destroyed")
{
    for (const linux_io_choice io : mechanisms())
    {
        CAPTURE(name_of(io));
        tcp_rig rig(io);
        async_socket::testing::fd_pair& pair = rig.pair;
        CHECK(tcp_inq_of(pair.client) == 0);
        {
            linux_async_socket::handle socket = make_open(rig.engine.get(), pair.client);
            // A receive that finds its bytes waiting is tried on the calling thread (both mechanisms): a full one
            // there asks for TCP_INQ.
            receive_checked(*socket, pair.server, 0, false);
            CHECK(tcp_inq_of(pair.client) == 1);
            // Closed and opened again: still set (the registration, and with it TCP_INQ, lasts until the socket is
            // destroyed).
            socket->close();
            REQUIRE(socket->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) == status::ok);
            CHECK(tcp_inq_of(pair.client) == 1);
            receive_checked(*socket, pair.server, 1, false);
        }
        CHECK(tcp_inq_of(pair.client) == 0);
        // The descriptor works as before with blocking calls of its owner.
        const std::array<std::uint8_t, message_size> out = message_of(7);
        REQUIRE(send_all(pair.server, out.data(), out.size()));
        std::array<std::uint8_t, message_size> in{};
        CHECK(::recv(pair.client, in.data(), in.size(), MSG_WAITALL) == static_cast<ssize_t>(message_size));
        CHECK(std::memcmp(in.data(), out.data(), message_size) == 0);
    }
}

TEST_CASE("TCP_INQ set by the descriptor's owner is used and left set")
{
    tcp_rig rig(linux_io_choice::epoll);
    async_socket::testing::fd_pair& pair = rig.pair;
    const int on = 1;
    REQUIRE(::setsockopt(pair.client, IPPROTO_TCP, TCP_INQ, &on, sizeof on) == 0);
    linux_fault_plan plan; // counts only
    {
        linux_async_socket::handle socket = make_open(rig.engine.get(), pair.client);
        linux_fault_plan::installation counting(plan);
        receive_checked(*socket, pair.server, 0, true);
        receive_checked(*socket, pair.server, 1, true);
        const std::uint64_t before = plan.calls(linux_os_call::recvmsg);
        for (std::uint32_t i = 2; i < 52; ++i)
        {
            receive_checked(*socket, pair.server, i, true);
        }
        CHECK(plan.calls(linux_os_call::recvmsg) - before <= 55); // the hint works: about 1 per message, not 2
    }
    CHECK(tcp_inq_of(pair.client) == 1);
}
