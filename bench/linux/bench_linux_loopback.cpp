// Native Linux loopback benchmarks, one run side by side (scripts/bench-linux.sh runs them with repetitions and
// prints the medians and ratios; docs/benchmarks.md has the figures). Rows: the library on io_uring and on epoll
// (linux_async_socket: the recycling pool), a hand-written raw epoll loop, a hand-written raw liburing loop, Asio
// (Debian's libasio-dev, its default epoll reactor) and libuv (Debian's libuv1-dev 1.44, epoll; built only when
// found: ASYNC_SOCKET_BENCH_HAVE_LIBUV).
//
// Scenarios. Every descriptor comes from make_loopback_fd_pair (TCP over 127.0.0.1, TCP_NODELAY, the kernel's
// default socket buffers with autotuning: no row sets SO_SNDBUF/SO_RCVBUF), so the sockets are the same for all.
//   pingpong64: one connection, 64 bytes there and back per item, 1,000 round trips per batch (items/s = round
//     trips/s). Both ends belong to the row under test and run on ONE thread: the library on an engine with one
//     worker, Asio with io_context::run on the benchmark thread, libuv with uv_run on it, raw loops on it.
//   stream64k: one connection, one direction, 16 MiB per batch (bytes/s). The same protocol in every row: the
//     sender keeps ONE send of 64 KiB outstanding and starts the next when it completes; the receiver keeps ONE
//     receive of 64 KiB outstanding and starts the next when it completes; sender and receiver run on the SAME
//     one thread (as above). What differs is only how each row schedules that work: Asio runs a completed
//     write's handler from its queue, so between two 64 KiB writes its reactor looks for the read (the receive
//     follows each send while the bytes are still in the cache); libuv runs write callbacks on the next loop turn
//     (like Asio); the library on io_uring puts every IO a callback starts on the worker's ring and runs its
//     callback on a later turn (the same order), and hands an IO the benchmark thread's try finished to the
//     worker to complete, so both ends run on the worker. The library on epoll completes a send that went out at
//     once inline, on the thread that started it: the benchmark thread's first send of a batch then runs the
//     whole chain of sends there, ahead of the receiver on the worker (before the io_uring path deferred them,
//     strace showed 256 sendmsg per batch and not one EAGAIN: the whole 16 MiB went into the kernel before the
//     receiver ran, so the bytes go through memory rather than the cache). The raw epoll loop sends one chunk and
//     then drains the receiver of what is in flight (the cache-friendly order: a good raw loop, not the "send
//     until EAGAIN" of the first run, which moved less than half of what Asio did); the raw liburing loop has one send
//     and one receive in flight on one ring and reaps both per submit_and_wait.
//   echo64x64: 64 connections echoing at once. The client side is the same for every row: a raw epoll loop on
//     the benchmark thread over the 64 client descriptors, 64-byte messages, one outstanding per connection, 100
//     per connection per batch (6,400 messages; items/s = messages/s). The system under test is the echo server
//     on the 64 other ends, its IO on 2 threads: the library's linux_engine with thread_count 2 (io_uring: one
//     ring per worker, sockets given out in turn; epoll: an epoll instance per worker, likewise); Asio: one
//     io_context run by 2 threads; raw epoll: 2 threads, each its own epoll over 32 connections; raw liburing: 2
//     threads, each its own ring over 32 connections; libuv: its loop is single-threaded, so 2 loops on 2 threads,
//     32 connections each. Each server connection: receive, send back what came, receive again when the send
//     is done. The machine has 2 cores: client and servers share them alike in every row.
//
// Heap allocations per IO: this executable (bench/common/alloc_counter.hpp) replaces malloc, calloc, realloc, free,
// memalign, aligned_alloc and posix_memalign (forwarding to glibc's __libc_* functions) and counts every allocation on
// every thread; operator new goes through malloc, so it is counted once. Each row runs untimed warm-up batches until 3
// in a row allocate nothing (at most 40; counters warmup_batches, warmup_allocs; the set-up's allocations are not
// counted), then counts the allocations of the timed batches: allocs_per_io = allocations / IOs of the system
// under test (pingpong64: 4 per round trip, 2 sends and 2 receives; stream64k: 2 per 64 KiB, one send and at
// least one receive; echo64x64: 2 per message, the server's receive and send: the raw client driver does not
// allocate). With ASYNC_SOCKET_BENCH_ALLOC_TRACE=N the first N allocations inside timed loops print a backtrace
// to stderr (names: addr2line -f -C -e bench_linux_loopback <offset>). Asio's rows allocate 2 blocks per batch:
// the two operations each batch starts outside io_context::run get their handler memory from operator new
// (asio::detail::thread_info_base::allocate has no thread info there); inside run() they are recycled.
//
// Every wait is bounded: a watchdog thread ends the process (exit code 3) when one batch, or the set-up or
// tear-down of a row, takes more than 30 s.
#include <async_socket/async_socket.hpp>
#include <async_socket/testing/linux_loopback.hpp>
#include "../common/alloc_counter.hpp"
#include "../common/bench_main.hpp"

#include <asio.hpp>
#include <benchmark/benchmark.h>
#include <liburing.h>
#if defined(ASYNC_SOCKET_BENCH_HAVE_LIBUV)
#include <uv.h>
#endif

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <execinfo.h> // backtrace: loads the unwinder before the counted loops
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

