// Integration tests of the Win32 options (basic_win32_threadpool<win32_options{...}>) on real loopback TCP
// sockets, under Wine when cross compiling: every configuration runs the same suite. Each IO must complete
// exactly once whichever way it finishes: through the pool, or at once on the calling thread (skip mode).
#include <async_socket/async_socket.hpp>

#include "support/callback_io.hpp"
#include "support/counted_io.hpp"
#include "support/engine_ref.hpp"
#include "support/loopback.hpp"
#include "support/suite_checks.hpp"

#include <doctest/doctest.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <string_view>
#include <vector>

namespace options_test
{

using async_socket::basic_async_socket;
using async_socket::basic_win32_threadpool;
using async_socket::heap_alloc;
using async_socket::status;
using async_socket::win32_event_mode;
using async_socket::win32_options;
using async_socket::win32_sync;
using namespace win32_test; // the support shared with test_win32_iocp (tests/backend/win32/support)

template <win32_options Options>
using socket_with = basic_async_socket<basic_win32_threadpool<Options>, heap_alloc, win32_sync>;

using per_io_socket = async_socket::win32_async_socket;
using no_event_socket = socket_with<win32_options{.events = win32_event_mode::none}>;
using recycled_socket = socket_with<win32_options{.events = win32_event_mode::recycled}>;
using skip_per_io_socket = socket_with<win32_options{.skip_completion_on_success = true}>;
using skip_no_event_socket =
    socket_with<win32_options{.events = win32_event_mode::none, .skip_completion_on_success = true}>;
using skip_recycled_socket =
    socket_with<win32_options{.events = win32_event_mode::recycled, .skip_completion_on_success = true}>;
using fast_socket = async_socket::win32_no_event_skip_port_async_socket;

// Winsock, an engine with default parameters, a connected pair of SOCKETs and an opened async socket over each
// end.
template <class Socket>
using loopback_sockets = win32_test::basic_loopback_sockets<Socket, engine_ref>;

// The event and thread handles this process holds, read from its handle table
// (NtQuerySystemInformation(SystemExtendedHandleInformation), then NtQueryObject for each handle's type).
// GetProcessHandleCount cannot do this: under Wine 8.0 it returns TRUE with a count of 0.
struct handle_census
{
    long events = -1;
    long threads = -1;

