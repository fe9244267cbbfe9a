// Integration tests of the Win32 options (basic_win32_threadpool<win32_options{...}>) on real loopback TCP
// sockets, under Wine when cross compiling: every configuration runs the same suite. Each IO must complete
// exactly once whichever way it finishes: through the pool, or at once on the calling thread (skip mode).
#include <async_socket/async_socket.hpp>

#include "support/loopback.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
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
using fast_socket = async_socket::win32_fast_async_socket;

template <class Socket>
constexpr win32_options options_of = Socket::threadpool_type::options;

template <class Socket>
constexpr bool skip_mode = options_of<Socket>.skip_completion_on_success;

// Wine is slow; a deadline only ends a test that would otherwise hang.
constexpr double deadline_seconds = 60.0;

std::uint8_t pattern(std::size_t offset) noexcept
{
    std::uint32_t x = static_cast<std::uint32_t>(offset) * 2654435761u;
    x ^= x >> 15;
    return static_cast<std::uint8_t>(x ^ (x >> 8));
}

std::vector<std::uint8_t> make_bytes(std::size_t size, std::size_t first_offset = 0)
{
    std::vector<std::uint8_t> bytes(size);
    for (std::size_t i = 0; i < size; ++i)
    {
        bytes[i] = pattern(first_offset + i);
    }
    return bytes;
}

// How deep this thread is in send_async/receive_async calls of the test: a callback that sees it above 0
// runs on the posting thread, inside the call (the IO finished at once).
thread_local int posting_depth = 0;

// How deep this thread is in completion callbacks of the test, and the deepest any thread has been.
thread_local int callback_depth = 0;
std::atomic<int> deepest_callback{0};

struct callback_scope
{
    callback_scope() noexcept
    {
        const int depth = ++callback_depth;
        int seen = deepest_callback.load();
        while (depth > seen && !deepest_callback.compare_exchange_weak(seen, depth))
        {
        }
    }
    ~callback_scope()
    {
        --callback_depth;
    }
    callback_scope(const callback_scope&) = delete;
    callback_scope& operator=(const callback_scope&) = delete;
};

template <class F>
status post(F&& start_io)
{
    ++posting_depth;
    const status started = start_io();
    --posting_depth;
    return started;
}

// An execution engine (default parameters unless given), released at the end of the test.
struct engine_ref
{
    EXECUTION_ENGINE_HANDLE engine;
    explicit engine_ref(const EXECUTION_ENGINE_PARAMETERS* parameters = nullptr)
        : engine(execution_engine_create(parameters))
    {
    }
    ~engine_ref()
    {
        execution_engine_dec_ref(engine);
    }
    engine_ref(const engine_ref&) = delete;
    engine_ref& operator=(const engine_ref&) = delete;
};

void ignore_open(void*, ASYNC_SOCKET_OPEN_RESULT) {}

// Winsock, an engine, a connected pair of SOCKETs and an opened async socket over each end. Members are
// destroyed in reverse order: the async sockets before the SOCKETs they use.
template <class Socket>
struct loopback_sockets
{
    win32_test::wsa_session wsa;
    engine_ref engine;
    win32_test::socket_pair pair = win32_test::make_loopback_pair();
    typename Socket::handle client;
    typename Socket::handle server;

    loopback_sockets()
    {
        REQUIRE(wsa.ok());
        REQUIRE(engine.engine != nullptr);
        REQUIRE(pair.valid());
        client = Socket::create(engine.engine, win32_test::as_handle(pair.client));
        server = Socket::create(engine.engine, win32_test::as_handle(pair.server));
        REQUIRE(client);
        REQUIRE(server);
        REQUIRE(client->open_async(&ignore_open, nullptr) == status::ok);
        REQUIRE(server->open_async(&ignore_open, nullptr) == status::ok);
    }
};

// The callbacks of IOs posted through it: how many ran, how many at once, and the last result. The test
// compares `calls` with the number it posted, so an IO completed twice or never shows.
struct io_tally
{
    win32_test::waiter waiter;
    std::uint64_t posted = 0;  // touched by the posting thread only
    std::uint64_t calls = 0;   // guarded by waiter.mutex(), as are the members below
    std::uint64_t at_once = 0; // callbacks that ran inside the send_async/receive_async that posted the IO
    int last_result = -1;
    std::uint32_t last_bytes = 0;

