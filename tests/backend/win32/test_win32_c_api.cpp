// The C API of the contract, used as seed code would use it, on real loopback TCP sockets under Win32
// (Wine on Linux): NULL arguments, create/open/close/destroy, byte-exact transfers with one and several
// buffers, close and destroy with IO pending, reopen, peer shutdown, and the execution engine.
#include <async_socket/c_api.h>

#include "support/buffers.hpp"
#include "support/engine_ref.hpp"
#include "support/loopback.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace
{

using win32_test::engine_ref;
// Wine is slow and CI machines are loaded: every wait gets this long before it counts as a failure.
constexpr DWORD deadline_ms = 30000;

// A manual-reset Win32 event.
class win_event
{
public:
    win_event() noexcept : handle_(CreateEventW(nullptr, TRUE, FALSE, nullptr)) {}
    ~win_event()
    {
        if (handle_ != nullptr)
        {
            CloseHandle(handle_);
        }
    }
    win_event(const win_event&) = delete;
    win_event& operator=(const win_event&) = delete;

    [[nodiscard]] bool valid() const noexcept
    {
        return handle_ != nullptr;
    }
    void set() noexcept
    {
        SetEvent(handle_);
    }
    // True when the event is set within `ms` milliseconds.
    [[nodiscard]] bool wait(DWORD ms = deadline_ms) const noexcept
    {
        return WaitForSingleObject(handle_, ms) == WAIT_OBJECT_0;
    }

private:
    HANDLE handle_;
};

// Records the calls of a completion callback that gets a context and a result (ON_ASYNC_SOCKET_OPEN_COMPLETE,
// ON_ASYNC_SOCKET_SEND_COMPLETE) and sets `done` on each.
template <class Result, Result Invalid>
struct result_probe
{
    std::atomic<int> calls{0};
    std::atomic<Result> result{Invalid};
    win_event done;

    static void on_complete(void* context, Result completion_result)
    {
        auto* self = static_cast<result_probe*>(context);
        self->result = completion_result;
        ++self->calls;
        self->done.set();
    }
};

using open_probe = result_probe<ASYNC_SOCKET_OPEN_RESULT, ASYNC_SOCKET_OPEN_RESULT_INVALID>;
using send_probe = result_probe<ASYNC_SOCKET_SEND_RESULT, ASYNC_SOCKET_SEND_RESULT_INVALID>;

// Records the calls of an ON_ASYNC_SOCKET_RECEIVE_COMPLETE and sets `done` on each.
struct receive_probe
{
    std::atomic<int> calls{0};
    std::atomic<ASYNC_SOCKET_RECEIVE_RESULT> result{ASYNC_SOCKET_RECEIVE_RESULT_INVALID};
    std::atomic<std::uint32_t> bytes{UINT32_MAX};
    win_event done;

    static void on_receive_complete(void* context, ASYNC_SOCKET_RECEIVE_RESULT receive_result, uint32_t bytes_received)
    {
        auto* self = static_cast<receive_probe*>(context);
        self->result = receive_result;
        self->bytes = bytes_received;
        ++self->calls;
        self->done.set();
    }
};

// Probes for callbacks given a NULL context: they can only reach static state.
struct null_context_probes
{
    static inline std::atomic<int> open_calls{0};
    static inline std::atomic<int> send_calls{0};
    static inline std::atomic<int> receive_calls{0};
    static inline std::atomic<bool> context_was_null{true};
    static inline std::atomic<ASYNC_SOCKET_OPEN_RESULT> open_result{ASYNC_SOCKET_OPEN_RESULT_INVALID};
    static inline std::atomic<ASYNC_SOCKET_SEND_RESULT> send_result{ASYNC_SOCKET_SEND_RESULT_INVALID};
    static inline std::atomic<ASYNC_SOCKET_RECEIVE_RESULT> receive_result{ASYNC_SOCKET_RECEIVE_RESULT_INVALID};
    static inline std::atomic<std::uint32_t> bytes{0};
    static inline win_event* send_done = nullptr;
    static inline win_event* receive_done = nullptr;

    static void on_open_complete(void* context, ASYNC_SOCKET_OPEN_RESULT result)
    {
        context_was_null = context_was_null && context == nullptr;
        open_result = result;
        ++open_calls;
    }
    static void on_send_complete(void* context, ASYNC_SOCKET_SEND_RESULT result)
    {
        context_was_null = context_was_null && context == nullptr;
        send_result = result;
        ++send_calls;
        send_done->set();
    }
    static void on_receive_complete(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, uint32_t bytes_received)
    {
        context_was_null = context_was_null && context == nullptr;
        receive_result = result;
        bytes = bytes_received;
        ++receive_calls;
        receive_done->set();
    }
};

// Destroys the async socket it holds (async_socket_destroy, which accepts NULL) when it goes out of scope.
struct socket_ref
{
    ASYNC_SOCKET_HANDLE handle;

    explicit socket_ref(ASYNC_SOCKET_HANDLE socket) noexcept : handle(socket) {}
    ~socket_ref()
    {
        async_socket_destroy(handle);
    }
    socket_ref(const socket_ref&) = delete;
    socket_ref& operator=(const socket_ref&) = delete;

    // Destroys now (the destructor then has nothing left to do).
    void destroy() noexcept
    {
        async_socket_destroy(handle);
        handle = nullptr;
    }
};

// Bytes that differ from one position and one seed to the next, so a shifted or reordered byte shows.
std::vector<unsigned char> pattern(std::size_t size, std::uint32_t seed)
{
    std::vector<unsigned char> bytes(size);
    std::uint32_t state = seed * 2654435761u + 1u;
    for (auto& byte : bytes)
    {
        state = state * 1664525u + 1013904223u;
        byte = static_cast<unsigned char>(state >> 24);
    }
    return bytes;
}

// Where two byte vectors first differ ("equal" when they do not), for failure messages.
std::string first_difference(const std::vector<unsigned char>& expected, const std::vector<unsigned char>& actual)
{
    if (expected.size() != actual.size())
    {
        return "sizes differ: expected " + std::to_string(expected.size()) + ", got " + std::to_string(actual.size());
    }
    for (std::size_t i = 0; i < expected.size(); ++i)
    {
        if (expected[i] != actual[i])
        {
            return "first difference at byte " + std::to_string(i) + ": expected " + std::to_string(expected[i]) +
                   ", got " + std::to_string(actual[i]);
        }
    }
    return "equal";
}

// `bytes` cut into consecutive pieces of the given lengths (the last piece takes what is left), as the
// ASYNC_SOCKET_BUFFER array of a scatter/gather IO.
std::vector<ASYNC_SOCKET_BUFFER> split(std::vector<unsigned char>& bytes, const std::vector<std::uint32_t>& lengths)
{
    std::vector<ASYNC_SOCKET_BUFFER> buffers;
    std::size_t offset = 0;
    for (std::size_t i = 0; i < lengths.size() && offset < bytes.size(); ++i)
    {
        const std::size_t left = bytes.size() - offset;
        const std::size_t length = i + 1 == lengths.size() ? left : std::min<std::size_t>(lengths[i], left);
        buffers.push_back(ASYNC_SOCKET_BUFFER{bytes.data() + offset, static_cast<std::uint32_t>(length)});
        offset += length;
    }
    return buffers;
}

// Receives exactly the total length of `buffers` (a TCP receive may return fewer bytes than asked),
// posting receives for what is still missing until every buffer is full. Returns false (after reporting
// the failure) when a receive is refused, fails, ends the stream early or misses its deadline.
bool receive_exactly(ASYNC_SOCKET_HANDLE socket, const std::vector<ASYNC_SOCKET_BUFFER>& buffers)
{
    const std::size_t total = win32_test::total_length(buffers);
    std::size_t received = 0;
    while (received < total)
    {
        // The buffers from byte `received` on: the first partly filled one is cut at the fill point.
        std::vector<ASYNC_SOCKET_BUFFER> rest = win32_test::regions_from(buffers, received);

        receive_probe probe;
        if (async_socket_receive_async(socket, rest.data(), static_cast<std::uint32_t>(rest.size()),
                                       &receive_probe::on_receive_complete, &probe) != 0)
        {
            FAIL_CHECK("async_socket_receive_async refused a valid receive after " << received << " of " << total
                                                                                   << " bytes");
            return false;
        }
        if (!probe.done.wait())
        {
            FAIL_CHECK("a receive did not complete within the deadline after " << received << " of " << total
                                                                               << " bytes");
            return false;
        }
        if (probe.result != ASYNC_SOCKET_RECEIVE_OK || probe.bytes == 0)
        {
            FAIL_CHECK("a receive completed with result " << static_cast<int>(probe.result.load()) << " and "
                                                          << probe.bytes.load() << " bytes after " << received << " of "
                                                          << total << " bytes");
            return false;
        }
        received += probe.bytes;
    }
    CHECK(received == total);
    return received == total;
}

// Sends `payload` from `from` as the buffers cut by `send_lengths` while `to` receives it into buffers cut
// by `receive_lengths`, and checks that every byte arrived, in order.
void transfer(ASYNC_SOCKET_HANDLE from, ASYNC_SOCKET_HANDLE to, std::vector<unsigned char> payload,
              const std::vector<std::uint32_t>& send_lengths, const std::vector<std::uint32_t>& receive_lengths)
{
    std::vector<unsigned char> sent = payload;
    std::vector<unsigned char> arrived(payload.size(), 0);
    std::vector<ASYNC_SOCKET_BUFFER> send_buffers = split(sent, send_lengths);
    std::vector<ASYNC_SOCKET_BUFFER> receive_buffers = split(arrived, receive_lengths);

    // The send is posted first: a large one completes only once the receiver has drained it.
    send_probe send_done;
    REQUIRE(async_socket_send_async(from, send_buffers.data(), static_cast<std::uint32_t>(send_buffers.size()),
                                    &send_probe::on_complete, &send_done) == 0);
    // The array may be reused as soon as send_async returns; only the bytes must stay.
    send_buffers.assign(send_buffers.size(), ASYNC_SOCKET_BUFFER{nullptr, 0});

    const bool all_received = receive_exactly(to, receive_buffers);
    REQUIRE(send_done.done.wait());
    // Tests_SRS_ASYNC_SOCKET_WIN32_01_066: [ If io_result is NO_ERROR, the on_send_complete callback passed to
    // async_socket_send_async shall be called with on_send_complete_context as argument and ASYNC_SOCKET_SEND_OK. ]
    CHECK(send_done.result == ASYNC_SOCKET_SEND_OK);
    CHECK(send_done.calls == 1);
    REQUIRE(all_received);
    CHECK_MESSAGE(arrived == payload, first_difference(payload, arrived));
}

// Opens `socket` and checks that the open completed once with ASYNC_SOCKET_OPEN_OK.
void open_ok(ASYNC_SOCKET_HANDLE socket)
{
    open_probe opened;
    // Tests_SRS_ASYNC_SOCKET_WIN32_01_014: [ On success, async_socket_open_async shall return 0. ]
    REQUIRE(async_socket_open_async(socket, &open_probe::on_complete, &opened) == 0);
    // Tests_SRS_ASYNC_SOCKET_WIN32_01_017: [ On success async_socket_open_async shall call
    // on_open_complete_context with ASYNC_SOCKET_OPEN_OK. ]
    REQUIRE(opened.done.wait());
    CHECK(opened.result == ASYNC_SOCKET_OPEN_OK);
    CHECK(opened.calls == 1);
}

// Sends `payload` from `socket` as one buffer and checks that the send completed with ASYNC_SOCKET_SEND_OK.
void send_ok(ASYNC_SOCKET_HANDLE socket, std::vector<unsigned char>& payload)
{
    ASYNC_SOCKET_BUFFER buffer{payload.data(), static_cast<std::uint32_t>(payload.size())};
    send_probe sent;
    REQUIRE(async_socket_send_async(socket, &buffer, 1, &send_probe::on_complete, &sent) == 0);
    REQUIRE(sent.done.wait());
    CHECK(sent.result == ASYNC_SOCKET_SEND_OK);
}

// Runs f on another thread and reports whether it returned within the deadline. If it did not, the thread
// is left running (the test fails; the watchdog ends the process if the thread holds it up).
template <class F>
bool returns_within_deadline(F f)
{
    auto done = std::make_shared<win_event>();
    std::thread worker(
        [f = std::move(f), done]() mutable
        {
            f();
            done->set();
        });
    if (done->wait())
    {
        worker.join();
        return true;
    }
    worker.detach();
    return false;
}

// Receives `size` bytes with blocking Winsock recv calls (each with the deadline as SO_RCVTIMEO); fewer
// when the stream ends or fails first.
std::vector<unsigned char> plain_receive(SOCKET socket, std::size_t size)
{
    const DWORD timeout = deadline_ms;
    setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, reinterpret_cast<const char*>(&timeout), sizeof(timeout));
    std::vector<unsigned char> bytes(size, 0);
    std::size_t got = 0;
    while (got < size)
    {
        const int n = recv(socket, reinterpret_cast<char*>(bytes.data() + got), static_cast<int>(size - got), 0);
        if (n <= 0)
        {
            FAIL_CHECK("recv returned " << n << " (WSAGetLastError " << WSAGetLastError() << ") after " << got << " of "
                                        << size << " bytes");
            bytes.resize(got);
            break;
        }
        got += static_cast<std::size_t>(n);
    }
    return bytes;
}