namespace
{

using async_socket::linux_async_socket;
using async_socket::linux_engine;
using async_socket::linux_io_choice;
using async_socket::testing::fd_pair;
using async_socket::testing::make_loopback_fd_pair;

constexpr int round_trips_per_batch = 1000;
constexpr std::size_t message = 64;
constexpr std::size_t chunk = 65536;
constexpr int chunks_per_batch = 256; // 16 MiB per batch
constexpr int connections = 64;
constexpr int server_threads = 2;
constexpr int messages_per_connection = 100; // per batch: 6,400 messages

// ------------------------------------------------------------------------------------------------
// The watchdog: every batch stamps the time; a batch older than 30 s ends the process.
std::atomic<std::int64_t> batch_started_ms{0}; // 0: no benchmark running

std::int64_t now_ms() noexcept
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

void heartbeat() noexcept
{
    batch_started_ms.store(now_ms(), std::memory_order_relaxed);
}

void watchdog() noexcept
{
    for (;;)
    {
        std::this_thread::sleep_for(std::chrono::seconds(1));
        const std::int64_t started = batch_started_ms.load(std::memory_order_relaxed);
        if (started != 0 && now_ms() - started > 30000)
        {
            static const char text[] = "bench_linux_loopback: a batch took more than 30 s; giving up\n";
            (void)!write(2, text, sizeof text - 1);
            _exit(3);
        }
    }
}

// Covers a whole benchmark function, set-up and tear-down included (declared before what it makes).
struct watch
{
    watch() noexcept
    {
        heartbeat();
    }
    ~watch()
    {
        batch_started_ms.store(0, std::memory_order_relaxed);
    }
    watch(const watch&) = delete;
    watch& operator=(const watch&) = delete;
};

// The common frame of every row: a warm-up batch, the timed batches, the counters.
// items_per_batch: round trips, messages or bytes; ios_per_batch: IOs of the system under test.
template <class Batch>
void run_rows(benchmark::State& state, Batch&& batch, std::int64_t items_per_batch, bool bytes, double ios_per_batch)
{
    // Warm-up, untimed: until 3 batches in a row allocate nothing (the pools hold what the row circulates), at
    // most 40 batches.
    const std::uint64_t warm_up_start = alloc_counter::allocations.load();
    int quiet = 0;
    int warm_up_batches = 0;
    while (quiet < 3 && warm_up_batches < 40)
    {
        heartbeat();
        const std::uint64_t at = alloc_counter::allocations.load();
        if (!batch())
        {
            state.SkipWithError("a warm-up batch failed");
            return;
        }
        ++warm_up_batches;
        quiet = alloc_counter::allocations.load() == at ? quiet + 1 : 0;
    }
    const std::uint64_t warm_up_allocations = alloc_counter::allocations.load() - warm_up_start;
    static const int trace = []
    {
        const char* setting = std::getenv("ASYNC_SOCKET_BENCH_ALLOC_TRACE");
        return setting == nullptr ? 0 : std::atoi(setting);
    }();
    alloc_counter::traces_left.store(trace);
    const std::uint64_t before = alloc_counter::allocations.load();
    bool failed = false;
    for (auto _ : state)
    {
        heartbeat();
        if (!batch())
        {
            failed = true;
            break;
        }
    }
    const std::uint64_t allocations = alloc_counter::allocations.load() - before;
    alloc_counter::traces_left.store(0);
    if (failed)
    {
        state.SkipWithError("a batch failed");
        return;
    }
    const auto iterations = static_cast<std::int64_t>(state.iterations());
    if (bytes)
    {
        state.SetBytesProcessed(iterations * items_per_batch);
    }
    else
    {
        state.SetItemsProcessed(iterations * items_per_batch);
    }
    state.counters["warmup_batches"] = warm_up_batches;
    state.counters["warmup_allocs"] = static_cast<double>(warm_up_allocations);
    state.counters["allocs_per_io"] =
        static_cast<double>(allocations) / (static_cast<double>(iterations) * ios_per_batch);
}

void run_pingpong(benchmark::State& state, auto&& batch)
{
    run_rows(state, batch, round_trips_per_batch, false, 4.0 * round_trips_per_batch);
}
void run_stream(benchmark::State& state, auto&& batch)
{
    run_rows(state, batch, static_cast<std::int64_t>(chunk) * chunks_per_batch, true, 2.0 * chunks_per_batch);
}
void run_echo(benchmark::State& state, auto&& batch)
{
    constexpr std::int64_t messages = std::int64_t{connections} * messages_per_connection;
    run_rows(state, batch, messages, false, 2.0 * messages);
}

// A flag the benchmark thread waits on and a completion thread sets.
struct done_flag
{
    std::atomic<int> value{0};
    void set() noexcept
    {
        value.store(1, std::memory_order_release);
        value.notify_one();
    }
    void wait_and_clear() noexcept
    {
        value.wait(0, std::memory_order_acquire);
        value.store(0, std::memory_order_relaxed);
    }
};

void set_nonblocking(int fd) noexcept
{
    (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

// A ring as a good raw loop makes it: one issuer, completion work deferred to the wait
// (IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, Linux 6.1), without them on older kernels. Made on the
// thread that submits to it.
bool init_ring(io_uring& ring, unsigned entries) noexcept
{
    io_uring_params params{};
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    if (io_uring_queue_init_params(entries, &ring, &params) == 0)
    {
        return true;
    }
    params = io_uring_params{};
    return io_uring_queue_init_params(entries, &ring, &params) == 0;
}

io_uring_sqe* next_sqe(io_uring& ring) noexcept
{
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    if (sqe == nullptr)
    {
        (void)io_uring_submit(&ring);
        sqe = io_uring_get_sqe(&ring);
    }
    return sqe;
}

// ------------------------------------------------------------------------------------------------
// The client side of echo64x64, the same for every row: 64 connections, a raw epoll loop on the benchmark thread.
struct echo_clients
{
    std::vector<fd_pair> pairs;
    int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    struct state
    {
        std::uint8_t in[message];
        std::size_t got;
        int left;
    };
    std::vector<state> states = std::vector<state>(connections);
    std::uint8_t out[message] = {};

    echo_clients()
    {
        for (int i = 0; i < connections; ++i)
        {
            pairs.push_back(make_loopback_fd_pair());
            set_nonblocking(pairs.back().client);
            epoll_event event{};
            event.events = EPOLLIN;
            event.data.u32 = static_cast<std::uint32_t>(i);
            (void)epoll_ctl(epoll_fd, EPOLL_CTL_ADD, pairs.back().client, &event);
        }
    }
    ~echo_clients()
    {
        (void)close(epoll_fd);
    }
    [[nodiscard]] bool valid() const noexcept
    {
        for (const fd_pair& pair : pairs)
        {
            if (!pair.valid())
            {
                return false;
            }
        }
        return epoll_fd >= 0;
    }

    bool batch() noexcept
    {
        int remaining = connections * messages_per_connection;
        for (int i = 0; i < connections; ++i)
        {
            states[i].got = 0;
            states[i].left = messages_per_connection;
            if (send(pairs[i].client, out, message, MSG_NOSIGNAL) != static_cast<ssize_t>(message))
            {
                return false;
            }
        }
        while (remaining > 0)
        {
            epoll_event events[connections];
            const int count = epoll_wait(epoll_fd, events, connections, 10000);
            if (count <= 0)
            {
                if (count < 0 && errno == EINTR)
                {
                    continue;
                }
                return false; // 10 s without an echo
            }
            for (int e = 0; e < count; ++e)
            {
                const std::uint32_t i = events[e].data.u32;
                state& s = states[i];
                const ssize_t n = recv(pairs[i].client, s.in + s.got, message - s.got, 0);
                if (n <= 0)
                {
                    if (n < 0 && errno == EAGAIN)
                    {
                        continue;
                    }
                    return false;
                }
                s.got += static_cast<std::size_t>(n);
                if (s.got < message)
                {
                    continue;
                }
                s.got = 0;
                --remaining;
                if (--s.left > 0 && send(pairs[i].client, out, message, MSG_NOSIGNAL) != static_cast<ssize_t>(message))
                {
                    return false;
                }
            }
        }
        return true;
    }
};

// ------------------------------------------------------------------------------------------------
// The library.
void noop_open(void*, ASYNC_SOCKET_OPEN_RESULT) noexcept {}

// One end of a library pair, its pool holding 16 one-buffer contexts and 2 thread caches ahead
// (recycling_pool_alloc::reserve, reserve_thread_caches). Why: on
// epoll the benchmark thread completes a send that went out at once inline and frees its context itself, except in
// the rare batch (a few in a thousand) whose chain of sends the worker takes over; then the worker frees what the
// benchmark thread allocated, and its thread cache keeps the first 8 such contexts while the benchmark thread,
// finding the shared list empty, takes new ones from the heap. That is 9 heap allocations in a pair's life (seen:
// 7 in 1,000 timed batches, 9 in 4,529: bounded, not per IO), which the warm-up rarely sees. With the reserve
// the benchmark thread takes them from the pool instead; and the worker's thread cache of the sender's pool, made at
// the first such batch, is one made ahead.
linux_async_socket::handle reserved_end(linux_engine* engine, int fd)
{
    async_socket::recycling_pool_alloc pool;
    (void)pool.reserve(linux_async_socket::io_context_size(1), 16);
    (void)pool.reserve_thread_caches(2); // the worker's and the benchmark thread's
    return linux_async_socket::create(engine, async_socket_handle_from_fd(fd), {}, pool);
}

struct library_pair
{
    linux_engine::handle engine;
    fd_pair fds = make_loopback_fd_pair();
    linux_async_socket::handle client;
    linux_async_socket::handle server;

    explicit library_pair(linux_io_choice io) : engine(linux_engine::create({.thread_count = 1, .io = io}))
    {
        if (engine == nullptr)
        {
            return;
        }
        client = reserved_end(engine.get(), fds.client);
        server = reserved_end(engine.get(), fds.server);
        if (client != nullptr && server != nullptr)
        {
            (void)client->open_async(&noop_open, nullptr);
            (void)server->open_async(&noop_open, nullptr);
        }
    }
    [[nodiscard]] bool valid() const noexcept
    {
        return engine != nullptr && client != nullptr && server != nullptr;
    }
};

struct library_pingpong
{
    library_pair sockets;
    std::uint8_t client_out[message] = {};
    std::uint8_t client_in[message] = {};
    std::uint8_t server_buffer[message] = {};
    ASYNC_SOCKET_BUFFER client_send_buffer{client_out, message};
    ASYNC_SOCKET_BUFFER client_receive_buffer{client_in, message};
    ASYNC_SOCKET_BUFFER server_receive_buffer{server_buffer, message};
    ASYNC_SOCKET_BUFFER server_send_buffer{server_buffer, 0};
    std::size_t client_got = 0;
    int left = 0;
    bool failed = false;
    done_flag done;

    explicit library_pingpong(linux_io_choice io) : sockets(io)
    {
        if (sockets.valid())
        {
            (void)sockets.server->receive_async(&server_receive_buffer, 1, &on_server_receive, this);
        }
    }

    static void on_server_receive(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes) noexcept
    {
        auto* self = static_cast<library_pingpong*>(context);
        if (result != ASYNC_SOCKET_RECEIVE_OK || bytes == 0)
        {
            return;
        }
        self->server_send_buffer.length = bytes;
        (void)self->sockets.server->send_async(&self->server_send_buffer, 1, &on_sent, self);
        (void)self->sockets.server->receive_async(&self->server_receive_buffer, 1, &on_server_receive, self);
    }
    static void on_sent(void*, ASYNC_SOCKET_SEND_RESULT) noexcept {}

    void start_round_trip() noexcept
    {
        client_got = 0;
        client_receive_buffer = {client_in, message};
        (void)sockets.client->receive_async(&client_receive_buffer, 1, &on_client_receive, this);
        (void)sockets.client->send_async(&client_send_buffer, 1, &on_sent, this);
    }

    static void on_client_receive(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes) noexcept
    {
        auto* self = static_cast<library_pingpong*>(context);
        if (result != ASYNC_SOCKET_RECEIVE_OK || bytes == 0)
        {
            self->failed = true;
            self->done.set();
            return;
        }
        self->client_got += bytes;
        if (self->client_got < message)
        {
            self->client_receive_buffer = {self->client_in + self->client_got,
                                           static_cast<std::uint32_t>(message - self->client_got)};
            (void)self->sockets.client->receive_async(&self->client_receive_buffer, 1, &on_client_receive, self);
            return;
        }
        if (--self->left == 0)
        {
            self->done.set();
            return;
        }
        self->start_round_trip();
    }

    bool batch() noexcept
    {
        left = round_trips_per_batch;
        start_round_trip();
        done.wait_and_clear();
        return !failed;
    }
};

struct library_stream
{
    library_pair sockets;
    std::vector<std::uint8_t> out = std::vector<std::uint8_t>(chunk, 0x5A);
    std::vector<std::uint8_t> in = std::vector<std::uint8_t>(chunk);
    ASYNC_SOCKET_BUFFER send_buffer{out.data(), static_cast<std::uint32_t>(chunk)};
    ASYNC_SOCKET_BUFFER receive_buffer{in.data(), static_cast<std::uint32_t>(chunk)};
    int sends_left = 0;
    std::size_t bytes_left = 0;
    bool failed = false;
    done_flag done;

    explicit library_stream(linux_io_choice io) : sockets(io) {}

    static void on_sent(void* context, ASYNC_SOCKET_SEND_RESULT result) noexcept
    {
        auto* self = static_cast<library_stream*>(context);
        if (result == ASYNC_SOCKET_SEND_OK && --self->sends_left > 0)
        {
            (void)self->sockets.client->send_async(&self->send_buffer, 1, &on_sent, self);
        }
    }
    static void on_received(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes) noexcept
    {
        auto* self = static_cast<library_stream*>(context);
        if (result != ASYNC_SOCKET_RECEIVE_OK || bytes == 0 || bytes >= self->bytes_left)
        {
            self->failed = result != ASYNC_SOCKET_RECEIVE_OK || bytes == 0;
            self->done.set();
            return;
        }
        self->bytes_left -= bytes;
        (void)self->sockets.server->receive_async(&self->receive_buffer, 1, &on_received, self);
    }

    bool batch() noexcept
    {
        sends_left = chunks_per_batch;
        bytes_left = chunk * chunks_per_batch;
        (void)sockets.server->receive_async(&receive_buffer, 1, &on_received, this);
        (void)sockets.client->send_async(&send_buffer, 1, &on_sent, this);
        done.wait_and_clear();
        return !failed;
    }
};

// The echo server of echo64x64 on the library: one engine with 2 workers, 64 sockets.
struct library_echo
{
    struct connection
    {
        linux_async_socket::handle socket;
        std::uint8_t buffer[message];
        ASYNC_SOCKET_BUFFER receive_buffer{buffer, message};
        ASYNC_SOCKET_BUFFER send_buffer{buffer, 0};
    };
    echo_clients clients;
    linux_engine::handle engine;
    std::vector<std::unique_ptr<connection>> servers;

    explicit library_echo(linux_io_choice io) : engine(linux_engine::create({.thread_count = server_threads, .io = io}))
    {
        if (engine == nullptr || !clients.valid())
        {
            return;
        }
        for (fd_pair& pair : clients.pairs)
        {
            auto made = std::make_unique<connection>();
            made->socket = linux_async_socket::create(engine.get(), async_socket_handle_from_fd(pair.server));
            if (made->socket == nullptr)
            {
                servers.clear();
                return;
            }
            (void)made->socket->open_async(&noop_open, nullptr);
            servers.push_back(std::move(made));
        }
        for (auto& server : servers)
        {
            (void)server->socket->receive_async(&server->receive_buffer, 1, &on_received, server.get());
        }
    }
    ~library_echo()
    {
        servers.clear(); // the sockets close before the descriptors (clients) and the engine go
    }
    [[nodiscard]] bool valid() const noexcept
    {
        return servers.size() == static_cast<std::size_t>(connections);
    }

    static void on_received(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes) noexcept
    {
        auto* self = static_cast<connection*>(context);
        if (result != ASYNC_SOCKET_RECEIVE_OK || bytes == 0)
        {
            return;
        }
        self->send_buffer.length = bytes;
        (void)self->socket->send_async(&self->send_buffer, 1, &on_sent, self);
    }
    static void on_sent(void* context, ASYNC_SOCKET_SEND_RESULT result) noexcept
    {
        auto* self = static_cast<connection*>(context);
        if (result == ASYNC_SOCKET_SEND_OK)
        {
            (void)self->socket->receive_async(&self->receive_buffer, 1, &on_received, self);
        }
    }
};

// ------------------------------------------------------------------------------------------------
// A hand-written epoll loop on one thread: non-blocking descriptors, level-triggered, read/write on readiness.
struct raw_epoll
{
    fd_pair fds = make_loopback_fd_pair();
    int epoll_fd = epoll_create1(EPOLL_CLOEXEC);

    raw_epoll()
    {
        for (int fd : {fds.client, fds.server})
        {
            set_nonblocking(fd);
            epoll_event event{};
            event.events = EPOLLIN;
            event.data.fd = fd;
            (void)epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event);
        }
    }
    ~raw_epoll()
    {
        (void)close(epoll_fd);
    }

    bool pingpong_batch() noexcept
    {
        std::uint8_t out[message] = {};
        std::uint8_t buffer[message];
        for (int i = 0; i < round_trips_per_batch; ++i)
        {
            (void)send(fds.client, out, message, MSG_NOSIGNAL);
            std::size_t client_got = 0;
            while (client_got < message)
            {
                epoll_event events[2];
                const int count = epoll_wait(epoll_fd, events, 2, 10000);
                if (count == 0)
                {
                    return false;
                }
                for (int e = 0; e < count; ++e)
                {
                    const ssize_t n = recv(events[e].data.fd, buffer, sizeof buffer, 0);
                    if (n <= 0)
                    {
                        continue;
                    }
                    if (events[e].data.fd == fds.server)
                    {
                        (void)send(fds.server, buffer, static_cast<std::size_t>(n), MSG_NOSIGNAL);
                    }
                    else
                    {
                        client_got += static_cast<std::size_t>(n);
                    }
                }
            }
        }
        return true;
    }

    // One chunk (or what is left of it) sent, then the receiver drained of what is in flight (loopback delivers
    // during the send, so the bytes are there and still in the cache); epoll_wait only when neither side can
    // move (the sender's buffer is full and nothing has arrived).
    bool stream_batch(std::vector<std::uint8_t>& out, std::vector<std::uint8_t>& in) noexcept
    {
        std::size_t to_send = chunk * chunks_per_batch;
        std::size_t to_receive = to_send;
        std::size_t offset = 0; // within the current chunk
        epoll_event writable{};
        writable.data.fd = fds.client;
        bool watching_output = false;
        while (to_receive > 0)
        {
            bool moved = false;
            if (to_send > 0)
            {
                const ssize_t n = send(fds.client, out.data() + offset, chunk - offset, MSG_NOSIGNAL);
                if (n > 0)
                {
                    to_send -= static_cast<std::size_t>(n);
                    offset = (offset + static_cast<std::size_t>(n)) % chunk;
                    moved = true;
                }
                else if (n < 0 && errno != EAGAIN)
                {
                    return false;
                }
            }
            while (to_receive > to_send) // bytes in flight: no recv that is known to find nothing
            {
                const ssize_t n = recv(fds.server, in.data(), in.size(), 0);
                if (n <= 0)
                {
                    if (n == 0 || errno != EAGAIN)
                    {
                        return false;
                    }
                    break;
                }
                to_receive -= static_cast<std::size_t>(n);
                moved = true;
            }
            if (moved)
            {
                continue;
            }
            const bool want_output = to_send > 0;
            if (want_output != watching_output)
            {
                writable.events = want_output ? EPOLLIN | EPOLLOUT : EPOLLIN;
                (void)epoll_ctl(epoll_fd, EPOLL_CTL_MOD, fds.client, &writable);
                watching_output = want_output;
            }
            epoll_event events[2];
            if (epoll_wait(epoll_fd, events, 2, 10000) == 0)
            {
                return false;
            }
        }
        if (watching_output)
        {
            writable.events = EPOLLIN;
            (void)epoll_ctl(epoll_fd, EPOLL_CTL_MOD, fds.client, &writable);
        }
        return true;
    }
};

// Starts serve(t) on each of the server_threads server threads of a raw echo server.
void start_servers(std::vector<std::thread>& threads, auto serve)
{
    for (int t = 0; t < server_threads; ++t)
    {
        threads.emplace_back([serve, t] { serve(t); });
    }
}

// Stops a raw echo server: wakes its threads through stop_fd, joins them and closes stop_fd.
void stop_servers(std::vector<std::thread>& threads, int stop_fd) noexcept
{
    const std::uint64_t one = 1;
    (void)!write(stop_fd, &one, sizeof one);
    for (std::thread& thread : threads)
    {
        thread.join();
    }
    (void)close(stop_fd);
}

// The echo server of echo64x64, raw epoll: 2 threads, each with its own epoll over 32 connections.
struct raw_epoll_echo
{
    echo_clients clients;
    int stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    std::vector<std::thread> threads;

    raw_epoll_echo()
    {
        if (clients.valid() && stop_fd >= 0)
        {
            start_servers(threads, [this](int t) { serve(t); });
        }
    }
    ~raw_epoll_echo()
    {
        stop_servers(threads, stop_fd);
    }
    [[nodiscard]] bool valid() const noexcept
    {
        return threads.size() == static_cast<std::size_t>(server_threads);
    }

    void serve(int index) noexcept
    {
        const int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        epoll_event event{};
        event.events = EPOLLIN;
        event.data.fd = stop_fd;
        (void)epoll_ctl(epoll_fd, EPOLL_CTL_ADD, stop_fd, &event);
        for (int i = index; i < connections; i += server_threads)
        {
            const int fd = clients.pairs[i].server;
            set_nonblocking(fd);
            event.data.fd = fd;
            (void)epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event);
        }
        std::uint8_t buffer[message];
        for (bool stop = false; !stop;)
        {
            epoll_event events[connections];
            const int count = epoll_wait(epoll_fd, events, connections, -1); // ends by stop_fd (watchdog)
            for (int e = 0; e < count; ++e)
            {
                const int fd = events[e].data.fd;
                if (fd == stop_fd)
                {
                    stop = true;
                    continue;
                }
                const ssize_t n = recv(fd, buffer, sizeof buffer, 0);
                if (n > 0)
                {
                    (void)send(fd, buffer, static_cast<std::size_t>(n), MSG_NOSIGNAL);
                }
            }
        }
        (void)close(epoll_fd);
    }
};

// ------------------------------------------------------------------------------------------------
// A hand-written liburing loop on one thread: one ring (init_ring), the two descriptors registered (fixed files),
// send/recv requests, everything prepared since the last wait submitted with the wait (io_uring_submit_and_wait),
// and all completions there reaped in one pass.
struct raw_uring
{
    fd_pair fds = make_loopback_fd_pair();
    io_uring ring{};
    bool made = init_ring(ring, 64);
    static constexpr int client = 0; // fixed-file indexes
    static constexpr int server = 1;

