/// @file
/// async_socket: the Linux execution engine: worker threads that reap io_uring completions, or wait on epoll, and
/// run the callbacks.
///
/// What it is. linux_engine owns N worker threads (default: one per core) and one of two mechanisms, picked when it
/// is made (linux_engine_parameters::io) and observable (mechanism()):
/// - io_uring: one ring per worker. A socket's IO goes to one ring (given out in turn at registration); the ring's
///   worker reaps its completions and runs them. Only that worker submits; other threads hand their IO over.
/// - epoll: one epoll instance per worker, a socket registered in one of them (given out in turn, as the rings
///   are); for each ready socket the worker finishes what the socket's queued IO can now do and runs the
///   completions on its own thread. Per worker rather than one instance all workers wait on: a socket's events
///   then always reach the same thread (its slot and its memory stay in that core's cache, and two workers never
///   take the slot's lock in turn for one socket), measured 7 % more messages/s with 64 connections on 2 workers
///   (docs/design.md).
/// automatic (the default) tries io_uring and falls back to epoll when the kernel refuses it: EPERM (container
/// seccomp profiles, kernel.io_uring_disabled), ENOSYS (no io_uring in the kernel or a sandbox), EINVAL (flags the
/// kernel does not know); setting ASYNC_SOCKET_IO_URING=0 in the environment also picks epoll (the escape hatch
/// libuv offers as UV_USE_IO_URING=0). io_uring_refusal() says why io_uring was not used.
///
/// Who submits (io_uring_ring.hpp): only a ring's own worker; other threads hand their IO over. A callback that
/// starts IO of a socket of its own ring, the common case, prepares it directly, and the worker submits all it
/// prepared and waits in one system call.
///
/// Sockets made on an engine keep a reference to it; the last reference stops and joins the workers, so it must not be
/// dropped on one of them (it cannot be: a socket whose callback runs there holds a reference).
///
/// Registrations. A socket is registered once, at its first open, for input and output together, edge-triggered
/// (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET). One registration for both directions, never modified per IO: a
/// send armed on a descriptor cannot replace the receive's interest (the starvation that EPOLL_CTL_MOD per IO
/// invites), and no system call is spent per IO on the registration.
///
/// Why slots. epoll_wait may hand a worker an event of a socket that another thread is destroying at that very
/// moment; the event names whatever its data held, and a pointer to the socket would then point at freed memory.
/// So the data is a slot number and a generation: slots belong to the engine (allocated in chunks, never freed
/// while the engine lives), each with its lock, its two IO queues and its count of outstanding IO. A stale event
/// finds its generation changed under the slot's lock and is ignored; a count that reaches 0 wakes a waiter
/// through engine-owned memory, never through the socket's.
///
/// Longer than 500 lines on purpose: the worker loop, the slot table and the epoll and io_uring paths share one
/// shutdown order (stop, wake every worker, join, then free the slots), which is read in one place.
#pragma once

#include <async_socket/backend/linux/detail/os_calls.hpp>
#include <async_socket/backend/linux/slot.hpp>
#include <async_socket/concepts.hpp>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <utility>

#include <cstdlib>
#include <cstring>

#if !defined(ASYNC_SOCKET_NO_IO_URING) && __has_include(<liburing.h>)
/// Defined when the io_uring mechanism is built in: liburing's header is found and ASYNC_SOCKET_NO_IO_URING is not
/// defined. Without it an engine runs on epoll only.
#define ASYNC_SOCKET_HAS_IO_URING 1
#include <async_socket/backend/linux/io_uring_ring.hpp>
#endif

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

