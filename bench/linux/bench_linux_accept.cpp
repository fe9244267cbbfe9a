// Connections accepted per second, natively on Linux, the library beside Asio and raw loops in one run
// (scripts/bench-linux.sh runs it after bench_linux_loopback; docs/benchmarks.md has the figures).
//
// accept200: per batch the benchmark thread makes 200 connections to a listener on 127.0.0.1, one after the other:
// socket, connect (blocking; on loopback it returns once the handshake is done, before any accept), SO_LINGER 0 and
// close (a reset: no TIME_WAIT, so millions of connections never run out of ports). The server under test, on its own
// thread, accepts each connection and closes it; the batch ends when it has accepted all 200 (items/s = accepts/s).
// The listen backlog (4096) holds a whole batch, so the client never waits for the server within a batch. Rows:
//   library/io_uring, library/epoll  linux_async_socket over the listener on a linux_engine with one worker; one
//                                    accept pending, each handler closes the descriptor and starts the next accept
//   asio                             asio::ip::tcp::acceptor::async_accept, the same chain, io_context::run on one
//                                    thread (its default epoll reactor)
//   raw_epoll                        a non-blocking listener in an epoll instance: accept4 until EAGAIN per wake
//   raw_uring                        one IORING_OP_ACCEPT in flight on a ring, re-armed after each completion
// Heap allocations per accept once warm are counted as in bench_linux_loopback (bench/common/alloc_counter.hpp).
// Every wait is bounded: a watchdog ends the process (exit code 3) when a batch takes more than 30 s.
#include <async_socket/async_socket.hpp>
#include "../common/alloc_counter.hpp"
#include "../common/bench_main.hpp"

#include <asio.hpp>
#include <benchmark/benchmark.h>
#include <liburing.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <thread>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

namespace
{

using async_socket::linux_async_socket;
using async_socket::linux_engine;
using async_socket::linux_io_choice;

constexpr int accepts_per_batch = 200;

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
            static const char text[] = "bench_linux_accept: a batch took more than 30 s; giving up\n";
            (void)!write(2, text, sizeof text - 1);
            _exit(3);
        }
    }
}

// The listener every row accepts on: 127.0.0.1, a port the OS picks, backlog 4096.
struct listener
{
    int fd = -1;
    sockaddr_in address{};

    listener()
    {
        fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t length = sizeof address;
        if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
            ::listen(fd, 4096) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0)
        {
            std::perror("bench_linux_accept: listener");
            std::exit(1);
        }
    }
    ~listener()
    {
        (void)::close(fd);
    }
    listener(const listener&) = delete;
    listener& operator=(const listener&) = delete;
};

// The client side of a batch: 200 connections, each reset right after connect. False on any failure.
bool connect_batch(const listener& to) noexcept
{
    for (int i = 0; i < accepts_per_batch; ++i)
    {
        const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
        if (fd < 0)
        {
            return false;
        }
        const bool connected = ::connect(fd, reinterpret_cast<const sockaddr*>(&to.address), sizeof to.address) == 0;
        const linger hard{1, 0};
        (void)::setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
        (void)::close(fd);
        if (!connected)
        {
            return false;
        }
    }
    return true;
}

// Counts the server's accepts; the benchmark thread waits for the batch's last one.
struct accept_count
{
    std::atomic<std::int64_t> accepted{0};
    std::atomic<std::int64_t> failed{0};

    void one() noexcept
    {
        const std::int64_t now = accepted.fetch_add(1, std::memory_order_acq_rel) + 1;
        if (now % accepts_per_batch == 0)
        {
            accepted.notify_one();
        }
    }
    // Waits until `target` accepts were counted (or one failed).
    bool wait_for(std::int64_t target) noexcept
    {
        for (std::int64_t seen = accepted.load(std::memory_order_acquire); seen < target;
             seen = accepted.load(std::memory_order_acquire))
        {
            if (failed.load() != 0)
            {
                return false;
            }
            accepted.wait(seen, std::memory_order_acquire);
        }
        return failed.load() == 0;
    }
};