    raw_uring()
    {
        if (made)
        {
            const int files[2] = {fds.client, fds.server};
            made = io_uring_register_files(&ring, files, 2) == 0;
        }
    }
    ~raw_uring()
    {
        if (made)
        {
            io_uring_queue_exit(&ring);
        }
    }

    enum tag : std::uint64_t
    {
        client_send,
        client_receive,
        server_send,
        server_receive,
    };

    void prep_send(int file, const void* data, std::size_t length, tag what) noexcept
    {
        io_uring_sqe* sqe = next_sqe(ring);
        io_uring_prep_send(sqe, file, data, length, MSG_NOSIGNAL);
        sqe->flags |= IOSQE_FIXED_FILE;
        io_uring_sqe_set_data64(sqe, what);
    }
    void prep_receive(int file, void* data, std::size_t length, tag what) noexcept
    {
        io_uring_sqe* sqe = next_sqe(ring);
        io_uring_prep_recv(sqe, file, data, length, 0);
        sqe->flags |= IOSQE_FIXED_FILE;
        io_uring_sqe_set_data64(sqe, what);
    }

    // Waits for at least one completion and hands each to on(tag, res); false when on() says so.
    template <class On>
    bool reap(On&& on) noexcept
    {
        const int waited = io_uring_submit_and_wait(&ring, 1);
        if (waited < 0 && waited != -EINTR)
        {
            return false;
        }
        unsigned head = 0;
        unsigned seen = 0;
        bool ok = true;
        io_uring_cqe* cqe = nullptr;
        io_uring_for_each_cqe(&ring, head, cqe)
        {
            ++seen;
            ok = on(static_cast<tag>(io_uring_cqe_get_data64(cqe)), cqe->res) && ok;
        }
        io_uring_cq_advance(&ring, seen);
        return ok;
    }

