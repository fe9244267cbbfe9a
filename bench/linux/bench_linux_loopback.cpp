// Native Linux loopback benchmarks, one run side by side: the library on io_uring and on epoll, a hand-written
// raw epoll loop, and Asio (Debian's libasio-dev, its default epoll reactor).
//   pingpong64: one connection, 64 bytes there and back per item (items/s = round trips/s)
//   stream64k:  one connection, 64 KiB sends back to back, the other end receives (bytes/s)
// Every row runs its IO on one thread (the library: an engine with one worker; Asio: io_context::run on the
// benchmark thread; raw: the benchmark thread), so the rows compare the cost of the same work.
// scripts/bench-linux.sh runs it with repetitions and prints the medians and ratios (docs/benchmarks.md).
#include <async_socket/async_socket.hpp>
#include <async_socket/testing/linux_loopback.hpp>

#include <asio.hpp>
#include <benchmark/benchmark.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <vector>

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace
{

using async_socket::linux_async_socket;
using async_socket::linux_engine;
using async_socket::linux_io_choice;
using async_socket::status;
using async_socket::testing::fd_pair;
using async_socket::testing::make_loopback_fd_pair;

constexpr int round_trips_per_batch = 1000;
constexpr std::size_t message = 64;
constexpr std::size_t chunk = 65536;
constexpr int chunks_per_batch = 256; // 16 MiB per batch

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

void noop_open(void*, ASYNC_SOCKET_OPEN_RESULT) noexcept {}

// ------------------------------------------------------------------------------------------------
// The library.
struct library_pair
{
    linux_engine::handle engine;
    fd_pair fds = make_loopback_fd_pair();
    linux_async_socket::handle client;
    linux_async_socket::handle server;

    explicit library_pair(linux_io_choice io) : engine(linux_engine::create({.thread_count = 1, .io = io}))
    {
        client = linux_async_socket::create(engine.get(), async_socket_handle_from_fd(fds.client));
        server = linux_async_socket::create(engine.get(), async_socket_handle_from_fd(fds.server));
        (void)client->open_async(&noop_open, nullptr);
        (void)server->open_async(&noop_open, nullptr);
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
    done_flag done;

    explicit library_pingpong(linux_io_choice io) : sockets(io)
    {
        (void)sockets.server->receive_async(&server_receive_buffer, 1, &on_server_receive, this);
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

    void batch() noexcept
    {
        left = round_trips_per_batch;
        start_round_trip();
        done.wait_and_clear();
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
            self->done.set();
            return;
        }
        self->bytes_left -= bytes;
        (void)self->sockets.server->receive_async(&self->receive_buffer, 1, &on_received, self);
    }

    void batch() noexcept
    {
        sends_left = chunks_per_batch;
        bytes_left = chunk * chunks_per_batch;
        (void)sockets.server->receive_async(&receive_buffer, 1, &on_received, this);
        (void)sockets.client->send_async(&send_buffer, 1, &on_sent, this);
        done.wait_and_clear();
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
            (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
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

    void pingpong_batch() noexcept
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
                const int count = epoll_wait(epoll_fd, events, 2, -1);
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
    }

    void stream_batch(std::vector<std::uint8_t>& out, std::vector<std::uint8_t>& in) noexcept
    {
        std::size_t to_send = chunk * chunks_per_batch;
        std::size_t to_receive = to_send;
        std::size_t offset = 0; // within the current chunk
        epoll_event writable{};
        writable.events = EPOLLOUT;
        writable.data.fd = fds.client;
        bool watching_output = false;
        while (to_receive > 0)
        {
            while (to_send > 0)
            {
                const ssize_t n = send(fds.client, out.data() + offset, chunk - offset, MSG_NOSIGNAL);
                if (n <= 0)
                {
                    break;
                }
                to_send -= static_cast<std::size_t>(n);
                offset = (offset + static_cast<std::size_t>(n)) % chunk;
            }
            const bool want_output = to_send > 0;
            if (want_output != watching_output)
            {
                writable.events = want_output ? EPOLLIN | EPOLLOUT : EPOLLIN;
                (void)epoll_ctl(epoll_fd, EPOLL_CTL_MOD, fds.client, &writable);
                watching_output = want_output;
            }
            epoll_event events[2];
            const int count = epoll_wait(epoll_fd, events, 2, -1);
            for (int e = 0; e < count; ++e)
            {
                if (events[e].data.fd == fds.server)
                {
                    for (;;)
                    {
                        const ssize_t n = recv(fds.server, in.data(), in.size(), 0);
                        if (n <= 0)
                        {
                            break;
                        }
                        to_receive -= static_cast<std::size_t>(n);
                    }
                }
            }
        }
        writable.events = EPOLLIN;
        (void)epoll_ctl(epoll_fd, EPOLL_CTL_MOD, fds.client, &writable);
    }
};

// ------------------------------------------------------------------------------------------------
// Asio: two tcp::sockets over duplicates of the pair's descriptors, handlers chained, run on this thread.
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
                                 sockets.io.stop();
                                 return;
                             }
                             round_trip();
                         });
    }
    void batch()
    {
        left = round_trips_per_batch;
        sockets.io.restart();
        round_trip();
        sockets.io.run();
    }
};

