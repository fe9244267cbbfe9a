// The Win32 backend's accept and connect (AcceptEx, ConnectEx) over the fake OS, natively: the call sequence of a
// successful accept and connect (WSAIoctl once, WSASocketW, StartThreadpoolIo, AcceptEx, the completion,
// SO_UPDATE_ACCEPT_CONTEXT, GetAcceptExSockaddrs; getsockname, bind, ConnectEx, SO_UPDATE_CONNECT_CONTEXT), a
// synchronous AcceptEx failure (CancelThreadpoolIo, the accept socket closed, no handler, no context), a completion
// with an error, close with accepts pending (because_close, each accept socket closed), a connection reset before it
// was accepted skipped with a fresh AcceptEx, a stop_token cancel, skip mode (an accept done at once), and nothing
// leaked: sockets, events, contexts.
#include <async_socket/basic_async_socket.hpp>
#include <async_socket/sync/std_sync.hpp>
#include <async_socket/testing/fake_threadpool.hpp>
#include <async_socket/testing/fault_alloc.hpp>
#include <async_socket/testing/win32_fault_calls.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

namespace
{

using async_socket::accept_result;
using async_socket::connect_result;
using async_socket::io_completion;
using async_socket::socket_address;
using async_socket::status;
using async_socket::testing::alloc_ledger;
using async_socket::testing::cancel_behavior;
using async_socket::testing::fake_call;
using async_socket::testing::fake_features;
using async_socket::testing::fake_os;
using async_socket::testing::fake_socket;
using async_socket::testing::fake_threadpool;
using async_socket::testing::fault_alloc;

using socket_type = async_socket::basic_async_socket<fake_threadpool, fault_alloc, async_socket::std_sync>;
using skip_backend =
    async_socket::testing::basic_fake_threadpool<async_socket::testing::fake_wsabuf,
                                                 fake_features{.io_events = false, .skip_completion_on_success = true}>;
using skip_socket_type = async_socket::basic_async_socket<skip_backend, fault_alloc, async_socket::std_sync>;

static_assert(async_socket::accepting_backend<fake_threadpool> && async_socket::connecting_backend<fake_threadpool>);
static_assert(async_socket::accepting_backend<skip_backend> && async_socket::connecting_backend<skip_backend>);
// The fault-injecting wrapper forwards the accept and connect calls.
using fault_backend = async_socket::win32_threadpool_backend<
    async_socket::testing::win32_fault_calls<async_socket::testing::fake_threadpool_calls>>;
static_assert(async_socket::accepting_backend<fault_backend> && async_socket::connecting_backend<fault_backend>);
using fault_socket_type = async_socket::basic_async_socket<fault_backend, fault_alloc, async_socket::std_sync>;

constexpr std::uint32_t wsa_econnrefused = 10061;
constexpr std::uint32_t wsa_econnreset = 10054;
constexpr std::uint32_t wsa_enobufs = 10055;

// A sockaddr-shaped address: family (little-endian 16 bits), then a pattern.
socket_address address_of(std::uint16_t family, unsigned char pattern, std::uint32_t length = 16)
{
    unsigned char bytes[28] = {};
    std::memcpy(bytes, &family, sizeof family);
    for (std::uint32_t i = 2; i < length; ++i)
    {
        bytes[i] = static_cast<unsigned char>(pattern + i);
    }
    return socket_address(reinterpret_cast<const sockaddr*>(bytes), length);
}

bool same(const socket_address& a, const socket_address& b)
{
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size()) == 0;
}

template <class Result>
struct seen
{
    std::vector<Result> results;
    auto handler() noexcept
    {
        return [this](Result r) noexcept { results.push_back(std::move(r)); };
    }
};

std::string joined(const std::vector<std::string>& lines)
{
    std::string all;
    for (const auto& line : lines)
    {
        all += line + "\n";
    }
    return all;
}

// A fake world: the listener (socket 7, bound to an IPv4 address) and a client socket (9, not bound).
template <class Socket>
struct world
{
    fake_os os;
    alloc_ledger ledger;
    SOCKET_HANDLE listener_handle = fake_socket(7);
    SOCKET_HANDLE client_handle = fake_socket(9);
    typename Socket::handle listener;
    typename Socket::handle client;