    // pingpong: the server's receive stays in flight across batches.
    std::uint8_t client_out[message] = {};
    std::uint8_t client_in[message] = {};
    std::uint8_t server_buffer[message] = {};
    bool server_receiving = false;

    bool pingpong_batch() noexcept
    {
        if (!server_receiving)
        {
            prep_receive(server, server_buffer, message, server_receive);
            server_receiving = true;
        }
        int left = round_trips_per_batch;
        std::size_t got = 0;
        prep_receive(client, client_in, message, client_receive);
        prep_send(client, client_out, message, client_send);
        while (left > 0)
        {
            const bool ok = reap(
                [&](tag what, int res) noexcept
                {
                    if (res <= 0 && what != client_send && what != server_send)
                    {
                        return false;
                    }
                    switch (what)
                    {
                    case server_receive:
                        prep_send(server, server_buffer, static_cast<std::size_t>(res), server_send);
                        prep_receive(server, server_buffer, message, server_receive);
                        break;
                    case client_receive:
                        got += static_cast<std::size_t>(res);
                        if (got < message)
                        {
                            prep_receive(client, client_in + got, message - got, client_receive);
                        }
                        else if (--left > 0)
                        {
                            got = 0;
                            prep_receive(client, client_in, message, client_receive);
                            prep_send(client, client_out, message, client_send);
                        }
                        break;
                    default: // sends of 64 bytes: complete in full on loopback
                        return res == static_cast<int>(message);
                    }
                    return true;
                });
            if (!ok)
            {
                return false;
            }
        }
        return true;
    }

