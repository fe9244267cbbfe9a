/// @file
/// async_socket: the Win32 backend over a plain IO completion port, run by threads of its own.
///
/// What it is. win32_iocp_engine owns one IO completion port and N dispatcher threads (1 by default) that
/// loop on GetQueuedCompletionStatus (or GetQueuedCompletionStatusEx, to take several at once) and run each
/// completion on the thread that dequeued it.
/// basic_win32_iocp_threadpool<win32_options{...}> is the backend over such an engine: the same protocol of one IO
/// as threadpool IO (win32_threadpool_backend, threadpool_backend.hpp) over another layer of calls,
/// detail::win32_iocp_calls. It binds each socket to the engine's port (CreateIoCompletionPort) instead of making a
/// threadpool IO, and keeps the count of outstanding IO itself. WSASend, WSARecv, CancelIoEx, the events and skip
/// mode are those of threadpool IO (detail::win32_socket_calls, their shared base), with the same options and
/// results. A port binding has no callback environment and no cleanup group: those four calls are empty here.
///
/// When to pick it over threadpool IO. Threadpool IO under Wine takes every completion on a thread of its own
/// and hands it to a worker thread: a wake-up and a thread switch per completion. Here the thread that dequeues
/// the completion runs it, with no hand-off, and with one dispatcher thread both ends of a connection complete on
/// the same thread, the way Asio runs one io_context on one thread. Pick it for many short IOs on few
/// connections, where the hand-off dominates (docs/benchmarks.md); keep threadpool IO when callbacks block or
/// run long, or when the OS should size the pool.
///
/// Rules.
/// - Every socket made on an engine is destroyed before the engine. Each socket keeps a reference to its engine
///   (acquire_pool), so the engine lives until the last socket and the user's handle are gone; the last release
///   stops and joins the dispatcher threads, so it must not run on one of them (it cannot: the socket whose
///   callback runs there holds a reference).
/// - A callback runs on a dispatcher thread and blocks it while it runs: with one thread, every other
///   completion of the engine waits. A close or destroy of a socket with IO in flight, from a callback on a
///   one-thread engine, would wait forever for a completion that only that thread can deliver; it aborts with a
///   message instead (as destroy from one's own callback does in the core).
/// - After a socket object is destroyed, its SOCKET stays bound to the port (as with threadpool IO) and must not
///   be used for overlapped IO again: its completions would name a binding that no longer exists. Close it.
///
/// Why the counting. WaitForThreadpoolIoCallbacks and CancelThreadpoolIo rest on the threadpool's count of IO
/// started (StartThreadpoolIo) and not yet completed. A completion port keeps no such count, so each binding
/// keeps one: start_io adds one, cancel_io takes one off (the IO did not start, or finished at once in skip
/// mode), and a dispatcher takes one off after the completion routine returns. wait_for_io_callbacks waits on
/// the count with WaitOnAddress; only a waiting close pays for a wake (a flag in the count says one waits).
///
/// Error codes. A failed IO reaches the port with its NTSTATUS in the OVERLAPPED's Internal member. The
/// threadpool hands its callback RtlNtStatusToDosError of that status; the dispatcher does the same (the
/// function is looked up in ntdll when the engine is made), so the backend classifies the same Win32 codes from
/// both: 995 for a cancelled IO, 64 for a reset connection, and so on.
#pragma once

#include <winsock2.h>
#include <windows.h>

#include <async_socket/basic_async_socket.hpp>
#include <async_socket/concepts.hpp>
#include <async_socket/alloc/recycling_pool_alloc.hpp>
#include <async_socket/types.h>
#include <async_socket/backend/win32/win32_sync.hpp>
#include <async_socket/backend/win32/threadpool.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <utility>