    world()
    {
        os.set_local_address(listener_handle, address_of(2, 0x40));
        listener = Socket::create(&os, listener_handle, {}, fault_alloc{&ledger});
        client = Socket::create(&os, client_handle, {}, fault_alloc{&ledger});
        REQUIRE(listener);
        REQUIRE(client);
        REQUIRE(listener->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) == status::ok);
        REQUIRE(client->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) == status::ok);
        os.clear_calls();
    }

    // What an accept's pending AcceptEx is, in start order.
    std::vector<async_socket::testing::pending_io> accepts() const
    {
        std::vector<async_socket::testing::pending_io> found;
        for (const auto& io : os.pending())
        {
            if (io.kind == fake_call::accept_ex)
            {
                found.push_back(io);
            }
        }
        return found;
    }

    void finish()
    {
        listener.reset();
        client.reset();
        CHECK_MESSAGE(os.violations().empty(), joined(os.violations()));
        CHECK(os.live_events() == 0);
        CHECK(os.live_sockets() == 0);
        CHECK(ledger.live_blocks() == 0);
    }
};

} // namespace

TEST_CASE("accept over the fake: WSAIoctl once, WSASocketW, StartThreadpoolIo, AcceptEx, then the accepted socket")
{
    world<socket_type> w;
    seen<accept_result> accepted;
    REQUIRE(w.listener->accept_async(accepted.handler()) == status::ok);
    CHECK(w.os.call_names() == std::vector<std::string>{"WSAIoctl", "getsockname", "WSASocketW", "CreateEvent",
                                                        "StartThreadpoolIo", "AcceptEx"});
    const auto calls = w.os.calls();
    REQUIRE(calls.size() == 6);
    const SOCKET_HANDLE made = calls[2].socket;
    CHECK(calls[5].socket == made); // AcceptEx fills the socket WSASocketW made
    CHECK(w.os.live_sockets() == 1);
    CHECK(accepted.results.empty());
    w.os.clear_calls();

    const socket_address peer = address_of(2, 0x11);
    const auto pending = w.accepts();
    REQUIRE(pending.size() == 1);
    REQUIRE(w.os.complete_accept(pending[0].overlapped, peer));
    CHECK(w.os.call_names() ==
          std::vector<std::string>{"CloseHandle", "setsockopt(SO_UPDATE_ACCEPT_CONTEXT)", "GetAcceptExSockaddrs"});
    REQUIRE(accepted.results.size() == 1);
    CHECK(accepted.results[0].completion == io_completion::ok);
    CHECK(!accepted.results[0].error);
    CHECK(accepted.results[0].socket == made);
    CHECK(same(accepted.results[0].peer, peer));
    CHECK(w.os.calls()[1].overlapped == w.listener_handle); // SO_UPDATE_ACCEPT_CONTEXT names the listener

    // A second accept: no second WSAIoctl, no second getsockname.
    w.os.clear_calls();
    REQUIRE(w.listener->accept_async(accepted.handler()) == status::ok);
    CHECK(w.os.call_names() == std::vector<std::string>{"WSASocketW", "CreateEvent", "StartThreadpoolIo", "AcceptEx"});
    REQUIRE(w.os.complete_accept(w.accepts().at(0).overlapped, peer));
    REQUIRE(accepted.results.size() == 2);
    CHECK(accepted.results[1].ok());
    CHECK(w.os.count(fake_call::wsa_ioctl) == 0);
    // The handler owns the accepted sockets: the application closes them.
    w.os.close_socket(accepted.results[0].socket);
    w.os.close_socket(accepted.results[1].socket);
    w.finish();
}