// The frame of every row: warm-up batches until 3 in a row allocate nothing (at most 40), then the timed ones.
template <class Batch>
void run_rows(benchmark::State& state, Batch&& batch)
{
    heartbeat();
    int quiet = 0;
    int warm_up = 0;
    while (quiet < 3 && warm_up < 40)
    {
        heartbeat();
        const std::uint64_t at = alloc_counter::allocations.load();
        if (!batch())
        {
            state.SkipWithError("a warm-up batch failed");
            batch_started_ms.store(0);
            return;
        }
        ++warm_up;
        quiet = alloc_counter::allocations.load() == at ? quiet + 1 : 0;
    }
    const std::uint64_t before = alloc_counter::allocations.load();
    for (auto _ : state)
    {
        heartbeat();
        if (!batch())
        {
            state.SkipWithError("a batch failed");
            batch_started_ms.store(0);
            return;
        }
    }
    const std::uint64_t allocations = alloc_counter::allocations.load() - before;
    const auto iterations = static_cast<std::int64_t>(state.iterations());
    state.SetItemsProcessed(iterations * accepts_per_batch);
    state.counters["warmup_batches"] = warm_up;
    state.counters["allocs_per_io"] =
        static_cast<double>(allocations) / (static_cast<double>(iterations) * accepts_per_batch);
    batch_started_ms.store(0);
}

// ------------------------------------------------------------------------------------------------
// The library: an accept chain on a listener socket.
struct library_server
{
    linux_async_socket* socket = nullptr;
    accept_count* count = nullptr;

    void accept_next() noexcept
    {
        if (socket->accept_async([this](async_socket::accept_result r) noexcept { accepted(r); }) !=
            async_socket::status::ok)
        {
            count->failed.store(1);
            count->accepted.notify_one();
        }
    }
    void accepted(const async_socket::accept_result& r) noexcept
    {
        if (r.completion == async_socket::io_completion::because_close)
        {
            return; // the row is over
        }
        if (r.ok())
        {
            (void)::close(async_socket_fd_from_handle(r.socket));
            count->one();
        }
        else
        {
            count->failed.store(1);
            count->accepted.notify_one();
            return;
        }
        accept_next();
    }
};

void accept200_library(benchmark::State& state, linux_io_choice io)
{
    listener listening;
    linux_engine::handle engine = linux_engine::create({.thread_count = 1, .io = io});
    if (engine == nullptr)
    {
        state.SkipWithError("the engine could not be made (io_uring refused?)");
        return;
    }
    linux_async_socket::handle socket =
        linux_async_socket::create(engine.get(), async_socket_handle_from_fd(listening.fd));
    if (socket == nullptr || socket->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) != async_socket::status::ok)
    {
        state.SkipWithError("the listener could not be opened");
        return;
    }
    accept_count count;
    library_server server{socket.get(), &count};
    server.accept_next();
    std::int64_t target = 0;
    run_rows(state,
             [&]
             {
                 target += accepts_per_batch;
                 return connect_batch(listening) && count.wait_for(target);
             });
    (void)socket->close();
}

// ------------------------------------------------------------------------------------------------
// Asio: async_accept chained from its handler, io_context::run on one thread.
struct asio_server
{
    asio::ip::tcp::acceptor& acceptor;
    accept_count& count;

    void accept_next()
    {
        acceptor.async_accept(
            [this](const std::error_code& error, asio::ip::tcp::socket accepted)
            {
                if (error == asio::error::operation_aborted)
                {
                    return;
                }
                if (error)
                {
                    count.failed.store(1);
                    count.accepted.notify_one();
                    return;
                }
                std::error_code ignored;
                accepted.close(ignored);
                count.one();
                accept_next();
            });
    }
};

void accept200_asio(benchmark::State& state)
{
    listener listening;
    asio::io_context io{1};
    asio::ip::tcp::acceptor acceptor{io};
    acceptor.assign(asio::ip::tcp::v4(), ::dup(listening.fd));
    accept_count count;
    asio_server server{acceptor, count};
    server.accept_next();
    asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
    std::thread runner([&] { io.run(); });
    std::int64_t target = 0;
    run_rows(state,
             [&]
             {
                 target += accepts_per_batch;
                 return connect_batch(listening) && count.wait_for(target);
             });
    asio::post(io, [&] { acceptor.close(); });
    work.reset();
    runner.join();
}