    // stream: one send and one receive in flight.
    bool stream_batch(std::vector<std::uint8_t>& out, std::vector<std::uint8_t>& in) noexcept
    {
        int sends_left = chunks_per_batch;
        std::size_t sent = 0; // of the current chunk
        std::size_t to_receive = chunk * chunks_per_batch;
        bool sending = true;
        bool receiving = true;
        prep_receive(server, in.data(), chunk, server_receive);
        prep_send(client, out.data(), chunk, client_send);
        while (sending || receiving)
        {
            const bool ok = reap(
                [&](tag what, int res) noexcept
                {
                    if (res <= 0)
                    {
                        return false;
                    }
                    if (what == client_send)
                    {
                        sent += static_cast<std::size_t>(res);
                        if (sent == chunk)
                        {
                            sent = 0;
                            --sends_left;
                        }
                        sending = sends_left > 0;
                        if (sending)
                        {
                            prep_send(client, out.data() + sent, chunk - sent, client_send);
                        }
                        return true;
                    }
                    to_receive -= static_cast<std::size_t>(res);
                    receiving = to_receive > 0;
                    if (receiving)
                    {
                        prep_receive(server, in.data(), chunk, server_receive);
                    }
                    return true;
                });
            if (!ok)
            {
                return false;
            }
        }
        return true;
    }
};

// The echo server of echo64x64, raw liburing: 2 threads, each with its own ring (made on that thread) over 32
// connections registered as fixed files; a receive in flight per connection, then its send, then the receive.
struct raw_uring_echo
{
    echo_clients clients;
    int stop_fd = eventfd(0, EFD_CLOEXEC);
    std::vector<std::thread> threads;
    std::atomic<int> ready{0};
    std::atomic<int> failed{0};

    raw_uring_echo()
    {
        if (!clients.valid() || stop_fd < 0)
        {
            return;
        }
        start_servers(threads, [this](int t) { serve(t); });
        while (ready.load() + failed.load() < server_threads)
        {
            std::this_thread::yield();
        }
    }
    ~raw_uring_echo()
    {
        stop_servers(threads, stop_fd);
    }
    [[nodiscard]] bool valid() const noexcept
    {
        return threads.size() == static_cast<std::size_t>(server_threads) && failed.load() == 0;
    }

    void serve(int index) noexcept
    {
        io_uring ring{};
        if (!init_ring(ring, 128))
        {
            failed.fetch_add(1);
            return;
        }
        std::vector<int> files;
        for (int i = index; i < connections; i += server_threads)
        {
            files.push_back(clients.pairs[i].server);
        }
        if (io_uring_register_files(&ring, files.data(), static_cast<unsigned>(files.size())) != 0)
        {
            failed.fetch_add(1);
            io_uring_queue_exit(&ring);
            return;
        }
        struct connection
        {
            std::uint8_t buffer[message];
        };
        std::vector<connection> states(files.size());
        // user data: file index * 2 + (0 receive, 1 send); the stop read: ~0
        constexpr std::uint64_t stop_tag = ~std::uint64_t{0};
        const auto receive = [&](unsigned file)
        {
            io_uring_sqe* sqe = next_sqe(ring);
            io_uring_prep_recv(sqe, static_cast<int>(file), states[file].buffer, message, 0);
            sqe->flags |= IOSQE_FIXED_FILE;
            io_uring_sqe_set_data64(sqe, std::uint64_t{file} * 2);
        };
        for (unsigned f = 0; f < files.size(); ++f)
        {
            receive(f);
        }
        io_uring_sqe* stop_sqe = next_sqe(ring); // a poll: every thread sees the one write
        io_uring_prep_poll_add(stop_sqe, stop_fd, POLLIN);
        io_uring_sqe_set_data64(stop_sqe, stop_tag);
        ready.fetch_add(1);
        for (bool stop = false; !stop;)
        {
            const int waited = io_uring_submit_and_wait(&ring, 1); // ends by stop_fd (watchdog)
            if (waited < 0 && waited != -EINTR)
            {
                break;
            }
            unsigned head = 0;
            unsigned seen = 0;
            io_uring_cqe* cqe = nullptr;
            io_uring_for_each_cqe(&ring, head, cqe)
            {
                ++seen;
                const std::uint64_t data = io_uring_cqe_get_data64(cqe);
                if (data == stop_tag)
                {
                    stop = true;
                    continue;
                }
                const auto file = static_cast<unsigned>(data / 2);
                if (cqe->res <= 0)
                {
                    continue; // the connection is gone (end of the benchmark)
                }
                if ((data & 1) == 0)
                {
                    io_uring_sqe* sqe = next_sqe(ring);
                    io_uring_prep_send(sqe, static_cast<int>(file), states[file].buffer,
                                       static_cast<std::size_t>(cqe->res), MSG_NOSIGNAL);
                    sqe->flags |= IOSQE_FIXED_FILE;
                    io_uring_sqe_set_data64(sqe, data | 1);
                }
                else
                {
                    receive(file);
                }
            }
            io_uring_cq_advance(&ring, seen);
        }
        io_uring_queue_exit(&ring); // cancels the receives still in flight
    }
};

// ------------------------------------------------------------------------------------------------
// Asio: tcp::sockets over duplicates of the pairs' descriptors, handlers chained.
struct asio_pair
{
    asio::io_context io{1};
    fd_pair fds = make_loopback_fd_pair();
    asio::ip::tcp::socket client{io};
    asio::ip::tcp::socket server{io};