    static void on_send(void* context, ASYNC_SOCKET_SEND_RESULT result)
    {
        callback_scope scope;
        auto* self = static_cast<io_tally*>(context);
        const bool inside_post = posting_depth > 0;
        self->waiter.update(
            [&]
            {
                ++self->calls;
                self->at_once += inside_post ? 1 : 0;
                self->last_result = static_cast<int>(result);
            });
    }

    static void on_receive(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes)
    {
        callback_scope scope;
        auto* self = static_cast<io_tally*>(context);
        const bool inside_post = posting_depth > 0;
        self->waiter.update(
            [&]
            {
                ++self->calls;
                self->at_once += inside_post ? 1 : 0;
                self->last_result = static_cast<int>(result);
                self->last_bytes = bytes;
            });
    }

    // Waits until every IO posted so far has had its callback.
    bool wait_all()
    {
        return waiter.wait_for([&] { return calls >= posted; }, deadline_seconds);
    }

    std::uint64_t seen_calls()
    {
        std::lock_guard lock(waiter.mutex());
        return calls;
    }
    std::uint64_t seen_at_once()
    {
        std::lock_guard lock(waiter.mutex());
        return at_once;
    }
};

// Sends the buffers as one IO and waits for its callback; returns the result.
template <class Socket>
ASYNC_SOCKET_SEND_RESULT send_and_wait(Socket& socket, std::span<const ASYNC_SOCKET_BUFFER> buffers, io_tally& tally)
{
    ++tally.posted;
    const status sent = post(
        [&] {
            return socket.send_async(buffers.data(), static_cast<std::uint32_t>(buffers.size()), &io_tally::on_send,
                                     &tally);
        });
    REQUIRE(sent == status::ok);
    REQUIRE(tally.wait_all());
    std::lock_guard lock(tally.waiter.mutex());
    CHECK(tally.calls == tally.posted);
    return static_cast<ASYNC_SOCKET_SEND_RESULT>(tally.last_result);
}

// Receives into the buffers as one IO and waits for its callback; returns the byte count (0 on an error).
template <class Socket>
std::uint32_t receive_and_wait(Socket& socket, std::span<ASYNC_SOCKET_BUFFER> buffers, io_tally& tally)
{
    ++tally.posted;
    const status posted = post(
        [&]
        {
            return socket.receive_async(buffers.data(), static_cast<std::uint32_t>(buffers.size()),
                                        &io_tally::on_receive, &tally);
        });
    REQUIRE(posted == status::ok);
    REQUIRE(tally.wait_all());
    std::lock_guard lock(tally.waiter.mutex());
    CHECK(tally.calls == tally.posted);
    return tally.last_result == ASYNC_SOCKET_RECEIVE_OK ? tally.last_bytes : 0;
}

// The regions from byte `offset` of their concatenation onwards.
std::vector<ASYNC_SOCKET_BUFFER> regions_from(std::span<const ASYNC_SOCKET_BUFFER> regions, std::size_t offset)
{
    std::vector<ASYNC_SOCKET_BUFFER> rest;
    for (const ASYNC_SOCKET_BUFFER& region : regions)
    {
        if (offset >= region.length)
        {
            offset -= region.length;
            continue;
        }
        rest.push_back(
            {static_cast<std::uint8_t*>(region.buffer) + offset, static_cast<std::uint32_t>(region.length - offset)});
        offset = 0;
    }
    return rest;
}

// Receives until the regions are full (the first receive scatters over all of them, later ones over what is
// left). False on a receive that fails or brings 0 bytes.
template <class Socket>
bool receive_into(Socket& socket, std::span<const ASYNC_SOCKET_BUFFER> regions, io_tally& tally)
{
    std::size_t total = 0;
    for (const ASYNC_SOCKET_BUFFER& region : regions)
    {
        total += region.length;
    }
    std::size_t filled = 0;
    while (filled < total)
    {
        std::vector<ASYNC_SOCKET_BUFFER> rest = regions_from(regions, filled);
        const std::uint32_t bytes = receive_and_wait(socket, std::span(rest), tally);
        if (bytes == 0)
        {
            return false;
        }
        filled += bytes;
    }
    return filled == total;
}

