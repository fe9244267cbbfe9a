// Native benchmarks: the cost of one send and one receive (submit + completion) through basic_async_socket
// over the inline threadpool, for each AllocPolicy and for 1, 4, 16 and 64 buffers, beside a hand-written
// baseline that does only the work no implementation can skip. Also: the cost of one allocate+deallocate
// pair of an IO context's size for recycling_pool_alloc, its shared lists alone (spin lock or std::mutex) and
// a per-thread sketch, and the per-IO event path once.
//
// The same IO three ways, for the C++ API's cost: send/ and receive/ rows call the C callback (a function
// pointer and a void*), send_lambda/ and receive_lambda/ give a lambda handler (send_async(span, lambda)),
// send_coroutine/ and receive_coroutine/ run the benchmark's loop inside a coroutine that co_awaits
// async_send/async_receive (every IO completes during the call, so the coroutine never suspends: what is measured
// is the awaiter's own work per IO). Every row counts heap allocations in its timed loop (allocs_per_io,
// bench/common/alloc_counter.hpp): heap_alloc rows show the context's 1 per IO; recycling rows show 1 in the whole
// timed loop, whatever its length: the first IO of the row's new socket, whose pool starts empty (a backtrace
// shows recycling_pool_alloc::allocate_slow), then none. harness/empty_loop shows that the harness adds none.
//
// Run (docs/benchmarks.md, "Native"):
//   cmake --preset release && cmake --build --preset release -j2 --target bench_native
//   build/release/bench/bench_native --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// scripts/bench_native_table.py turns the JSON of several runs into the table of the docs;
// scripts/bench_native_callgrind.sh counts the instructions per IO.
#include <async_socket/basic_async_socket.hpp>
#include <async_socket/alloc/heap_alloc.hpp>
#include <async_socket/alloc/recycling_pool_alloc.hpp>
#include <async_socket/alloc/std_allocator_alloc.hpp>
#include <async_socket/sync/std_sync.hpp>
#include "inline_threadpool.hpp"
#include "../common/alloc_counter.hpp"
#include "../common/bench_main.hpp"

#include <benchmark/benchmark.h>

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <utility>

namespace
{

using async_socket::status;
using async_socket::testing::inline_engine;
using async_socket::testing::inline_event_threadpool;
using async_socket::testing::inline_threadpool;
using async_socket::testing::inline_wsabuf;
using inline_calls = async_socket::testing::inline_win32_calls<false>;

constexpr std::uint32_t max_buffers = 64;
constexpr std::uint32_t bytes_per_buffer = 512;

// The payload: `count` buffers of 512 bytes each, over one static array.
struct payload
{
    static inline char memory[max_buffers * bytes_per_buffer];
    ASYNC_SOCKET_BUFFER buffers[max_buffers];
    std::uint32_t count;

    explicit payload(std::uint32_t buffer_count) noexcept : count(buffer_count)
    {
        for (std::uint32_t i = 0; i < max_buffers; ++i)
        {
            buffers[i] = ASYNC_SOCKET_BUFFER{memory + i * bytes_per_buffer, bytes_per_buffer};
        }
    }
};

// What the user's callbacks do: count the completions that went well.
struct tally
{
    std::uint64_t ok = 0;

    static void on_send(void* context, ASYNC_SOCKET_SEND_RESULT result)
    {
        static_cast<tally*>(context)->ok += result == ASYNC_SOCKET_SEND_OK ? 1 : 0;
    }

