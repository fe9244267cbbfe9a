// bench_loopback: async_socket against hand-written Win32 threadpool IO and Asio, over real loopback TCP.
//
// Every configuration runs in the same executable, so that one run measures them all under the same load:
//   spec_default      async_socket::win32_async_socket (the spec's behaviour: a new event per IO, every
//                     completion through the pool, malloc'd contexts)
//   recycled_events   the spec's event per IO, taken from a few kept events (win32_event_mode::recycled)
//   fast              async_socket::win32_no_event_skip_port_async_socket (no event, skip-completion-port-on-success,
//                     recycled contexts)
//   raw_event_per_io  hand-written threadpool IO (CreateThreadpoolIo/StartThreadpoolIo/WSASend/WSARecv, an
//                     OVERLAPPED malloc'd per IO), CreateEvent + CloseHandle around each IO, like the spec
//   raw               the same without events
//   raw_skip          the same without events, with FILE_SKIP_COMPLETION_PORT_ON_SUCCESS
//                     (| FILE_SKIP_SET_EVENT_ON_HANDLE, as the library sets it)
//   asio              Asio's tcp::socket (async_write / async_read_some) on an io_context run by one thread
//   iocp_fast         async_socket::win32_iocp_async_socket: the fast options over a plain IO completion port
//                     (win32_iocp_engine, default parameters: one dispatcher thread calling
//                     GetQueuedCompletionStatus) that both ends share, like Asio's io_context
//   iocp              the same port and thread without skip mode: every completion through the port
//   iocp_fast_batch   iocp_fast with the dispatcher taking up to 16 completions per GetQueuedCompletionStatusEx
//
// Benchmarks:
//   pingpong_64B/<config>   one connection; the client sends 64 bytes, receives the 64-byte echo, and starts
//                           the next round trip only when both its send and its receive have completed.
//                           items_per_second = round trips per second.
//   stream_64KiB/<config>   one direction; the sender keeps 4 sends of 64 KiB in flight, the receiver
//                           drains with one 64 KiB receive at a time. bytes_per_second = throughput.
//
// Both ends of a connection use the configuration under test (the echo peer of the ping-pong and the
// receiver of the stream are built the same way as the measured side): a round trip then costs what two
// peers built that way cost, and the difference between configurations is not diluted by a peer that is
// the same for all of them. The protocol (what is sent, when the next IO starts) is written once, over a
// small transport interface that each configuration implements, so that only the IO mechanism differs.
// The pieces live beside this file: loopback_common.hpp (workload, end-of-batch signal, the transport
// interface), protocols.hpp (the protocols), transports.hpp (one transport and connection per configuration).
//
// Each benchmark iteration is one batch of IO chained from completion callbacks; the benchmark thread only
// starts the batch and waits for its end (wall-clock time, UseRealTime). Connection set-up and a warm-up
// batch are not timed.
//
//   bench_loopback [--quick] [--pingpong_iterations=N] [--stream_iterations=N] [--mark_timed_region]
//                  [Google Benchmark flags]
//     --quick: a short smoke run; --*_iterations override the iteration counts (batches) of each benchmark;
//     --mark_timed_region: see mark_timed_region.
#include "loopback_common.hpp"
#include "protocols.hpp"
#include "transports.hpp"

#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <utility>