// Winsock, a connected pair of overlapped loopback sockets and an engine with default parameters, each
// required to be there.
struct loopback_engine
{
    win32_test::wsa_session wsa;
    win32_test::socket_pair pair = win32_test::make_loopback_pair();
    engine_ref engine;

    loopback_engine()
    {
        REQUIRE(wsa.ok());
        REQUIRE(pair.valid());
        REQUIRE(engine.engine != nullptr);
    }
};

// A loopback_engine and an async socket over each end of its pair (not opened).
struct connected_sockets : loopback_engine
{
    socket_ref client{async_socket_create(engine.engine, win32_test::as_handle(pair.client))};
    socket_ref server{async_socket_create(engine.engine, win32_test::as_handle(pair.server))};

    connected_sockets()
    {
        // Tests_SRS_ASYNC_SOCKET_WIN32_01_001: [ async_socket_create shall allocate a new async socket and on
        // success shall return a non-NULL handle. ]
        REQUIRE(client.handle != nullptr);
        REQUIRE(server.handle != nullptr);
    }

    void open_both()
    {
        open_ok(client.handle);
        open_ok(server.handle);
    }
};

// One side of the C API's IO, for the tests that check send_async and receive_async alike: its probe, its
// callback type and the probe's callback, the function that posts it (Post), the socket of connected_sockets
// that posts it (Tested) and the seed of the payload moved after it.
template <class Probe, class Callback, Callback OnComplete, auto Post, socket_ref connected_sockets::*Tested,
          std::uint32_t Seed>