// ------------------------------------------------------------------------------------------------
// Raw epoll: accept4 until EAGAIN on each wake; an eventfd ends the loop.
void accept200_raw_epoll(benchmark::State& state)
{
    listener listening;
    (void)::fcntl(listening.fd, F_SETFL, ::fcntl(listening.fd, F_GETFL) | O_NONBLOCK);
    const int epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
    const int stop_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = listening.fd;
    (void)::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listening.fd, &event);
    event.data.fd = stop_fd;
    (void)::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, stop_fd, &event);
    accept_count count;
    std::thread server(
        [&]
        {
            for (;;)
            {
                epoll_event ready[4];
                const int n = ::epoll_wait(epoll_fd, ready, 4, -1);
                for (int i = 0; i < n; ++i)
                {
                    if (ready[i].data.fd == stop_fd)
                    {
                        return;
                    }
                    for (;;)
                    {
                        const int fd = ::accept4(listening.fd, nullptr, nullptr, SOCK_CLOEXEC);
                        if (fd < 0)
                        {
                            break; // EAGAIN (or an error of one connection: the next wake goes on)
                        }
                        (void)::close(fd);
                        count.one();
                    }
                }
            }
        });
    std::int64_t target = 0;
    run_rows(state,
             [&]
             {
                 target += accepts_per_batch;
                 return connect_batch(listening) && count.wait_for(target);
             });
    const std::uint64_t one = 1;
    (void)!::write(stop_fd, &one, sizeof one);
    server.join();
    (void)::close(stop_fd);
    (void)::close(epoll_fd);
}

// ------------------------------------------------------------------------------------------------
// Raw liburing: one IORING_OP_ACCEPT in flight, re-armed after each completion; a read of an eventfd ends the loop.
void accept200_raw_uring(benchmark::State& state)
{
    listener listening;
    const int stop_fd = ::eventfd(0, EFD_CLOEXEC);
    accept_count count;
    std::atomic<int> ready{0};
    std::thread server(
        [&]
        {
            io_uring ring{};
            if (io_uring_queue_init(64, &ring, 0) != 0)
            {
                ready.store(-1);
                ready.notify_one();
                return;
            }
            std::uint64_t stop_value = 0;
            io_uring_sqe* sqe = io_uring_get_sqe(&ring);
            io_uring_prep_read(sqe, stop_fd, &stop_value, sizeof stop_value, 0);
            io_uring_sqe_set_data64(sqe, 1);
            sqe = io_uring_get_sqe(&ring);
            io_uring_prep_accept(sqe, listening.fd, nullptr, nullptr, SOCK_CLOEXEC);
            io_uring_sqe_set_data64(sqe, 2);
            ready.store(1);
            ready.notify_one();
            for (bool running = true; running;)
            {
                (void)io_uring_submit_and_wait(&ring, 1);
                io_uring_cqe* cqe = nullptr;
                unsigned head = 0;
                unsigned seen = 0;
                io_uring_for_each_cqe(&ring, head, cqe)
                {
                    ++seen;
                    if (io_uring_cqe_get_data64(cqe) == 1)
                    {
                        running = false;
                        continue;
                    }
                    if (cqe->res >= 0)
                    {
                        (void)::close(cqe->res);
                        count.one();
                    }
                    io_uring_sqe* next = io_uring_get_sqe(&ring);
                    io_uring_prep_accept(next, listening.fd, nullptr, nullptr, SOCK_CLOEXEC);
                    io_uring_sqe_set_data64(next, 2);
                }
                io_uring_cq_advance(&ring, seen);
            }
            io_uring_queue_exit(&ring);
        });
    ready.wait(0);
    if (ready.load() < 0)
    {
        server.join();
        (void)::close(stop_fd);
        state.SkipWithError("io_uring refused");
        return;
    }
    std::int64_t target = 0;
    run_rows(state,
             [&]
             {
                 target += accepts_per_batch;
                 return connect_batch(listening) && count.wait_for(target);
             });
    const std::uint64_t one = 1;
    (void)!::write(stop_fd, &one, sizeof one);
    server.join();
    (void)::close(stop_fd);
}

} // namespace

BENCHMARK_CAPTURE(accept200_library, io_uring, linux_io_choice::io_uring)->UseRealTime();
BENCHMARK_CAPTURE(accept200_library, epoll, linux_io_choice::epoll)->UseRealTime();
BENCHMARK(accept200_raw_epoll)->UseRealTime();
BENCHMARK(accept200_raw_uring)->UseRealTime();
BENCHMARK(accept200_asio)->UseRealTime();

int main(int argc, char** argv)
{
    std::thread(&watchdog).detach();
    return bench_common::run_benchmarks(argc, argv);
}