namespace async_socket
{

/// The IO mechanism an engine runs on (linux_engine::mechanism()).
enum class linux_io_mechanism : std::uint8_t
{
    epoll,    ///< edge-triggered readiness: workers try the system calls when a descriptor is ready
    io_uring, ///< one ring per worker: the kernel does the queued IO
};

/// What linux_engine::create is asked for.
enum class linux_io_choice : std::uint8_t
{
    automatic, ///< io_uring unless the kernel refuses it (or ASYNC_SOCKET_IO_URING=0); then epoll
    io_uring,  ///< io_uring or fail
    epoll,     ///< epoll
};

/// The parameters of linux_engine::create.
struct linux_engine_parameters
{
    /// Worker threads, 0 (the default: one per core) to linux_engine::max_thread_count.
    std::uint32_t thread_count = 0;
    linux_io_choice io = linux_io_choice::automatic; ///< the mechanism to run on
};

class linux_engine;

namespace detail
{
/// The engine whose worker this thread is, if any.
inline thread_local linux_engine* current_linux_engine = nullptr;
/// The ring whose worker this thread is (io_uring).
inline thread_local std::uint32_t current_linux_ring = 0;

} // namespace detail

/// Worker threads over io_uring (one ring per worker) or epoll (one instance per worker). Made by create(), shared by
/// reference counting: the handle create() returns holds one reference, each socket made on the engine another.
class linux_engine
{
public:
    static constexpr std::uint32_t max_thread_count = 256; ///< the most worker threads an engine may have
    static constexpr std::uint32_t slots_per_chunk = 1024; ///< socket slots are allocated this many at a time
    static constexpr std::uint32_t max_chunks = 1024;      ///< up to ~1M registered sockets per engine

    /// The deleter of handle: drops the reference the handle holds (release).
    struct releaser
    {
        /// release(engine).
        void operator()(linux_engine* engine) const noexcept
        {
            release(engine);
        }
    };
    /// An owned reference to an engine.
    using handle = std::unique_ptr<linux_engine, releaser>;

    /// Makes an engine with one reference (the handle's) and starts its workers. Returns a null handle on
    /// failure, with errno saying why: EINVAL when thread_count is above max_thread_count, ENOMEM, the error
    /// of io_uring_queue_init when io_uring was asked for (ENOSYS when built without liburing), or the error of
    /// epoll_create1, eventfd or pthread_create.
    [[nodiscard]] static handle create(const linux_engine_parameters& parameters = {}) noexcept
    {
        std::uint32_t threads = parameters.thread_count;
        if (threads > max_thread_count)
        {
            errno = EINVAL;
            return nullptr;
        }
        if (threads == 0)
        {
            const long cores = sysconf(_SC_NPROCESSORS_ONLN);
            threads = cores < 1                                     ? 1U
                      : cores > static_cast<long>(max_thread_count) ? max_thread_count
                                                                    : static_cast<std::uint32_t>(cores);
        }
        auto* engine = new (std::nothrow) linux_engine(threads);
        if (engine == nullptr)
        {
            errno = ENOMEM;
            return nullptr;
        }
        handle made(engine);
        if (!engine->start(parameters.io))
        {
            return nullptr; // the handle's release stops what started; errno is kept
        }
        return made;
    }

    /// Takes one more reference. Does nothing for nullptr.
    static void add_ref(linux_engine* engine) noexcept
    {
        if (engine != nullptr)
        {
            engine->references_.fetch_add(1, std::memory_order_relaxed);
        }
    }

    /// Drops a reference; the last one stops and joins the workers and frees the engine.
    static void release(linux_engine* engine) noexcept
    {
        if (engine == nullptr || engine->references_.fetch_sub(1, std::memory_order_acq_rel) != 1)
        {
            return;
        }
        const int saved = errno;
        delete engine;
        errno = saved;
    }

    /// The mechanism the engine runs on: io_uring, or epoll (asked for, or io_uring refused).
    [[nodiscard]] linux_io_mechanism mechanism() const noexcept
    {
        return mechanism_;
    }

    /// Why io_uring is not in use: the errno of the refused io_uring_queue_init, ENOSYS when built without
    /// liburing, -1 when epoll was asked for (by the parameters or ASYNC_SOCKET_IO_URING=0); 0 on io_uring.
    [[nodiscard]] int io_uring_refusal() const noexcept
    {
        return io_uring_refusal_;
    }

    /// The number of worker threads (parameters.thread_count, or the core count for 0).
    [[nodiscard]] std::uint32_t thread_count() const noexcept
    {
        return thread_count_;
    }

    /// True on one of this engine's worker threads.
    [[nodiscard]] bool runs_this_thread() const noexcept
    {
        return detail::current_linux_engine == this;
    }