namespace async_socket
{

/// The size of a win32_iocp_engine.
struct win32_iocp_engine_parameters
{
    /// Dispatcher threads, 1 to win32_iocp_engine::max_thread_count. One is Asio's set-up: every completion
    /// of the engine runs on that thread, in order.
    std::uint32_t thread_count = 1;
    /// Completions a dispatcher takes from the port per call, 1 to win32_iocp_engine::max_entries_per_dequeue.
    /// 1 (the default) calls GetQueuedCompletionStatus, as Asio does; more calls GetQueuedCompletionStatusEx,
    /// whose entries then run one after the other on that thread. Batching saves system calls when completions
    /// pile up (on Windows, under load), at the price of parallelism with several threads. Under Wine it never
    /// pays: Wine's GetQueuedCompletionStatusEx asks the wineserver once per entry and once more to learn that
    /// the port is empty, one request more per wake-up (measured in docs/benchmarks.md), hence the default.
    std::uint32_t entries_per_dequeue = 1;
};

class win32_iocp_engine;

namespace detail
{
/// The engine whose dispatcher this thread is, if any.
inline thread_local const win32_iocp_engine* current_iocp_engine = nullptr;

/// A socket's binding to the port; its address is the completion key of the socket's IO. Lives in the
/// socket's backend, so it does not move once create_io has run.
struct iocp_binding
{
    /// In `outstanding` beside the count: a wait_for_io_callbacks is waiting for the count to reach 0.
    static constexpr LONG waiter_flag = 0x40000000;

    win32_completion_routine completion = nullptr;
    void* context = nullptr;
    volatile LONG outstanding = 0; ///< IO started and not yet done, plus waiter_flag while a wait is under way

    /// One IO is done (completion routine returned, or the IO did not start). Touches nothing of the binding
    /// after the decrement but its address: the socket may be destroyed as soon as a waiter sees the count at 0.
    void done_one() noexcept
    {
        volatile LONG* const word = &outstanding;
        if (InterlockedDecrement(word) == waiter_flag)
        {
            WakeByAddressAll(const_cast<LONG*>(word));
        }
    }
};
} // namespace detail

/// An IO completion port and its dispatcher threads. Made by create(), shared by reference counting: the
/// handle create() returns holds one reference, each socket made on the engine another.
class win32_iocp_engine
{
public:
    static constexpr std::uint32_t max_thread_count = 64;        ///< the most dispatcher threads an engine may have
    static constexpr std::uint32_t max_entries_per_dequeue = 64; ///< the most completions one dequeue may take

    /// Drops the reference the handle holds.
    struct releaser
    {
        /// release(engine).
        void operator()(win32_iocp_engine* engine) const noexcept
        {
            release(engine);
        }
    };
    /// An owned reference to an engine.
    using handle = std::unique_ptr<win32_iocp_engine, releaser>;

    /// Makes an engine with one reference (the handle's) and starts its threads. Returns a null handle on
    /// failure, with GetLastError() saying why: ERROR_INVALID_PARAMETER when a parameter is out of its range,
    /// ERROR_NOT_ENOUGH_MEMORY, ERROR_PROC_NOT_FOUND when ntdll has no RtlNtStatusToDosError, or the error of
    /// CreateIoCompletionPort or CreateThread.
    [[nodiscard]] static handle create(const win32_iocp_engine_parameters& parameters = {}) noexcept
    {
        if (parameters.thread_count == 0 || parameters.thread_count > max_thread_count ||
            parameters.entries_per_dequeue == 0 || parameters.entries_per_dequeue > max_entries_per_dequeue)
        {
            SetLastError(ERROR_INVALID_PARAMETER);
            return nullptr;
        }
        const HMODULE ntdll = GetModuleHandleW(L"ntdll.dll");
        const FARPROC found = ntdll == nullptr ? nullptr : GetProcAddress(ntdll, "RtlNtStatusToDosError");
        if (found == nullptr)
        {
            SetLastError(ERROR_PROC_NOT_FOUND);
            return nullptr;
        }
        auto* engine = new (std::nothrow) win32_iocp_engine(parameters);
        HANDLE* threads = new (std::nothrow) HANDLE[parameters.thread_count]{};
        if (engine == nullptr || threads == nullptr)
        {
            delete engine;
            delete[] threads;
            SetLastError(ERROR_NOT_ENOUGH_MEMORY);
            return nullptr;
        }
        engine->to_win32_error_ = reinterpret_cast<status_to_error_fn>(reinterpret_cast<void (*)()>(found));
        engine->threads_ = threads;
        engine->port_ = CreateIoCompletionPort(INVALID_HANDLE_VALUE, nullptr, 0, parameters.thread_count);
        if (engine->port_ == nullptr)
        {
            const DWORD error = GetLastError();
            delete engine;
            SetLastError(error);
            return nullptr;
        }
        for (std::uint32_t i = 0; i < parameters.thread_count; ++i)
        {
            threads[i] = CreateThread(nullptr, 0, &run, engine, 0, nullptr);
            if (threads[i] == nullptr)
            {
                const DWORD error = GetLastError();
                engine->stop_threads(i);
                delete engine;
                SetLastError(error);
                return nullptr;
            }
        }
        return handle(engine);
    }