TEST_CASE("connect over the fake: an unbound socket is bound first; ConnectEx; SO_UPDATE_CONNECT_CONTEXT on success")
{
    world<socket_type> w;
    seen<connect_result> connected;
    const socket_address target = address_of(23, 0x22, 28); // AF_INET6 on Windows is 23
    REQUIRE(w.client->connect_async(target, connected.handler()) == status::ok);
    CHECK(w.os.call_names() ==
          std::vector<std::string>{"WSAIoctl", "getsockname", "bind", "CreateEvent", "StartThreadpoolIo", "ConnectEx"});
    const auto pending = w.os.pending();
    REQUIRE(pending.size() == 1);
    CHECK(pending[0].kind == fake_call::connect_ex);
    CHECK(same(pending[0].address, target));
    w.os.clear_calls();
    REQUIRE(w.os.complete(pending[0].overlapped, async_socket::win32_no_error, 0));
    CHECK(w.os.call_names() == std::vector<std::string>{"CloseHandle", "setsockopt(SO_UPDATE_CONNECT_CONTEXT)"});
    REQUIRE(connected.results.size() == 1);
    CHECK(connected.results[0].ok());

    // Bound by then: a second connect does not bind again (and is refused by the "OS").
    w.os.clear_calls();
    REQUIRE(w.client->connect_async(target, connected.handler()) == status::ok);
    CHECK(w.os.call_names() ==
          std::vector<std::string>{"getsockname", "CreateEvent", "StartThreadpoolIo", "ConnectEx"});
    REQUIRE(w.os.complete_oldest(wsa_econnrefused, 0));
    REQUIRE(connected.results.size() == 2);
    CHECK(connected.results[1].completion == io_completion::error);
    CHECK(connected.results[1].error.value() == static_cast<int>(wsa_econnrefused));
    CHECK(w.os.count(fake_call::update_connect_context) == 0);
    w.finish();
}

TEST_CASE("a synchronous AcceptEx failure: CancelThreadpoolIo, the accept socket closed, no handler, no context")
{
    world<socket_type> w;
    seen<accept_result> accepted;
    w.os.fail(fake_call::accept_ex, 0, wsa_enobufs);
    CHECK(w.listener->accept_async(accepted.handler()) == status::os_error);
    CHECK(w.os.call_names() == std::vector<std::string>{"WSAIoctl", "getsockname", "WSASocketW", "CreateEvent",
                                                        "StartThreadpoolIo", "AcceptEx", "CancelThreadpoolIo",
                                                        "CloseHandle", "closesocket"});
    CHECK(accepted.results.empty());
    CHECK(w.os.live_sockets() == 0);
    CHECK(w.ledger.live_blocks() == 2); // the two sockets only: no IO context left

    // WSASocketW, CreateEvent, ConnectEx and WSAIoctl refused: nothing started, nothing left either.
    w.os.clear_calls();
    w.os.fail(fake_call::wsa_socket, 0, wsa_enobufs);
    CHECK(w.listener->accept_async(accepted.handler()) == status::os_error);
    w.os.fail(fake_call::create_event, 0, 8);
    CHECK(w.listener->accept_async(accepted.handler()) == status::os_error);
    CHECK(w.os.count(fake_call::closesocket) == 1); // the socket made before CreateEvent failed
    seen<connect_result> connected;
    w.os.fail(fake_call::wsa_ioctl, 0, 10045);
    CHECK(w.client->connect_async(address_of(2, 1), connected.handler()) == status::os_error);
    w.os.fail(fake_call::connect_ex, 0, 10049);
    CHECK(w.client->connect_async(address_of(2, 1), connected.handler()) == status::os_error);
    CHECK(w.os.count(fake_call::cancel_io) == 1);
    CHECK(accepted.results.empty());
    CHECK(connected.results.empty());
    CHECK(w.os.live_sockets() == 0);
    CHECK(w.os.pending_count() == 0);
    w.finish();
}