struct io_direction
{
    using probe = Probe;
    using callback = Callback;
    static constexpr callback on_complete = OnComplete;
    static constexpr auto post = Post;
    static constexpr std::uint32_t seed = Seed;

    static ASYNC_SOCKET_HANDLE socket(connected_sockets& sockets) noexcept
    {
        return (sockets.*Tested).handle;
    }
};

// The client of connected_sockets sends; the server receives.
using send_direction = io_direction<send_probe, ON_ASYNC_SOCKET_SEND_COMPLETE, &send_probe::on_complete,
                                    &async_socket_send_async, &connected_sockets::client, 110>;
using receive_direction =
    io_direction<receive_probe, ON_ASYNC_SOCKET_RECEIVE_COMPLETE, &receive_probe::on_receive_complete,
                 &async_socket_receive_async, &connected_sockets::server, 120>;

} // namespace

TYPE_TO_STRING_AS("send_async", send_direction);
TYPE_TO_STRING_AS("receive_async", receive_direction);

TEST_CASE("every C API function given a NULL async_socket fails or returns without a callback")
{
    unsigned char byte = 'x';
    ASYNC_SOCKET_BUFFER buffer{&byte, 1};
    open_probe opened;
    send_probe sent;
    receive_probe received;

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_007: [ If async_socket is NULL, async_socket_open_async shall fail and return a
    // non-zero value. ]
    CHECK(async_socket_open_async(nullptr, &open_probe::on_complete, &opened) != 0);

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_018: [ If async_socket is NULL, async_socket_close shall return. ]
    async_socket_close(nullptr);

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_024: [ If async_socket is NULL, async_socket_send_async shall fail and return a
    // non-zero value. ]
    CHECK(async_socket_send_async(nullptr, &buffer, 1, &send_probe::on_complete, &sent) != 0);

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_073: [ If async_socket is NULL, async_socket_receive_async shall fail and return
    // a non-zero value. ]
    CHECK(async_socket_receive_async(nullptr, &buffer, 1, &receive_probe::on_receive_complete, &received) != 0);

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_004: [ If async_socket is NULL, async_socket_destroy shall return. ]
    async_socket_destroy(nullptr);

    CHECK(opened.calls == 0);
    CHECK(sent.calls == 0);
    CHECK(received.calls == 0);
}

TEST_CASE("async_socket_create returns NULL for a NULL execution engine or a NULL socket handle")
{
    loopback_engine loopback;
    win32_test::socket_pair& pair = loopback.pair;
    engine_ref& engine = loopback.engine;

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_002: [ If execution_engine is NULL, async_socket_create shall fail and return
    // NULL. ]
    CHECK(async_socket_create(nullptr, win32_test::as_handle(pair.client)) == nullptr);

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_034: [ If socket_handle is NULL, async_socket_create shall fail and return
    // NULL. ]
    CHECK(async_socket_create(engine.engine, nullptr) == nullptr);

    CHECK(async_socket_create(nullptr, nullptr) == nullptr);

    // Both arguments good: a socket, which can be destroyed without ever being opened.
    socket_ref socket{async_socket_create(engine.engine, win32_test::as_handle(pair.client))};
    CHECK(socket.handle != nullptr);
}

TEST_CASE("an execution engine made with NULL or explicit parameters gives a threadpool and counts references")
{
    SUBCASE("NULL parameters take the defaults")
    {
        EXECUTION_ENGINE_HANDLE engine = execution_engine_create(nullptr);
        REQUIRE(engine != nullptr);
        CHECK(execution_engine_win32_get_threadpool(engine) != nullptr);
        execution_engine_dec_ref(engine);
    }

    SUBCASE("explicit minimum and maximum thread counts")
    {
        const EXECUTION_ENGINE_PARAMETERS parameters{1, 2};
        EXECUTION_ENGINE_HANDLE engine = execution_engine_create(&parameters);
        REQUIRE(engine != nullptr);
        CHECK(execution_engine_win32_get_threadpool(engine) != nullptr);
        execution_engine_dec_ref(engine);
    }

    SUBCASE("a maximum below the minimum is refused")
    {
        const EXECUTION_ENGINE_PARAMETERS parameters{4, 2};
        CHECK(execution_engine_create(&parameters) == nullptr);
    }

    SUBCASE("inc_ref keeps the engine alive across one dec_ref; the last dec_ref frees it")
    {
        EXECUTION_ENGINE_HANDLE engine = execution_engine_create(nullptr);
        REQUIRE(engine != nullptr);
        PTP_POOL pool = execution_engine_win32_get_threadpool(engine);
        CHECK(pool != nullptr);
        execution_engine_inc_ref(engine);
        execution_engine_dec_ref(engine);
        // Still referenced once: the same pool is still there.
        CHECK(execution_engine_win32_get_threadpool(engine) == pool);
        execution_engine_dec_ref(engine);
    }

    SUBCASE("NULL is ignored by inc_ref and dec_ref and has no threadpool")
    {
        execution_engine_inc_ref(nullptr);
        execution_engine_dec_ref(nullptr);
        CHECK(execution_engine_win32_get_threadpool(nullptr) == nullptr);
    }
}

TEST_CASE("sockets on an engine with explicit thread counts move data; a socket keeps its engine alive")
{
    win32_test::wsa_session wsa;
    REQUIRE(wsa.ok());
    win32_test::socket_pair pair = win32_test::make_loopback_pair();
    REQUIRE(pair.valid());

    const EXECUTION_ENGINE_PARAMETERS parameters{1, 1};
    EXECUTION_ENGINE_HANDLE engine = execution_engine_create(&parameters);
    REQUIRE(engine != nullptr);
    socket_ref client{async_socket_create(engine, win32_test::as_handle(pair.client))};
    socket_ref server{async_socket_create(engine, win32_test::as_handle(pair.server))};
    // The caller's reference goes now; the sockets hold their own (execution_engine.hpp).
    execution_engine_dec_ref(engine);
    REQUIRE(client.handle != nullptr);
    REQUIRE(server.handle != nullptr);

    open_ok(client.handle);
    open_ok(server.handle);
    // One pool thread runs every completion of both sockets.
    transfer(client.handle, server.handle, pattern(10000, 1), {10000}, {10000});
    transfer(server.handle, client.handle, pattern(10000, 2), {4000, 6000}, {3000, 7000});
}

TEST_CASE("open calls on_open_complete with ASYNC_SOCKET_OPEN_OK once, and a second open fails")
{
    connected_sockets sockets;

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_008: [ If on_open_complete is NULL, async_socket_open_async shall fail and
    // return a non-zero value. ]
    CHECK(async_socket_open_async(sockets.client.handle, nullptr, nullptr) != 0);

    open_probe opened;
    REQUIRE(async_socket_open_async(sockets.client.handle, &open_probe::on_complete, &opened) == 0);
    REQUIRE(opened.done.wait());
    CHECK(opened.result == ASYNC_SOCKET_OPEN_OK);

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_015: [ If async_socket is already OPEN or OPENING, async_socket_open_async
    // shall fail and return a non-zero value. ]
    open_probe again;
    CHECK(async_socket_open_async(sockets.client.handle, &open_probe::on_complete, &again) != 0);
    CHECK(again.calls == 0);
    CHECK(opened.calls == 1);

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_009: [ on_open_complete_context shall be allowed to be NULL. ]
    null_context_probes::open_calls = 0;
    null_context_probes::context_was_null = true;
    REQUIRE(async_socket_open_async(sockets.server.handle, &null_context_probes::on_open_complete, nullptr) == 0);
    CHECK(null_context_probes::open_calls == 1);
    CHECK(null_context_probes::open_result == ASYNC_SOCKET_OPEN_OK);
    CHECK(null_context_probes::context_was_null);

    // Both are open: data moves.
    transfer(sockets.client.handle, sockets.server.handle, pattern(100, 3), {100}, {100});
}

TEST_CASE("one buffer sent from each side arrives byte-exact at the other")
{
    connected_sockets sockets;
    sockets.open_both();

    SUBCASE("one byte")
    {
        transfer(sockets.client.handle, sockets.server.handle, pattern(1, 10), {1}, {1});
        transfer(sockets.server.handle, sockets.client.handle, pattern(1, 11), {1}, {1});
    }
    SUBCASE("4 KiB")
    {
        transfer(sockets.client.handle, sockets.server.handle, pattern(4096, 12), {4096}, {4096});
        transfer(sockets.server.handle, sockets.client.handle, pattern(4096, 13), {4096}, {4096});
    }
    SUBCASE("1 MiB, more than the socket buffers hold")
    {
        transfer(sockets.client.handle, sockets.server.handle, pattern(1 << 20, 14), {1 << 20}, {1 << 20});
        transfer(sockets.server.handle, sockets.client.handle, pattern(1 << 20, 15), {1 << 20}, {1 << 20});
    }
}

TEST_CASE("several buffers each way arrive byte-exact and in order")
{
    connected_sockets sockets;
    sockets.open_both();

    SUBCASE("buffers of uneven lengths, cut differently on each side")
    {
        transfer(sockets.client.handle, sockets.server.handle, pattern(3101, 20), {1, 100, 3000}, {2000, 1101});
        transfer(sockets.server.handle, sockets.client.handle, pattern(5000, 21), {1000, 1, 1999, 2000},
                 {3, 997, 1000, 2999, 1});
    }
    SUBCASE("many one-byte buffers")
    {
        const std::vector<std::uint32_t> ones(64, 1);
        transfer(sockets.client.handle, sockets.server.handle, pattern(64, 22), ones, {64});
        transfer(sockets.server.handle, sockets.client.handle, pattern(64, 23), {64}, ones);
    }
    SUBCASE("a 1 MiB payload in 8 buffers, received into 3 buffers while it is still being sent")
    {
        const std::vector<std::uint32_t> eighths(8, (1 << 20) / 8);
        transfer(sockets.client.handle, sockets.server.handle, pattern(1 << 20, 24), eighths, {100000, 500000, 448576});
        transfer(sockets.server.handle, sockets.client.handle, pattern(1 << 20, 25), {448576, 600000}, eighths);
    }
    SUBCASE("messages back and forth, each way in turn")
    {
        for (std::uint32_t i = 0; i < 20; ++i)
        {
            transfer(sockets.client.handle, sockets.server.handle, pattern(1000 + i, 100 + i), {500, 500 + i},
                     {1000 + i});
            transfer(sockets.server.handle, sockets.client.handle, pattern(1000 + i, 200 + i), {1000 + i},
                     {300, 700 + i});
        }
    }
}

TEST_CASE("a receive posted before the peer sends completes with the data")
{
    connected_sockets sockets;
    sockets.open_both();

    std::vector<unsigned char> arrived(256, 0);
    ASYNC_SOCKET_BUFFER receive_buffers[2] = {{arrived.data(), 56}, {arrived.data() + 56, 200}};
    receive_probe received;
    REQUIRE(async_socket_receive_async(sockets.server.handle, receive_buffers, 2, &receive_probe::on_receive_complete,
                                       &received) == 0);
    // Nothing was sent, so nothing can have arrived.
    CHECK(received.calls == 0);

    std::vector<unsigned char> payload = pattern(256, 30);
    send_ok(sockets.client.handle, payload);

    REQUIRE(received.done.wait());
    // Tests_SRS_ASYNC_SOCKET_WIN32_01_069: [ If io_result is NO_ERROR, the on_receive_complete callback passed to
    // async_socket_receive_async shall be called with on_receive_complete_context as context, ASYNC_SOCKET_RECEIVE_OK
    // as result and number_of_bytes_transferred as bytes_received. ]
    REQUIRE(received.result == ASYNC_SOCKET_RECEIVE_OK);
    const std::uint32_t first = received.bytes;
    REQUIRE(first > 0);
    REQUIRE(first <= 256);
    if (first < 256)
    {
        // TCP may deliver the bytes in more than one piece.
        std::vector<ASYNC_SOCKET_BUFFER> rest = {{arrived.data() + first, 256 - first}};
        REQUIRE(receive_exactly(sockets.server.handle, rest));
    }
    CHECK_MESSAGE(arrived == payload, first_difference(payload, arrived));
    CHECK(received.calls == 1);
}

TEST_CASE("close with a receive pending returns and completes the receive once with ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE")
{
    connected_sockets sockets;
    sockets.open_both();

    std::vector<unsigned char> bytes(128, 0);
    ASYNC_SOCKET_BUFFER buffer{bytes.data(), 128};
    receive_probe received;
    REQUIRE(async_socket_receive_async(sockets.server.handle, &buffer, 1, &receive_probe::on_receive_complete,
                                       &received) == 0);
    CHECK(received.calls == 0);

    ASYNC_SOCKET_HANDLE server = sockets.server.handle;
    REQUIRE_MESSAGE(returns_within_deadline([server] { async_socket_close(server); }),
                    "async_socket_close did not return while a receive was pending");

    // close waited for the callback: it has run by now, and exactly once.
    CHECK(received.calls == 1);
    CHECK(received.result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);
    CHECK(received.bytes == 0);

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_022: [ If async_socket is not OPEN, async_socket_close shall return. ]
    async_socket_close(server);
    CHECK(received.calls == 1);
}

TEST_CASE("close with a large send pending completes the send exactly once")
{
    connected_sockets sockets;
    sockets.open_both();

    // Far more than the socket buffers hold, and nobody reads it: the send stays pending.
    std::vector<unsigned char> payload = pattern(32u << 20, 40);
    ASYNC_SOCKET_BUFFER buffer{payload.data(), static_cast<std::uint32_t>(payload.size())};
    send_probe sent;
    REQUIRE(async_socket_send_async(sockets.client.handle, &buffer, 1, &send_probe::on_complete, &sent) == 0);

    ASYNC_SOCKET_HANDLE client = sockets.client.handle;
    REQUIRE_MESSAGE(returns_within_deadline([client] { async_socket_close(client); }),
                    "async_socket_close did not return while a send was pending");
    CHECK(sent.calls == 1);
    CHECK(sent.result == ASYNC_SOCKET_SEND_BECAUSE_CLOSE);
}

TEST_CASE("a socket closed and opened again on the same SOCKET sends and receives again")
{
    connected_sockets sockets;
    sockets.open_both();
    transfer(sockets.client.handle, sockets.server.handle, pattern(2000, 50), {2000}, {2000});

    for (std::uint32_t round = 0; round < 3; ++round)
    {
        CAPTURE(round);
        // A receive pending at close completes with BECAUSE_CLOSE...
        std::vector<unsigned char> bytes(64, 0);
        ASYNC_SOCKET_BUFFER buffer{bytes.data(), 64};
        receive_probe pending;
        REQUIRE(async_socket_receive_async(sockets.server.handle, &buffer, 1, &receive_probe::on_receive_complete,
                                           &pending) == 0);
        async_socket_close(sockets.server.handle);
        CHECK(pending.calls == 1);
        CHECK(pending.result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);

        // ... the closed socket refuses IO ...
        receive_probe refused;
        CHECK(async_socket_receive_async(sockets.server.handle, &buffer, 1, &receive_probe::on_receive_complete,
                                         &refused) != 0);

        // Tests_SRS_ASYNC_SOCKET_WIN32_01_021: [ Then async_socket_close shall close the async socket, leaving it in
        // a state where an async_socket_open_async can be performed. ]
        open_ok(sockets.server.handle);

        // ... and after the reopen, data moves both ways again (nothing was lost: no byte was in flight).
        transfer(sockets.client.handle, sockets.server.handle, pattern(3000, 60 + round), {1000, 2000}, {3000});
        transfer(sockets.server.handle, sockets.client.handle, pattern(3000, 70 + round), {3000}, {1500, 1500});
        CHECK(refused.calls == 0);
    }

    // Both ends closed and reopened.
    async_socket_close(sockets.client.handle);
    async_socket_close(sockets.server.handle);
    open_ok(sockets.client.handle);
    open_ok(sockets.server.handle);
    transfer(sockets.client.handle, sockets.server.handle, pattern(5000, 80), {5000}, {5000});
    transfer(sockets.server.handle, sockets.client.handle, pattern(5000, 81), {5000}, {5000});
}

TEST_CASE("destroy while open closes implicitly and completes a pending receive with BECAUSE_CLOSE")
{
    connected_sockets sockets;
    sockets.open_both();
    transfer(sockets.client.handle, sockets.server.handle, pattern(500, 90), {500}, {500});

    std::vector<unsigned char> bytes(64, 0);
    ASYNC_SOCKET_BUFFER buffer{bytes.data(), 64};
    receive_probe pending;
    REQUIRE(async_socket_receive_async(sockets.server.handle, &buffer, 1, &receive_probe::on_receive_complete,
                                       &pending) == 0);

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_006: [ async_socket_destroy shall perform an implicit close if async_socket is
    // OPEN. ]
    // Tests_SRS_ASYNC_SOCKET_WIN32_01_005: [ Otherwise, async_socket_destroy shall free all resources associated with
    // async_socket. ]
    socket_ref* server = &sockets.server;
    REQUIRE_MESSAGE(returns_within_deadline([server] { server->destroy(); }),
                    "async_socket_destroy did not return while a receive was pending");
    CHECK(pending.calls == 1);
    CHECK(pending.result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);

    // The SOCKET is still the caller's and still connected: a plain recv on it gets what the peer sends.
    std::vector<unsigned char> payload = pattern(10, 91);
    send_ok(sockets.client.handle, payload);
    CHECK(plain_receive(sockets.pair.server, 10) == payload);

    // The client can be destroyed while open with nothing pending too.
    sockets.client.destroy();
}

TEST_CASE("an orderly shutdown by the peer completes a receive with ASYNC_SOCKET_RECEIVE_OK and 0 bytes")
{
    loopback_engine loopback;
    win32_test::socket_pair& pair = loopback.pair;
    engine_ref& engine = loopback.engine;
    // Only the server end is an async socket; the client end is used with plain Winsock calls.
    socket_ref server{async_socket_create(engine.engine, win32_test::as_handle(pair.server))};
    REQUIRE(server.handle != nullptr);
    open_ok(server.handle);

    SUBCASE("shutdown while a receive is pending")
    {
        std::vector<unsigned char> bytes(64, 0);
        ASYNC_SOCKET_BUFFER buffer{bytes.data(), 64};
        receive_probe received;
        REQUIRE(async_socket_receive_async(server.handle, &buffer, 1, &receive_probe::on_receive_complete, &received) ==
                0);
        REQUIRE(shutdown(pair.client, SD_SEND) == 0);
        REQUIRE(received.done.wait());
        CHECK(received.result == ASYNC_SOCKET_RECEIVE_OK);
        CHECK(received.bytes == 0);
        CHECK(received.calls == 1);
    }

    SUBCASE("data, then shutdown: the data arrives, then a receive completes with 0 bytes")
    {
        std::vector<unsigned char> payload = pattern(300, 100);
        REQUIRE(send(pair.client, reinterpret_cast<const char*>(payload.data()), 300, 0) == 300);
        REQUIRE(shutdown(pair.client, SD_SEND) == 0);

        std::vector<unsigned char> arrived(300, 0);
        REQUIRE(receive_exactly(server.handle, {{arrived.data(), 100}, {arrived.data() + 100, 200}}));
        CHECK_MESSAGE(arrived == payload, first_difference(payload, arrived));

        for (int i = 0; i < 2; ++i)
        {
            // End of stream is reported again to every later receive.
            std::vector<unsigned char> bytes(64, 0);
            ASYNC_SOCKET_BUFFER buffer{bytes.data(), 64};
            receive_probe received;
            REQUIRE(async_socket_receive_async(server.handle, &buffer, 1, &receive_probe::on_receive_complete,
                                               &received) == 0);
            REQUIRE(received.done.wait());
            CHECK(received.result == ASYNC_SOCKET_RECEIVE_OK);
            CHECK(received.bytes == 0);
        }
    }

    SUBCASE("the peer shut down sending only: this side can still send to it")
    {
        REQUIRE(shutdown(pair.client, SD_SEND) == 0);
        std::vector<unsigned char> payload = pattern(200, 101);
        send_ok(server.handle, payload);

        const std::vector<unsigned char> arrived = plain_receive(pair.client, 200);
        CHECK_MESSAGE(arrived == payload, first_difference(payload, arrived));
    }
}

TEST_CASE_TEMPLATE("send_async and receive_async reject every invalid argument with a non-zero value and no callback",
                   Direction, send_direction, receive_direction)
{
    connected_sockets sockets;
    sockets.open_both();
    ASYNC_SOCKET_HANDLE socket = Direction::socket(sockets);

    unsigned char bytes[16] = {};
    typename Direction::probe probe;
    const typename Direction::callback callback = Direction::on_complete;

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_025: [ If buffers is NULL, async_socket_send_async shall fail and return a
    // non-zero value. ]
    // Tests_SRS_ASYNC_SOCKET_WIN32_01_074: [ If buffers is NULL, async_socket_receive_async shall fail and return a
    // non-zero value. ]
    CHECK(Direction::post(socket, nullptr, 1, callback, &probe) != 0);

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_085: [ If buffer_count is 0, async_socket_send_async shall fail and return a
    // non-zero value. ]
    // Tests_SRS_ASYNC_SOCKET_WIN32_01_086: [ If buffer_count is 0, async_socket_receive_async shall fail and return a
    // non-zero value. ]
    ASYNC_SOCKET_BUFFER good{bytes, sizeof(bytes)};
    CHECK(Direction::post(socket, &good, 0, callback, &probe) != 0);

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_089: [ If any of the buffers in payload has buffer set to NULL,
    // async_socket_send_async shall fail and return a non-zero value. ]
    // Tests_SRS_ASYNC_SOCKET_WIN32_01_091: [ If any of the buffers in payload has buffer set to NULL,
    // async_socket_receive_async shall fail and return a non-zero value. ]
    ASYNC_SOCKET_BUFFER null_first[2] = {{nullptr, 4}, {bytes, 4}};
    ASYNC_SOCKET_BUFFER null_last[3] = {{bytes, 4}, {bytes + 4, 4}, {nullptr, 4}};
    CHECK(Direction::post(socket, null_first, 2, callback, &probe) != 0);
    CHECK(Direction::post(socket, null_last, 3, callback, &probe) != 0);

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_090: [ If any of the buffers in payload has length set to 0,
    // async_socket_send_async shall fail and return a non-zero value. ]
    // Tests_SRS_ASYNC_SOCKET_WIN32_01_092: [ If any of the buffers in payload has length set to 0,
    // async_socket_receive_async shall fail and return a non-zero value. ]
    ASYNC_SOCKET_BUFFER empty_first[2] = {{bytes, 0}, {bytes, 4}};
    ASYNC_SOCKET_BUFFER empty_last[2] = {{bytes, 4}, {bytes + 4, 0}};
    CHECK(Direction::post(socket, empty_first, 2, callback, &probe) != 0);
    CHECK(Direction::post(socket, empty_last, 2, callback, &probe) != 0);

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_026: [ If on_send_complete is NULL, async_socket_send_async shall fail and
    // return a non-zero value. ]
    // Tests_SRS_ASYNC_SOCKET_WIN32_01_075: [ If on_receive_complete is NULL, async_socket_receive_async shall fail
    // and return a non-zero value. ]
    CHECK(Direction::post(socket, &good, 1, nullptr, &probe) != 0);

    // None of them moved a byte or left a receive waiting: the next payload goes whole from a valid send to a valid
    // receive.
    transfer(sockets.client.handle, sockets.server.handle, pattern(16, Direction::seed), {16}, {16});

    // close waits for every callback, so any stray one would have been counted by now.
    async_socket_close(socket);
    CHECK(probe.calls == 0);
}

TEST_CASE("send_async and receive_async fail on a socket that is not open, with no callback")
{
    connected_sockets sockets;
    unsigned char bytes[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    ASYNC_SOCKET_BUFFER buffer{bytes, sizeof(bytes)};
    send_probe sent;
    receive_probe received;

    // Tests_SRS_ASYNC_SOCKET_WIN32_01_097: [ If async_socket is not OPEN, async_socket_send_async shall fail and
    // return a non-zero value. ]
    // Tests_SRS_ASYNC_SOCKET_WIN32_01_098: [ If async_socket is not OPEN, async_socket_receive_async shall fail and
    // return a non-zero value. ]
    SUBCASE("never opened")
    {
        CHECK(async_socket_send_async(sockets.client.handle, &buffer, 1, &send_probe::on_complete, &sent) != 0);
        CHECK(async_socket_receive_async(sockets.server.handle, &buffer, 1, &receive_probe::on_receive_complete,
                                         &received) != 0);
        // Closing a socket that was never opened returns (SRS 01_022) and changes nothing.
        async_socket_close(sockets.client.handle);
        CHECK(async_socket_send_async(sockets.client.handle, &buffer, 1, &send_probe::on_complete, &sent) != 0);
    }
    SUBCASE("opened, then closed")
    {
        sockets.open_both();
        async_socket_close(sockets.client.handle);
        async_socket_close(sockets.server.handle);
        CHECK(async_socket_send_async(sockets.client.handle, &buffer, 1, &send_probe::on_complete, &sent) != 0);
        CHECK(async_socket_receive_async(sockets.server.handle, &buffer, 1, &receive_probe::on_receive_complete,
                                         &received) != 0);
    }

    CHECK(sent.calls == 0);
    CHECK(received.calls == 0);
}

TEST_CASE("a NULL callback context reaches the send and receive callbacks as NULL")
{
    connected_sockets sockets;
    sockets.open_both();

    win_event send_done;
    win_event receive_done;
    null_context_probes::send_done = &send_done;
    null_context_probes::receive_done = &receive_done;
    null_context_probes::send_calls = 0;
    null_context_probes::receive_calls = 0;
    null_context_probes::context_was_null = true;

    std::vector<unsigned char> arrived(1, 0);
    ASYNC_SOCKET_BUFFER receive_buffer{arrived.data(), 1};
    // Tests_SRS_ASYNC_SOCKET_WIN32_01_076: [ on_receive_complete_context shall be allowed to be NULL. ]
    REQUIRE(async_socket_receive_async(sockets.server.handle, &receive_buffer, 1,
                                       &null_context_probes::on_receive_complete, nullptr) == 0);

    unsigned char byte = 0x5a;
    ASYNC_SOCKET_BUFFER send_buffer{&byte, 1};
    // Tests_SRS_ASYNC_SOCKET_WIN32_01_027: [ on_send_complete_context shall be allowed to be NULL. ]
    REQUIRE(async_socket_send_async(sockets.client.handle, &send_buffer, 1, &null_context_probes::on_send_complete,
                                    nullptr) == 0);

    REQUIRE(send_done.wait());
    REQUIRE(receive_done.wait());
    CHECK(null_context_probes::send_result == ASYNC_SOCKET_SEND_OK);
    CHECK(null_context_probes::receive_result == ASYNC_SOCKET_RECEIVE_OK);
    CHECK(null_context_probes::bytes == 1);
    CHECK(arrived[0] == 0x5a);
    CHECK(null_context_probes::context_was_null);

    async_socket_close(sockets.client.handle);
    async_socket_close(sockets.server.handle);
    CHECK(null_context_probes::send_calls == 1);
    CHECK(null_context_probes::receive_calls == 1);
    null_context_probes::send_done = nullptr;
    null_context_probes::receive_done = nullptr;
}