    static void on_receive(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes)
    {
        static_cast<tally*>(context)->ok += (result == ASYNC_SOCKET_RECEIVE_OK && bytes != 0) ? 1 : 0;
    }
};

void noop_open(void*, ASYNC_SOCKET_OPEN_RESULT) {}

void check_all_completed(benchmark::State& state, const tally& seen)
{
    if (seen.ok != static_cast<std::uint64_t>(state.iterations()))
    {
        state.SkipWithError("an IO did not complete with OK");
    }
}

// ---- the library ---------------------------------------------------------------------------------------

enum class io_direction
{
    send,
    receive
};

// How the user is told of the IO's end: the spec's C callback, a lambda, a coroutine. lambda_in_coroutine: the
// lambda path started from inside the coroutine's loop, no co_await: the cost of running the loop in a coroutine
// frame by itself (its locals live in the frame), apart from the awaiter's.
enum class handler_kind
{
    function_pointer,
    lambda,
    coroutine,
    lambda_in_coroutine
};

// The benchmarks' coroutine: starts at once, and keeps its frame at the end so that the caller can see that it
// ran to its end (done()) before destroying it.
struct bench_task
{
    struct promise_type
    {
        bench_task get_return_object() noexcept
        {
            return bench_task{std::coroutine_handle<promise_type>::from_promise(*this)};
        }
        std::suspend_never initial_suspend() noexcept
        {
            return {};
        }
        std::suspend_always final_suspend() noexcept
        {
            return {};
        }
        void return_void() noexcept {}
        void unhandled_exception() noexcept
        {
            std::abort();
        }
    };
    explicit bench_task(std::coroutine_handle<promise_type> handle) noexcept : coroutine(handle) {}
    bench_task(bench_task&& other) noexcept : coroutine(std::exchange(other.coroutine, nullptr)) {}
    bench_task& operator=(bench_task&&) = delete;
    ~bench_task()
    {
        if (coroutine)
        {
            coroutine.destroy();
        }
    }
    std::coroutine_handle<promise_type> coroutine;
};

// One IO by the function pointer or the lambda path.
template <io_direction Direction, handler_kind Handler, class Socket>
status start_io(Socket& socket, payload& data, tally& seen) noexcept
{
    const std::span<const ASYNC_SOCKET_BUFFER> buffers(data.buffers, data.count);
    if constexpr (Handler == handler_kind::function_pointer)
    {
        if constexpr (Direction == io_direction::send)
        {
            return socket.send_async(data.buffers, data.count, &tally::on_send, &seen);
        }
        else
        {
            return socket.receive_async(data.buffers, data.count, &tally::on_receive, &seen);
        }
    }
    else if constexpr (Direction == io_direction::send)
    {
        return socket.send_async(buffers, [&seen](async_socket::send_result r) noexcept { seen.ok += r.ok() ? 1 : 0; });
    }
    else
    {
        return socket.receive_async(buffers, [&seen](async_socket::receive_result r) noexcept
                                    { seen.ok += (r.ok() && r.bytes != 0) ? 1 : 0; });
    }
}

// The timed loop inside a coroutine: each IO is a co_await (or, for lambda_in_coroutine, a call with a lambda).
// allocations: those of the timed loop alone (the
// frame is made before it). No warm-up of its own in any row (a second call site changes what g++ inlines): the
// pools are warm from Google Benchmark's earlier calls of the same row before the run it reports.
template <io_direction Direction, handler_kind Handler, class Socket>
bench_task coroutine_loop(benchmark::State& state, Socket& socket, payload& data, tally& seen,
                          std::uint64_t& allocations)
{
    const std::span<const ASYNC_SOCKET_BUFFER> buffers(data.buffers, data.count);
    const std::uint64_t before = alloc_counter::allocations.load();
    for (auto _ : state)
    {
        if constexpr (Handler == handler_kind::lambda_in_coroutine)
        {
            status result = start_io<Direction, handler_kind::lambda>(socket, data, seen);
            benchmark::DoNotOptimize(result);
        }
        else if constexpr (Direction == io_direction::send)
        {
            const async_socket::send_result r = co_await socket.async_send(buffers);
            seen.ok += r.ok() ? 1 : 0;
        }
        else
        {
            const async_socket::receive_result r = co_await socket.async_receive(buffers);
            seen.ok += (r.ok() && r.bytes != 0) ? 1 : 0;
        }
        benchmark::ClobberMemory();
    }
    allocations = alloc_counter::allocations.load() - before;
    co_return;
}

template <class Threadpool, class Alloc, io_direction Direction, handler_kind Handler = handler_kind::function_pointer>
void bm_socket(benchmark::State& state)
{
    using socket_type = async_socket::basic_async_socket<Threadpool, Alloc, async_socket::std_sync>;
    inline_engine engine;
    auto socket = socket_type::create(&engine, reinterpret_cast<SOCKET_HANDLE>(std::uintptr_t{1}));
    if (!socket || socket->open_async(&noop_open, nullptr) != status::ok)
    {
        state.SkipWithError("the socket did not open");
        return;
    }
    payload data(static_cast<std::uint32_t>(state.range(0)));
    tally seen;
    std::uint64_t allocations = 0;
    if constexpr (Handler == handler_kind::coroutine || Handler == handler_kind::lambda_in_coroutine)
    {
        const bench_task loop = coroutine_loop<Direction, Handler>(state, *socket, data, seen, allocations);
        if (!loop.coroutine.done())
        {
            // Every IO here completes during its call; a suspended loop would mean one never completed.
            state.SkipWithError("the coroutine did not run to its end");
            (void)socket->close();
            return;
        }
    }
    else
    {
        const std::uint64_t before = alloc_counter::allocations.load();
        for (auto _ : state)
        {
            status result = start_io<Direction, Handler>(*socket, data, seen);
            benchmark::DoNotOptimize(result);
            benchmark::ClobberMemory();
        }
        allocations = alloc_counter::allocations.load() - before;
    }
    check_all_completed(state, seen);
    state.SetItemsProcessed(state.iterations());
    if constexpr (alloc_counter::available)
    {
        state.counters["allocs_in_loop"] = static_cast<double>(allocations);
        state.counters["allocs_per_io"] =
            static_cast<double>(allocations) / static_cast<double>(state.iterations() == 0 ? 1 : state.iterations());
    }
    (void)socket->close();
}

// ---- the hand-written baseline -------------------------------------------------------------------------
// Only what any implementation of the contract must do per IO: validate the buffers and sum their lengths,
// fill the WSABUF array (here in a local array), keep the callback, call WSASend/WSARecv with an
// OVERLAPPED, and on completion check the byte count and call the user's callback. No state machine, no
// pending-call counter, no heap, no event.

struct baseline_io
{
    async_socket::testing::inline_overlapped overlapped; // first, as in the library's context
    std::uint32_t total_length;
    void* callback_context;
    ON_ASYNC_SOCKET_SEND_COMPLETE on_send;
    ON_ASYNC_SOCKET_RECEIVE_COMPLETE on_receive;
};

void baseline_complete(void* /*callback_context*/, void* overlapped, async_socket::win32_error io_result,
                       std::size_t bytes) noexcept
{
    auto* io = static_cast<baseline_io*>(overlapped);
    if (io->on_send != nullptr)
    {
        io->on_send(io->callback_context, io_result == async_socket::win32_no_error && bytes == io->total_length
                                              ? ASYNC_SOCKET_SEND_OK
                                              : ASYNC_SOCKET_SEND_ERROR);
    }
    else
    {
        const bool ok = io_result == async_socket::win32_no_error && bytes <= io->total_length;
        io->on_receive(io->callback_context, ok ? ASYNC_SOCKET_RECEIVE_OK : ASYNC_SOCKET_RECEIVE_ERROR,
                       ok ? static_cast<std::uint32_t>(bytes) : 0);
    }
}

template <io_direction Direction>
[[gnu::noinline]] status baseline_io_call(inline_calls& threadpool, const ASYNC_SOCKET_BUFFER* buffers,
                                          std::uint32_t buffer_count, ON_ASYNC_SOCKET_SEND_COMPLETE on_send,
                                          ON_ASYNC_SOCKET_RECEIVE_COMPLETE on_receive, void* context) noexcept
{
    if (buffers == nullptr || buffer_count == 0 || buffer_count > max_buffers ||
        (on_send == nullptr && on_receive == nullptr))
    {
        return status::invalid_argument;
    }
    // One pass validates each buffer, sums the lengths and fills the WSABUF array.
    inline_wsabuf os_buffers[max_buffers];
    std::uint64_t total = 0;
    for (std::uint32_t i = 0; i < buffer_count; ++i)
    {
        const ASYNC_SOCKET_BUFFER& buffer = buffers[i];
        if (buffer.buffer == nullptr || buffer.length == 0)
        {
            return status::invalid_argument;
        }
        inline_calls::set_buffer(os_buffers[i], buffer.buffer, buffer.length);
        total += buffer.length;
    }
    if (total > UINT32_MAX)
    {
        return status::size_overflow;
    }
    baseline_io io{};
    io.total_length = static_cast<std::uint32_t>(total);
    io.callback_context = context;
    io.on_send = on_send;
    io.on_receive = on_receive;
    inline_calls::set_overlapped_event(io.overlapped, 0);
    std::uint32_t flags = 0;
    const async_socket::win32_error issued =
        Direction == io_direction::send
            ? threadpool.send(nullptr, os_buffers, buffer_count, nullptr, 0, &io.overlapped)
            : threadpool.receive(nullptr, os_buffers, buffer_count, nullptr, &flags, &io.overlapped);
    return issued == async_socket::win32_no_error ? status::ok : status::os_error;
}

template <io_direction Direction>
void bm_baseline(benchmark::State& state)
{
    inline_engine engine;
    inline_calls threadpool;
    (void)threadpool.acquire_pool(&engine);
    (void)threadpool.create_io<&baseline_complete>(nullptr, nullptr);
    payload data(static_cast<std::uint32_t>(state.range(0)));
    tally seen;
    for (auto _ : state)
    {
        status result;
        if constexpr (Direction == io_direction::send)
        {
            result = baseline_io_call<Direction>(threadpool, data.buffers, data.count, &tally::on_send, nullptr, &seen);
        }
        else
        {
            result =
                baseline_io_call<Direction>(threadpool, data.buffers, data.count, nullptr, &tally::on_receive, &seen);
        }
        benchmark::DoNotOptimize(result);
        benchmark::ClobberMemory();
    }
    check_all_completed(state, seen);
    state.SetItemsProcessed(state.iterations());
}

// ---- how a pool guards its free lists: one allocate + deallocate of a 1-buffer context ------------------

// std::mutex behind the pool's Lock interface (lock() cannot fail here in practice).
class mutex_lock
{
public:
    void lock() noexcept
    {
        mutex_.lock();
    }
    void unlock() noexcept
    {
        mutex_.unlock();
    }

private:
    std::mutex mutex_;
};

// A pool without its thread caches: every block goes through the shared lists, under their lock. With the spin
// lock, what the thread caches save; with std::mutex, the lock the shared lists could have had.
template <class Pool>
struct shared_only : Pool
{
    shared_only() noexcept : Pool(async_socket::recycling_pool_options{.thread_cache_blocks = 0}) {}
};

using shared_only_pool_alloc = shared_only<async_socket::recycling_pool_alloc>;
using mutex_pool_alloc = shared_only<async_socket::basic_recycling_pool_alloc<async_socket::heap_alloc, mutex_lock>>;

// A lower bound for a per-thread cache: one block per class per thread, no atomics, no bookkeeping. A sketch
// for measuring only: it shares nothing between threads, so a block freed on a completion thread never
// returns to the thread that allocates, and its blocks outlive any pool (they go at thread exit).
using size_classes = async_socket::recycling_pool_alloc;

struct per_thread_cache
{
    void* slots[size_classes::class_count] = {};
    ~per_thread_cache()
    {
        for (void* slot : slots)
        {
            std::free(slot);
        }
    }
};

thread_local per_thread_cache sketch_cache;

struct per_thread_sketch_alloc
{
    static void* allocate(std::size_t size) noexcept
    {
        const unsigned index = size_classes::class_index(size);
        if (index < size_classes::class_count && sketch_cache.slots[index] != nullptr)
        {
            void* p = sketch_cache.slots[index];
            sketch_cache.slots[index] = nullptr;
            return p;
        }
        return std::malloc(index < size_classes::class_count ? size_classes::class_size(index) : size);
    }

