// The seed's C API on Linux: the same functions over a socket descriptor (async_socket_handle_from_fd), on the
// engine execution_engine_create makes (io_uring, or epoll where refused), over real loopback TCP.
#include <async_socket/c_api.h>
#include <async_socket/testing/linux_loopback.hpp>

#include "conformance/suite.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>

#include <sys/socket.h>

namespace
{
// What the callbacks saw: the conformance suite's log (one count per result, read through its waiter).
using c_log = conformance::io_log;

// An engine from execution_engine_create(NULL), the test's reference to drop, and a connected loopback pair.
struct engine_and_pair
{
    EXECUTION_ENGINE_HANDLE engine = execution_engine_create(NULL);
    async_socket::testing::fd_pair pair = async_socket::testing::make_loopback_fd_pair();

    engine_and_pair()
    {
        REQUIRE(engine != NULL);
        REQUIRE(pair.valid());
    }
};
} // namespace

TEST_CASE("C API on Linux: engine parameters are checked as on Win32")
{
    const EXECUTION_ENGINE_PARAMETERS inverted{4, 2};
    CHECK(execution_engine_create(&inverted) == NULL);
    const EXECUTION_ENGINE_PARAMETERS too_many{async_socket::linux_engine::max_thread_count + 1, 0};
    CHECK(execution_engine_create(&too_many) == NULL);
    const EXECUTION_ENGINE_PARAMETERS two{2, 2};
    EXECUTION_ENGINE_HANDLE engine = execution_engine_create(&two);
    REQUIRE(engine != NULL);
    CHECK(execution_engine_linux_get_engine(engine)->thread_count() == 2);
    execution_engine_inc_ref(engine);
    execution_engine_dec_ref(engine);
    execution_engine_dec_ref(engine);
    execution_engine_dec_ref(NULL);
    execution_engine_inc_ref(NULL);
    CHECK(execution_engine_linux_get_engine(NULL) == NULL);
}

TEST_CASE("C API on Linux: NULL arguments are refused, nothing is called")
{
    engine_and_pair made;
    EXECUTION_ENGINE_HANDLE engine = made.engine;
    const async_socket::testing::fd_pair& pair = made.pair;
    CHECK(async_socket_create(NULL, async_socket_handle_from_fd(pair.client)) == NULL);
    CHECK(async_socket_create(engine, NULL) == NULL);
    CHECK(async_socket_create(engine, async_socket_handle_from_fd(-1)) == NULL);
    c_log log;
    CHECK(async_socket_open_async(NULL, &c_log::on_open, &log) != 0);
    std::uint8_t byte = 0;
    ASYNC_SOCKET_BUFFER buffer{&byte, 1};
    CHECK(async_socket_send_async(NULL, &buffer, 1, &c_log::on_send, &log) != 0);
    CHECK(async_socket_receive_async(NULL, &buffer, 1, &c_log::on_receive, &log) != 0);
    async_socket_close(NULL);
    async_socket_destroy(NULL);
    CHECK(log.opens_ok + log.sends() + log.receives() + log.invalid == 0);
    execution_engine_dec_ref(engine);
}

TEST_CASE("C API on Linux: open, send, receive, close with a receive pending, reopen, destroy")
{
    engine_and_pair made;
    EXECUTION_ENGINE_HANDLE engine = made.engine;
    const async_socket::testing::fd_pair& pair = made.pair;
    ASYNC_SOCKET_HANDLE socket = async_socket_create(engine, async_socket_handle_from_fd(pair.client));
    execution_engine_dec_ref(engine); // the socket holds its own reference
    REQUIRE(socket != NULL);
    c_log log;
    REQUIRE(async_socket_open_async(socket, &c_log::on_open, &log) == 0);
    CHECK(log.opens_ok == 1);

    std::uint8_t out[3] = {1, 2, 3};
    ASYNC_SOCKET_BUFFER send_buffer{out, 3};
    REQUIRE(async_socket_send_async(socket, &send_buffer, 1, &c_log::on_send, &log) == 0);
    std::uint8_t seen[3] = {};
    REQUIRE(recv(pair.server, seen, 3, MSG_WAITALL) == 3);
    CHECK(std::memcmp(seen, out, 3) == 0);
    REQUIRE(log.wake.wait_for([&] { return log.sends_ok == 1; }, 60.0));

    std::uint8_t in[8] = {};
    ASYNC_SOCKET_BUFFER receive_buffer{in, sizeof in};
    REQUIRE(async_socket_receive_async(socket, &receive_buffer, 1, &c_log::on_receive, &log) == 0);
    REQUIRE(send(pair.server, "abcd", 4, MSG_NOSIGNAL) == 4);
    REQUIRE(log.wake.wait_for([&] { return log.receives_ok == 1; }, 60.0));
    CHECK(log.bytes_received == 4);
    CHECK(std::memcmp(in, "abcd", 4) == 0);

    REQUIRE(async_socket_receive_async(socket, &receive_buffer, 1, &c_log::on_receive, &log) == 0);
    async_socket_close(socket);
    CHECK(log.receives_because_close == 1);
    REQUIRE(async_socket_open_async(socket, &c_log::on_open, &log) == 0);
    REQUIRE(async_socket_receive_async(socket, &receive_buffer, 1, &c_log::on_receive, &log) == 0);
    async_socket_destroy(socket); // closes: the pending receive completes with BECAUSE_CLOSE first
    CHECK(log.receives_because_close == 2);
    CHECK(log.invalid + log.sends_error + log.receives_error == 0);
}
