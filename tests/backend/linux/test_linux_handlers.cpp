// C++ handlers on the real Linux backend, io_uring and epoll, over loopback TCP: lambdas carry the data both
// ways, a peer's reset reaches the handler as an error with the errno value in std::generic_category(), and
// close gives because_close with ECANCELED. Every wait has a deadline; handlers only record (the test checks).
#include <async_socket/async_socket.hpp>
#include <async_socket/testing/linux_loopback.hpp>
#include <async_socket/testing/waiter.hpp>

#include <doctest/doctest.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <system_error>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace
{

using async_socket::io_completion;
using async_socket::linux_async_socket;
using async_socket::linux_engine;
using async_socket::linux_io_choice;
using async_socket::receive_result;
using async_socket::send_result;
using async_socket::status;
using async_socket::testing::waiter;

constexpr double deadline_seconds = 60.0;

// What one IO's handler saw.
template <class Result>
struct seen_by_handler
{
    waiter wake;
    std::optional<Result> result; // guarded by wake

    auto handler() noexcept
    {
        return [this](Result r) noexcept { wake.update([&] { result = r; }); };
    }
    bool arrived()
    {
        return wake.wait_for([&] { return result.has_value(); }, deadline_seconds);
    }
};

struct world
{
    linux_engine::handle engine;
    async_socket::testing::fd_pair pair;
    linux_async_socket::handle socket;

    explicit world(linux_io_choice io)
        : engine(linux_engine::create({.thread_count = 1, .io = io})),
          pair(async_socket::testing::make_loopback_fd_pair(AF_INET))
    {
        REQUIRE(engine != nullptr);
        REQUIRE(pair.valid());
        socket = linux_async_socket::create(engine.get(), async_socket_handle_from_fd(pair.client));
        REQUIRE(socket != nullptr);
        REQUIRE(socket->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) == status::ok);
    }
};

void run_handlers_on(linux_io_choice io)
{
    if (io == linux_io_choice::io_uring && linux_engine::create({.thread_count = 1, .io = io}) == nullptr)
    {
        MESSAGE("io_uring refused here; the epoll run covers the handlers");
        return;
    }
    world w(io);

    SUBCASE("a lambda sends, a lambda receives what the peer sent")
    {
        char text[] = "handler bytes";
        std::array<ASYNC_SOCKET_BUFFER, 2> out{{{text, 7}, {text + 7, 6}}};
        seen_by_handler<send_result> sent;
        REQUIRE(w.socket->send_async(out, sent.handler()) == status::ok);
        REQUIRE(sent.arrived());
        CHECK(sent.result->ok());
        CHECK_FALSE(sent.result->error);
        char echoed[13] = {};
        CHECK(recv(w.pair.server, echoed, sizeof(echoed), MSG_WAITALL) == 13);
        CHECK(std::memcmp(echoed, text, 13) == 0);

        char in[32] = {};
        ASYNC_SOCKET_BUFFER buffer{in, sizeof(in)};
        seen_by_handler<receive_result> received;
        REQUIRE(w.socket->receive_async(std::span<const ASYNC_SOCKET_BUFFER>(&buffer, 1), received.handler()) ==
                status::ok);
        CHECK(send(w.pair.server, "back", 4, MSG_NOSIGNAL) == 4);
        REQUIRE(received.arrived());
        CHECK(received.result->ok());
        CHECK(received.result->bytes == 4);
        CHECK(std::memcmp(in, "back", 4) == 0);

        // The peer ends the stream: the next receive says so.
        CHECK(shutdown(w.pair.server, SHUT_WR) == 0);
        seen_by_handler<receive_result> ended;
        REQUIRE(w.socket->receive_async(std::span<const ASYNC_SOCKET_BUFFER>(&buffer, 1), ended.handler()) ==
                status::ok);
        REQUIRE(ended.arrived());
        CHECK(ended.result->end_of_stream());
    }
    SUBCASE("a reset by the peer is an error carrying ECONNRESET in the generic category")
    {
        char in[32] = {};
        ASYNC_SOCKET_BUFFER buffer{in, sizeof(in)};
        seen_by_handler<receive_result> received;
        REQUIRE(w.socket->receive_async(std::span<const ASYNC_SOCKET_BUFFER>(&buffer, 1), received.handler()) ==
                status::ok);
        const linger abort_on_close{1, 0};
        REQUIRE(setsockopt(w.pair.server, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof(abort_on_close)) == 0);
        REQUIRE(::close(w.pair.server) == 0);
        w.pair.server = -1;
        REQUIRE(received.arrived());
        CHECK(received.result->completion == io_completion::error);
        CHECK(received.result->error.category() == std::generic_category());
        CHECK(received.result->error.value() == ECONNRESET);
        CHECK(received.result->error == std::errc::connection_reset);
    }
    SUBCASE("close with a receive pending gives because_close with ECANCELED")
    {
        char in[32] = {};
        ASYNC_SOCKET_BUFFER buffer{in, sizeof(in)};
        seen_by_handler<receive_result> received;
        REQUIRE(w.socket->receive_async(std::span<const ASYNC_SOCKET_BUFFER>(&buffer, 1), received.handler()) ==
                status::ok);
        CHECK(w.socket->close() == status::ok);
        REQUIRE(received.arrived()); // already: close returns after the handler ran
        CHECK(received.result->completion == io_completion::because_close);
        CHECK(received.result->error == std::errc::operation_canceled);
    }
}

} // namespace

TEST_CASE("C++ handlers on the Linux backend over epoll")
{
    run_handlers_on(linux_io_choice::epoll);
}

TEST_CASE("C++ handlers on the Linux backend over io_uring")
{
    run_handlers_on(linux_io_choice::io_uring);
}