    // With mingw, a thread not made by pthreads that touches a thread_local (the core's, on every completion)
    // gets a duplicated thread handle and an event from winpthreads, released when the thread ends; pool
    // threads come and go. Those pairs cancel out here, so what is left changes only with the events that
    // others (the sockets) hold.
    [[nodiscard]] long events_not_of_threads() const noexcept
    {
        return events - threads;
    }
    friend bool operator==(const handle_census&, const handle_census&) = default;
};

handle_census take_handle_census()
{
    struct handle_entry // SYSTEM_HANDLE_TABLE_ENTRY_INFO_EX
    {
        void* object;
        ULONG_PTR process_id;
        ULONG_PTR handle;
        ULONG granted_access;
        USHORT creator_back_trace_index;
        USHORT object_type_index;
        ULONG attributes;
        ULONG reserved;
    };
    struct handle_table // SYSTEM_HANDLE_INFORMATION_EX
    {
        ULONG_PTR count;
        ULONG_PTR reserved;
        handle_entry entries[1];
    };
    struct type_information // the start of PUBLIC_OBJECT_TYPE_INFORMATION
    {
        USHORT length;
        USHORT maximum_length;
        const wchar_t* name;
    };
    using query_system_fn = LONG(WINAPI*)(ULONG, void*, ULONG, ULONG*);
    using query_object_fn = LONG(WINAPI*)(HANDLE, ULONG, void*, ULONG, ULONG*);
    constexpr ULONG system_extended_handle_information = 64;
    constexpr ULONG object_type_information = 2;
    constexpr LONG status_info_length_mismatch = static_cast<LONG>(0xC0000004L);

    handle_census census;
    const HMODULE ntdll = GetModuleHandleW(L"ntdll.dll");
    const FARPROC query_system_found = GetProcAddress(ntdll, "NtQuerySystemInformation");
    const FARPROC query_object_found = GetProcAddress(ntdll, "NtQueryObject");
    if (query_system_found == nullptr || query_object_found == nullptr)
    {
        return census;
    }
    const auto query_system = reinterpret_cast<query_system_fn>(reinterpret_cast<void (*)()>(query_system_found));
    const auto query_object = reinterpret_cast<query_object_fn>(reinterpret_cast<void (*)()>(query_object_found));

    std::vector<ULONG_PTR> buffer(1u << 14);
    for (;;)
    {
        ULONG needed = 0;
        const LONG result = query_system(system_extended_handle_information, buffer.data(),
                                         static_cast<ULONG>(buffer.size() * sizeof(ULONG_PTR)), &needed);
        if (result == status_info_length_mismatch && buffer.size() < (1u << 24))
        {
            buffer.resize(buffer.size() * 2);
            continue;
        }
        if (result != 0)
        {
            return census;
        }
        break;
    }
    census.events = 0;
    census.threads = 0;
    const auto* table = reinterpret_cast<const handle_table*>(buffer.data());
    const ULONG_PTR self = GetCurrentProcessId();
    for (ULONG_PTR i = 0; i < table->count; ++i)
    {
        if (table->entries[i].process_id != self)
        {
            continue;
        }
        alignas(8) std::array<std::uint8_t, 1024> information{};
        ULONG length = 0;
        if (query_object(reinterpret_cast<HANDLE>(table->entries[i].handle), object_type_information,
                         information.data(), static_cast<ULONG>(information.size()), &length) != 0)
        {
            continue; // closed since the table was read
        }
        const auto* type = reinterpret_cast<const type_information*>(information.data());
        const std::wstring_view name(type->name, type->length / sizeof(wchar_t));
        census.events += name == L"Event" ? 1 : 0;
        census.threads += name == L"Thread" ? 1 : 0;
    }
    return census;
}

// A census read twice in a row with the same result, so that a pool thread starting or ending between two
// reads of the table cannot skew it (at most a few tries; the process is otherwise quiet then).
handle_census stable_handle_census()
{
    handle_census last = take_handle_census();
    for (int tries = 0; tries < 20; ++tries)
    {
        const handle_census again = take_handle_census();
        if (again == last)
        {
            break;
        }
        last = again;
    }
    return last;
}

// Receives one 16-byte message, posting each receive only once select() says data is there, so that the
// WSARecv finds the data already arrived.
template <class Socket>
bool receive_arrived_message(Socket& socket, SOCKET raw, message& into, io_tally& tally)
{
    std::size_t filled = 0;
    while (filled < into.bytes.size())
    {
        if (!wait_readable(raw))
        {
            return false;
        }
        ASYNC_SOCKET_BUFFER rest{into.bytes.data() + filled, static_cast<std::uint32_t>(into.bytes.size() - filled)};
        const std::uint32_t bytes = receive_and_wait(socket, std::span(&rest, 1), tally);
        if (bytes == 0)
        {
            return false;
        }
        filled += bytes;
    }
    return true;
}

} // namespace options_test

TYPE_TO_STRING_AS("per_io", options_test::per_io_socket);
TYPE_TO_STRING_AS("none", options_test::no_event_socket);
TYPE_TO_STRING_AS("recycled", options_test::recycled_socket);
TYPE_TO_STRING_AS("skip+per_io", options_test::skip_per_io_socket);
TYPE_TO_STRING_AS("skip+none", options_test::skip_no_event_socket);
TYPE_TO_STRING_AS("skip+recycled", options_test::skip_recycled_socket);
TYPE_TO_STRING_AS("fast", options_test::fast_socket);

#define ALL_CONFIGURATIONS                                                                                             \
    options_test::per_io_socket, options_test::no_event_socket, options_test::recycled_socket,                         \
        options_test::skip_per_io_socket, options_test::skip_no_event_socket, options_test::skip_recycled_socket,      \
        options_test::fast_socket

using namespace options_test;

TEST_CASE_TEMPLATE("one buffer and several buffers each way arrive byte for byte", Socket, ALL_CONFIGURATIONS)
{
    loopback_sockets<Socket> sockets;
    win32_test::check_exchanges_each_way(sockets);
}