TEST_CASE("an AcceptEx that completes with an error: the handler gets it, the accept socket is closed")
{
    world<socket_type> w;
    seen<accept_result> accepted;
    REQUIRE(w.listener->accept_async(accepted.handler()) == status::ok);
    w.os.clear_calls();
    REQUIRE(w.os.complete_oldest(wsa_enobufs, 0));
    CHECK(w.os.call_names() == std::vector<std::string>{"CloseHandle", "closesocket"});
    REQUIRE(accepted.results.size() == 1);
    CHECK(accepted.results[0].completion == io_completion::error);
    CHECK(accepted.results[0].error.value() == static_cast<int>(wsa_enobufs));
    CHECK(accepted.results[0].socket == nullptr);
    CHECK(accepted.results[0].peer.empty());
    CHECK(w.os.live_sockets() == 0);
    // SO_UPDATE_ACCEPT_CONTEXT failing after a successful AcceptEx: reported, the socket closed.
    REQUIRE(w.listener->accept_async(accepted.handler()) == status::ok);
    w.os.fail(fake_call::update_accept_context, 0, 10022);
    REQUIRE(w.os.complete_accept(w.accepts().at(0).overlapped, address_of(2, 3)));
    REQUIRE(accepted.results.size() == 2);
    CHECK(accepted.results[1].completion == io_completion::error);
    CHECK(accepted.results[1].error.value() == 10022);
    CHECK(w.os.live_sockets() == 0);
    w.finish();
}

TEST_CASE("close with three accepts pending: each because_close, each accept socket closed")
{
    world<socket_type> w;
    seen<accept_result> accepted;
    for (int i = 0; i < 3; ++i)
    {
        REQUIRE(w.listener->accept_async(accepted.handler()) == status::ok);
    }
    CHECK(w.os.live_sockets() == 3);
    CHECK(w.os.pending_accepts() == 3);
    CHECK(w.listener->close() == status::ok); // CancelIoEx: aborted on the fake's worker, then waited for
    REQUIRE(accepted.results.size() == 3);
    for (const auto& r : accepted.results)
    {
        CHECK(r.completion == io_completion::because_close);
        CHECK(r.socket == nullptr);
    }
    CHECK(w.os.count(fake_call::closesocket) == 3);
    CHECK(w.os.live_sockets() == 0);
    // Open again: accepts work again.
    REQUIRE(w.listener->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) == status::ok);
    REQUIRE(w.listener->accept_async(accepted.handler()) == status::ok);
    REQUIRE(w.os.complete_accept(w.accepts().at(0).overlapped, address_of(2, 5)));
    REQUIRE(accepted.results.size() == 4);
    CHECK(accepted.results[3].ok());
    w.os.close_socket(accepted.results[3].socket);
    w.finish();
}

TEST_CASE("a connection reset before it was accepted is skipped: a fresh AcceptEx with a new socket")
{
    world<socket_type> w;
    seen<accept_result> accepted;
    REQUIRE(w.listener->accept_async(accepted.handler()) == status::ok);
    const SOCKET_HANDLE first = w.accepts().at(0).accept_socket;
    for (const std::uint32_t code : {64u, 10054u, 10053u, 1236u, 59u})
    {
        w.os.clear_calls();
        REQUIRE(w.os.complete_oldest(code, 0));
        CHECK(w.os.call_names() == std::vector<std::string>{"CloseHandle", "closesocket", "WSASocketW", "CreateEvent",
                                                            "StartThreadpoolIo", "AcceptEx"});
        CHECK(accepted.results.empty());
        CHECK(w.os.live_sockets() == 1);
    }
    const auto pending = w.accepts();
    REQUIRE(pending.size() == 1);
    CHECK(pending[0].accept_socket != first);
    REQUIRE(w.os.complete_accept(pending[0].overlapped, address_of(2, 9)));
    REQUIRE(accepted.results.size() == 1);
    CHECK(accepted.results[0].ok());
    CHECK(accepted.results[0].socket == pending[0].accept_socket);
    w.os.close_socket(accepted.results[0].socket);

    // The fresh AcceptEx refused at once: that error is reported, nothing is left.
    REQUIRE(w.listener->accept_async(accepted.handler()) == status::ok);
    w.os.fail(fake_call::accept_ex, 0, wsa_enobufs);
    REQUIRE(w.os.complete_oldest(wsa_econnreset, 0));
    REQUIRE(accepted.results.size() == 2);
    CHECK(accepted.results[1].completion == io_completion::error);
    CHECK(accepted.results[1].error.value() == static_cast<int>(wsa_enobufs));
    CHECK(w.os.live_sockets() == 0);
    CHECK(w.os.pending_count() == 0);

    // A reset that comes after close began is not retried: close would not see a new AcceptEx.
    w.os.set_cancel_behavior(cancel_behavior::ignore);
    REQUIRE(w.listener->accept_async(accepted.handler()) == status::ok);
    const void* overlapped = w.accepts().at(0).overlapped;
    std::thread closer([&] { (void)w.listener->close(); });
    // The closer has called CancelIoEx (ignored) once it waits; the reset then arrives.
    while (w.os.count(fake_call::wait_for_io_callbacks) == 0)
    {
        std::this_thread::yield();
    }
    REQUIRE(w.os.complete(const_cast<void*>(overlapped), wsa_econnreset, 0));
    closer.join();
    REQUIRE(accepted.results.size() == 3);
    CHECK(accepted.results[2].completion == io_completion::because_close);
    CHECK(w.os.live_sockets() == 0);
    w.finish();
}