    static void deallocate(void* p, std::size_t size) noexcept
    {
        const unsigned index = size_classes::class_index(size);
        if (index < size_classes::class_count && sketch_cache.slots[index] == nullptr)
        {
            sketch_cache.slots[index] = p;
            return;
        }
        std::free(p);
    }
};

template <class Alloc>
void bm_alloc_pair(benchmark::State& state)
{
    Alloc alloc{};
    const auto size = static_cast<std::size_t>(state.range(0));
    alloc.deallocate(alloc.allocate(size), size); // warm
    for (auto _ : state)
    {
        void* p = alloc.allocate(size);
        benchmark::DoNotOptimize(p);
        alloc.deallocate(p, size);
        benchmark::ClobberMemory();
    }
}

// The size of a context with one buffer over the inline threadpool (what a 1-buffer send allocates).
constexpr std::size_t one_buffer_context =
    async_socket::detail::io_context_layout<async_socket::detail::io_context_header<inline_threadpool::io_state>,
                                            inline_wsabuf>::size(1);

using std_alloc = async_socket::std_allocator_alloc<std::allocator<std::byte>>;

template <class Threadpool, class Alloc>
void register_socket(const std::string& name)
{
    for (const io_direction direction : {io_direction::send, io_direction::receive})
    {
        const std::string full = (direction == io_direction::send ? "send/" : "receive/") + name;
        auto* registered =
            direction == io_direction::send
                ? benchmark::RegisterBenchmark(full.c_str(), &bm_socket<Threadpool, Alloc, io_direction::send>)
                : benchmark::RegisterBenchmark(full.c_str(), &bm_socket<Threadpool, Alloc, io_direction::receive>);
        registered->Arg(1)->Arg(4)->Arg(16)->Arg(64);
    }
}

// The allocation counter around a timed loop that does nothing: what Google Benchmark itself allocates in a timed
// loop (0 with benchmark 1.7.1), so that the rows' allocs_in_loop are the library's alone.
void bm_empty_loop(benchmark::State& state)
{
    const std::uint64_t before = alloc_counter::allocations.load();
    for (auto _ : state)
    {
        benchmark::ClobberMemory();
    }
    state.counters["allocs_in_loop"] = static_cast<double>(alloc_counter::allocations.load() - before);
}

template <class Alloc>
void register_handler_rows(const std::string& alloc_name)
{
    const auto add = [&](const char* row, void (*function)(benchmark::State&))
    { benchmark::RegisterBenchmark((std::string(row) + "/" + alloc_name).c_str(), function)->Arg(1)->Arg(16); };
    add("send_lambda", &bm_socket<inline_threadpool, Alloc, io_direction::send, handler_kind::lambda>);
    add("receive_lambda", &bm_socket<inline_threadpool, Alloc, io_direction::receive, handler_kind::lambda>);
    add("send_coroutine", &bm_socket<inline_threadpool, Alloc, io_direction::send, handler_kind::coroutine>);
    add("receive_coroutine", &bm_socket<inline_threadpool, Alloc, io_direction::receive, handler_kind::coroutine>);
    add("send_lambda_in_coroutine",
        &bm_socket<inline_threadpool, Alloc, io_direction::send, handler_kind::lambda_in_coroutine>);
    add("receive_lambda_in_coroutine",
        &bm_socket<inline_threadpool, Alloc, io_direction::receive, handler_kind::lambda_in_coroutine>);
}

void register_all()
{
    benchmark::RegisterBenchmark("send/baseline", &bm_baseline<io_direction::send>)->Arg(1)->Arg(4)->Arg(16)->Arg(64);
    benchmark::RegisterBenchmark("receive/baseline", &bm_baseline<io_direction::receive>)
        ->Arg(1)
        ->Arg(4)
        ->Arg(16)
        ->Arg(64);
    register_socket<inline_threadpool, async_socket::heap_alloc>("heap_alloc");
    register_socket<inline_threadpool, async_socket::recycling_pool_alloc>("recycling_pool_alloc");
    register_socket<inline_threadpool, std_alloc>("std_allocator_alloc");
    register_socket<inline_threadpool, shared_only_pool_alloc>("recycling_pool_alloc_shared_only");
    register_socket<inline_threadpool, mutex_pool_alloc>("recycling_pool_alloc_mutex");
    register_socket<inline_threadpool, per_thread_sketch_alloc>("per_thread_sketch");

    // The C++ API beside the function pointer rows above (send/<alloc>/1): lambda handlers and coroutines.
    register_handler_rows<async_socket::recycling_pool_alloc>("recycling_pool_alloc");
    benchmark::RegisterBenchmark("harness/empty_loop", &bm_empty_loop);
    register_handler_rows<async_socket::heap_alloc>("heap_alloc");

    // The spec's per-IO event (create_event/close_event, which do nothing here: the core's cost of the path).
    benchmark::RegisterBenchmark("send_with_event/heap_alloc",
                                 &bm_socket<inline_event_threadpool, async_socket::heap_alloc, io_direction::send>)
        ->Arg(1);
    benchmark::RegisterBenchmark(
        "send_with_event/recycling_pool_alloc",
        &bm_socket<inline_event_threadpool, async_socket::recycling_pool_alloc, io_direction::send>)
        ->Arg(1);

    const auto size = static_cast<std::int64_t>(one_buffer_context);
    benchmark::RegisterBenchmark("alloc_pair/heap_alloc", &bm_alloc_pair<async_socket::heap_alloc>)->Arg(size);
    benchmark::RegisterBenchmark("alloc_pair/recycling_pool_alloc", &bm_alloc_pair<async_socket::recycling_pool_alloc>)
        ->Arg(size);
    benchmark::RegisterBenchmark("alloc_pair/pool_shared_only", &bm_alloc_pair<shared_only_pool_alloc>)->Arg(size);
    benchmark::RegisterBenchmark("alloc_pair/pool_mutex", &bm_alloc_pair<mutex_pool_alloc>)->Arg(size);
    benchmark::RegisterBenchmark("alloc_pair/per_thread_sketch", &bm_alloc_pair<per_thread_sketch_alloc>)->Arg(size);
    benchmark::RegisterBenchmark("alloc_pair/std_allocator_alloc", &bm_alloc_pair<std_alloc>)->Arg(size);
}

} // namespace

int main(int argc, char** argv)
{
    register_all();
    return bench_common::run_benchmarks(argc, argv);
}
