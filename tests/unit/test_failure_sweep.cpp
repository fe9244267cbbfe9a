// Failure sweep: every fallible step of create, open, send_async and receive_async fails in turn, the k-th
// allocation or the k-th call of each fallible OS function, k = 1, 2, ... until the operation succeeds.
// The steps are discovered, not listed: a new allocation or OS call in an operation is swept without a
// change here. Each failure must be clean: the right status, no callback, nothing leaked (memory, events,
// OS objects), no OS rule broken, and the socket still sends, receives, closes, reopens and is destroyed.
#include <async_socket/basic_async_socket.hpp>

#include "../support/fixtures.hpp"

#include <doctest/doctest.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <vector>

using namespace test_support;
using async_socket::socket_state;
using async_socket::win32_no_error;

namespace
{

// A kind of step that can fail: allocations (alloc_ledger::fail_nth) or one fallible OS call (fake_os::fail).
struct fault_family
{
    const char* name;
    bool allocation;
    fake_call call; // when !allocation
};

constexpr std::array<fault_family, 7> families = {{
    {"allocation", true, fake_call::count_},
    {"execution_engine_win32_get_threadpool", false, fake_call::get_threadpool},
    {"CreateThreadpoolCleanupGroup", false, fake_call::create_cleanup_group},
    {"CreateThreadpoolIo", false, fake_call::create_io},
    {"CreateEvent", false, fake_call::create_event},
    {"WSASend", false, fake_call::wsa_send},
    {"WSARecv", false, fake_call::wsa_recv},
}};

constexpr unsigned max_steps = 64; // far more than any operation has; reaching it means "never succeeds"

// A fake world with one socket (created by the operation's prepare step, or by the operation itself).
struct world
{
    fake_os os;
    alloc_ledger ledger;
    open_recorder opened;
    send_recorder sent;
    receive_recorder received;
    fake_socket_type::handle socket;
    status last = status::ok;
    char payload[8] = {'p', 'a', 'y', 'l', 'o', 'a', 'd', '!'};
    char inbox[8] = {};

    void create()
    {
        socket = fake_socket_type::create(&os, fake_socket(42), {}, fault_alloc{&ledger});
    }

    std::size_t callbacks()
    {
        return static_cast<std::size_t>(opened.calls.load()) + sent.seen().size() + received.seen().size();
    }

    std::size_t failed_calls(fake_call call) const
    {
        std::size_t n = 0;
        for (const call_record& record : os.calls())
        {
            n += record.call == call && record.failed ? 1 : 0;
        }
        return n;
    }

    std::size_t succeeded_calls(fake_call call) const
    {
        return os.count(call) - failed_calls(call);
    }
};

// What a failed attempt must leave exactly as it found it.
struct snapshot
{
    std::int64_t live_blocks;
    std::size_t live_events;
    std::size_t pending;
    std::size_t callbacks;
    std::uint64_t failed_allocations;
    std::size_t failed_calls;
    // OS objects made and not yet released, from the fake's record.
    std::int64_t environments;
    std::int64_t cleanup_groups;
    std::int64_t threadpool_ios;
    std::int64_t started_ios; // StartThreadpoolIo not matched by an issued IO or a CancelThreadpoolIo
    std::size_t cancel_ios;