    /// Takes a free slot for `fd` and registers the descriptor; `ready` finishes the slot's IO when the
    /// descriptor is ready, and every IO of the slot completes through completion(owner, ...). Returns the slot, or
    /// nullptr with errno set (ENOMEM, or epoll_ctl's error: EBADF, EPERM for a descriptor epoll cannot watch, EEXIST
    /// when it is registered already).
    detail::linux_slot* register_socket(int fd, detail::linux_ready_fn ready, detail::linux_cqe_fn on_cqe,
                                        io_completion_fn completion, void* owner) noexcept
    {
        std::uint32_t index = 0;
        detail::linux_slot* slot = take_slot(index);
        if (slot == nullptr)
        {
            errno = ENOMEM;
            return nullptr;
        }
        std::uint32_t generation = 0;
        std::uint32_t ring = 0;
        {
            std::lock_guard<std::mutex> held(slot->lock);
            generation = ++slot->generation;
            slot->fd = fd;
            slot->completion = completion;
            slot->owner = owner;
            slot->maybe_readable = true;
            slot->maybe_writable = true;
            slot->hung_up = false;
            slot->inq = detail::linux_inq::unasked;
            slot->ring = next_ring_.fetch_add(1, std::memory_order_relaxed) % thread_count_;
            ring = slot->ring;
        }
        slot->ready.store(ready, std::memory_order_release);
        slot->on_cqe.store(on_cqe, std::memory_order_release);
        if (mechanism_ == linux_io_mechanism::io_uring)
        {
            return slot; // nothing to register: each IO names the descriptor
        }
        epoll_event event{};
        event.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
        event.data.u64 = (static_cast<std::uint64_t>(generation) << 32) | index;
        if (detail::os_epoll_ctl(epoll_fds_[ring], EPOLL_CTL_ADD, fd, &event) != 0)
        {
            const int error = errno;
            give_back(*slot, index);
            errno = error;
            return nullptr;
        }
        return slot;
    }

    /// Removes the descriptor from epoll and gives the slot back. The slot has no IO outstanding (the socket
    /// drained it). An event of the descriptor already taken by a worker then finds another generation.
    void unregister_socket(detail::linux_slot& slot) noexcept
    {
        std::uint32_t index = 0;
        int fd = -1;
        bool inq_set = false;
        std::uint32_t ring = 0;
        {
            std::lock_guard<std::mutex> held(slot.lock);
            fd = slot.fd;
            index = slot.next_free; // set to the slot's own index while it is taken (see take_slot)
            inq_set = slot.inq == detail::linux_inq::ours;
            ring = slot.ring;
        }
        if (fd >= 0 && mechanism_ == linux_io_mechanism::epoll)
        {
            (void)detail::os_epoll_ctl(epoll_fds_[ring], EPOLL_CTL_DEL, fd, nullptr);
        }
        if (fd >= 0 && inq_set)
        {
            // The descriptor goes back to its owner as it came: the backend's receive hint set TCP_INQ.
            const int off = 0;
            (void)::setsockopt(fd, IPPROTO_TCP, TCP_INQ, &off, sizeof off);
        }
        give_back(slot, index);
    }

    linux_engine(const linux_engine&) = delete;
    linux_engine& operator=(const linux_engine&) = delete;

private:
    explicit linux_engine(std::uint32_t threads) noexcept : thread_count_(threads)
    {
        for (int& epoll_fd : epoll_fds_)
        {
            epoll_fd = -1;
        }
    }

    ~linux_engine()
    {
#ifdef ASYNC_SOCKET_HAS_IO_URING
        for (std::uint32_t i = 0; i < started_ && rings_ != nullptr; ++i)
        {
            rings_[i].stop();
        }
#endif
        if (stop_fd_ >= 0)
        {
            // Level-triggered and never read, and in every worker's epoll instance: every worker sees it and ends.
            const std::uint64_t one = 1;
            while (write(stop_fd_, &one, sizeof one) < 0 && errno == EINTR)
            {
            }
        }
        for (std::uint32_t i = 0; i < started_; ++i)
        {
            (void)pthread_join(threads_[i], nullptr);
        }
        if (stop_fd_ >= 0)
        {
            (void)close(stop_fd_);
        }
        for (const int epoll_fd : epoll_fds_)
        {
            if (epoll_fd >= 0)
            {
                (void)close(epoll_fd);
            }
        }
        for (std::uint32_t i = 0; i < max_chunks; ++i)
        {
            delete[] chunks_[i].load(std::memory_order_relaxed);
        }
        delete[] threads_;
#ifdef ASYNC_SOCKET_HAS_IO_URING
        delete[] rings_;
#endif
    }

public:
#ifdef ASYNC_SOCKET_HAS_IO_URING
    /// True on the worker of `ring`, the one thread that submits to it.
    [[nodiscard]] bool owns_ring(std::uint32_t ring) const noexcept
    {
        return detail::current_linux_engine == this && detail::current_linux_ring == ring;
    }

