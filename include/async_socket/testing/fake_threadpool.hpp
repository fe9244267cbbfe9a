/// @file
/// async_socket testing: the Win32 backend over a fake of the Win32 calls, to test without an OS.
///
/// basic_fake_threadpool is win32_threadpool_backend (backend/win32/threadpool_backend.hpp, the protocol every
/// real Win32 socket runs) over basic_fake_threadpool_calls, a model of the Win32 calls. So a test of a socket
/// over fake_threadpool checks the core and the spec's Win32 call sequence at once.
///
/// fake_os is the world a test owns: it records every call the sockets make, in order and with its
/// arguments (call_names() reads as the Win32 call sequence), fails any call on demand, holds every
/// accepted IO until the test delivers its completion (by hand on the test's thread, or from worker
/// threads), and enforces the OS rules that decide whether a design works on Windows:
///   - StartThreadpoolIo must come before every WSASend/WSARecv, CancelThreadpoolIo only after a
///     StartThreadpoolIo whose IO was not issued;
///   - a socket binds to one threadpool IO for life: a second CreateThreadpoolIo on it fails;
///   - WaitForThreadpoolIoCallbacks from inside one of that IO's callbacks is an error;
///   - CloseThreadpoolIo with IO outstanding is an error.
/// Broken rules are listed by violations(), which a test should expect to be empty. A wait that would
/// hang (an IO nobody completes) gives up after watchdog() and is reported there too, so a wrong design
/// fails the test with a message instead of hanging it.
///
/// The engine of a fake socket is the fake_os itself: basic_async_socket<fake_threadpool, ...>::create(&os,
/// socket). fake_socket(n) makes a non-null SOCKET_HANDLE.
///
/// Longer than 500 lines on purpose: one model of the OS (calls, outstanding IO, completions by hand and from
/// workers, cancellation, violations) whose parts share one lock and must be read together.
#pragma once