TEST_CASE("a stop_token cancels one pending accept (its socket closed); the next accept succeeds")
{
    world<socket_type> w;
    seen<accept_result> accepted;
    std::stop_source stop;
    REQUIRE(w.listener->accept_async(accepted.handler(), stop.get_token()) == status::ok);
    w.os.set_cancel_behavior(cancel_behavior::abort_inline);
    stop.request_stop();
    REQUIRE(accepted.results.size() == 1);
    CHECK(accepted.results[0].completion == io_completion::cancelled);
    CHECK(w.os.live_sockets() == 0);
    CHECK(w.os.count(fake_call::cancel_overlapped_io) == 1);

    // A stop that comes while a reset connection is being skipped ends the accept instead of a fresh AcceptEx.
    std::stop_source stop2;
    w.os.set_cancel_behavior(cancel_behavior::ignore);
    REQUIRE(w.listener->accept_async(accepted.handler(), stop2.get_token()) == status::ok);
    stop2.request_stop(); // CancelIoEx ignored: as if the AcceptEx had completed (reset) just before it
    REQUIRE(w.os.complete_oldest(wsa_econnreset, 0));
    REQUIRE(accepted.results.size() == 2);
    CHECK(accepted.results[1].completion == io_completion::cancelled);
    CHECK(w.os.pending_count() == 0);

    REQUIRE(w.listener->accept_async(accepted.handler(), std::stop_source().get_token()) == status::ok);
    REQUIRE(w.os.complete_accept(w.accepts().at(0).overlapped, address_of(2, 7)));
    REQUIRE(accepted.results.size() == 3);
    CHECK(accepted.results[2].ok());
    w.os.close_socket(accepted.results[2].socket);
    w.finish();
}

TEST_CASE("skip mode: an AcceptEx or ConnectEx done at once completes on the calling thread, no event")
{
    world<skip_socket_type> w;
    w.os.at_once([](const async_socket::testing::pending_io&) -> std::optional<std::uint32_t> { return 0u; });
    seen<accept_result> accepted;
    REQUIRE(w.listener->accept_async(accepted.handler()) == status::ok);
    CHECK(w.os.call_names() == std::vector<std::string>{"WSAIoctl", "getsockname", "WSASocketW", "StartThreadpoolIo",
                                                        "AcceptEx", "CancelThreadpoolIo",
                                                        "setsockopt(SO_UPDATE_ACCEPT_CONTEXT)",
                                                        "GetAcceptExSockaddrs"});
    REQUIRE(accepted.results.size() == 1);
    CHECK(accepted.results[0].ok());
    w.os.close_socket(accepted.results[0].socket);
    seen<connect_result> connected;
    w.os.set_local_address(w.client_handle, address_of(2, 0x33));
    REQUIRE(w.client->connect_async(address_of(2, 0x44), connected.handler()) == status::ok);
    REQUIRE(connected.results.size() == 1);
    CHECK(connected.results[0].ok());
    CHECK(w.os.count(fake_call::bind) == 0);
    CHECK(w.os.count(fake_call::update_connect_context) == 1);
    w.finish();
}