// Sends pattern bytes gathered from buffers of `send_sizes` and receives them scattered over regions of
// `receive_sizes` (the same total); checks that they arrive byte for byte.
template <class Socket>
void exchange(Socket& from, Socket& to, std::span<const std::size_t> send_sizes,
              std::span<const std::size_t> receive_sizes)
{
    std::size_t total = 0;
    for (std::size_t size : send_sizes)
    {
        total += size;
    }
    const std::vector<std::uint8_t> sent = make_bytes(total);
    std::vector<std::uint8_t> received(total);

    std::vector<ASYNC_SOCKET_BUFFER> out;
    std::size_t offset = 0;
    for (std::size_t size : send_sizes)
    {
        out.push_back({const_cast<std::uint8_t*>(sent.data()) + offset, static_cast<std::uint32_t>(size)});
        offset += size;
    }
    std::vector<ASYNC_SOCKET_BUFFER> in;
    offset = 0;
    for (std::size_t size : receive_sizes)
    {
        in.push_back({received.data() + offset, static_cast<std::uint32_t>(size)});
        offset += size;
    }
    REQUIRE(offset == total);

    // The send is posted first and waited for last, so one thread does both ends even when the data does
    // not fit the socket buffers at once.
    io_tally receives;
    io_tally sends;
    ++sends.posted;
    REQUIRE(post(
                [&] {
                    return from.send_async(out.data(), static_cast<std::uint32_t>(out.size()), &io_tally::on_send,
                                           &sends);
                }) == status::ok);
    CHECK(receive_into(to, std::span<const ASYNC_SOCKET_BUFFER>(in), receives));
    REQUIRE(sends.wait_all());
    {
        std::lock_guard lock(sends.waiter.mutex());
        CHECK(sends.calls == 1);
        CHECK(sends.last_result == ASYNC_SOCKET_SEND_OK);
    }
    CHECK(receives.seen_calls() == receives.posted);
    CHECK(received == sent);
}

// select() on the raw SOCKET until it has data to read (or the deadline passes).
bool wait_readable(SOCKET socket)
{
    fd_set readable;
    FD_ZERO(&readable);
    FD_SET(socket, &readable);
    timeval deadline{static_cast<long>(deadline_seconds), 0};
    return select(0, &readable, nullptr, nullptr, &deadline) == 1;
}

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

// A 16-byte message that carries its round number.
struct message
{
    std::array<std::uint8_t, 16> bytes{};

    static message for_round(std::uint32_t round)
    {
        message made;
        for (std::size_t i = 0; i < made.bytes.size(); ++i)
        {
            made.bytes[i] = pattern(round * 16 + i);
        }
        return made;
    }
};

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

// A ping-pong run entirely from completion callbacks: the client sends a message, the server echoes it from
// its receive callback, the client sends the next one from its own receive callback. Each side sends before
// it posts its next receive, so the data often arrives before the WSARecv (which then finishes at once in
// skip mode).
template <class Socket>
struct callback_ping_pong
{
    Socket* client = nullptr;
    Socket* server = nullptr;
    std::uint32_t rounds = 0;

    message to_server; // the client's message in flight
    message at_server; // what the server has received of it
    std::size_t server_filled = 0;
    message echo;             // the server's echo in flight
    std::uint32_t echoed = 0; // touched by the server's callbacks only (one at a time)
    message at_client;        // what the client has received of it
    std::size_t client_filled = 0;
    std::uint32_t round = 0; // touched by the client's callbacks only (one at a time)

    std::atomic<std::uint64_t> posted{0};
    std::atomic<std::uint64_t> calls{0};
    std::atomic<std::uint64_t> at_once{0};
    std::atomic<bool> failed{false};

    win32_test::waiter waiter;
    bool done = false; // guarded by waiter.mutex()

    void finish(bool ok)
    {
        if (!ok)
        {
            failed = true;
        }
        waiter.update([&] { done = true; });
    }

    void counted_callback()
    {
        ++calls;
        at_once += posting_depth > 0 ? 1 : 0;
    }

    bool send(Socket& socket, message& what)
    {
        ASYNC_SOCKET_BUFFER out{what.bytes.data(), static_cast<std::uint32_t>(what.bytes.size())};
        ++posted;
        return post([&] { return socket.send_async(&out, 1, &on_sent, this); }) == status::ok;
    }

    bool receive(Socket& socket, message& into, std::size_t filled, ON_ASYNC_SOCKET_RECEIVE_COMPLETE callback)
    {
        ASYNC_SOCKET_BUFFER in{into.bytes.data() + filled, static_cast<std::uint32_t>(into.bytes.size() - filled)};
        ++posted;
        return post([&] { return socket.receive_async(&in, 1, callback, this); }) == status::ok;
    }

    static void on_sent(void* context, ASYNC_SOCKET_SEND_RESULT result)
    {
        callback_scope scope;
        auto* self = static_cast<callback_ping_pong*>(context);
        self->counted_callback();
        if (result != ASYNC_SOCKET_SEND_OK)
        {
            self->finish(false);
        }
    }