    asio_pair()
    {
        client.assign(asio::ip::tcp::v4(), dup(fds.client));
        server.assign(asio::ip::tcp::v4(), dup(fds.server));
    }
};

struct asio_pingpong
{
    asio_pair sockets;
    std::uint8_t client_out[message] = {};
    std::uint8_t client_in[message] = {};
    std::uint8_t server_buffer[message] = {};
    int left = 0;
    bool failed = false;

    asio_pingpong()
    {
        server_read();
    }
    void server_read()
    {
        sockets.server.async_read_some(asio::buffer(server_buffer),
                                       [this](std::error_code error, std::size_t n)
                                       {
                                           if (error)
                                           {
                                               return;
                                           }
                                           asio::async_write(sockets.server, asio::buffer(server_buffer, n),
                                                             [](std::error_code, std::size_t) {});
                                           server_read();
                                       });
    }
    void round_trip()
    {
        asio::async_write(sockets.client, asio::buffer(client_out), [](std::error_code, std::size_t) {});
        asio::async_read(sockets.client, asio::buffer(client_in),
                         [this](std::error_code error, std::size_t)
                         {
                             if (error || --left == 0)
                             {
                                 failed = static_cast<bool>(error);
                                 sockets.io.stop();
                                 return;
                             }
                             round_trip();
                         });
    }
    bool batch()
    {
        left = round_trips_per_batch;
        sockets.io.restart();
        round_trip();
        sockets.io.run();
        return !failed;
    }
};

struct asio_stream
{
    asio_pair sockets;
    std::vector<std::uint8_t> out = std::vector<std::uint8_t>(chunk, 0x5A);
    std::vector<std::uint8_t> in = std::vector<std::uint8_t>(chunk);
    int sends_left = 0;
    std::size_t bytes_left = 0;
    bool failed = false;

    void send_next()
    {
        asio::async_write(sockets.client, asio::buffer(out),
                          [this](std::error_code error, std::size_t)
                          {
                              if (!error && --sends_left > 0)
                              {
                                  send_next();
                              }
                          });
    }
    void receive_next()
    {
        sockets.server.async_read_some(asio::buffer(in),
                                       [this](std::error_code error, std::size_t n)
                                       {
                                           if (error || n >= bytes_left)
                                           {
                                               failed = static_cast<bool>(error);
                                               sockets.io.stop();
                                               return;
                                           }
                                           bytes_left -= n;
                                           receive_next();
                                       });
    }
    bool batch()
    {
        sends_left = chunks_per_batch;
        bytes_left = chunk * chunks_per_batch;
        sockets.io.restart();
        receive_next();
        send_next();
        sockets.io.run();
        return !failed;
    }
};

// The echo server of echo64x64 on Asio: one io_context run by 2 threads.
struct asio_echo
{
    struct connection
    {
        explicit connection(asio::io_context& io) : socket(io) {}
        asio::ip::tcp::socket socket;
        std::uint8_t buffer[message];
    };
    echo_clients clients;
    asio::io_context io{server_threads};
    asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
    std::vector<std::unique_ptr<connection>> servers;
    std::vector<std::thread> threads;

    asio_echo()
    {
        if (!clients.valid())
        {
            return;
        }
        for (fd_pair& pair : clients.pairs)
        {
            servers.push_back(std::make_unique<connection>(io));
            servers.back()->socket.assign(asio::ip::tcp::v4(), dup(pair.server));
            read(*servers.back());
        }
        for (int t = 0; t < server_threads; ++t)
        {
            threads.emplace_back([this] { io.run(); });
        }
    }
    ~asio_echo()
    {
        work.reset();
        io.stop();
        for (std::thread& thread : threads)
        {
            thread.join();
        }
    }
    [[nodiscard]] bool valid() const noexcept
    {
        return threads.size() == static_cast<std::size_t>(server_threads);
    }

    static void read(connection& c)
    {
        c.socket.async_read_some(asio::buffer(c.buffer),
                                 [&c](std::error_code error, std::size_t n)
                                 {
                                     if (error)
                                     {
                                         return;
                                     }
                                     asio::async_write(c.socket, asio::buffer(c.buffer, n),
                                                       [&c](std::error_code error, std::size_t)
                                                       {
                                                           if (!error)
                                                           {
                                                               read(c);
                                                           }
                                                       });
                                 });
    }
};

// ------------------------------------------------------------------------------------------------
#if defined(ASYNC_SOCKET_BENCH_HAVE_LIBUV)
// libuv: uv_tcp_t over duplicates of the pairs' descriptors (uv_tcp_open), uv_read_start with a fixed buffer,
// uv_write from requests kept by each end (no allocation per write).
struct uv_stream_end
{
    uv_tcp_t tcp{};
    // A request is busy until its callback, which libuv runs on a later loop turn even when the write went out at
    // once; one turn may read (and so echo) up to 32 times per connection. Free requests on a stack.
    static constexpr int request_count = 64;
    uv_write_t requests[request_count]{};
    uv_write_cb callbacks[request_count]{};
    int free_requests[request_count]{};
    int free_count = 0;

    uv_stream_end() noexcept
    {
        for (int i = 0; i < request_count; ++i)
        {
            free_requests[free_count++] = i;
        }
    }

    int write(const void* data, std::size_t length, uv_write_cb done) noexcept
    {
        if (free_count == 0)
        {
            return UV_ENOBUFS;
        }
        const int index = free_requests[--free_count];
        uv_buf_t buffer = uv_buf_init(static_cast<char*>(const_cast<void*>(data)), static_cast<unsigned>(length));
        requests[index].data = this;
        callbacks[index] = done;
        return uv_write(&requests[index], reinterpret_cast<uv_stream_t*>(&tcp), &buffer, 1, &finished);
    }

    static void finished(uv_write_t* request, int status) noexcept
    {
        auto* self = static_cast<uv_stream_end*>(request->data);
        const auto index = static_cast<int>(request - self->requests);
        self->free_requests[self->free_count++] = index;
        self->callbacks[index](request, status);
    }
};

struct uv_pair
{
    uv_loop_t loop{};
    fd_pair fds = make_loopback_fd_pair();
    uv_stream_end client;
    uv_stream_end server;
    bool made = false;

