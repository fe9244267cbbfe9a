// The Win32 call sequence of a socket's whole life, as the fake threadpool records it.
#include <async_socket/basic_async_socket.hpp>

#include "../support/fixtures.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace test_support;

TEST_CASE("open, send, receive and close make exactly the Win32 calls of the contract, in order")
{
    fixture f(false);
    REQUIRE(f.socket);
    f.os.clear_calls();

    REQUIRE(f.socket->open_async(&open_recorder::callback, &f.opened) == status::ok);
    CHECK(f.os.call_names() == std::vector<std::string>{"InitializeThreadpoolEnvironment", "SetThreadpoolCallbackPool",
                                                        "CreateThreadpoolCleanupGroup", "CreateThreadpoolIo"});
    f.os.clear_calls();

    char payload[8] = "abcdefg";
    ASYNC_SOCKET_BUFFER buffer{payload, sizeof(payload)};
    send_recorder sent;
    REQUIRE(f.socket->send_async(&buffer, 1, &send_recorder::callback, &sent) == status::ok);
    CHECK(f.os.call_names() == std::vector<std::string>{"CreateEvent", "StartThreadpoolIo", "WSASend"});
    REQUIRE(f.os.complete_oldest(async_socket::win32_no_error, sizeof(payload)));
    CHECK(f.os.call_names() == std::vector<std::string>{"CreateEvent", "StartThreadpoolIo", "WSASend", "CloseHandle"});
    CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_OK});
    f.os.clear_calls();

    receive_recorder received;
    REQUIRE(f.socket->receive_async(&buffer, 1, &receive_recorder::callback, &received) == status::ok);
    CHECK(f.os.call_names() == std::vector<std::string>{"CreateEvent", "StartThreadpoolIo", "WSARecv"});
    f.os.clear_calls();

    // Close with the receive still pending: cancel it (the fake completes it aborted, on this thread, as
    // the OS would on a threadpool thread), then wait for the callbacks.
    f.os.set_cancel_behavior(cancel_behavior::abort_inline);
    CHECK(f.socket->close() == status::ok);
    CHECK(f.os.call_names() == std::vector<std::string>{"CancelIoEx", "CloseHandle", "WaitForThreadpoolIoCallbacks"});
    REQUIRE(received.seen().size() == 1);
    CHECK(received.seen()[0].result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);
    f.os.clear_calls();

    f.socket.reset();
    CHECK(f.os.call_names() ==
          std::vector<std::string>{"CloseThreadpoolIo", "CloseThreadpoolCleanupGroup", "DestroyThreadpoolEnvironment"});
    CHECK(f.os.violations().empty());
    CHECK(f.os.live_events() == 0);
    CHECK(f.ledger.live_blocks() == 0);
}