struct asio_stream
{
    asio_pair sockets;
    std::vector<std::uint8_t> out = std::vector<std::uint8_t>(chunk, 0x5A);
    std::vector<std::uint8_t> in = std::vector<std::uint8_t>(chunk);
    int sends_left = 0;
    std::size_t bytes_left = 0;

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
                                               sockets.io.stop();
                                               return;
                                           }
                                           bytes_left -= n;
                                           receive_next();
                                       });
    }
    void batch()
    {
        sends_left = chunks_per_batch;
        bytes_left = chunk * chunks_per_batch;
        sockets.io.restart();
        receive_next();
        send_next();
        sockets.io.run();
    }
};

// ------------------------------------------------------------------------------------------------
void pingpong_items(benchmark::State& state)
{
    state.SetItemsProcessed(state.iterations() * round_trips_per_batch);
}
void stream_bytes(benchmark::State& state)
{
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(chunk) * chunks_per_batch);
}

void pingpong64_library(benchmark::State& state, linux_io_choice io)
{
    library_pingpong bench(io);
    if (bench.sockets.engine == nullptr || bench.sockets.client == nullptr)
    {
        state.SkipWithError("engine or sockets could not be made (io_uring refused?)");
        return;
    }
    for (auto _ : state)
    {
        bench.batch();
    }
    pingpong_items(state);
}

void stream64k_library(benchmark::State& state, linux_io_choice io)
{
    library_stream bench(io);
    if (bench.sockets.engine == nullptr || bench.sockets.client == nullptr)
    {
        state.SkipWithError("engine or sockets could not be made (io_uring refused?)");
        return;
    }
    for (auto _ : state)
    {
        bench.batch();
    }
    stream_bytes(state);
}

void pingpong64_raw_epoll(benchmark::State& state)
{
    raw_epoll bench;
    for (auto _ : state)
    {
        bench.pingpong_batch();
    }
    pingpong_items(state);
}

void stream64k_raw_epoll(benchmark::State& state)
{
    raw_epoll bench;
    std::vector<std::uint8_t> out(chunk, 0x5A);
    std::vector<std::uint8_t> in(chunk);
    for (auto _ : state)
    {
        bench.stream_batch(out, in);
    }
    stream_bytes(state);
}

void pingpong64_asio(benchmark::State& state)
{
    asio_pingpong bench;
    for (auto _ : state)
    {
        bench.batch();
    }
    pingpong_items(state);
}

void stream64k_asio(benchmark::State& state)
{
    asio_stream bench;
    for (auto _ : state)
    {
        bench.batch();
    }
    stream_bytes(state);
}

} // namespace

BENCHMARK_CAPTURE(pingpong64_library, io_uring, linux_io_choice::io_uring)->UseRealTime();
BENCHMARK_CAPTURE(pingpong64_library, epoll, linux_io_choice::epoll)->UseRealTime();
BENCHMARK(pingpong64_raw_epoll)->UseRealTime();
BENCHMARK(pingpong64_asio)->UseRealTime();
BENCHMARK_CAPTURE(stream64k_library, io_uring, linux_io_choice::io_uring)->UseRealTime();
BENCHMARK_CAPTURE(stream64k_library, epoll, linux_io_choice::epoll)->UseRealTime();
BENCHMARK(stream64k_raw_epoll)->UseRealTime();
BENCHMARK(stream64k_asio)->UseRealTime();

BENCHMARK_MAIN();