TEST_CASE_TEMPLATE("a ping-pong whose receives find their data arrived completes each IO exactly once", Socket,
                   ALL_CONFIGURATIONS)
{
    loopback_sockets<Socket> sockets;
    constexpr std::uint32_t rounds = 2000;
    io_tally client_sends;
    io_tally server_sends;
    io_tally client_receives;
    io_tally server_receives;

    const auto started = std::chrono::steady_clock::now();
    for (std::uint32_t round = 0; round < rounds; ++round)
    {
        message ping = message::for_round(round);
        ASYNC_SOCKET_BUFFER out{ping.bytes.data(), static_cast<std::uint32_t>(ping.bytes.size())};
        REQUIRE(send_and_wait(*sockets.client, std::span(&out, 1), client_sends) == ASYNC_SOCKET_SEND_OK);

        message at_server;
        REQUIRE(receive_arrived_message(*sockets.server, sockets.pair.server, at_server, server_receives));
        REQUIRE(at_server.bytes == ping.bytes);

        ASYNC_SOCKET_BUFFER back{at_server.bytes.data(), static_cast<std::uint32_t>(at_server.bytes.size())};
        REQUIRE(send_and_wait(*sockets.server, std::span(&back, 1), server_sends) == ASYNC_SOCKET_SEND_OK);

        message at_client;
        REQUIRE(receive_arrived_message(*sockets.client, sockets.pair.client, at_client, client_receives));
        REQUIRE(at_client.bytes == ping.bytes);
    }
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - started;

    // close waits for every callback: a second completion of any IO would show in the counts now.
    CHECK(sockets.client->close() == status::ok);
    CHECK(sockets.server->close() == status::ok);
    for (io_tally* tally : {&client_sends, &server_sends, &client_receives, &server_receives})
    {
        CHECK(tally->seen_calls() == tally->posted);
    }

    const std::uint64_t receives = client_receives.posted + server_receives.posted;
    const std::uint64_t receives_at_once = client_receives.seen_at_once() + server_receives.seen_at_once();
    const std::uint64_t sends = client_sends.posted + server_sends.posted;
    const std::uint64_t sends_at_once = client_sends.seen_at_once() + server_sends.seen_at_once();
    if constexpr (skip_mode<Socket>)
    {
        // Each WSARecv found its data arrived: it finished at once, and its callback ran inside receive_async.
        CHECK(receives_at_once == receives);
    }
    else
    {
        // Every completion comes through the pool, never on the posting thread.
        CHECK(receives_at_once == 0);
        CHECK(sends_at_once == 0);
    }
    MESSAGE(doctest::toString<Socket>() << ": " << rounds << " round trips at about "
                                        << static_cast<long>(rounds / elapsed.count()) << "/s (select-paced); "
                                        << receives_at_once << "/" << receives << " receives and " << sends_at_once
                                        << "/" << sends << " sends finished at once");
}

TEST_CASE_TEMPLATE("a receive chain started from callbacks over data already arrived stays shallow", Socket,
                   ALL_CONFIGURATIONS)
{
    constexpr std::size_t total = 2000 * 16;
    const std::vector<std::uint8_t> sent = make_bytes(total);
    std::vector<std::uint8_t> received(total);

    // Outlives the sockets below, whose close completes whatever is still posted.
    win32_test::receive_chain<Socket, total> chain;
    loopback_sockets<Socket> sockets;
    chain.attach(*sockets.server, received.data());

    // All the data is sent (and, over loopback, arrives) before the first receive is posted.
    io_tally sends;
    ASYNC_SOCKET_BUFFER out{const_cast<std::uint8_t*>(sent.data()), static_cast<std::uint32_t>(total)};
    REQUIRE(send_and_wait(*sockets.client, std::span(&out, 1), sends) == ASYNC_SOCKET_SEND_OK);
    REQUIRE(wait_readable(sockets.pair.server));

    REQUIRE(chain.post_next());
    REQUIRE(chain.waiter.wait_for([&] { return chain.done; }, deadline_seconds));
    CHECK(sockets.server->close() == status::ok);
    {
        std::lock_guard lock(chain.waiter.mutex());
        CHECK_FALSE(chain.failed);
    }
    CHECK(chain.calls == chain.posted);
    CHECK(received == sent);
    // Without the core's queue of IO finished at once, a chain of receives that all find their data would
    // recurse once per receive (thousands deep).
    CHECK(deepest_callback <= 2);
    if constexpr (!skip_mode<Socket>)
    {
        CHECK(chain.at_once == 0);
    }
    MESSAGE(doctest::toString<Socket>() << ": " << chain.posted.load() << " receives, " << chain.at_once.load()
                                        << " finished at once; deepest callback nesting " << deepest_callback.load());
}

TEST_CASE_TEMPLATE("a ping-pong run from completion callbacks stays shallow and completes each IO once", Socket,
                   ALL_CONFIGURATIONS)
{
    callback_ping_pong<Socket> game; // outlives the sockets below
    loopback_sockets<Socket> sockets;
    const std::chrono::duration<double> elapsed =
        win32_test::play_ping_pong(game, *sockets.client, *sockets.server, 2000);
    MESSAGE(doctest::toString<Socket>() << ": " << game.rounds << " round trips from callbacks at about "
                                        << static_cast<long>(game.rounds / elapsed.count()) << "/s; "
                                        << game.at_once.load() << "/" << game.posted.load()
                                        << " IOs finished at once; deepest nesting " << deepest_callback.load());
}