    /// The io_uring ring of that index (a socket's slot says which ring it is on).
    [[nodiscard]] detail::linux_ring& ring(std::uint32_t index) noexcept
    {
        return rings_[index];
    }
#endif

private:
    /// The data of the stop event: no slot has this number.
    static constexpr std::uint64_t stop_data = ~std::uint64_t{0};

    bool start(linux_io_choice choice) noexcept
    {
        if (choice == linux_io_choice::automatic)
        {
            const char* setting = std::getenv("ASYNC_SOCKET_IO_URING");
            choice = setting != nullptr && std::strcmp(setting, "0") == 0 ? linux_io_choice::epoll
                                                                          : linux_io_choice::automatic;
        }
        io_uring_refusal_ = -1;
        if (choice != linux_io_choice::epoll)
        {
            io_uring_refusal_ = make_rings();
            if (io_uring_refusal_ == 0)
            {
                mechanism_ = linux_io_mechanism::io_uring;
                return start_threads();
            }
            const bool refused = io_uring_refusal_ == EPERM || io_uring_refusal_ == ENOSYS ||
                                 io_uring_refusal_ == EINVAL || io_uring_refusal_ == EACCES;
            if (choice == linux_io_choice::io_uring || !refused)
            {
                errno = io_uring_refusal_;
                return false;
            }
        }
        mechanism_ = linux_io_mechanism::epoll;
        stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (stop_fd_ < 0)
        {
            return false;
        }
        for (std::uint32_t i = 0; i < thread_count_; ++i)
        {
            epoll_fds_[i] = epoll_create1(EPOLL_CLOEXEC);
            if (epoll_fds_[i] < 0)
            {
                return false;
            }
            // The stop event is level-triggered and never read: in every instance, every worker sees it.
            epoll_event event{};
            event.events = EPOLLIN;
            event.data.u64 = stop_data;
            if (detail::os_epoll_ctl(epoll_fds_[i], EPOLL_CTL_ADD, stop_fd_, &event) != 0)
            {
                return false;
            }
        }
        return start_threads();
    }

    /// One ring per worker; returns 0 or the errno of the refusal.
    int make_rings() noexcept
    {
#ifdef ASYNC_SOCKET_HAS_IO_URING
        rings_ = new (std::nothrow) detail::linux_ring[thread_count_];
        if (rings_ == nullptr)
        {
            return ENOMEM;
        }
        for (std::uint32_t i = 0; i < thread_count_; ++i)
        {
            if (const int made = rings_[i].init(); made != 0)
            {
                delete[] rings_;
                rings_ = nullptr;
                return made;
            }
        }
        return 0;
#else
        return ENOSYS;
#endif
    }

    bool start_threads() noexcept
    {
        threads_ = new (std::nothrow) pthread_t[thread_count_];
        if (threads_ == nullptr)
        {
            errno = ENOMEM;
            return false;
        }
        for (; started_ < thread_count_; ++started_)
        {
            workers_[started_] = {this, started_};
            if (const int error = pthread_create(&threads_[started_], nullptr, &run, &workers_[started_]); error != 0)
            {
                errno = error;
                return false;
            }
        }
        return true;
    }

    [[nodiscard]] detail::linux_slot* slot_at(std::uint32_t index) const noexcept
    {
        detail::linux_slot* chunk = chunks_[index / slots_per_chunk].load(std::memory_order_acquire);
        return chunk == nullptr ? nullptr : &chunk[index % slots_per_chunk];
    }