TEST_CASE("accepts completed from worker threads while new ones start: each once, no socket leaked")
{
    world<socket_type> w;
    w.os.set_worker_count(2);
    std::atomic<int> ok{0};
    std::atomic<int> calls{0};
    std::vector<SOCKET_HANDLE> sockets;
    std::mutex sockets_lock;
    auto handler = [&](accept_result r) noexcept
    {
        calls.fetch_add(1);
        if (r.ok())
        {
            ok.fetch_add(1);
            std::lock_guard lock(sockets_lock);
            sockets.push_back(r.socket);
        }
    };
    // Every other AcceptEx completes with a reset (skipped), the rest with success, from the workers.
    std::atomic<int> issued{0};
    w.os.on_issue(
        [&](const async_socket::testing::pending_io& io)
        {
            if (io.kind == fake_call::accept_ex)
            {
                const bool reset = issued.fetch_add(1) % 2 == 0;
                (void)w.os.complete_on_worker(io.overlapped, reset ? wsa_econnreset : 0u, 0);
            }
        });
    constexpr int accepts = 200;
    for (int i = 0; i < accepts; ++i)
    {
        REQUIRE(w.listener->accept_async(handler) == status::ok);
    }
    REQUIRE(w.os.wait_until_idle(std::chrono::seconds(30)));
    w.os.on_issue(nullptr);
    CHECK(calls.load() == accepts);
    CHECK(ok.load() == accepts);
    CHECK(w.os.count(fake_call::accept_ex) == 2 * accepts); // each reset (every other AcceptEx) issued one more
    for (SOCKET_HANDLE s : sockets)
    {
        w.os.close_socket(s);
    }
    w.finish();
}

TEST_CASE("through win32_fault_calls (no plan): the same accept and connect, the plan's counts back at zero")
{
    fake_os os;
    alloc_ledger ledger;
    async_socket::testing::win32_fault_plan plan(1);
    os.set_local_address(fake_socket(7), address_of(2, 0x40));
    auto make = [&](SOCKET_HANDLE s)
    {
        auto made = fault_socket_type::create(
            &os, s,
            fault_backend(
                async_socket::testing::win32_fault_calls<async_socket::testing::fake_threadpool_calls>(&plan)),
            fault_alloc{&ledger});
        REQUIRE(made);
        REQUIRE(made->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) == status::ok);
        return made;
    };
    auto listener = make(fake_socket(7));
    auto client = make(fake_socket(9));
    seen<accept_result> accepted;
    seen<connect_result> connected;
    REQUIRE(listener->accept_async(accepted.handler()) == status::ok);
    REQUIRE(client->connect_async(address_of(2, 0x40), connected.handler()) == status::ok);
    std::vector<void*> overlapped;
    for (const auto& io : os.pending())
    {
        overlapped.push_back(io.overlapped);
    }
    REQUIRE(overlapped.size() == 2);
    REQUIRE(os.complete_accept(overlapped[0], address_of(2, 0x41)));
    REQUIRE(os.complete(overlapped[1], async_socket::win32_no_error, 0));
    REQUIRE(accepted.results.size() == 1);
    REQUIRE(connected.results.size() == 1);
    CHECK(accepted.results[0].ok());
    CHECK(connected.results[0].ok());
    os.close_socket(accepted.results[0].socket);
    listener.reset();
    client.reset();
    CHECK(plan.outstanding_io() == 0);
    CHECK(plan.live_bindings() == 0);
    CHECK(plan.completions() == 2);
    CHECK_MESSAGE(os.violations().empty(), joined(os.violations()));
    CHECK(os.live_sockets() == 0);
    CHECK(os.live_events() == 0);
    CHECK(ledger.live_blocks() == 0);
}