    static snapshot of(world& w, const fault_family& family)
    {
        const auto n = [&w](fake_call call) { return static_cast<std::int64_t>(w.os.count(call)); };
        const auto ok = [&w](fake_call call) { return static_cast<std::int64_t>(w.succeeded_calls(call)); };
        return snapshot{
            w.ledger.live_blocks(),
            w.os.live_events(),
            w.os.pending_count(),
            w.callbacks(),
            w.ledger.failed_allocations(),
            family.allocation ? 0 : w.failed_calls(family.call),
            n(fake_call::initialize_environment) - n(fake_call::destroy_environment),
            ok(fake_call::create_cleanup_group) - n(fake_call::close_cleanup_group),
            ok(fake_call::create_io) - n(fake_call::close_io),
            n(fake_call::start_io) - n(fake_call::cancel_io) - ok(fake_call::wsa_send) - ok(fake_call::wsa_recv),
            w.os.count(fake_call::cancel_io),
        };
    }
};

void arm(world& w, const fault_family& family, unsigned k)
{
    if (family.allocation)
    {
        w.ledger.fail_nth(k);
    }
    else
    {
        w.os.fail(family.call, k - 1);
    }
}

// fake_os has no call to drop a planned failure; one planned after ~4e9 calls never fires.
void disarm(world& w, const fault_family& family)
{
    if (family.allocation)
    {
        w.ledger.fail_nth(0);
    }
    else
    {
        w.os.fail(family.call, std::numeric_limits<unsigned>::max());
    }
}

bool injected_since(world& w, const fault_family& family, const snapshot& before)
{
    return family.allocation ? w.ledger.failed_allocations() > before.failed_allocations
                             : w.failed_calls(family.call) > before.failed_calls;
}

void check_no_trace(world& w, const fault_family& family, const snapshot& before)
{
    const snapshot after = snapshot::of(w, family);
    CHECK_MESSAGE(after.callbacks == before.callbacks, "a failed call must run no callback");
    CHECK_MESSAGE(after.live_blocks == before.live_blocks, "memory leaked");
    CHECK_MESSAGE(w.ledger.misuse() == 0, "a block was freed twice, with the wrong size, or was not ours");
    CHECK_MESSAGE(after.live_events == before.live_events, "an event leaked");
    CHECK_MESSAGE(after.pending == before.pending, "an IO was left outstanding");
    CHECK_MESSAGE(after.environments == before.environments, "a threadpool environment leaked");
    CHECK_MESSAGE(after.cleanup_groups == before.cleanup_groups, "a cleanup group leaked");
    CHECK_MESSAGE(after.threadpool_ios == before.threadpool_ios, "a threadpool IO leaked");
    CHECK_MESSAGE(after.started_ios == before.started_ios, "a StartThreadpoolIo was neither issued nor cancelled");
    CHECK(w.os.violations().empty());
}

// Proves the socket whole: create when there is none, open when CLOSED, a send and a receive completed by hand, close,
// reopen, a send and a receive cancelled by close, destroy; then nothing is left anywhere.
void prove_usable(world& w)
{
    if (!w.socket)
    {
        w.create(); // after a failed create, on the same socket handle: the failed one bound nothing
    }
    REQUIRE(w.socket);
    if (w.socket->state() == socket_state::closed)
    {
        REQUIRE(w.socket->open_async(&open_recorder::callback, &w.opened) == status::ok);
    }
    REQUIRE(w.socket->state() == socket_state::open);

    ASYNC_SOCKET_BUFFER out{w.payload, sizeof(w.payload)};
    const std::size_t sends = w.sent.seen().size();
    REQUIRE(w.socket->send_async(&out, 1, &send_recorder::callback, &w.sent) == status::ok);
    REQUIRE(w.os.pending_count() == 1);
    REQUIRE(w.os.complete_oldest(win32_no_error, sizeof(w.payload)));
    REQUIRE(w.sent.seen().size() == sends + 1);
    CHECK(w.sent.seen().back() == ASYNC_SOCKET_SEND_OK);

    ASYNC_SOCKET_BUFFER in{w.inbox, sizeof(w.inbox)};
    const std::size_t receives = w.received.seen().size();
    REQUIRE(w.socket->receive_async(&in, 1, &receive_recorder::callback, &w.received) == status::ok);
    const std::vector<pending_io> outstanding = w.os.pending();
    REQUIRE(outstanding.size() == 1);
    const char hello[] = {'h', 'e', 'l', 'l', 'o'};
    REQUIRE(w.os.complete_receive(outstanding[0].overlapped, std::as_bytes(std::span(hello))));
    REQUIRE(w.received.seen().size() == receives + 1);
    CHECK(w.received.seen().back().result == ASYNC_SOCKET_RECEIVE_OK);
    CHECK(w.received.seen().back().bytes == sizeof(hello));
    CHECK(std::memcmp(w.inbox, hello, sizeof(hello)) == 0);

    CHECK(w.socket->close() == status::ok);
    CHECK(w.socket->state() == socket_state::closed);
    REQUIRE(w.socket->open_async(&open_recorder::callback, &w.opened) == status::ok);

    w.os.set_cancel_behavior(cancel_behavior::abort_inline);
    REQUIRE(w.socket->send_async(&out, 1, &send_recorder::callback, &w.sent) == status::ok);
    REQUIRE(w.socket->receive_async(&in, 1, &receive_recorder::callback, &w.received) == status::ok);
    CHECK(w.socket->close() == status::ok);
    REQUIRE(w.sent.seen().size() == sends + 2);
    CHECK(w.sent.seen().back() == ASYNC_SOCKET_SEND_BECAUSE_CLOSE);
    REQUIRE(w.received.seen().size() == receives + 2);
    CHECK(w.received.seen().back().result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);

    w.socket.reset();
    CHECK(w.os.violations().empty());
    CHECK(w.os.live_events() == 0);
    CHECK(w.os.live_ios() == 0);
    CHECK(w.os.pending_count() == 0);
    CHECK(w.ledger.live_blocks() == 0);
    CHECK(w.ledger.misuse() == 0);
}

// Completes what a successful operation left outstanding, checking it completes exactly once.
void complete_outstanding(world& w)
{
    const std::size_t before = w.callbacks();
    const std::size_t outstanding = w.os.pending_count();
    while (w.os.complete_oldest(win32_no_error, 0))
    {
    }
    CHECK(w.callbacks() == before + outstanding);
}

struct sweep_result
{
    unsigned total = 0;
    std::array<unsigned, families.size()> per_family{};