#include <async_socket/concepts.hpp>
#include <async_socket/backend/win32/threadpool_backend.hpp>
#include <async_socket/socket_address.hpp>
#include <async_socket/types.h>
#include <async_socket/testing/win32_stand_ins.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace async_socket::testing
{

/// The calls the Win32 backend makes, named as the Win32 functions they stand for.
enum class fake_call : std::uint8_t
{
    get_threadpool,         ///< execution_engine_win32_get_threadpool
    initialize_environment, ///< InitializeThreadpoolEnvironment
    set_callback_pool,      ///< SetThreadpoolCallbackPool
    create_cleanup_group,   ///< CreateThreadpoolCleanupGroup
    create_io,              ///< CreateThreadpoolIo
    start_io,               ///< StartThreadpoolIo
    cancel_io,              ///< CancelThreadpoolIo
    wait_for_io_callbacks,  ///< WaitForThreadpoolIoCallbacks
    close_io,               ///< CloseThreadpoolIo
    close_cleanup_group,    ///< CloseThreadpoolCleanupGroup
    destroy_environment,    ///< DestroyThreadpoolEnvironment
    create_event,           ///< CreateEvent
    close_event,            ///< CloseHandle
    wsa_send,               ///< WSASend
    wsa_recv,               ///< WSARecv
    cancel_socket_io,       ///< CancelIoEx
    set_completion_modes,   ///< SetFileCompletionNotificationModes (skip completion port on success)
    cancel_overlapped_io,   ///< CancelIoEx with one IO's OVERLAPPED (per-IO cancellation)
    wsa_ioctl,              ///< WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER): AcceptEx, GetAcceptExSockaddrs, ConnectEx
    getsockname,            ///< getsockname
    bind,                   ///< bind (to the wildcard address, before a ConnectEx)
    wsa_socket,             ///< WSASocketW (the socket an AcceptEx fills)
    closesocket,            ///< closesocket
    accept_ex,              ///< AcceptEx
    get_accept_ex_sockaddrs, ///< GetAcceptExSockaddrs
    update_accept_context,   ///< setsockopt(SO_UPDATE_ACCEPT_CONTEXT)
    connect_ex,              ///< ConnectEx
    update_connect_context,  ///< setsockopt(SO_UPDATE_CONNECT_CONTEXT)
    count_                   ///< the number of calls above; not a call
};

/// The Win32 function a fake_call stands for ("WSASend", ...); "?" for a value that is none of them.
constexpr const char* win32_name(fake_call call) noexcept
{
    constexpr const char* names[] = {
        "execution_engine_win32_get_threadpool",
        "InitializeThreadpoolEnvironment",
        "SetThreadpoolCallbackPool",
        "CreateThreadpoolCleanupGroup",
        "CreateThreadpoolIo",
        "StartThreadpoolIo",
        "CancelThreadpoolIo",
        "WaitForThreadpoolIoCallbacks",
        "CloseThreadpoolIo",
        "CloseThreadpoolCleanupGroup",
        "DestroyThreadpoolEnvironment",
        "CreateEvent",
        "CloseHandle",
        "WSASend",
        "WSARecv",
        "CancelIoEx",
        "SetFileCompletionNotificationModes",
        "CancelIoEx(OVERLAPPED)",
        "WSAIoctl",
        "getsockname",
        "bind",
        "WSASocketW",
        "closesocket",
        "AcceptEx",
        "GetAcceptExSockaddrs",
        "setsockopt(SO_UPDATE_ACCEPT_CONTEXT)",
        "ConnectEx",
        "setsockopt(SO_UPDATE_CONNECT_CONTEXT)",
    };
    const auto index = static_cast<std::size_t>(call);
    return index < std::size(names) ? names[index] : "?";
}

// The Win32-shaped stand-ins fake_overlapped, fake_wsabuf and fake_event are in testing/win32_stand_ins.hpp.

/// A SOCKET_HANDLE for the fake: the number n as a pointer (non-null for n > 0), never dereferenced.
inline SOCKET_HANDLE fake_socket(std::uintptr_t n) noexcept
{
    return reinterpret_cast<SOCKET_HANDLE>(n);
}

/// One recorded call. Only the fields that the call has are set; the rest stay zero.
struct call_record
{
    fake_call call{};                   ///< which call it was
    std::uint32_t io_id = 0;            ///< which fake threadpool IO (1, 2, ...) made the call
    SOCKET_HANDLE socket = nullptr;     ///< the socket the call was given
    void* overlapped = nullptr;         ///< WSASend/WSARecv, CancelIoEx(OVERLAPPED): the OVERLAPPED passed
    fake_event event = 0;               ///< CreateEvent's result, CloseHandle's argument, the hEvent of WSASend/WSARecv
    std::uint32_t buffer_count = 0;     ///< WSASend/WSARecv: dwBufferCount
    std::vector<fake_wsabuf> buffers{}; ///< WSASend/WSARecv: the WSABUF array as passed
    std::uint32_t flags = 0;            ///< WSASend: dwFlags; WSARecv: *lpFlags
    bool bytes_pointer_is_null = false; ///< WSASend/WSARecv: lpNumberOf...  was NULL
    bool cancel_pending = false;        ///< WaitForThreadpoolIoCallbacks: fCancelPendingCallbacks
    bool failed = false;                ///< the fake failed this call on demand
};

/// An IO the OS accepted and has not yet completed.
struct pending_io
{
    std::uint32_t io_id = 0;               ///< the fake threadpool IO it belongs to
    fake_call kind{};                      ///< wsa_send or wsa_recv
    SOCKET_HANDLE socket = nullptr;        ///< the socket it was issued on
    void* overlapped = nullptr;            ///< its OVERLAPPED: what complete() takes
    std::vector<fake_wsabuf> buffers;      ///< the WSABUF array as passed
    std::uint64_t total_length = 0;        ///< the sum of the buffers' lengths
    bool completion_queued = false;        ///< its completion waits for a worker: CancelIoEx can no longer touch it
    SOCKET_HANDLE accept_socket = nullptr; ///< AcceptEx: the socket it fills
    void* accept_output = nullptr;         ///< AcceptEx: its output buffer
    socket_address address{};              ///< ConnectEx: the address it connects to
};

/// Where the fake's AcceptEx output keeps the peer: a 32-bit length, then the address, in the remote half.
inline constexpr std::uint32_t fake_accept_peer_offset = win32_accept_address_length;

/// What CancelIoEx does with the socket's outstanding IO.
enum class cancel_behavior : std::uint8_t
{
    abort_on_worker, ///< queue each with ERROR_OPERATION_ABORTED to a worker thread (as Windows does)
    abort_inline,    ///< complete each with ERROR_OPERATION_ABORTED on the calling thread
    ignore,          ///< leave them; the test completes them itself
};

/// The optional traits of a Win32 calls layer (threadpool_backend.hpp) a fake_threadpool models.
struct fake_features
{
    bool io_events = true;                   ///< false: uses_io_events = false (no event per IO)
    bool skip_completion_on_success = false; ///< true: models FILE_SKIP_COMPLETION_PORT_ON_SUCCESS
};

template <class Buffer, fake_features Features>
class basic_fake_threadpool_calls;

/// The fake OS a test owns and the engine of fake sockets: records calls, fails them on demand, holds accepted IO
/// until the test completes it, and lists the OS rules broken (see the top of this file). Thread-safe.
class fake_os
{
public:
    fake_os() = default;
    fake_os(const fake_os&) = delete;
    fake_os& operator=(const fake_os&) = delete;
    ~fake_os()
    {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        work_ready_.notify_all();
        for (auto& worker : workers_)
        {
            worker.join();
        }
    }

    // ---- what happened --------------------------------------------------------------------------
    /// Every call so far, in order, with its arguments.
    std::vector<call_record> calls() const
    {
        std::lock_guard lock(mutex_);
        return calls_;
    }

    /// The Win32 names of the calls so far, in order.
    std::vector<std::string> call_names() const
    {
        std::lock_guard lock(mutex_);
        std::vector<std::string> names;
        names.reserve(calls_.size());
        for (const auto& record : calls_)
        {
            names.emplace_back(win32_name(record.call));
        }
        return names;
    }

    /// How many times `call` was made so far.
    std::size_t count(fake_call call) const
    {
        std::lock_guard lock(mutex_);
        return static_cast<std::size_t>(
            std::count_if(calls_.begin(), calls_.end(), [call](const call_record& r) { return r.call == call; }));
    }

    /// Forgets the calls recorded so far (not the IO, the failures or the violations).
    void clear_calls()
    {
        std::lock_guard lock(mutex_);
        calls_.clear();
    }

    /// OS rules broken so far, and waits that the watchdog ended; empty when all is well.
    std::vector<std::string> violations() const
    {
        std::lock_guard lock(mutex_);
        return violations_;
    }

    /// Events made by CreateEvent and not yet closed.
    std::size_t live_events() const
    {
        std::lock_guard lock(mutex_);
        return live_events_.size();
    }

    /// Threadpool IOs made by CreateThreadpoolIo and not yet closed.
    std::size_t live_ios() const
    {
        std::lock_guard lock(mutex_);
        return static_cast<std::size_t>(
            std::count_if(ios_.begin(), ios_.end(), [](const io_object& io) { return !io.closed; }));
    }

    // ---- failing on demand ----------------------------------------------------------------------
    /// Makes the (skip + 1)-th next call of `call` fail: create_* and get_threadpool return failure,
    /// WSASend/WSARecv return `error`. Calls without a failure result (StartThreadpoolIo, CloseHandle, ...)
    /// never fail: a failure planned for them never happens.
    void fail(fake_call call, unsigned skip = 0, win32_error error = 10055 /* WSAENOBUFS */)
    {
        std::lock_guard lock(mutex_);
        failures_[static_cast<std::size_t>(call)] = planned_failure{skip, error};
    }

    /// Drops every planned failure that has not happened yet.
    void clear_failures()
    {
        std::lock_guard lock(mutex_);
        for (auto& planned : failures_)
        {
            planned.reset();
        }
    }

    // ---- delivering completions ----------------------------------------------------------------
    /// The IO accepted and not yet completed, of every socket.
    std::vector<pending_io> pending() const
    {
        std::lock_guard lock(mutex_);
        std::vector<pending_io> all;
        for (const auto& io : ios_)
        {
            all.insert(all.end(), io.in_flight.begin(), io.in_flight.end());
        }
        return all;
    }

    /// How many IO are accepted and not yet completed (pending().size()).
    std::size_t pending_count() const
    {
        std::lock_guard lock(mutex_);
        std::size_t n = 0;
        for (const auto& io : ios_)
        {
            n += io.in_flight.size();
        }
        return n;
    }

    /// Completes an accepted IO on the calling thread: runs the socket's completion routine with these
    /// values. Returns false (and calls nothing) when no IO with that OVERLAPPED is outstanding, or when its
    /// completion is already queued to a worker.
    bool complete(void* overlapped, win32_error io_result, std::size_t bytes_transferred)
    {
        std::unique_lock lock(mutex_);
        const pending_io* io = find_pending(overlapped);
        return io != nullptr && !io->completion_queued && deliver(lock, overlapped, io_result, bytes_transferred);
    }

    /// Completes the oldest outstanding IO whose completion is not queued. Returns false when there is none.
    bool complete_oldest(win32_error io_result, std::size_t bytes_transferred)
    {
        std::unique_lock lock(mutex_);
        void* overlapped = oldest_overlapped();
        return overlapped != nullptr && deliver(lock, overlapped, io_result, bytes_transferred);
    }

    /// Completes a receive as the OS would on arrival of `data`: copies it into the WSABUFs in order
    /// and reports NO_ERROR with the number of bytes copied.
    bool complete_receive(void* overlapped, std::span<const std::byte> data)
    {
        std::unique_lock lock(mutex_);
        const pending_io* io = find_pending(overlapped);
        if (io == nullptr || io->kind != fake_call::wsa_recv || io->completion_queued)
        {
            return false;
        }
        std::size_t copied = 0;
        for (const auto& buffer : io->buffers)
        {
            const std::size_t n = std::min<std::size_t>(buffer.len, data.size() - copied);
            std::memcpy(buffer.buf, data.data() + copied, n);
            copied += n;
        }
        return deliver(lock, overlapped, win32_no_error, copied);
    }

    /// Queues the completion to a worker thread (see set_worker_count) and returns at once. From then on
    /// the IO is no longer cancellable, as on Windows once its completion packet is queued. Returns false
    /// (a violation) when the IO is not outstanding or already has a completion queued.
    bool complete_on_worker(void* overlapped, win32_error io_result, std::size_t bytes_transferred)
    {
        {
            std::lock_guard lock(mutex_);
            if (!queue_completion(overlapped, io_result, bytes_transferred))
            {
                violation("a completion was queued for an IO that is not outstanding or already completing");
                return false;
            }
        }
        work_ready_.notify_one();
        return true;
    }

    /// Skip-completion mode (a fake_threadpool with fake_features::skip_completion_on_success): called for
    /// every IO the fake accepts on such a socket, outside the lock, before the on_issue hook. Returning a
    /// byte count makes the IO finish at once (WSASend/WSARecv return at once with that count and no
    /// completion is queued); std::nullopt leaves it pending as usual.
    void at_once(std::function<std::optional<std::uint32_t>(const pending_io&)> decide)
    {
        std::lock_guard lock(mutex_);
        at_once_ = std::move(decide);
    }

    /// Called (outside the fake's lock, on the thread of WSASend/WSARecv) for every IO the fake
    /// accepts, before the call returns. Lets a test complete IO automatically, e.g. every send with
    /// all its bytes on a worker: os.on_issue([&](const pending_io& io) { os.complete_on_worker(...); }).
    void on_issue(std::function<void(const pending_io&)> hook)
    {
        std::lock_guard lock(mutex_);
        on_issue_ = std::move(hook);
    }

    /// What CancelIoEx does from now on (abort_on_worker unless set).
    void set_cancel_behavior(cancel_behavior behavior)
    {
        std::lock_guard lock(mutex_);
        cancel_behavior_ = behavior;
    }

    /// Threads that deliver complete_on_worker completions (and aborted ones, by default); 1 unless set
    /// before the first completion is queued.
    void set_worker_count(unsigned count)
    {
        std::lock_guard lock(mutex_);
        worker_count_ = std::max(1u, count);
    }

    /// How long WaitForThreadpoolIoCallbacks may block before the fake gives up and reports it.
    void set_watchdog(std::chrono::milliseconds limit)
    {
        std::lock_guard lock(mutex_);
        watchdog_ = limit;
    }

    /// Blocks until no IO is outstanding and no completion is queued or running, or until `limit`;
    /// returns whether it got there.
    bool wait_until_idle(std::chrono::milliseconds limit)
    {
        std::unique_lock lock(mutex_);
        return changed_.wait_for(lock, limit, [this] { return idle(); });
    }

    // ---- sockets (accept and connect) -------------------------------------------------------------
    /// Gives `socket` a local address, as bind (and listen) would: getsockname then answers it.
    void set_local_address(SOCKET_HANDLE socket, const socket_address& address)
    {
        std::lock_guard lock(mutex_);
        set_local(socket, address);
    }

    /// Sockets made by WSASocketW and not yet closed (closesocket).
    std::size_t live_sockets() const
    {
        std::lock_guard lock(mutex_);
        return made_sockets_.size();
    }

    /// The application's closesocket of a socket an accept handed over (recorded; a violation unless the fake made
    /// it and it is open, or while an AcceptEx is filling it).
    void close_socket(SOCKET_HANDLE socket)
    {
        std::lock_guard lock(mutex_);
        (void)record({.call = fake_call::closesocket, .socket = socket});
        close_made(socket);
    }

    /// Completes an outstanding AcceptEx successfully, as the OS does when a connection from `peer` arrives: writes
    /// the addresses into its output and reports NO_ERROR. False when no such AcceptEx is outstanding.
    bool complete_accept(void* overlapped, const socket_address& peer)
    {
        std::unique_lock lock(mutex_);
        const pending_io* io = find_pending(overlapped);
        if (io == nullptr || io->kind != fake_call::accept_ex || io->completion_queued)
        {
            return false;
        }
        write_peer(io->accept_output, peer);
        return deliver(lock, overlapped, win32_no_error, 0);
    }

    /// Outstanding AcceptEx calls (pending() of kind accept_ex).
    std::size_t pending_accepts() const
    {
        std::lock_guard lock(mutex_);
        std::size_t n = 0;
        for (const auto& io : ios_)
        {
            n += static_cast<std::size_t>(std::count_if(io.in_flight.begin(), io.in_flight.end(),
                                                        [](const pending_io& p)
                                                        { return p.kind == fake_call::accept_ex; }));
        }
        return n;
    }

private:
    template <class Buffer, fake_features Features>
    friend class basic_fake_threadpool_calls;

    struct io_object
    {
        std::uint32_t id = 0;
        SOCKET_HANDLE socket = nullptr;
        win32_completion_routine completion = nullptr;
        void* callback_context = nullptr;
        int started = 0;        ///< StartThreadpoolIo calls not yet matched by an issued IO or a cancel
        int running = 0;        ///< completion routines running now
        bool skip_mode = false; ///< SetFileCompletionNotificationModes made it skip the port on success
        std::deque<pending_io> in_flight{};
        bool closed = false;
    };

    struct planned_failure
    {
        unsigned skip;
        win32_error error;
    };

    struct work_item
    {
        void* overlapped;
        win32_error io_result;
        std::size_t bytes_transferred;
    };

    static inline thread_local std::uint32_t running_io_id_ = 0; ///< the IO whose callback this thread runs

    /// Records a call; returns the planned failure's error if this call is to fail.
    std::optional<win32_error> record(call_record record)
    {
        std::optional<win32_error> failure;
        auto& planned = failures_[static_cast<std::size_t>(record.call)];
        if (planned && can_fail(record.call))
        {
            if (planned->skip == 0)
            {
                failure = planned->error;
                planned.reset();
            }
            else
            {
                --planned->skip;
            }
        }
        record.failed = failure.has_value();
        if (failure)
        {
            last_error_ = *failure;
        }
        calls_.push_back(std::move(record));
        return failure;
    }

    /// The calls that have a failure result; a planned failure of any other call never happens.
    static constexpr bool can_fail(fake_call call) noexcept
    {
        switch (call)
        {
        case fake_call::get_threadpool:
        case fake_call::create_cleanup_group:
        case fake_call::create_io:
        case fake_call::create_event:
        case fake_call::wsa_send:
        case fake_call::wsa_recv:
        case fake_call::set_completion_modes:
        case fake_call::wsa_ioctl:
        case fake_call::getsockname:
        case fake_call::bind:
        case fake_call::wsa_socket:
        case fake_call::accept_ex:
        case fake_call::update_accept_context:
        case fake_call::connect_ex:
        case fake_call::update_connect_context:
            return true;
        default:
            return false;
        }
    }

    void violation(std::string what)
    {
        violations_.push_back(std::move(what));
    }

    io_object* find_io(std::uint32_t id)
    {
        for (auto& io : ios_)
        {
            if (io.id == id)
            {
                return &io;
            }
        }
        return nullptr;
    }

    pending_io* find_pending(void* overlapped)
    {
        for (auto& io : ios_)
        {
            for (auto& p : io.in_flight)
            {
                if (p.overlapped == overlapped)
                {
                    return &p;
                }
            }
        }
        return nullptr;
    }

    void* oldest_overlapped()
    {
        for (auto& io : ios_)
        {
            for (auto& p : io.in_flight)
            {
                if (!p.completion_queued)
                {
                    return p.overlapped;
                }
            }
        }
        return nullptr;
    }

    /// Under the lock: marks the IO's completion as queued and queues it for the workers.
    bool queue_completion(void* overlapped, win32_error io_result, std::size_t bytes_transferred)
    {
        pending_io* io = find_pending(overlapped);
        if (io == nullptr || io->completion_queued)
        {
            return false;
        }
        io->completion_queued = true;
        start_workers();
        work_.push_back(work_item{overlapped, io_result, bytes_transferred});
        return true;
    }

    bool idle() const
    {
        if (!work_.empty() || busy_workers_ != 0)
        {
            return false;
        }
        return std::all_of(ios_.begin(), ios_.end(),
                           [](const io_object& io) { return io.in_flight.empty() && io.running == 0; });
    }

    /// Runs the completion routine of the IO behind `overlapped`, outside the lock.
    bool deliver(std::unique_lock<std::mutex>& lock, void* overlapped, win32_error io_result, std::size_t bytes)
    {
        for (auto& io : ios_)
        {
            auto it = std::find_if(io.in_flight.begin(), io.in_flight.end(),
                                   [overlapped](const pending_io& p) { return p.overlapped == overlapped; });
            if (it == io.in_flight.end())
            {
                continue;
            }
            if (io_result == win32_no_error && it->kind == fake_call::accept_ex)
            {
                accepted_sockets_.push_back(it->accept_socket); // SO_UPDATE_ACCEPT_CONTEXT may follow
            }
            else if (io_result == win32_no_error && it->kind == fake_call::connect_ex)
            {
                connected_sockets_.push_back(it->socket); // SO_UPDATE_CONNECT_CONTEXT may follow
            }
            io.in_flight.erase(it);
            ++io.running;
            const win32_completion_routine completion = io.completion;
            void* const context = io.callback_context;
            const std::uint32_t id = io.id;
            lock.unlock();
            const std::uint32_t outer = running_io_id_;
            running_io_id_ = id;
            completion(context, overlapped, io_result, bytes);
            running_io_id_ = outer;
            lock.lock();
            --find_io(id)->running;
            changed_.notify_all();
            return true;
        }
        return false;
    }

    /// Under the lock: the local address of a socket (set_local_address, bind).
    void set_local(SOCKET_HANDLE socket, const socket_address& address)
    {
        for (auto& [s, a] : local_addresses_)
        {
            if (s == socket)
            {
                a = address;
                return;
            }
        }
        local_addresses_.emplace_back(socket, address);
    }

    const socket_address* local_of(SOCKET_HANDLE socket) const
    {
        for (const auto& [s, a] : local_addresses_)
        {
            if (s == socket)
            {
                return &a;
            }
        }
        return nullptr;
    }

    /// Under the lock: closesocket of a socket WSASocketW made.
    void close_made(SOCKET_HANDLE socket)
    {
        auto it = std::find(made_sockets_.begin(), made_sockets_.end(), socket);
        if (it == made_sockets_.end())
        {
            violation("closesocket on a socket the fake did not make or closed already");
            return;
        }
        for (const auto& io : ios_)
        {
            for (const auto& p : io.in_flight)
            {
                if (p.kind == fake_call::accept_ex && p.accept_socket == socket)
                {
                    violation("closesocket on the socket of an AcceptEx still outstanding");
                }
            }
        }
        made_sockets_.erase(it);
        std::erase(accepted_sockets_, socket);
        std::erase_if(local_addresses_, [socket](const auto& entry) { return entry.first == socket; });
    }

    static void write_peer(void* output, const socket_address& peer)
    {
        auto* bytes = static_cast<unsigned char*>(output) + fake_accept_peer_offset;
        const std::uint32_t length = peer.size();
        std::memcpy(bytes, &length, sizeof length);
        std::memcpy(bytes + sizeof length, peer.data(), length);
    }

    void start_workers()
    {
        while (workers_.size() < worker_count_)
        {
            workers_.emplace_back([this] { worker_loop(); });
        }
    }

    void worker_loop()
    {
        std::unique_lock lock(mutex_);
        for (;;)
        {
            work_ready_.wait(lock, [this] { return stopping_ || !work_.empty(); });
            if (work_.empty())
            {
                return;
            }
            const work_item item = work_.front();
            work_.pop_front();
            ++busy_workers_;
            if (!deliver(lock, item.overlapped, item.io_result, item.bytes_transferred))
            {
                violation("a queued completion found no outstanding IO (completed twice?)");
            }
            --busy_workers_;
            changed_.notify_all();
        }
    }

    mutable std::mutex mutex_;
    std::condition_variable changed_;    ///< an IO completed, a callback ended
    std::condition_variable work_ready_; ///< work for the workers
    std::vector<call_record> calls_;
    std::vector<std::string> violations_;
    std::optional<planned_failure> failures_[static_cast<std::size_t>(fake_call::count_)];
    std::list<io_object> ios_;
    std::vector<SOCKET_HANDLE> bound_sockets_; ///< bound for life, as a real socket is
    std::vector<fake_event> live_events_;
    fake_event next_event_ = 0x1000;
    std::vector<std::pair<SOCKET_HANDLE, socket_address>> local_addresses_; ///< bound sockets and their addresses
    std::vector<SOCKET_HANDLE> made_sockets_;                               ///< made by WSASocketW, not yet closed
    std::vector<SOCKET_HANDLE> accepted_sockets_;  ///< their AcceptEx succeeded; SO_UPDATE_ACCEPT_CONTEXT allowed
    std::vector<SOCKET_HANDLE> connected_sockets_; ///< their ConnectEx succeeded; SO_UPDATE_CONNECT_CONTEXT allowed
    std::uintptr_t next_socket_ = 0x50000;
    win32_error last_error_ = 0; ///< the error of the last call failed on demand (GetLastError)
    std::uint32_t next_io_id_ = 1;
    std::function<void(const pending_io&)> on_issue_;
    std::function<std::optional<std::uint32_t>(const pending_io&)> at_once_;
    cancel_behavior cancel_behavior_ = cancel_behavior::abort_on_worker;
    std::chrono::milliseconds watchdog_{20000};
    std::deque<work_item> work_;
    std::vector<std::thread> workers_;
    unsigned worker_count_ = 1;
    unsigned busy_workers_ = 0;
    bool stopping_ = false;
};

/// The Win32 calls: one object per socket, one fake threadpool IO. Buffer is the WSABUF stand-in
/// (a test may give a larger one to reach the UINT32_MAX context-size limit with little memory); it
/// needs the members `len` and `buf`. Features selects the optional traits it models.
template <class Buffer = fake_wsabuf, fake_features Features = fake_features{}>
class basic_fake_threadpool_calls : public stand_in_calls<fake_os*, Buffer>
{
public:
    // engine_type (fake_os*), overlapped_type, buffer_type (Buffer) and event_type: stand_in_calls.

    static constexpr bool uses_io_events = Features.io_events; ///< whether the backend makes an event per IO
    /// Whether the backend sets FILE_SKIP_COMPLETION_PORT_ON_SUCCESS (and may complete IO at once).
    static constexpr bool skip_completion_on_success = Features.skip_completion_on_success;

    basic_fake_threadpool_calls() noexcept = default;
    /// Takes other's fake_os and IO; other is left with none.
    basic_fake_threadpool_calls(basic_fake_threadpool_calls&& other) noexcept : os_(other.os_), io_id_(other.io_id_)
    {
        other.os_ = nullptr;
        other.io_id_ = 0;
    }
    basic_fake_threadpool_calls& operator=(basic_fake_threadpool_calls&&) = delete;

    /// The fake_os acquire_pool was given; nullptr before it.
    [[nodiscard]] fake_os* os() const noexcept
    {
        return os_;
    }

    /// execution_engine_win32_get_threadpool: records the call and keeps the fake_os; false when failed on demand.
    bool acquire_pool(fake_os* engine) noexcept
    {
        std::lock_guard lock(engine->mutex_);
        if (engine->record({.call = fake_call::get_threadpool}))
        {
            return false;
        }
        os_ = engine;
        return true;
    }

    /// InitializeThreadpoolEnvironment (recorded).
    void initialize_environment() noexcept
    {
        simple(fake_call::initialize_environment);
    }

    /// SetThreadpoolCallbackPool (recorded).
    void set_callback_pool() noexcept
    {
        simple(fake_call::set_callback_pool);
    }

    /// CreateThreadpoolCleanupGroup (recorded); false when failed on demand.
    bool create_cleanup_group() noexcept
    {
        return !simple(fake_call::create_cleanup_group);
    }

    /// CreateThreadpoolIo: a fake threadpool IO whose completions call Completion(callback_context, ...). Fails when
    /// failed on demand, or (as on Windows) when the socket was bound before.
    template <win32_completion_routine Completion>
    bool create_io(SOCKET_HANDLE socket, void* callback_context) noexcept
    {
        std::lock_guard lock(os_->mutex_);
        if (os_->record({.call = fake_call::create_io, .socket = socket}))
        {
            return false;
        }
        if (std::find(os_->bound_sockets_.begin(), os_->bound_sockets_.end(), socket) != os_->bound_sockets_.end())
        {
            // ERROR_INVALID_PARAMETER: the socket was bound to a completion port before.
            os_->calls_.back().failed = true;
            return false;
        }
        os_->bound_sockets_.push_back(socket);
        io_id_ = os_->next_io_id_++;
        os_->ios_.push_back(
            {.id = io_id_, .socket = socket, .completion = Completion, .callback_context = callback_context});
        os_->calls_.back().io_id = io_id_;
        return true;
    }

    /// SetFileCompletionNotificationModes(socket, FILE_SKIP_COMPLETION_PORT_ON_SUCCESS).
    bool set_skip_completion_on_success(SOCKET_HANDLE socket) noexcept
    {
        std::lock_guard lock(os_->mutex_);
        if (os_->record({.call = fake_call::set_completion_modes, .io_id = io_id_, .socket = socket}))
        {
            return false;
        }
        fake_os::io_object* io = live_io("SetFileCompletionNotificationModes");
        if (io != nullptr)
        {
            io->skip_mode = true;
        }
        return io != nullptr;
    }

    /// StartThreadpoolIo: one more IO may be issued.
    void start_io() noexcept
    {
        std::lock_guard lock(os_->mutex_);
        os_->record({.call = fake_call::start_io, .io_id = io_id_});
        fake_os::io_object* io = live_io("StartThreadpoolIo");
        if (io != nullptr)
        {
            ++io->started;
        }
    }

    /// CancelThreadpoolIo: takes back a StartThreadpoolIo whose IO was not issued (a violation otherwise).
    void cancel_io() noexcept
    {
        std::lock_guard lock(os_->mutex_);
        os_->record({.call = fake_call::cancel_io, .io_id = io_id_});
        fake_os::io_object* io = live_io("CancelThreadpoolIo");
        if (io == nullptr)
        {
            return;
        }
        if (io->started == 0)
        {
            os_->violation("CancelThreadpoolIo without a StartThreadpoolIo to cancel");
            return;
        }
        --io->started;
    }

    /// WaitForThreadpoolIoCallbacks: blocks until the IO has nothing outstanding or running, or the watchdog ends
    /// the wait (a violation, as is a call from inside one of the IO's own callbacks).
    void wait_for_io_callbacks(bool cancel_pending) noexcept
    {
        std::unique_lock lock(os_->mutex_);
        os_->record({.call = fake_call::wait_for_io_callbacks, .io_id = io_id_, .cancel_pending = cancel_pending});
        if (fake_os::running_io_id_ == io_id_)
        {
            os_->violation("WaitForThreadpoolIoCallbacks called from inside a callback of the same IO (deadlock)");
            return;
        }
        const std::uint32_t id = io_id_;
        const bool done =
            os_->changed_.wait_for(lock, os_->watchdog_,
                                   [this, id]
                                   {
                                       fake_os::io_object* io = os_->find_io(id);
                                       return io == nullptr || (io->in_flight.empty() && io->running == 0);
                                   });
        if (!done)
        {
            os_->violation("WaitForThreadpoolIoCallbacks hung: IO still outstanding after the watchdog");
        }
    }

    /// CloseThreadpoolIo (a violation with IO outstanding).
    void close_io() noexcept
    {
        std::lock_guard lock(os_->mutex_);
        os_->record({.call = fake_call::close_io, .io_id = io_id_});
        fake_os::io_object* io = live_io("CloseThreadpoolIo");
        if (io == nullptr)
        {
            return;
        }
        if (!io->in_flight.empty() || io->running != 0 || io->started != 0)
        {
            os_->violation("CloseThreadpoolIo with IO outstanding");
        }
        io->closed = true;
    }

    /// CloseThreadpoolCleanupGroup (recorded).
    void close_cleanup_group() noexcept
    {
        simple(fake_call::close_cleanup_group);
    }

    /// DestroyThreadpoolEnvironment (recorded).
    void destroy_environment() noexcept
    {
        simple(fake_call::destroy_environment);
    }

    /// CreateEvent: a new event, or 0 when failed on demand.
    fake_event create_event() noexcept
    {
        std::lock_guard lock(os_->mutex_);
        if (os_->record({.call = fake_call::create_event, .io_id = io_id_}))
        {
            return 0;
        }
        const fake_event event = os_->next_event_++;
        os_->live_events_.push_back(event);
        os_->calls_.back().event = event;
        return event;
    }

    /// GetLastError after a failed create_event: the error planned with fail().
    win32_error last_error() const noexcept
    {
        std::lock_guard lock(os_->mutex_);
        return os_->last_error_;
    }

    /// CloseHandle of an event (a violation when it is not open).
    void close_event(fake_event event) noexcept
    {
        std::lock_guard lock(os_->mutex_);
        os_->record({.call = fake_call::close_event, .io_id = io_id_, .event = event});
        auto it = std::find(os_->live_events_.begin(), os_->live_events_.end(), event);
        if (it == os_->live_events_.end())
        {
            os_->violation("CloseHandle on an event that is not open");
            return;
        }
        os_->live_events_.erase(it);
    }

    // set_overlapped_event and set_buffer: stand_in_calls (win32_stand_ins.hpp).

    /// WSASend: records the call and accepts the IO (pending until the test completes it; in skip mode at_once may
    /// finish it during the call), or fails it on demand.
    win32_error send(SOCKET_HANDLE socket, Buffer* buffers, std::uint32_t count, std::uint32_t* bytes_sent,
                     std::uint32_t flags, fake_overlapped* overlapped) noexcept
    {
        return issue(fake_call::wsa_send, socket, buffers, count, bytes_sent, flags, overlapped);
    }

    /// WSARecv: as send, for a receive.
    win32_error receive(SOCKET_HANDLE socket, Buffer* buffers, std::uint32_t count, std::uint32_t* bytes_received,
                        std::uint32_t* flags, fake_overlapped* overlapped) noexcept
    {
        return issue(fake_call::wsa_recv, socket, buffers, count, bytes_received, *flags, overlapped);
    }

    /// Aborts every IO of the socket whose completion is not queued yet; one already queued completes as it
    /// was going to, as on Windows.
    void cancel_socket_io(SOCKET_HANDLE socket) noexcept
    {
        std::vector<void*> aborted;
        bool queued = false;
        {
            std::lock_guard lock(os_->mutex_);
            os_->record({.call = fake_call::cancel_socket_io, .io_id = io_id_, .socket = socket});
            const cancel_behavior behavior = os_->cancel_behavior_;
            if (behavior == cancel_behavior::ignore)
            {
                return;
            }
            for (const auto& io : os_->ios_)
            {
                for (const auto& p : io.in_flight)
                {
                    if (p.socket == socket && !p.completion_queued)
                    {
                        aborted.push_back(p.overlapped);
                    }
                }
            }
            if (behavior == cancel_behavior::abort_on_worker)
            {
                for (void* overlapped : aborted)
                {
                    queued = os_->queue_completion(overlapped, win32_operation_aborted, 0) || queued;
                }
                aborted.clear();
            }
        }
        if (queued)
        {
            os_->work_ready_.notify_all();
        }
        for (void* overlapped : aborted)
        {
            // abort_inline: one that got a completion queued meanwhile is left to it.
            (void)os_->complete(overlapped, win32_operation_aborted, 0);
        }
    }

    /// Aborts that one IO if it is outstanding and its completion is not queued yet (as cancel_socket_io does for
    /// all of them, with the same cancel_behavior); otherwise it completes as it was going to.
    void cancel_overlapped_io(SOCKET_HANDLE socket, fake_overlapped* overlapped) noexcept
    {
        bool queued = false;
        void* abort_here = nullptr;
        {
            std::lock_guard lock(os_->mutex_);
            (void)os_->record(
                {.call = fake_call::cancel_overlapped_io, .io_id = io_id_, .socket = socket, .overlapped = overlapped});
            const cancel_behavior behavior = os_->cancel_behavior_;
            const pending_io* io = os_->find_pending(overlapped);
            if (behavior == cancel_behavior::ignore || io == nullptr || io->socket != socket || io->completion_queued)
            {
                return;
            }
            if (behavior == cancel_behavior::abort_on_worker)
            {
                queued = os_->queue_completion(overlapped, win32_operation_aborted, 0);
            }
            else
            {
                abort_here = overlapped;
            }
        }
        if (queued)
        {
            os_->work_ready_.notify_all();
        }
        if (abort_here != nullptr)
        {
            (void)os_->complete(abort_here, win32_operation_aborted, 0);
        }
    }

    // ---- accept and connect (win32_connection_calls) ----------------------------------------------
    /// WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER) for the three extension functions (recorded once per call).
    win32_error load_extensions(SOCKET_HANDLE socket) noexcept
    {
        std::lock_guard lock(os_->mutex_);
        return os_->record({.call = fake_call::wsa_ioctl, .io_id = io_id_, .socket = socket}).value_or(win32_no_error);
    }

    /// getsockname: the address set_local_address or bind gave the socket; WSAEINVAL when it has none.
    win32_error local_address(SOCKET_HANDLE socket, socket_address& address) noexcept
    {
        std::lock_guard lock(os_->mutex_);
        if (const auto failure = os_->record({.call = fake_call::getsockname, .io_id = io_id_, .socket = socket}))
        {
            return *failure;
        }
        const socket_address* local = os_->local_of(socket);
        if (local == nullptr)
        {
            return wsa_invalid_argument;
        }
        address = *local;
        return win32_no_error;
    }

    /// bind to the wildcard address of family: the socket then has a local address of that family.
    win32_error bind_wildcard(SOCKET_HANDLE socket, std::uint16_t family) noexcept
    {
        std::lock_guard lock(os_->mutex_);
        if (const auto failure = os_->record({.call = fake_call::bind, .io_id = io_id_, .socket = socket}))
        {
            return *failure;
        }
        if (os_->local_of(socket) != nullptr)
        {
            os_->violation("bind of a socket already bound");
            return wsa_invalid_argument;
        }
        unsigned char wildcard[16] = {};
        std::memcpy(wildcard, &family, sizeof family);
        os_->set_local(socket, socket_address(reinterpret_cast<const sockaddr*>(wildcard), sizeof wildcard));
        return win32_no_error;
    }

    /// WSASocketW: a new fake socket (counted by live_sockets until closed), or the planned error.
    win32_error open_socket(std::uint16_t /*family*/, SOCKET_HANDLE* made) noexcept
    {
        std::lock_guard lock(os_->mutex_);
        *made = nullptr;
        if (const auto failure = os_->record({.call = fake_call::wsa_socket, .io_id = io_id_}))
        {
            return *failure;
        }
        *made = fake_socket(os_->next_socket_++);
        os_->made_sockets_.push_back(*made);
        os_->calls_.back().socket = *made;
        return win32_no_error;
    }

    /// closesocket (a violation unless the fake made the socket and it is open and no AcceptEx fills it).
    void close_socket(SOCKET_HANDLE socket) noexcept
    {
        std::lock_guard lock(os_->mutex_);
        (void)os_->record({.call = fake_call::closesocket, .io_id = io_id_, .socket = socket});
        os_->close_made(socket);
    }

    /// AcceptEx: accepted (pending until complete_accept or a completion by hand), or the planned error. A violation
    /// without a StartThreadpoolIo before it, or on an accept socket the fake did not make.
    win32_error accept(SOCKET_HANDLE listener, SOCKET_HANDLE accepted, void* output, std::uint32_t* bytes,
                       fake_overlapped* overlapped) noexcept
    {
        pending_io io;
        io.io_id = io_id_;
        io.kind = fake_call::accept_ex;
        io.socket = listener;
        io.overlapped = overlapped;
        io.accept_socket = accepted;
        io.accept_output = output;
        fake_os::write_peer(output, socket_address{}); // until a connection arrives: no peer
        {
            std::lock_guard lock(os_->mutex_);
            if (std::find(os_->made_sockets_.begin(), os_->made_sockets_.end(), accepted) == os_->made_sockets_.end())
            {
                os_->violation("AcceptEx with an accept socket that is not open");
            }
        }
        return issue_operation(std::move(io), bytes);
    }

    /// GetAcceptExSockaddrs: the peer complete_accept wrote into the output.
    void accepted_peer(void* output, socket_address& peer) noexcept
    {
        std::lock_guard lock(os_->mutex_);
        (void)os_->record({.call = fake_call::get_accept_ex_sockaddrs, .io_id = io_id_});
        const auto* bytes = static_cast<const unsigned char*>(output) + fake_accept_peer_offset;
        std::uint32_t length = 0;
        std::memcpy(&length, bytes, sizeof length);
        peer = socket_address(reinterpret_cast<const sockaddr*>(bytes + sizeof length), length);
    }

    /// setsockopt(SO_UPDATE_ACCEPT_CONTEXT): a violation unless the socket's AcceptEx succeeded on that listener.
    win32_error update_accept_context(SOCKET_HANDLE accepted, SOCKET_HANDLE listener) noexcept
    {
        std::lock_guard lock(os_->mutex_);
        if (const auto failure = os_->record({.call = fake_call::update_accept_context,
                                              .io_id = io_id_,
                                              .socket = accepted,
                                              .overlapped = listener}))
        {
            return *failure;
        }
        if (std::find(os_->accepted_sockets_.begin(), os_->accepted_sockets_.end(), accepted) ==
            os_->accepted_sockets_.end())
        {
            os_->violation("SO_UPDATE_ACCEPT_CONTEXT on a socket whose AcceptEx did not succeed");
        }
        return win32_no_error;
    }

    /// ConnectEx: accepted (pending until the test completes it), or the planned error. A violation without a
    /// StartThreadpoolIo before it, or on a socket that is not bound (ConnectEx needs one: WSAEINVAL).
    win32_error connect(SOCKET_HANDLE socket, const socket_address& address, std::uint32_t* bytes,
                        fake_overlapped* overlapped) noexcept
    {
        {
            std::lock_guard lock(os_->mutex_);
            if (os_->local_of(socket) == nullptr)
            {
                os_->violation("ConnectEx on a socket that is not bound");
            }
        }
        pending_io io;
        io.io_id = io_id_;
        io.kind = fake_call::connect_ex;
        io.socket = socket;
        io.overlapped = overlapped;
        io.address = address;
        return issue_operation(std::move(io), bytes);
    }

    /// setsockopt(SO_UPDATE_CONNECT_CONTEXT): a violation unless the socket's ConnectEx succeeded.
    win32_error update_connect_context(SOCKET_HANDLE socket) noexcept
    {
        std::lock_guard lock(os_->mutex_);
        if (const auto failure =
                os_->record({.call = fake_call::update_connect_context, .io_id = io_id_, .socket = socket}))
        {
            return *failure;
        }
        auto it = std::find(os_->connected_sockets_.begin(), os_->connected_sockets_.end(), socket);
        if (it == os_->connected_sockets_.end())
        {
            os_->violation("SO_UPDATE_CONNECT_CONTEXT on a socket whose ConnectEx did not succeed");
        }
        else
        {
            os_->connected_sockets_.erase(it);
        }
        return win32_no_error;
    }

private:
    /// AcceptEx and ConnectEx: the rules and outcomes of WSASend/WSARecv (issue), without buffers.
    win32_error issue_operation(pending_io accepted, std::uint32_t* bytes) noexcept
    {
        std::function<void(const pending_io&)> hook;
        std::function<std::optional<std::uint32_t>(const pending_io&)> decide;
        const fake_call kind = accepted.kind;
        {
            std::lock_guard lock(os_->mutex_);
            const std::optional<win32_error> failure =
                os_->record({.call = kind,
                             .io_id = io_id_,
                             .socket = accepted.kind == fake_call::accept_ex ? accepted.accept_socket : accepted.socket,
                             .overlapped = accepted.overlapped,
                             .event = static_cast<fake_overlapped*>(accepted.overlapped)->event,
                             .bytes_pointer_is_null = bytes == nullptr});
            fake_os::io_object* io = live_io(win32_name(kind));
            if (io == nullptr)
            {
                return 10038; // WSAENOTSOCK
            }
            if (io->started == 0)
            {
                os_->violation(std::string(win32_name(kind)) + " without a StartThreadpoolIo before it");
            }
            if (failure)
            {
                return *failure;
            }
            decide = io->skip_mode ? os_->at_once_ : nullptr;
            if (!decide)
            {
                issue_pending(*io, accepted);
                hook = os_->on_issue_;
            }
        }
        if (decide)
        {
            const std::optional<std::uint32_t> at_once = decide(accepted);
            std::lock_guard lock(os_->mutex_);
            fake_os::io_object* io = live_io(win32_name(kind));
            if (io == nullptr)
            {
                return 10038; // WSAENOTSOCK
            }
            if (at_once)
            {
                if (bytes != nullptr)
                {
                    *bytes = *at_once;
                }
                if (kind == fake_call::accept_ex)
                {
                    fake_os::write_peer(accepted.accept_output, socket_address{});
                    os_->accepted_sockets_.push_back(accepted.accept_socket);
                }
                else
                {
                    os_->connected_sockets_.push_back(accepted.socket);
                }
                return win32_completed_at_once;
            }
            issue_pending(*io, accepted);
            hook = os_->on_issue_;
        }
        if (hook)
        {
            hook(accepted);
        }
        return win32_no_error;
    }

    /// Records a call that has no arguments; returns whether it was failed on demand.
    bool simple(fake_call call) noexcept
    {
        std::lock_guard lock(os_->mutex_);
        return os_->record({.call = call, .io_id = io_id_}).has_value();
    }

    fake_os::io_object* live_io(const char* what) noexcept
    {
        fake_os::io_object* io = os_->find_io(io_id_);
        if (io == nullptr || io->closed)
        {
            os_->violation(std::string(what) + " on a threadpool IO that does not exist or was closed");
            return nullptr;
        }
        return io;
    }

    win32_error issue(fake_call kind, SOCKET_HANDLE socket, Buffer* buffers, std::uint32_t count, std::uint32_t* bytes,
                      std::uint32_t flags, fake_overlapped* overlapped) noexcept
    {
        std::function<void(const pending_io&)> hook;
        std::function<std::optional<std::uint32_t>(const pending_io&)> decide;
        pending_io accepted;
        bool skip_mode = false;
        {
            std::lock_guard lock(os_->mutex_);
            call_record record{.call = kind,
                               .io_id = io_id_,
                               .socket = socket,
                               .overlapped = overlapped,
                               .event = overlapped->event,
                               .buffer_count = count,
                               .flags = flags,
                               .bytes_pointer_is_null = bytes == nullptr};
            std::uint64_t total = 0;
            for (std::uint32_t i = 0; i < count; ++i)
            {
                record.buffers.push_back(fake_wsabuf{buffers[i].len, buffers[i].buf});
                total += buffers[i].len;
            }
            accepted = pending_io{io_id_, kind, socket, overlapped, record.buffers, total};
            const std::optional<win32_error> failure = os_->record(std::move(record));
            fake_os::io_object* io = live_io(win32_name(kind));
            if (io == nullptr)
            {
                return 10038; // WSAENOTSOCK
            }
            if (io->started == 0)
            {
                os_->violation(std::string(win32_name(kind)) + " without a StartThreadpoolIo before it");
            }
            if (failure)
            {
                return *failure; // the IO was not issued: the caller must cancel its StartThreadpoolIo
            }
            skip_mode = io->skip_mode;
            decide = skip_mode ? os_->at_once_ : nullptr;
            if (!decide)
            {
                issue_pending(*io, accepted);
                hook = os_->on_issue_;
            }
        }
        if (decide)
        {
            // Skip mode: the IO may finish at once; then its StartThreadpoolIo stays until the caller
            // cancels it, and no completion is queued.
            const std::optional<std::uint32_t> at_once = decide(accepted);
            std::lock_guard lock(os_->mutex_);
            fake_os::io_object* io = live_io(win32_name(kind));
            if (io == nullptr)
            {
                return 10038; // WSAENOTSOCK
            }
            if (at_once)
            {
                if (bytes == nullptr)
                {
                    os_->violation(std::string(win32_name(kind)) + " finished at once but had no byte count");
                }
                else
                {
                    *bytes = *at_once;
                }
                return win32_completed_at_once;
            }
            issue_pending(*io, accepted);
            hook = os_->on_issue_;
        }
        if (hook)
        {
            hook(accepted);
        }
        return win32_no_error;
    }

    /// Under the lock: the IO is accepted and its completion will be delivered.
    static void issue_pending(fake_os::io_object& io, const pending_io& accepted)
    {
        if (io.started > 0)
        {
            --io.started;
        }
        io.in_flight.push_back(accepted);
    }

    fake_os* os_ = nullptr;
    std::uint32_t io_id_ = 0;
};

/// The Win32 backend over the fake calls.
template <class Buffer = fake_wsabuf, fake_features Features = fake_features{}>
using basic_fake_threadpool = win32_threadpool_backend<basic_fake_threadpool_calls<Buffer, Features>>;

/// The fake calls with the default WSABUF stand-in and traits (an event per IO, no skip on success).
using fake_threadpool_calls = basic_fake_threadpool_calls<>;
/// The Win32 backend over fake_threadpool_calls: the Backend of the fake sockets of most tests.
using fake_threadpool = basic_fake_threadpool<>;

} // namespace async_socket::testing