    /// Adds a reference. Does nothing on nullptr.
    static void add_ref(win32_iocp_engine* engine) noexcept
    {
        if (engine != nullptr)
        {
            (void)InterlockedIncrement(&engine->references_);
        }
    }

    /// Drops a reference. The last one posts a stop to every dispatcher thread, waits for them to end, and
    /// closes the port. Does nothing on nullptr. Every socket of the engine is gone by then (each held a
    /// reference), so no completion is left to run.
    static void release(win32_iocp_engine* engine) noexcept
    {
        if (engine == nullptr || InterlockedDecrement(&engine->references_) != 0)
        {
            return;
        }
        if (detail::current_iocp_engine == engine)
        {
            detail::usage_violation("the last reference to a win32_iocp_engine dropped on one of its own threads");
        }
        engine->stop_threads(engine->thread_count_);
        delete engine;
    }

    /// The completion port. Valid while a reference is held.
    [[nodiscard]] HANDLE port() const noexcept
    {
        return port_;
    }

    /// The number of dispatcher threads.
    [[nodiscard]] std::uint32_t thread_count() const noexcept
    {
        return thread_count_;
    }

    /// True on one of this engine's dispatcher threads.
    [[nodiscard]] bool runs_this_thread() const noexcept
    {
        return detail::current_iocp_engine == this;
    }

    win32_iocp_engine(const win32_iocp_engine&) = delete;
    win32_iocp_engine& operator=(const win32_iocp_engine&) = delete;

private:
    using status_to_error_fn = ULONG(WINAPI*)(LONG);

    explicit win32_iocp_engine(const win32_iocp_engine_parameters& parameters) noexcept
        : thread_count_(parameters.thread_count), entries_per_dequeue_(parameters.entries_per_dequeue)
    {
    }

    ~win32_iocp_engine()
    {
        if (port_ != nullptr)
        {
            (void)CloseHandle(port_);
        }
        delete[] threads_;
    }

    /// A stop packet: key 0 (no binding has address 0) and no OVERLAPPED.
    static constexpr ULONG_PTR stop_key = 0;

    /// Posts a stop packet. Posting fails only when the OS is out of memory; it is tried again, since a thread
    /// that never gets its stop would never end.
    void post_stop() const noexcept
    {
        while (!PostQueuedCompletionStatus(port_, 0, stop_key, nullptr))
        {
            Sleep(1);
        }
    }

    /// Posts one stop per started thread and waits for each to end.
    void stop_threads(std::uint32_t started) noexcept
    {
        for (std::uint32_t i = 0; i < started; ++i)
        {
            post_stop();
        }
        for (std::uint32_t i = 0; i < started; ++i)
        {
            (void)WaitForSingleObject(threads_[i], INFINITE);
            (void)CloseHandle(threads_[i]);
        }
    }

    /// A dispatcher thread: takes up to entries_per_dequeue completions at a time and runs each on this thread.
    /// It ends at its stop packet. One call may bring several stops (several threads stopping at once): this
    /// thread takes one and posts the others back for the threads still waiting.
    static DWORD WINAPI run(void* parameter) noexcept
    {
        auto* engine = static_cast<win32_iocp_engine*>(parameter);
        detail::current_iocp_engine = engine;
        OVERLAPPED_ENTRY entries[max_entries_per_dequeue];
        for (;;)
        {
            ULONG count = 0;
            // Either call fails only when the port is gone, which the engine does after this thread has ended.
            if (engine->entries_per_dequeue_ == 1)
            {
                // One at a time: GetQueuedCompletionStatus, which returns FALSE also for a failed IO (its status
                // is in the OVERLAPPED, read by dispatch) and with no OVERLAPPED when the wait itself failed.
                DWORD bytes = 0;
                ULONG_PTR key = 0;
                OVERLAPPED* overlapped = nullptr;
                if (!GetQueuedCompletionStatus(engine->port_, &bytes, &key, &overlapped, INFINITE) &&
                    overlapped == nullptr)
                {
                    break;
                }
                entries[0] = OVERLAPPED_ENTRY{key, overlapped, 0, bytes};
                count = 1;
            }
            else if (!GetQueuedCompletionStatusEx(engine->port_, entries, engine->entries_per_dequeue_, &count,
                                                  INFINITE, FALSE))
            {
                break;
            }
            ULONG stops = 0;
            for (ULONG i = 0; i < count; ++i)
            {
                if (entries[i].lpCompletionKey == stop_key)
                {
                    ++stops;
                }
                else if (entries[i].lpOverlapped != nullptr)
                {
                    engine->dispatch(*reinterpret_cast<detail::iocp_binding*>(entries[i].lpCompletionKey),
                                     *entries[i].lpOverlapped, entries[i].dwNumberOfBytesTransferred);
                }
            }
            if (stops != 0)
            {
                for (ULONG i = 1; i < stops; ++i)
                {
                    engine->post_stop();
                }
                break;
            }
        }
        detail::current_iocp_engine = nullptr;
        return 0;
    }