    explicit uv_pair(void* owner)
    {
        made = uv_loop_init(&loop) == 0 && uv_tcp_init(&loop, &client.tcp) == 0 &&
               uv_tcp_init(&loop, &server.tcp) == 0 && uv_tcp_open(&client.tcp, dup(fds.client)) == 0 &&
               uv_tcp_open(&server.tcp, dup(fds.server)) == 0;
        client.tcp.data = owner;
        server.tcp.data = owner;
    }
    ~uv_pair()
    {
        uv_close(reinterpret_cast<uv_handle_t*>(&client.tcp), nullptr);
        uv_close(reinterpret_cast<uv_handle_t*>(&server.tcp), nullptr);
        (void)uv_run(&loop, UV_RUN_DEFAULT);
        (void)uv_loop_close(&loop);
    }
};

struct uv_pingpong
{
    uv_pair sockets{this};
    std::uint8_t client_out[message] = {};
    std::uint8_t client_in[message] = {};
    std::uint8_t server_buffer[message] = {};
    std::size_t client_got = 0;
    int left = 0;
    bool failed = false;

    uv_pingpong()
    {
        if (!sockets.made)
        {
            return;
        }
        (void)uv_read_start(reinterpret_cast<uv_stream_t*>(&sockets.server.tcp), &server_buffer_for, &on_server_read);
        (void)uv_read_start(reinterpret_cast<uv_stream_t*>(&sockets.client.tcp), &client_buffer_for, &on_client_read);
    }
    static uv_pingpong& of(uv_handle_t* handle) noexcept
    {
        return *static_cast<uv_pingpong*>(handle->data);
    }
    static void server_buffer_for(uv_handle_t* handle, std::size_t, uv_buf_t* buffer) noexcept
    {
        uv_pingpong& self = of(handle);
        *buffer = uv_buf_init(reinterpret_cast<char*>(self.server_buffer), message);
    }
    static void client_buffer_for(uv_handle_t* handle, std::size_t, uv_buf_t* buffer) noexcept
    {
        uv_pingpong& self = of(handle);
        *buffer = uv_buf_init(reinterpret_cast<char*>(self.client_in + self.client_got),
                              static_cast<unsigned>(message - self.client_got));
    }
    static void on_written(uv_write_t*, int) noexcept {}
    static void on_server_read(uv_stream_t* stream, ssize_t n, const uv_buf_t*) noexcept
    {
        if (n > 0)
        {
            (void)of(reinterpret_cast<uv_handle_t*>(stream))
                .sockets.server.write(of(reinterpret_cast<uv_handle_t*>(stream)).server_buffer,
                                      static_cast<std::size_t>(n), &on_written);
        }
    }
    static void on_client_read(uv_stream_t* stream, ssize_t n, const uv_buf_t*) noexcept
    {
        uv_pingpong& self = of(reinterpret_cast<uv_handle_t*>(stream));
        if (n < 0)
        {
            self.failed = true;
            uv_stop(&self.sockets.loop);
            return;
        }
        self.client_got += static_cast<std::size_t>(n);
        if (self.client_got < message)
        {
            return;
        }
        self.client_got = 0;
        if (--self.left == 0)
        {
            uv_stop(&self.sockets.loop);
            return;
        }
        (void)self.sockets.client.write(self.client_out, message, &on_written);
    }
    bool batch() noexcept
    {
        left = round_trips_per_batch;
        (void)sockets.client.write(client_out, message, &on_written);
        (void)uv_run(&sockets.loop, UV_RUN_DEFAULT);
        return !failed;
    }
};

struct uv_stream
{
    uv_pair sockets{this};
    std::vector<std::uint8_t> out = std::vector<std::uint8_t>(chunk, 0x5A);
    std::vector<std::uint8_t> in = std::vector<std::uint8_t>(chunk);
    int sends_left = 0;
    std::size_t bytes_left = 0;
    bool failed = false;

    uv_stream()
    {
        if (sockets.made)
        {
            (void)uv_read_start(reinterpret_cast<uv_stream_t*>(&sockets.server.tcp), &buffer_for, &on_read);
        }
    }
    static uv_stream& of(void* data) noexcept
    {
        return *static_cast<uv_stream*>(data);
    }
    static void buffer_for(uv_handle_t* handle, std::size_t, uv_buf_t* buffer) noexcept
    {
        uv_stream& self = of(handle->data);
        *buffer = uv_buf_init(reinterpret_cast<char*>(self.in.data()), static_cast<unsigned>(chunk));
    }
    static void on_written(uv_write_t* request, int status) noexcept
    {
        uv_stream& self = of(request->handle->data);
        if (status == 0 && --self.sends_left > 0)
        {
            (void)self.sockets.client.write(self.out.data(), chunk, &on_written);
        }
    }
    static void on_read(uv_stream_t* stream, ssize_t n, const uv_buf_t*) noexcept
    {
        uv_stream& self = of(stream->data);
        if (n < 0 || static_cast<std::size_t>(n) >= self.bytes_left)
        {
            self.failed = n < 0;
            self.bytes_left = 0;
            uv_stop(&self.sockets.loop);
            return;
        }
        self.bytes_left -= static_cast<std::size_t>(n);
    }
    bool batch() noexcept
    {
        sends_left = chunks_per_batch;
        bytes_left = chunk * chunks_per_batch;
        (void)sockets.client.write(out.data(), chunk, &on_written);
        (void)uv_run(&sockets.loop, UV_RUN_DEFAULT);
        return !failed;
    }
};

// The echo server of echo64x64 on libuv: a libuv loop runs on one thread, so 2 loops on 2 threads, 32
// connections each; a uv_async_t ends each loop.
struct uv_echo
{
    struct connection
    {
        uv_stream_end end;
        std::uint8_t buffer[message];
    };
    struct loop_thread
    {
        uv_loop_t loop{};
        uv_async_t stop{};
        std::vector<std::unique_ptr<connection>> connections;
        std::thread thread;
    };
    echo_clients clients;
    loop_thread loops[server_threads];
    int started = 0;

    uv_echo()
    {
        if (!clients.valid())
        {
            return;
        }
        for (int t = 0; t < server_threads; ++t)
        {
            loop_thread& l = loops[t];
            if (uv_loop_init(&l.loop) != 0 || uv_async_init(&l.loop, &l.stop, &on_stop) != 0)
            {
                return;
            }
            l.stop.data = &l;
            for (int i = t; i < connections; i += server_threads)
            {
                auto made = std::make_unique<connection>();
                made->end.tcp.data = made.get();
                if (uv_tcp_init(&l.loop, &made->end.tcp) != 0 ||
                    uv_tcp_open(&made->end.tcp, dup(clients.pairs[i].server)) != 0)
                {
                    return;
                }
                made->end.tcp.data = made.get();
                (void)uv_read_start(reinterpret_cast<uv_stream_t*>(&made->end.tcp), &buffer_for, &on_read);
                l.connections.push_back(std::move(made));
            }
            l.thread = std::thread([&l] { (void)uv_run(&l.loop, UV_RUN_DEFAULT); });
            ++started;
        }
    }
    ~uv_echo()
    {
        for (int t = 0; t < started; ++t)
        {
            (void)uv_async_send(&loops[t].stop);
            loops[t].thread.join();
            (void)uv_loop_close(&loops[t].loop);
        }
    }
    [[nodiscard]] bool valid() const noexcept
    {
        return started == server_threads;
    }