    static void on_server_received(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes)
    {
        callback_scope scope;
        auto* self = static_cast<callback_ping_pong*>(context);
        self->counted_callback();
        if (result != ASYNC_SOCKET_RECEIVE_OK || bytes == 0)
        {
            self->finish(false);
            return;
        }
        self->server_filled += bytes;
        if (self->server_filled == self->at_server.bytes.size())
        {
            self->server_filled = 0;
            self->echo = self->at_server;
            if (!self->send(*self->server, self->echo))
            {
                self->finish(false);
                return;
            }
            if (++self->echoed == self->rounds)
            {
                return; // the last message: nothing more comes, and the test may close the socket from now on
            }
        }
        if (!self->receive(*self->server, self->at_server, self->server_filled, &on_server_received))
        {
            self->finish(false);
        }
    }

    static void on_client_received(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes)
    {
        callback_scope scope;
        auto* self = static_cast<callback_ping_pong*>(context);
        self->counted_callback();
        if (result != ASYNC_SOCKET_RECEIVE_OK || bytes == 0)
        {
            self->finish(false);
            return;
        }
        self->client_filled += bytes;
        if (self->client_filled < self->at_client.bytes.size())
        {
            if (!self->receive(*self->client, self->at_client, self->client_filled, &on_client_received))
            {
                self->finish(false);
            }
            return;
        }
        self->client_filled = 0;
        if (self->at_client.bytes != message::for_round(self->round).bytes)
        {
            self->finish(false);
            return;
        }
        if (++self->round == self->rounds)
        {
            self->finish(true);
            return;
        }
        self->to_server = message::for_round(self->round);
        if (!self->send(*self->client, self->to_server) ||
            !self->receive(*self->client, self->at_client, 0, &on_client_received))
        {
            self->finish(false);
        }
    }

    // Posts the first receives and the first message; the rest runs from callbacks.
    bool start()
    {
        to_server = message::for_round(0);
        return receive(*server, at_server, 0, &on_server_received) &&
               receive(*client, at_client, 0, &on_client_received) && send(*client, to_server);
    }
};

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

    SUBCASE("one buffer, client to server")
    {
        const std::array<std::size_t, 1> sizes{1000};
        exchange(*sockets.client, *sockets.server, std::span<const std::size_t>(sizes),
                 std::span<const std::size_t>(sizes));
    }
    SUBCASE("one buffer, server to client")
    {
        const std::array<std::size_t, 1> sizes{1000};
        exchange(*sockets.server, *sockets.client, std::span<const std::size_t>(sizes),
                 std::span<const std::size_t>(sizes));
    }
    SUBCASE("several buffers, client to server")
    {
        const std::array<std::size_t, 4> send_sizes{1, 700, 4096, 3};
        const std::array<std::size_t, 4> receive_sizes{5, 1000, 3000, 795};
        exchange(*sockets.client, *sockets.server, std::span<const std::size_t>(send_sizes),
                 std::span<const std::size_t>(receive_sizes));
    }
    SUBCASE("several buffers, server to client")
    {
        const std::array<std::size_t, 3> send_sizes{4096, 1, 4096};
        const std::array<std::size_t, 5> receive_sizes{1, 1, 4000, 4000, 191};
        exchange(*sockets.server, *sockets.client, std::span<const std::size_t>(send_sizes),
                 std::span<const std::size_t>(receive_sizes));
    }
    SUBCASE("4 MiB in one send, received 64 KiB at a time")
    {
        const std::array<std::size_t, 1> send_sizes{4u * 1024 * 1024};
        std::vector<std::size_t> receive_sizes(64, 64u * 1024);
        exchange(*sockets.client, *sockets.server, std::span<const std::size_t>(send_sizes),
                 std::span<const std::size_t>(receive_sizes));
    }
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

    struct chain_type
    {
        Socket* socket = nullptr;
        std::uint8_t* into = nullptr;
        std::size_t filled = 0;
        std::atomic<std::uint64_t> posted{0};
        std::atomic<std::uint64_t> calls{0};
        std::atomic<std::uint64_t> at_once{0};
        win32_test::waiter waiter;
        bool done = false;   // guarded by waiter.mutex()
        bool failed = false; // guarded by waiter.mutex()

        bool post_next()
        {
            ASYNC_SOCKET_BUFFER in{into + filled,
                                   static_cast<std::uint32_t>(std::min<std::size_t>(16, total - filled))};
            ++posted;
            return post([&] { return socket->receive_async(&in, 1, &on_received, this); }) == status::ok;
        }

        void finish(bool failure)
        {
            waiter.update(
                [&]
                {
                    failed = failed || failure;
                    done = true;
                });
        }

        static void on_received(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes)
        {
            callback_scope scope;
            auto* self = static_cast<chain_type*>(context);
            ++self->calls;
            self->at_once += posting_depth > 0 ? 1 : 0;
            if (result != ASYNC_SOCKET_RECEIVE_OK || bytes == 0)
            {
                self->finish(true);
                return;
            }
            self->filled += bytes;
            if (self->filled == total)
            {
                self->finish(false);
            }
            else if (!self->post_next())
            {
                self->finish(true);
            }
        }
    } chain; // outlives the sockets below, whose close completes whatever is still posted

    loopback_sockets<Socket> sockets;
    chain.socket = sockets.server.get();
    chain.into = received.data();
    deepest_callback = 0;

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
    game.client = sockets.client.get();
    game.server = sockets.server.get();
    game.rounds = 2000;
    deepest_callback = 0;

    const auto started = std::chrono::steady_clock::now();
    REQUIRE(game.start());
    REQUIRE(game.waiter.wait_for([&] { return game.done; }, deadline_seconds));
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - started;

    CHECK(sockets.client->close() == status::ok);
    CHECK(sockets.server->close() == status::ok);
    CHECK_FALSE(game.failed);
    CHECK(game.round == game.rounds);
    CHECK(game.calls == game.posted);
    CHECK(deepest_callback <= 2);
    if constexpr (!skip_mode<Socket>)
    {
        CHECK(game.at_once == 0);
    }
    MESSAGE(doctest::toString<Socket>() << ": " << game.rounds << " round trips from callbacks at about "
                                        << static_cast<long>(game.rounds / elapsed.count()) << "/s; "
                                        << game.at_once.load() << "/" << game.posted.load()
                                        << " IOs finished at once; deepest nesting " << deepest_callback.load());
}