    /// One completion: the binding's routine with the IO's Win32 result (as threadpool IO reports it), then the
    /// binding's count. The binding is alive until that count is taken off (close and destroy wait for it).
    void dispatch(detail::iocp_binding& binding, OVERLAPPED& overlapped, DWORD bytes) const noexcept
    {
        const auto status = static_cast<LONG>(overlapped.Internal);
        const win32_error result = status == 0 ? win32_no_error : static_cast<win32_error>(to_win32_error_(status));
        binding.completion(binding.context, &overlapped, result, static_cast<std::size_t>(bytes));
        binding.done_one();
    }

    volatile LONG references_ = 1;
    HANDLE port_ = nullptr;
    HANDLE* threads_ = nullptr;
    status_to_error_fn to_win32_error_ = nullptr;
    std::uint32_t thread_count_;
    std::uint32_t entries_per_dequeue_;
};

namespace detail
{
/// The calls of win32_threadpool_backend over a win32_iocp_engine, configured by Options as threadpool IO is
/// (events, skip_completion_on_success). See the header comment; each member maps as follows:
///   acquire_pool(engine)            a reference to the engine (dropped by the destructor); fails on nullptr
///   initialize_environment, set_callback_pool, close_cleanup_group, destroy_environment   nothing to do
///   create_cleanup_group            nothing to do; succeeds
///   create_io<Fn>                   CreateIoCompletionPort(socket, port, key = the binding): once per SOCKET
///   start_io / cancel_io            the binding's count +1 / -1
///   wait_for_io_callbacks           waits until the count is 0 (WaitOnAddress)
///   close_io                        waits as above; then nothing more can arrive for the binding
///   the rest                        basic_win32_threadpool<Options>'s members (WSASend, WSARecv, events,
///                                   SetFileCompletionNotificationModes, CancelIoEx)
template <win32_options Options>
class win32_iocp_calls : public win32_socket_calls<Options>
{
    using socket_calls = detail::win32_socket_calls<Options>;

public:
    using engine_type = win32_iocp_engine*;

    win32_iocp_calls() noexcept = default;
    /// Only made before the socket binds (create moves the policy in): the binding is not yet a completion key.
    win32_iocp_calls(win32_iocp_calls&& other) noexcept
        : socket_calls(std::move(other)), engine_(std::exchange(other.engine_, nullptr))
    {
    }
    win32_iocp_calls& operator=(win32_iocp_calls&&) = delete;
    win32_iocp_calls(const win32_iocp_calls&) = delete;
    win32_iocp_calls& operator=(const win32_iocp_calls&) = delete;

    /// Drops the reference to the engine taken by acquire_pool; the last one stops the engine.
    ~win32_iocp_calls()
    {
        win32_iocp_engine::release(engine_);
    }

    /// Takes a reference to the engine. Fails on nullptr.
    bool acquire_pool(win32_iocp_engine* engine) noexcept
    {
        if (engine == nullptr)
        {
            return false;
        }
        win32_iocp_engine::add_ref(engine);
        win32_iocp_engine::release(engine_);
        engine_ = engine;
        return true;
    }

    /// No callback environment: the engine's threads are the pool.
    void initialize_environment() noexcept {}
    void set_callback_pool() noexcept {}
    void destroy_environment() noexcept {}

    /// No cleanup group either; the binding is released by close_io.
    bool create_cleanup_group() noexcept
    {
        return true;
    }
    void close_cleanup_group() noexcept {}