    std::string describe(const char* operation) const
    {
        std::ostringstream text;
        text << operation << ": " << total << " failure points covered (";
        const char* separator = "";
        for (std::size_t i = 0; i < families.size(); ++i)
        {
            if (per_family[i] != 0)
            {
                text << separator << families[i].name << " " << per_family[i];
                separator = ", ";
            }
        }
        text << ")";
        return text.str();
    }
};

// The sweep. prepare brings a fresh world to the state before the operation; act runs the operation and
// returns whether it succeeded; check_failure checks the result of a failed attempt.
template <class Prepare, class Act, class CheckFailure>
sweep_result sweep(const char* operation, Prepare prepare, Act act, CheckFailure check_failure)
{
    sweep_result result;
    for (std::size_t f = 0; f < families.size(); ++f)
    {
        const fault_family& family = families[f];
        for (unsigned k = 1;; ++k)
        {
            INFO(operation << " with " << family.name << " #" << k << " failing");
            REQUIRE_MESSAGE(k <= max_steps, "the operation never succeeds");
            auto w = std::make_unique<world>();
            prepare(*w);
            const snapshot before = snapshot::of(*w, family);

            arm(*w, family, k);
            const bool succeeded = act(*w);
            const bool injected = injected_since(*w, family, before);
            disarm(*w, family);

            if (succeeded)
            {
                // All the steps of this family have been failed in turn; this attempt had none left to fail.
                CHECK_MESSAGE(!injected, "the operation succeeded although one of its steps failed");
                CHECK(w->os.violations().empty());
                if (w->socket)
                {
                    complete_outstanding(*w);
                }
                prove_usable(*w);
                break;
            }
            CHECK_MESSAGE(injected, "the operation failed although nothing was made to fail");
            check_failure(*w, family);
            check_no_trace(*w, family, before);
            prove_usable(*w);
            ++result.total;
            ++result.per_family[f];
        }
    }
    MESSAGE(result.describe(operation));
    return result;
}

status expected_status(const fault_family& family)
{
    return family.allocation ? status::out_of_memory : status::os_error;
}

void prepare_open_socket(world& w)
{
    w.create();
    REQUIRE(w.socket);
    REQUIRE(w.socket->open_async(&open_recorder::callback, &w.opened) == status::ok);
}

} // namespace