TEST_CASE_TEMPLATE("close with a receive pending completes it once with BECAUSE_CLOSE, and the socket reopens", Socket,
                   ALL_CONFIGURATIONS)
{
    loopback_sockets<Socket> sockets;

    for (int cycle = 0; cycle < 3; ++cycle)
    {
        CAPTURE(cycle);
        std::vector<std::uint8_t> buffer(64);
        ASYNC_SOCKET_BUFFER in{buffer.data(), static_cast<std::uint32_t>(buffer.size())};
        io_tally pending;
        ++pending.posted;
        REQUIRE(sockets.server->receive_async(&in, 1, &io_tally::on_receive, &pending) == status::ok);

        CHECK(sockets.server->close() == status::ok);
        // close returned: the callback already ran, once.
        {
            std::lock_guard lock(pending.waiter.mutex());
            CHECK(pending.calls == 1);
            CHECK(pending.last_result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);
            CHECK(pending.last_bytes == 0);
        }
        CHECK(sockets.server->state() == async_socket::socket_state::closed);

        REQUIRE(sockets.server->open_async(&ignore_open, nullptr) == status::ok);
        const std::array<std::size_t, 2> sizes{100, 28};
        exchange(*sockets.client, *sockets.server, std::span<const std::size_t>(sizes),
                 std::span<const std::size_t>(sizes));
        exchange(*sockets.server, *sockets.client, std::span<const std::size_t>(sizes),
                 std::span<const std::size_t>(sizes));
        CHECK(pending.seen_calls() == 1);
    }
}

TEST_CASE_TEMPLATE("destroy while open completes a pending receive once with BECAUSE_CLOSE", Socket, ALL_CONFIGURATIONS)
{
    io_tally pending; // outlives the sockets
    loopback_sockets<Socket> sockets;
    const std::array<std::size_t, 1> sizes{512};
    exchange(*sockets.client, *sockets.server, std::span<const std::size_t>(sizes),
             std::span<const std::size_t>(sizes));

    std::vector<std::uint8_t> buffer(64);
    ASYNC_SOCKET_BUFFER in{buffer.data(), static_cast<std::uint32_t>(buffer.size())};
    ++pending.posted;
    REQUIRE(sockets.server->receive_async(&in, 1, &io_tally::on_receive, &pending) == status::ok);

    sockets.server.reset();
    {
        std::lock_guard lock(pending.waiter.mutex());
        CHECK(pending.calls == 1);
        CHECK(pending.last_result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);
    }

    // The client, open and idle, is destroyed too.
    sockets.client.reset();
    CHECK(pending.seen_calls() == 1);
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
