// The fault-injecting Win32 calls layer (testing/win32_fault_calls.hpp) over the fake: a fault drawn by the plan
// replaces the OS call (the fake records no such call), the backend gets the error the real layer would report, the
// backend's undo runs (CancelThreadpoolIo, CloseHandle), the counts of live objects follow the fake's, and a plan with
// no fault is the plain layer. The same layer over the real calls runs under Wine (test_win32_faults).
#include <async_socket/basic_async_socket.hpp>
#include <async_socket/sync/std_sync.hpp>
#include <async_socket/testing/fake_threadpool.hpp>
#include <async_socket/testing/fault_alloc.hpp>
#include <async_socket/testing/win32_fault_calls.hpp>

#include <doctest/doctest.h>

#include <array>
#include <cstdint>

namespace
{

using async_socket::status;
using namespace async_socket::testing;

using calls_type = win32_fault_calls<fake_threadpool_calls>;
using backend_type = async_socket::win32_threadpool_backend<calls_type>;
using socket_type = async_socket::basic_async_socket<backend_type, fault_alloc, async_socket::std_sync>;

static_assert(async_socket::check_backend<backend_type>());

void ignore_open(void*, ASYNC_SOCKET_OPEN_RESULT) {}

int send_callbacks = 0;
void count_send(void*, ASYNC_SOCKET_SEND_RESULT result)
{
    send_callbacks += result == ASYNC_SOCKET_SEND_OK ? 1 : 100;
}

socket_type::handle make(fake_os& os, win32_fault_plan& plan, alloc_ledger& ledger)
{
    return socket_type::create(&os, fake_socket(9), backend_type(calls_type(&plan)), fault_alloc(&ledger));
}

} // namespace

TEST_CASE("an injected WSASend is not made: the fake sees CreateEvent, StartThreadpoolIo, CancelThreadpoolIo, "
          "CloseHandle and no WSASend")
{
    fake_os os;
    win32_fault_plan plan(1);
    alloc_ledger ledger;
    {
        auto socket = make(os, plan, ledger);
        REQUIRE(socket);
        REQUIRE(socket->open_async(&ignore_open, nullptr) == status::ok);
        CHECK(plan.live_bindings() == 1);
        CHECK(plan.live_cleanup_groups() == 1);
        os.clear_calls();

        std::array<std::uint8_t, 4> bytes{};
        ASYNC_SOCKET_BUFFER buffer{bytes.data(), 4};
        plan.set_rate(win32_fault_point::send, 1.0);
        send_callbacks = 0;
        CHECK(socket->send_async(&buffer, 1, &count_send, nullptr) == status::os_error);
        CHECK(os.count(fake_call::wsa_send) == 0);
        CHECK(os.count(fake_call::create_event) == 1);
        CHECK(os.count(fake_call::start_io) == 1);
        CHECK(os.count(fake_call::cancel_io) == 1);
        CHECK(os.count(fake_call::close_event) == 1);
        CHECK(plan.injected(win32_fault_point::send) == 1);
        CHECK(plan.live_events() == 0);
        CHECK(os.live_events() == 0);
        CHECK(plan.outstanding_io() == 0);

        // CreateEvent: nothing after it, and last_error() is the plan's.
        plan.set_rate(win32_fault_point::send, 0.0);
        plan.set_rate(win32_fault_point::create_event, 1.0);
        os.clear_calls();
        CHECK(socket->send_async(&buffer, 1, &count_send, nullptr) == status::os_error);
        CHECK(os.count(fake_call::create_event) == 0);
        CHECK(os.count(fake_call::start_io) == 0);
        CHECK(os.count(fake_call::wsa_send) == 0);
        plan.set_rate(win32_fault_point::create_event, 0.0);

        // No fault: the call is made, and its completion is counted on its way to the core.
        REQUIRE(socket->send_async(&buffer, 1, &count_send, nullptr) == status::ok);
        CHECK(os.count(fake_call::wsa_send) == 1);
        CHECK(plan.outstanding_io() == 1);
        CHECK(plan.live_events() == 1);
        REQUIRE(os.complete_oldest(async_socket::win32_no_error, 4));
        CHECK(send_callbacks == 1);
        CHECK(plan.completions() == 1);
        CHECK(plan.accepted_by_os() == 1);
        CHECK(plan.outstanding_io() == 0);
        CHECK(plan.live_events() == 0);
        CHECK(os.violations().empty());
    }
    CHECK(plan.live_bindings() == 0);
    CHECK(plan.live_cleanup_groups() == 0);
    CHECK(os.live_ios() == 0);
    CHECK(ledger.live_blocks() == 0);
}

TEST_CASE("an injected CreateThreadpoolIo is not made: the next open binds the socket (once)")
{
    fake_os os;
    win32_fault_plan plan(2);
    alloc_ledger ledger;
    {
        auto socket = make(os, plan, ledger);
        REQUIRE(socket);
        plan.set_rate(win32_fault_point::create_io, 1.0);
        CHECK(socket->open_async(&ignore_open, nullptr) == status::os_error);
        CHECK(os.count(fake_call::create_io) == 0);
        CHECK(plan.live_bindings() == 0);
        CHECK(plan.live_cleanup_groups() == 0);
        plan.set_rate(win32_fault_point::create_io, 0.0);
        // The fake enforces one binding per SOCKET: this open succeeds only if the faulted one made none.
        CHECK(socket->open_async(&ignore_open, nullptr) == status::ok);
        CHECK(os.count(fake_call::create_io) == 1);
        CHECK(os.violations().empty());
    }
    CHECK(plan.live_bindings() == 0);
    CHECK(ledger.live_blocks() == 0);
}

TEST_CASE("without a plan the fault layer is the plain layer")
{
    fake_os os;
    alloc_ledger ledger;
    {
        auto socket = socket_type::create(&os, fake_socket(3), {}, fault_alloc(&ledger));
        REQUIRE(socket);
        CHECK(socket->backend().calls().plan() == nullptr);
        REQUIRE(socket->open_async(&ignore_open, nullptr) == status::ok);
        std::array<std::uint8_t, 2> bytes{};
        ASYNC_SOCKET_BUFFER buffer{bytes.data(), 2};
        send_callbacks = 0;
        REQUIRE(socket->send_async(&buffer, 1, &count_send, nullptr) == status::ok);
        REQUIRE(os.complete_oldest(async_socket::win32_no_error, 2));
        CHECK(send_callbacks == 1);
    }
    CHECK(ledger.live_blocks() == 0);
    CHECK(os.violations().empty());
}