TEST_CASE("through win32_fault_calls: an injected WSASocketW, AcceptEx or ConnectEx fault refuses the call before the "
          "OS sees it; no handler, nothing left; the next call works")
{
    using async_socket::testing::win32_fault_point;
    fake_os os;
    alloc_ledger ledger;
    async_socket::testing::win32_fault_plan plan(3);
    os.set_local_address(fake_socket(7), address_of(2, 0x40));
    auto make = [&](SOCKET_HANDLE s)
    {
        auto made = fault_socket_type::create(
            &os, s,
            fault_backend(
                async_socket::testing::win32_fault_calls<async_socket::testing::fake_threadpool_calls>(&plan)),
            fault_alloc{&ledger});
        REQUIRE(made);
        REQUIRE(made->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) == status::ok);
        return made;
    };
    auto listener = make(fake_socket(7));
    auto client = make(fake_socket(9));
    seen<accept_result> accepted;
    seen<connect_result> connected;
    const std::uint64_t blocks = ledger.live_blocks();

    os.clear_calls();
    plan.set_rate(win32_fault_point::open_socket, 1.0);
    CHECK(listener->accept_async(accepted.handler()) == status::os_error);
    CHECK(os.count(fake_call::wsa_socket) == 0); // refused before the OS
    CHECK(os.count(fake_call::accept_ex) == 0);
    plan.set_rate(win32_fault_point::open_socket, 0.0);

    plan.set_rate(win32_fault_point::accept, 1.0);
    CHECK(listener->accept_async(accepted.handler()) == status::os_error);
    CHECK(os.count(fake_call::wsa_socket) == 1);  // the accept socket was made...
    CHECK(os.count(fake_call::closesocket) == 1); // ...and closed again
    CHECK(os.count(fake_call::accept_ex) == 0);
    CHECK(os.count(fake_call::cancel_io) == 1); // StartThreadpoolIo undone
    plan.set_rate(win32_fault_point::accept, 0.0);

    plan.set_rate(win32_fault_point::connect, 1.0);
    CHECK(client->connect_async(address_of(2, 0x40), connected.handler()) == status::os_error);
    CHECK(os.count(fake_call::connect_ex) == 0);
    CHECK(os.count(fake_call::cancel_io) == 2);
    plan.set_rate(win32_fault_point::connect, 0.0);

    CHECK(plan.injected(win32_fault_point::open_socket, async_socket::testing::wsa_too_many_sockets) +
              plan.injected(win32_fault_point::open_socket, async_socket::testing::wsa_no_buffers) ==
          1);
    CHECK(plan.injected(win32_fault_point::accept, async_socket::testing::wsa_no_buffers) == 1);
    CHECK(plan.injected(win32_fault_point::connect, async_socket::testing::wsa_no_buffers) == 1);
    CHECK(accepted.results.empty());
    CHECK(connected.results.empty());
    CHECK(plan.outstanding_io() == 0);
    CHECK(os.pending_count() == 0);
    CHECK(os.live_sockets() == 0);
    CHECK(ledger.live_blocks() == blocks); // no IO context left

    // The next accept and connect go through.
    REQUIRE(listener->accept_async(accepted.handler()) == status::ok);
    REQUIRE(client->connect_async(address_of(2, 0x40), connected.handler()) == status::ok);
    std::vector<void*> overlapped;
    for (const auto& io : os.pending())
    {
        overlapped.push_back(io.overlapped);
    }
    REQUIRE(overlapped.size() == 2);
    REQUIRE(os.complete_accept(overlapped[0], address_of(2, 0x41)));
    REQUIRE(os.complete(overlapped[1], async_socket::win32_no_error, 0));
    REQUIRE(accepted.results.size() == 1);
    REQUIRE(connected.results.size() == 1);
    CHECK(accepted.results[0].ok());
    CHECK(connected.results[0].ok());
    os.close_socket(accepted.results[0].socket);
    listener.reset();
    client.reset();
    CHECK(plan.outstanding_io() == 0);
    CHECK_MESSAGE(os.violations().empty(), joined(os.violations()));
    CHECK(os.live_sockets() == 0);
    CHECK(os.live_events() == 0);
    CHECK(ledger.live_blocks() == 0);
}