    /// Binds the socket to the engine's port with this policy's binding as completion key; every completion then
    /// calls Completion(callback_context, overlapped, io_result, bytes) on a dispatcher thread. Fails when the
    /// socket is not an overlapped handle or is bound to a completion port already (threadpool IO included).
    template <win32_completion_routine Completion>
    bool create_io(SOCKET_HANDLE socket, void* callback_context) noexcept
    {
        binding_.completion = Completion;
        binding_.context = callback_context;
        return CreateIoCompletionPort(static_cast<HANDLE>(socket), engine_->port(),
                                      reinterpret_cast<ULONG_PTR>(&binding_), 0) != nullptr;
    }

    /// Before every WSASend/WSARecv: one more IO outstanding. Cannot fail.
    void start_io() noexcept
    {
        (void)InterlockedIncrement(&binding_.outstanding);
    }

    /// After a WSASend/WSARecv that failed at once, or finished at once in skip mode: no completion will come
    /// for the IO counted by start_io. Cannot fail.
    void cancel_io() noexcept
    {
        binding_.done_one();
    }

    /// Blocks until no IO is outstanding and no completion routine of this socket is running. cancel_pending is
    /// not honoured: completions already queued still run (the core passes false). Must not be called from one
    /// of this socket's callbacks; from a callback of another socket on a one-thread engine, with IO
    /// outstanding, it would never return and aborts instead.
    void wait_for_io_callbacks(bool /*cancel_pending*/) noexcept
    {
        volatile LONG* const word = &binding_.outstanding;
        LONG seen = InterlockedAdd(word, detail::iocp_binding::waiter_flag);
        if (seen != detail::iocp_binding::waiter_flag && engine_->runs_this_thread() && engine_->thread_count() == 1)
        {
            detail::usage_violation("close or destroy, from a completion callback, of a socket with IO in flight "
                                    "on a one-thread win32_iocp_engine (its completion could never run)");
        }
        while (seen != detail::iocp_binding::waiter_flag)
        {
            (void)WaitOnAddress(word, &seen, sizeof(LONG), INFINITE);
            seen = InterlockedCompareExchange(word, 0, 0);
        }
        (void)InterlockedAdd(word, -detail::iocp_binding::waiter_flag);
    }

    /// Waits as wait_for_io_callbacks does (the core has done so already), after which no completion can arrive
    /// for this binding. The socket stays bound to the port: a port association cannot be undone.
    void close_io() noexcept
    {
        wait_for_io_callbacks(false);
        binding_.completion = nullptr;
        binding_.context = nullptr;
    }

private:
    win32_iocp_engine* engine_ = nullptr;
    detail::iocp_binding binding_;
};

} // namespace detail

/// The Win32 backend over a win32_iocp_engine's completion port, configured by Options.
template <win32_options Options = win32_options{}>
using basic_win32_iocp_threadpool = win32_threadpool_backend<detail::win32_iocp_calls<Options>>;

/// The spec's behaviour (an event per IO, every completion through the port) over a completion port.
using win32_iocp_threadpool = basic_win32_iocp_threadpool<>;

/// The fastest, like win32_no_event_skip_port_async_socket but over a completion port: no event, an IO done at once
/// completed on the calling thread, contexts recycled. Made with win32_iocp_async_socket::create(engine.get(),
/// socket_handle), engine from win32_iocp_engine::create().
using win32_iocp_async_socket = basic_async_socket<
    basic_win32_iocp_threadpool<win32_options{.events = win32_event_mode::none, .skip_completion_on_success = true}>,
    recycling_pool_alloc, win32_sync>;

static_assert(check_backend<win32_iocp_threadpool>());
static_assert(accepting_backend<win32_iocp_threadpool> && connecting_backend<win32_iocp_threadpool> &&
              cancellable_backend<win32_iocp_threadpool>);
static_assert(accepting_backend<win32_iocp_async_socket::backend_type> &&
              connecting_backend<win32_iocp_async_socket::backend_type>);
static_assert(check_backend<basic_win32_iocp_threadpool<win32_options{.events = win32_event_mode::none}>>());
static_assert(check_backend<basic_win32_iocp_threadpool<win32_options{.events = win32_event_mode::recycled,
                                                                      .skip_completion_on_success = true}>>());

} // namespace async_socket