    /// A free slot (its own index kept in next_free while taken), or nullptr when memory or numbers ran out.
    detail::linux_slot* take_slot(std::uint32_t& index) noexcept
    {
        std::lock_guard<std::mutex> held(slots_lock_);
        if (free_count_ == 0)
        {
            if (chunk_count_ == max_chunks)
            {
                return nullptr;
            }
            auto* chunk = new (std::nothrow) detail::linux_slot[slots_per_chunk];
            if (chunk == nullptr)
            {
                return nullptr;
            }
            const std::uint32_t first = chunk_count_ * slots_per_chunk;
            for (std::uint32_t i = 0; i < slots_per_chunk; ++i)
            {
                chunk[i].next_free = first + i + 1;
            }
            chunk[slots_per_chunk - 1].next_free = first_free_;
            first_free_ = first;
            free_count_ = slots_per_chunk;
            chunks_[chunk_count_++].store(chunk, std::memory_order_release);
        }
        index = first_free_;
        detail::linux_slot* slot = slot_at(index);
        first_free_ = slot->next_free;
        --free_count_;
        slot->next_free = index;
        return slot;
    }

    void give_back(detail::linux_slot& slot, std::uint32_t index) noexcept
    {
        {
            std::lock_guard<std::mutex> held(slot.lock);
            ++slot.generation;
            slot.fd = -1;
            slot.completion = nullptr;
            slot.owner = nullptr;
        }
        std::lock_guard<std::mutex> held(slots_lock_);
        slot.next_free = first_free_;
        first_free_ = index;
        ++free_count_;
    }

    struct worker
    {
        linux_engine* engine;
        std::uint32_t index;
    };

    static void* run(void* parameter) noexcept
    {
        const worker self = *static_cast<worker*>(parameter);
        detail::current_linux_engine = self.engine;
#ifdef ASYNC_SOCKET_HAS_IO_URING
        if (self.engine->mechanism_ == linux_io_mechanism::io_uring)
        {
            detail::current_linux_ring = self.index;
            self.engine->rings_[self.index].run();
        }
        else
#endif
        {
            self.engine->wait_on_epoll(self.index);
        }
        detail::current_linux_engine = nullptr;
        return nullptr;
    }

    void wait_on_epoll(std::uint32_t index) noexcept
    {
        linux_engine* engine = this;
        constexpr int batch = 64;
        epoll_event events[batch];
        for (;;)
        {
            const int count = epoll_wait(engine->epoll_fds_[index], events, batch, -1);
            if (count < 0)
            {
                if (errno == EINTR)
                {
                    continue;
                }
                break; // the epoll descriptor is gone: cannot happen while the engine lives
            }
            bool stop = false;
            for (int i = 0; i < count; ++i)
            {
                const std::uint64_t data = events[i].data.u64;
                if (data == stop_data)
                {
                    stop = true;
                    continue;
                }
                detail::linux_slot* slot = engine->slot_at(static_cast<std::uint32_t>(data));
                if (slot == nullptr)
                {
                    continue;
                }
                if (const detail::linux_ready_fn ready = slot->ready.load(std::memory_order_acquire); ready != nullptr)
                {
                    ready(*slot, static_cast<std::uint32_t>(data >> 32), events[i].events);
                }
            }
            if (stop)
            {
                break;
            }
        }
    }

#ifdef ASYNC_SOCKET_HAS_IO_URING
    detail::linux_ring* rings_ = nullptr;
#endif
    worker workers_[max_thread_count]{};
    linux_io_mechanism mechanism_ = linux_io_mechanism::epoll;
    int io_uring_refusal_ = 0;
    std::atomic<std::uint32_t> next_ring_{0};
    std::atomic<std::uint32_t> references_{1};
    std::uint32_t thread_count_;
    std::uint32_t started_ = 0;
    int epoll_fds_[max_thread_count]; ///< epoll: one instance per worker (-1 where none); set by the constructor
    int stop_fd_ = -1;
    pthread_t* threads_ = nullptr;

    std::mutex slots_lock_;
    std::atomic<detail::linux_slot*> chunks_[max_chunks]{};
    std::uint32_t chunk_count_ = 0;
    std::uint32_t first_free_ = 0;
    std::uint32_t free_count_ = 0;
};

} // namespace async_socket