namespace
{

using namespace bench_loopback;

// ---------------------------------------------------------------------------------------------------------
// The benchmarks.

// With --mark_timed_region, the timed loop of each benchmark is framed by the creation of a named event, a
// request that shows with its name in Wine's request trace (WINEDEBUG=+server): scripts/bench_wine_requests.py
// counts the wineserver requests between the two marks. `operations` is the work of the timed loop (round
// trips, or bytes).
void mark_timed_region(const char* what, const std::string& benchmark, std::uint64_t operations)
{
    if (!work.mark_timed_region)
    {
        return;
    }
    const std::string text =
        std::string("async_socket_bench_mark:") + what + ":" + benchmark + ":" + std::to_string(operations);
    std::wstring name(text.begin(), text.end());
    for (wchar_t& c : name)
    {
        c = c == L'\\' ? L'_' : c; // a backslash would name a namespace
    }
    if (HANDLE event = CreateEventW(nullptr, FALSE, FALSE, name.c_str()); event != nullptr)
    {
        CloseHandle(event);
    }
}

// CPU time (user + kernel) of every thread of this process so far, in microseconds (GetProcessTimes; Wine
// does not count the time its wineserver spends on the process's requests).
double process_cpu_us() noexcept
{
    FILETIME created{};
    FILETIME exited{};
    FILETIME kernel{};
    FILETIME user{};
    if (!GetProcessTimes(GetCurrentProcess(), &created, &exited, &kernel, &user))
    {
        return 0.0;
    }
    const auto ticks = [](const FILETIME& time)
    { return (static_cast<std::uint64_t>(time.dwHighDateTime) << 32) | time.dwLowDateTime; };
    return static_cast<double>(ticks(kernel) + ticks(user)) / 10.0; // 100 ns ticks
}

// Shuts the connection down on every way out, while the protocol objects it calls back still exist.
template <class Connection>
struct shutdown_at_exit
{
    Connection& connection;
    ~shutdown_at_exit()
    {
        connection.shutdown();
    }
};

// The start of every row: a batch signal and the Connection that raises it (the row is skipped when either could
// not be made), the protocol objects ClientSide and ServerSide over the connection's two ends, then
// row(signal, connection, client, server).
template <class Connection, template <class> class ClientSide, template <class> class ServerSide>
void with_row_objects(benchmark::State& state, auto&& row)
{
    batch_signal signal;
    Connection connection(signal);
    if (!signal.valid() || !connection.ok())
    {
        state.SkipWithError(connection.ok() ? "CreateEvent failed" : connection.error());
        return;
    }
    using transport = typename Connection::transport_type;
    ClientSide<transport> client(connection.client(), signal);
    ServerSide<transport> server(connection.server(), signal);
    row(signal, connection, client, server);
}

// The timed loop of a row, between its timed-region marks (`units` a batch): runs `batch()` once an
// iteration and ends the row at its first failure. Returns the process CPU microseconds the loop took.
double timed_loop(benchmark::State& state, const std::string& name, std::uint64_t units, auto&& batch)
{
    mark_timed_region("begin", name, static_cast<std::uint64_t>(state.max_iterations) * units);
    const double cpu_before = process_cpu_us();
    for (auto _ : state)
    {
        if (const char* failure = batch(); failure != nullptr)
        {
            state.SkipWithError(failure);
            break;
        }
    }
    const double cpu_after = process_cpu_us();
    mark_timed_region("end", name, static_cast<std::uint64_t>(state.max_iterations) * units);
    return cpu_after - cpu_before;
}

template <class Connection>
void pingpong(benchmark::State& state, const std::string& name)
{
    with_row_objects<Connection, pingpong_client, echo_server>(
        state,
        [&](batch_signal& signal, Connection& connection, auto& client, auto& server)
        {
            shutdown_at_exit<Connection> at_exit{connection};

            connection.run([&] { server.start(); });
            signal.arm(1);
            connection.run([&] { client.start_batch(work.pingpong_batch / 4 + 1); });
            if (const char* failure = signal.wait(); failure != nullptr)
            {
                state.SkipWithError(failure);
                return;
            }

            const std::uint32_t batch = work.pingpong_batch;
            const double cpu_us = timed_loop(state, name, batch,
                                             [&]
                                             {
                                                 signal.arm(1);
                                                 connection.run([&] { client.start_batch(batch); });
                                                 return signal.wait();
                                             });
            const auto round_trips = static_cast<std::int64_t>(state.iterations()) * batch;
            state.SetItemsProcessed(round_trips);
            state.counters["cpu_us_per_round_trip"] = cpu_us / static_cast<double>(round_trips);
        });
}

template <class Connection>
void stream(benchmark::State& state, const std::string& name)
{
    with_row_objects<Connection, stream_sender, stream_receiver>(
        state,
        [&](batch_signal& signal, Connection& connection, auto& sender, auto& receiver)
        {
            if (!sender.valid() || !receiver.valid())
            {
                state.SkipWithError("out of memory");
                return;
            }
            shutdown_at_exit<Connection> at_exit{connection};

            connection.run([&] { receiver.start(); });
            const auto run_batch = [&](std::uint32_t blocks)
            {
                signal.arm(2); // the receiver has every byte, and every send has completed
                receiver.expect(static_cast<std::uint64_t>(blocks) * block_size);
                connection.run([&sender, blocks] { sender.start_batch(blocks); });
                return signal.wait();
            };
            if (const char* failure = run_batch(work.stream_batch_blocks / 4 + 1); failure != nullptr)
            {
                state.SkipWithError(failure);
                return;
            }

            const std::uint32_t blocks = work.stream_batch_blocks;
            const auto batch_bytes = static_cast<std::uint64_t>(blocks) * block_size;
            const double cpu_us = timed_loop(state, name, batch_bytes, [&] { return run_batch(blocks); });
            const auto bytes = static_cast<std::int64_t>(state.iterations()) * blocks * block_size;
            state.SetBytesProcessed(bytes);
            state.counters["cpu_us_per_MiB"] = cpu_us / (static_cast<double>(bytes) / (1024.0 * 1024.0));
        });
}

using spec_default_socket = async_socket::win32_async_socket;
using recycled_events_socket =
    async_socket::basic_async_socket<async_socket::basic_win32_threadpool<async_socket::win32_options{
                                         .events = async_socket::win32_event_mode::recycled}>,
                                     async_socket::heap_alloc, async_socket::win32_sync>;
using fast_socket = async_socket::win32_no_event_skip_port_async_socket;
using iocp_fast_socket = async_socket::win32_iocp_async_socket;
using iocp_socket =
    async_socket::basic_async_socket<async_socket::basic_win32_iocp_threadpool<async_socket::win32_options{
                                         .events = async_socket::win32_event_mode::none}>,
                                     async_socket::recycling_pool_alloc, async_socket::win32_sync>;

template <class Connection>
void add(const char* config)
{
    const std::string pingpong_name = std::string("pingpong_64B/") + config;
    const std::string stream_name = std::string("stream_64KiB/") + config;
    benchmark::RegisterBenchmark(pingpong_name.c_str(), &pingpong<Connection>, pingpong_name)
        ->Iterations(work.pingpong_iterations)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(stream_name.c_str(), &stream<Connection>, stream_name)
        ->Iterations(work.stream_iterations)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
}

void register_all()
{
    add<library_connection<spec_default_socket>>("spec_default");
    add<library_connection<recycled_events_socket>>("recycled_events");
    add<library_connection<fast_socket>>("fast");
    add<raw_connection<true, false>>("raw_event_per_io");
    add<raw_connection<false, false>>("raw");
    add<raw_connection<false, true>>("raw_skip");
#if ASYNC_SOCKET_BENCH_HAVE_ASIO
    add<asio_connection>("asio");
#endif
    add<library_connection<iocp_fast_socket>>("iocp_fast");
    add<library_connection<iocp_socket>>("iocp");
    add<library_connection<iocp_fast_socket, iocp_engine<16>>>("iocp_fast_batch");
}

} // namespace