// Tests_SRS_ASYNC_SOCKET_WIN32_01_003: [ If any error occurs, async_socket_create shall fail and return NULL. ]
TEST_CASE("create fails cleanly at each of its failure points and a later create works")
{
    const sweep_result result = sweep(
        "create", [](world&) {},
        [](world& w)
        {
            w.create();
            return w.socket != nullptr;
        },
        [](world& w, const fault_family&) { CHECK(w.socket == nullptr); });
    // The socket's allocation and execution_engine_win32_get_threadpool.
    CHECK(result.total >= 2);
    CHECK(result.per_family[0] >= 1);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_039: [ If any error occurs, async_socket_open_async shall fail and return a
// non-zero value. ]
TEST_CASE("open_async fails cleanly at each of its failure points and the socket can still be opened")
{
    const sweep_result result = sweep(
        "open_async",
        [](world& w)
        {
            w.create();
            REQUIRE(w.socket);
        },
        [](world& w)
        {
            w.last = w.socket->open_async(&open_recorder::callback, &w.opened);
            return w.last == status::ok;
        },
        [](world& w, const fault_family& family)
        {
            CHECK(w.last == expected_status(family));
            CHECK(w.socket->state() == socket_state::closed);
        });
    // CreateThreadpoolCleanupGroup and CreateThreadpoolIo.
    CHECK(result.total >= 2);
}

TEST_CASE("open_async after a close has no failure point: the threadpool IO made by the first open is kept")
{
    const sweep_result result = sweep(
        "reopen",
        [](world& w)
        {
            prepare_open_socket(w);
            REQUIRE(w.socket->close() == status::ok);
        },
        [](world& w)
        {
            w.last = w.socket->open_async(&open_recorder::callback, &w.opened);
            return w.last == status::ok;
        },
        [](world& w, const fault_family&) { CHECK(w.last == status::ok); });
    CHECK(result.total == 0);
}

// After a send_async or receive_async failed at one point: the status says which, the socket is still OPEN, and
// an IO that the OS refused had its StartThreadpoolIo cancelled and its event closed.
void check_failed_io(world& w, const fault_family& family, fake_call os_call)
{
    CHECK(w.last == expected_status(family));
    CHECK(w.socket->state() == socket_state::open);
    if (!family.allocation && family.call == os_call)
    {
        const std::vector<std::string> names = w.os.call_names();
        REQUIRE(names.size() >= 2);
        CHECK(names[names.size() - 2] == "CancelThreadpoolIo");
        CHECK(names.back() == "CloseHandle");
    }
}

namespace
{
// Sweeps an IO call (`act` starts it on an open socket; `issue` is its WSASend or WSARecv) and checks that the
// sweep found its failure points: the context's allocation, CreateEvent and `issue`.
template <class Act>
void sweep_io(const char* operation, fake_call issue, Act act)
{
    const sweep_result result =
        sweep(operation, prepare_open_socket, act,
              [issue](world& w, const fault_family& family) { check_failed_io(w, family, issue); });
    CHECK(result.total >= 3);
    CHECK(result.per_family[0] >= 1);
}
} // namespace

// Tests_SRS_ASYNC_SOCKET_WIN32_01_029: [ If any error occurs, async_socket_send_async shall fail and return a
// non-zero value. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_062: [ If net_comm_send_async fails, async_socket_send_async shall call
// CancelThreadpoolIo and return MU_FAILURE. ]
TEST_CASE("send_async fails cleanly at each of its failure points and the socket stays usable")
{
    sweep_io("send_async", fake_call::wsa_send,
             [](world& w)
             {
                 ASYNC_SOCKET_BUFFER buffers[2] = {{w.payload, 3}, {w.payload + 3, 5}};
                 w.last = w.socket->send_async(buffers, 2, &send_recorder::callback, &w.sent);
                 return w.last == status::ok;
             });
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_084: [ If any error occurs, async_socket_receive_async shall fail and return a
// non-zero value. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_054: [ If WSARecv fails, async_socket_receive_async shall call
// CancelThreadpoolIo. ]
TEST_CASE("receive_async fails cleanly at each of its failure points and the socket stays usable")
{
    sweep_io("receive_async", fake_call::wsa_recv,
             [](world& w)
             {
                 ASYNC_SOCKET_BUFFER buffers[2] = {{w.inbox, 4}, {w.inbox + 4, 4}};
                 w.last = w.socket->receive_async(buffers, 2, &receive_recorder::callback, &w.received);
                 return w.last == status::ok;
             });
}