TEST_CASE_TEMPLATE("close with a receive pending completes it once with BECAUSE_CLOSE, and the socket reopens", Socket,
                   ALL_CONFIGURATIONS)
{
    loopback_sockets<Socket> sockets;
    win32_test::check_close_with_receive_pending_reopens(sockets);
}

TEST_CASE_TEMPLATE("destroy while open completes a pending receive once with BECAUSE_CLOSE", Socket, ALL_CONFIGURATIONS)
{
    io_tally pending; // outlives the sockets
    loopback_sockets<Socket> sockets;
    win32_test::check_destroy_with_receive_pending(sockets, pending);
}

TEST_CASE_TEMPLATE("no event handle outlives its IO, or the socket that kept it for reuse", Socket, ALL_CONFIGURATIONS)
{
    win32_test::wsa_session wsa;
    REQUIRE(wsa.ok());
    // A pool of a fixed size: its threads neither come nor go while the handles are counted.
    const EXECUTION_ENGINE_PARAMETERS fixed_pool{2, 2};
    engine_ref engine(&fixed_pool);
    REQUIRE(engine.engine != nullptr);

    // The first threadpool IO of a process makes things that live as long as the process (Wine's IO
    // completion port and its thread): one exchange on a throwaway pair first.
    {
        win32_test::socket_pair warm_up = win32_test::make_loopback_pair();
        REQUIRE(warm_up.valid());
        auto client = Socket::create(engine.engine, win32_test::as_handle(warm_up.client));
        auto server = Socket::create(engine.engine, win32_test::as_handle(warm_up.server));
        REQUIRE(client);
        REQUIRE(server);
        REQUIRE(client->open_async(&ignore_open, nullptr) == status::ok);
        REQUIRE(server->open_async(&ignore_open, nullptr) == status::ok);
        const std::array<std::size_t, 1> sizes{16};
        exchange(*client, *server, std::span<const std::size_t>(sizes), std::span<const std::size_t>(sizes));
    }

    win32_test::socket_pair pair = win32_test::make_loopback_pair();
    REQUIRE(pair.valid());
    const handle_census before = stable_handle_census();
    REQUIRE(before.events >= 0);
    handle_census during;
    constexpr int round_trips = 300; // 1200 IOs: an event leaked per IO would show 1200 times
    {
        auto client = Socket::create(engine.engine, win32_test::as_handle(pair.client));
        auto server = Socket::create(engine.engine, win32_test::as_handle(pair.server));
        REQUIRE(client);
        REQUIRE(server);
        REQUIRE(client->open_async(&ignore_open, nullptr) == status::ok);
        REQUIRE(server->open_async(&ignore_open, nullptr) == status::ok);
        const std::array<std::size_t, 1> sizes{16};
        for (int i = 0; i < round_trips; ++i)
        {
            exchange(*client, *server, std::span<const std::size_t>(sizes), std::span<const std::size_t>(sizes));
            exchange(*server, *client, std::span<const std::size_t>(sizes), std::span<const std::size_t>(sizes));
        }
        during = stable_handle_census();
        // A close with a receive pending too: its event must go back as well.
        std::vector<std::uint8_t> buffer(16);
        ASYNC_SOCKET_BUFFER in{buffer.data(), static_cast<std::uint32_t>(buffer.size())};
        io_tally pending;
        ++pending.posted;
        REQUIRE(server->receive_async(&in, 1, &io_tally::on_receive, &pending) == status::ok);
        CHECK(server->close() == status::ok);
        CHECK(pending.seen_calls() == 1);
    }
    const handle_census after = stable_handle_census();

    // While open, with no IO outstanding: no event at all, except the few a recycling policy keeps.
    const long kept = during.events_not_of_threads() - before.events_not_of_threads();
    if constexpr (options_of<Socket>.events == win32_event_mode::recycled)
    {
        CHECK(kept >= 1);
        CHECK(kept <= 2 * static_cast<long>(async_socket::detail::win32_event_cache::capacity));
    }
    else
    {
        CHECK(kept == 0);
    }
    // Destroyed: every event is closed.
    CHECK(after.events_not_of_threads() == before.events_not_of_threads());
    MESSAGE(doctest::toString<Socket>() << ": events (less thread pairs) " << before.events_not_of_threads()
                                        << " before, " << during.events_not_of_threads() << " after " << 4 * round_trips
                                        << " IOs on two open sockets, " << after.events_not_of_threads()
                                        << " after destroy; threads " << before.threads << "/" << during.threads << "/"
                                        << after.threads);
}