int main(int argc, char** argv)
{
    // --quick, --pingpong_iterations=N and --stream_iterations=N are ours; the rest is Google Benchmark's.
    int kept = 1;
    for (int i = 1; i < argc; ++i)
    {
        unsigned long value = 0;
        if (std::strcmp(argv[i], "--quick") == 0)
        {
            work = workload{20, 3, 16, 2, work.mark_timed_region};
        }
        else if (std::strcmp(argv[i], "--mark_timed_region") == 0)
        {
            work.mark_timed_region = true;
        }
        else if (std::sscanf(argv[i], "--pingpong_iterations=%lu", &value) == 1 && value > 0)
        {
            work.pingpong_iterations = static_cast<std::uint32_t>(value);
        }
        else if (std::sscanf(argv[i], "--stream_iterations=%lu", &value) == 1 && value > 0)
        {
            work.stream_iterations = static_cast<std::uint32_t>(value);
        }
        else
        {
            argv[kept++] = argv[i];
        }
    }
    argc = kept;

    async_socket::testing::wsa_session wsa;
    if (!wsa.ok())
    {
        std::fprintf(stderr, "bench_loopback: WSAStartup failed: %d\n", wsa.result);
        return 1;
    }
    benchmark::AddCustomContext("pool_min_threads", std::to_string(pool_min_threads));
    benchmark::AddCustomContext("pingpong_round_trips_per_iteration", std::to_string(work.pingpong_batch));
    benchmark::AddCustomContext("stream_bytes_per_iteration",
                                std::to_string(static_cast<std::uint64_t>(work.stream_batch_blocks) * block_size));
    benchmark::AddCustomContext("stream_sends_in_flight", std::to_string(stream_depth));
#if ASYNC_SOCKET_BENCH_HAVE_ASIO
    benchmark::AddCustomContext("asio_version", std::to_string(ASIO_VERSION));
#endif
    register_all();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
    {
        return 2;
    }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