    static void on_stop(uv_async_t* stop) noexcept
    {
        auto* l = static_cast<loop_thread*>(stop->data);
        for (auto& c : l->connections)
        {
            uv_close(reinterpret_cast<uv_handle_t*>(&c->end.tcp), nullptr);
        }
        uv_close(reinterpret_cast<uv_handle_t*>(stop), nullptr);
    }
    static void buffer_for(uv_handle_t* handle, std::size_t, uv_buf_t* buffer) noexcept
    {
        auto* c = static_cast<connection*>(handle->data);
        *buffer = uv_buf_init(reinterpret_cast<char*>(c->buffer), message);
    }
    static void on_written(uv_write_t*, int) noexcept {}
    static void on_read(uv_stream_t* stream, ssize_t n, const uv_buf_t*) noexcept
    {
        auto* c = static_cast<connection*>(stream->data);
        if (n > 0)
        {
            (void)c->end.write(c->buffer, static_cast<std::size_t>(n), &on_written);
        }
    }
};
#endif

// ------------------------------------------------------------------------------------------------
// False, with the row skipped as `why`, when its bench could not be made.
bool ready(benchmark::State& state, bool made, const char* why)
{
    if (!made)
    {
        state.SkipWithError(why);
    }
    return made;
}

constexpr const char* library_refused = "engine or sockets could not be made (io_uring refused?)";
constexpr const char* uring_refused = "io_uring refused";
constexpr const char* threads_refused = "the server threads could not be started";
constexpr const char* libuv_refused = "libuv could not open the sockets";

void pingpong64_library(benchmark::State& state, linux_io_choice io)
{
    watch guard;
    library_pingpong bench(io);
    if (ready(state, bench.sockets.valid(), library_refused))
    {
        run_pingpong(state, [&] { return bench.batch(); });
    }
}

void stream64k_library(benchmark::State& state, linux_io_choice io)
{
    watch guard;
    library_stream bench(io);
    if (ready(state, bench.sockets.valid(), library_refused))
    {
        run_stream(state, [&] { return bench.batch(); });
    }
}

void echo64x64_library(benchmark::State& state, linux_io_choice io)
{
    watch guard;
    library_echo bench(io);
    if (ready(state, bench.valid(), library_refused))
    {
        run_echo(state, [&] { return bench.clients.batch(); });
    }
}

void pingpong64_raw_epoll(benchmark::State& state)
{
    watch guard;
    raw_epoll bench;
    run_pingpong(state, [&] { return bench.pingpong_batch(); });
}

void stream64k_raw_epoll(benchmark::State& state)
{
    watch guard;
    raw_epoll bench;
    std::vector<std::uint8_t> out(chunk, 0x5A);
    std::vector<std::uint8_t> in(chunk);
    run_stream(state, [&] { return bench.stream_batch(out, in); });
}

void echo64x64_raw_epoll(benchmark::State& state)
{
    watch guard;
    raw_epoll_echo bench;
    if (ready(state, bench.valid(), threads_refused))
    {
        run_echo(state, [&] { return bench.clients.batch(); });
    }
}

void pingpong64_raw_uring(benchmark::State& state)
{
    watch guard;
    raw_uring bench;
    if (ready(state, bench.made, uring_refused))
    {
        run_pingpong(state, [&] { return bench.pingpong_batch(); });
    }
}

void stream64k_raw_uring(benchmark::State& state)
{
    watch guard;
    raw_uring bench;
    if (ready(state, bench.made, uring_refused))
    {
        std::vector<std::uint8_t> out(chunk, 0x5A);
        std::vector<std::uint8_t> in(chunk);
        run_stream(state, [&] { return bench.stream_batch(out, in); });
    }
}

void echo64x64_raw_uring(benchmark::State& state)
{
    watch guard;
    raw_uring_echo bench;
    if (ready(state, bench.valid(), "io_uring refused or the server threads could not be started"))
    {
        run_echo(state, [&] { return bench.clients.batch(); });
    }
}

void pingpong64_asio(benchmark::State& state)
{
    watch guard;
    asio_pingpong bench;
    run_pingpong(state, [&] { return bench.batch(); });
}

void stream64k_asio(benchmark::State& state)
{
    watch guard;
    asio_stream bench;
    run_stream(state, [&] { return bench.batch(); });
}

void echo64x64_asio(benchmark::State& state)
{
    watch guard;
    asio_echo bench;
    if (ready(state, bench.valid(), threads_refused))
    {
        run_echo(state, [&] { return bench.clients.batch(); });
    }
}

#if defined(ASYNC_SOCKET_BENCH_HAVE_LIBUV)
void pingpong64_libuv(benchmark::State& state)
{
    watch guard;
    uv_pingpong bench;
    if (ready(state, bench.sockets.made, libuv_refused))
    {
        run_pingpong(state, [&] { return bench.batch(); });
    }
}

void stream64k_libuv(benchmark::State& state)
{
    watch guard;
    uv_stream bench;
    if (ready(state, bench.sockets.made, libuv_refused))
    {
        run_stream(state, [&] { return bench.batch(); });
    }
}

void echo64x64_libuv(benchmark::State& state)
{
    watch guard;
    uv_echo bench;
    if (ready(state, bench.valid(), "libuv could not open the sockets or start the loops"))
    {
        run_echo(state, [&] { return bench.clients.batch(); });
    }
}
#endif

} // namespace

BENCHMARK_CAPTURE(pingpong64_library, io_uring, linux_io_choice::io_uring)->UseRealTime();
BENCHMARK_CAPTURE(pingpong64_library, epoll, linux_io_choice::epoll)->UseRealTime();
BENCHMARK(pingpong64_raw_epoll)->UseRealTime();
BENCHMARK(pingpong64_raw_uring)->UseRealTime();
BENCHMARK(pingpong64_asio)->UseRealTime();
#if defined(ASYNC_SOCKET_BENCH_HAVE_LIBUV)
BENCHMARK(pingpong64_libuv)->UseRealTime();
#endif
BENCHMARK_CAPTURE(stream64k_library, io_uring, linux_io_choice::io_uring)->UseRealTime();
BENCHMARK_CAPTURE(stream64k_library, epoll, linux_io_choice::epoll)->UseRealTime();
BENCHMARK(stream64k_raw_epoll)->UseRealTime();
BENCHMARK(stream64k_raw_uring)->UseRealTime();
BENCHMARK(stream64k_asio)->UseRealTime();
#if defined(ASYNC_SOCKET_BENCH_HAVE_LIBUV)
BENCHMARK(stream64k_libuv)->UseRealTime();
#endif
BENCHMARK_CAPTURE(echo64x64_library, io_uring, linux_io_choice::io_uring)->UseRealTime();
BENCHMARK_CAPTURE(echo64x64_library, epoll, linux_io_choice::epoll)->UseRealTime();
BENCHMARK(echo64x64_raw_epoll)->UseRealTime();
BENCHMARK(echo64x64_raw_uring)->UseRealTime();
BENCHMARK(echo64x64_asio)->UseRealTime();
#if defined(ASYNC_SOCKET_BENCH_HAVE_LIBUV)
BENCHMARK(echo64x64_libuv)->UseRealTime();
#endif

int main(int argc, char** argv)
{
    {
        void* frames[4];
        (void)backtrace(frames, 4); // loads the unwinder now, not inside a counted loop
    }
    std::thread(&watchdog).detach();
    return bench_common::run_benchmarks(argc, argv);
}
