// async_socket: the Linux backend, on io_uring or on epoll readiness (whichever the engine runs, engine.hpp).
//
// The whole protocol of one IO:
// - submit: when no IO of that direction is queued, the system call is tried at once (sendmsg/recvmsg with
//   MSG_DONTWAIT; sends with MSG_NOSIGNAL, so a reset peer never raises SIGPIPE). An IO that finishes there is
//   answered completed_at_once and the core completes it on the calling thread; one that would block is queued.
//   A queued IO never lets a later one of the same direction pass it: only the head of a queue is being done.
// - io_uring: the head of each queue is one request in the kernel (IORING_OP_SENDMSG/RECVMSG on the socket's
//   ring); its completion, reaped by the ring's worker, finishes it or (a send that went out in part) submits the
//   rest, then submits the next head. Sends never overlap, so parts of two sends cannot interleave on the wire.
// - epoll: a worker woken for the descriptor (edge-triggered, both directions registered once) tries the head of
//   each queue until it would block. Receives are tried before sends.
// - Either way the completions run on the worker outside the socket's lock (so a callback may submit again);
//   bytes that arrived with the peer's FIN are received first and the end of the stream (0 bytes) is the next
//   receive's result.
// - sends: every byte of every buffer goes out or the send fails. The OS may take part of a buffer list: the
//   send then advances over what went (iovecs consumed, the first one shortened) and goes on, and is answered
//   success only when nothing is left. At most IOV_MAX buffers go to one system call; more go in turns.
// - cancel_all (close): every queued IO that is not in the kernel is taken off under the lock and completed as
//   cancelled (ECANCELED) on the closing thread, outside the lock; a head in the kernel gets IORING_OP_ASYNC_CANCEL
//   and completes through its ring. drain waits for all of them through the slot's count (engine memory).
// - errors: errno values, classified: ECONNRESET, EPIPE, ECONNABORTED are a reset; ECANCELED cancelled; others
//   other. The errno value stays in io_result::os_code.
#pragma once

#include <async_socket/backend/linux/engine.hpp>
#include <async_socket/backend/linux/slot.hpp>
#include <async_socket/concepts.hpp>
#include <async_socket/types.h>

#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <utility>

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

namespace async_socket
{

// An errno value as the core's io_result (os_code keeps the value).
[[nodiscard]] constexpr io_result classify_errno(int error, std::size_t bytes) noexcept
{
    io_outcome outcome = io_outcome::other;
    if (error == 0)
    {
        outcome = io_outcome::success;
    }
    else if (error == ECANCELED)
    {
        outcome = io_outcome::cancelled;
    }
    else if (error == ECONNRESET || error == EPIPE || error == ECONNABORTED)
    {
        outcome = io_outcome::reset;
    }
    return io_result{outcome, static_cast<std::uint32_t>(error), bytes};
}

class linux_backend
{
public:
    using engine_type = linux_engine*;
    using io_state = detail::linux_io_state;
    using buffer_type = ::iovec;

    static constexpr bool completes_at_once = true;

    linux_backend() noexcept = default;
    // Only moved before bind (create moves the backend in).
    linux_backend(linux_backend&& other) noexcept
        : engine_(std::exchange(other.engine_, nullptr)), slot_(std::exchange(other.slot_, nullptr))
    {
    }
    linux_backend& operator=(linux_backend&&) = delete;
    linux_backend(const linux_backend&) = delete;
    linux_backend& operator=(const linux_backend&) = delete;

    ~linux_backend()
    {
        linux_engine::release(engine_);
    }

    // Takes a reference to the engine.
    bool attach(linux_engine* engine) noexcept
    {
        if (engine == nullptr)
        {
            return false;
        }
        linux_engine::add_ref(engine);
        linux_engine::release(engine_);
        engine_ = engine;
        uring_ = engine->mechanism() == linux_io_mechanism::io_uring;
        return true;
    }

    // Registers the descriptor (async_socket_fd_from_handle(socket)) with the engine. On epoll, fails for a
    // descriptor epoll cannot watch (not a socket: EPERM; closed: EBADF) or one registered already.
    template <io_completion_fn Completion>
    bool bind(SOCKET_HANDLE socket, void* owner) noexcept
    {
        slot_ = engine_->register_socket(async_socket_fd_from_handle(socket), &on_ready, &on_cqe, Completion, owner);
        return slot_ != nullptr;
    }

    void unbind() noexcept
    {
        if (slot_ != nullptr)
        {
            engine_->unregister_socket(*slot_);
            slot_ = nullptr;
        }
    }

    submit_result submit_send(io_state& io, buffer_type* buffers, std::uint32_t count) noexcept
    {
        return submit<true>(io, buffers, count);
    }

    submit_result submit_receive(io_state& io, buffer_type* buffers, std::uint32_t count) noexcept
    {
        return submit<false>(io, buffers, count);
    }

    void cancel_all() noexcept
    {
        detail::linux_slot& slot = *slot_;
        io_state* taken = nullptr;
        {
            std::lock_guard<std::mutex> held(slot.lock);
            if (uring_)
            {
                // The heads are in the kernel: cancel them there; the rest never started.
                taken = append(take_all_but_head(slot.receives), take_all_but_head(slot.sends));
                for (detail::linux_io_queue* queue : {&slot.receives, &slot.sends})
                {
                    if (!queue->empty())
                    {
                        // Not yet in the kernel (handed to the worker): the worker sees the flag and completes it.
                        queue->head->cancel_requested = true;
                        cancel_in_kernel(slot, *queue->head);
                    }
                }
            }
            else
            {
                taken = append(slot.receives.take_all(), slot.sends.take_all());
            }
        }
        for (io_state* io = taken; io != nullptr; io = io->next)
        {
            io->error = ECANCELED;
        }
        complete(slot, taken);
    }

    void drain() noexcept
    {
        slot_->wait_for_outstanding();
    }

    static void set_buffer(buffer_type& buffer, void* memory, std::uint32_t length) noexcept
    {
        buffer.iov_base = memory;
        buffer.iov_len = length;
    }

private:
    enum class attempt : std::uint8_t
    {
        finished,    // done: io.error says how (0: success)
        would_block, // the descriptor has no room or no data now
    };

    static std::uint32_t batch(const io_state& io) noexcept
    {
        return io.count < static_cast<std::uint32_t>(IOV_MAX) ? io.count : static_cast<std::uint32_t>(IOV_MAX);
    }

    // A send moved `sent` more bytes: steps over whole buffers, then part of the next. True when all went.
    static bool advance(io_state& io, std::size_t sent) noexcept
    {
        io.bytes += static_cast<std::uint32_t>(sent);
        while (io.count != 0 && sent >= io.buffers->iov_len)
        {
            sent -= io.buffers->iov_len;
            ++io.buffers;
            --io.count;
        }
        if (io.count == 0)
        {
            return true;
        }
        io.buffers->iov_base = static_cast<char*>(io.buffers->iov_base) + sent;
        io.buffers->iov_len -= sent;
        return false;
    }

    // One non-blocking try of the IO's system call (repeated while a send goes out in part).
    static attempt try_now(int fd, io_state& io) noexcept
    {
        for (;;)
        {
            msghdr message{};
            message.msg_iov = io.buffers;
            message.msg_iovlen = batch(io);
            const ssize_t moved =
                io.is_send ? sendmsg(fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT) : recvmsg(fd, &message, MSG_DONTWAIT);
            if (moved < 0)
            {
                if (errno == EINTR)
                {
                    continue;
                }
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                {
                    return attempt::would_block;
                }
                io.error = errno;
                return attempt::finished;
            }
            io.error = 0;
            if (!io.is_send)
            {
                io.bytes = static_cast<std::uint32_t>(moved); // 0: the peer ended the stream
                return attempt::finished;
            }
            if (advance(io, static_cast<std::size_t>(moved)))
            {
                return attempt::finished;
            }
        }
    }

    // io_uring: puts the IO (the head of its queue) in the kernel, or hands it to the ring's worker when this
    // thread is not that worker (engine.hpp: a thread's requests end with the thread). Under the slot's lock.
    // 0 or -errno.
    static int start_in_kernel(linux_engine& engine, const detail::linux_slot& slot, io_state& io) noexcept
    {
#ifdef ASYNC_SOCKET_HAS_IO_URING
        if (!engine.owns_ring(slot.ring))
        {
            engine.hand_to_ring(slot.ring, io);
            return 0;
        }
        io.message = msghdr{};
        io.message.msg_iov = io.buffers;
        io.message.msg_iovlen = batch(io);
        return engine.submit_to_ring(slot.ring,
                                     [&](io_uring_sqe& sqe) noexcept
                                     {
                                         if (io.is_send)
                                         {
                                             io_uring_prep_sendmsg(&sqe, slot.fd, &io.message, MSG_NOSIGNAL);
                                         }
                                         else
                                         {
                                             io_uring_prep_recvmsg(&sqe, slot.fd, &io.message, 0);
                                         }
                                         io_uring_sqe_set_data(&sqe, &io);
                                     });
#else
        (void)engine;
        (void)slot;
        (void)io;
        return -ENOSYS;
#endif
    }

    // io_uring: asks the kernel to cancel the IO. Retried while the ring is full (its worker is reaping).
    void cancel_in_kernel(const detail::linux_slot& slot, io_state& io) noexcept
    {
#ifdef ASYNC_SOCKET_HAS_IO_URING
        while (engine_->submit_to_ring(slot.ring,
                                       [&](io_uring_sqe& sqe) noexcept
                                       {
                                           io_uring_prep_cancel64(&sqe, reinterpret_cast<std::uintptr_t>(&io), 0);
                                           io_uring_sqe_set_data64(&sqe, 0);
                                       }) != 0)
        {
            (void)usleep(1000);
        }
#else
        (void)slot;
        (void)io;
#endif
    }

    template <bool IsSend>
    submit_result submit(io_state& io, buffer_type* buffers, std::uint32_t count) noexcept
    {
        io.next = nullptr;
        io.slot.store(slot_, std::memory_order_release);
        io.is_send = IsSend;
        io.buffers = buffers;
        io.count = count;
        io.bytes = 0;
        io.error = 0;
        io.handed_next = nullptr;
        io.cancel_requested = false;
        detail::linux_slot& slot = *slot_;
        {
            std::lock_guard<std::mutex> held(slot.lock);
            detail::linux_io_queue& queue = IsSend ? slot.sends : slot.receives;
            if (!queue.empty())
            {
                slot.outstanding.fetch_add(1, std::memory_order_relaxed);
                queue.push(io);
                return submit_result{submit_status::pending, 0};
            }
            if (try_now(slot.fd, io) == attempt::would_block)
            {
                const int started = uring_ ? start_in_kernel(*engine_, slot, io) : 0;
                if (started == 0)
                {
                    slot.outstanding.fetch_add(1, std::memory_order_relaxed);
                    queue.push(io);
                    return submit_result{submit_status::pending, 0};
                }
                io.error = -started;
            }
        }
        if (io.error == 0)
        {
            return submit_result{submit_status::completed_at_once, io.bytes};
        }
        if (io.bytes == 0)
        {
            return submit_result{submit_status::refused, static_cast<std::uint32_t>(io.error)};
        }
        // A send that went out in part and then failed: bytes have left, so it cannot be refused; it completes
        // (with the error) before the call returns.
        slot.outstanding.fetch_add(1, std::memory_order_relaxed);
        complete(slot, &io);
        return submit_result{submit_status::pending, 0};
    }

    // Runs the completions of a list of IO taken off the queues, then takes them off the slot's count.
    static void complete(detail::linux_slot& slot, io_state* list) noexcept
    {
        std::uint32_t count = 0;
        while (list != nullptr)
        {
            io_state* io = list;
            list = io->next; // the context is freed by the completion
            slot.completion(slot.owner, io, classify_errno(io->error, io->bytes));
            ++count;
        }
        if (count != 0)
        {
            slot.done(count);
        }
    }

    static io_state* append(io_state* first, io_state* second) noexcept
    {
        if (first == nullptr)
        {
            return second;
        }
        io_state* last = first;
        while (last->next != nullptr)
        {
            last = last->next;
        }
        last->next = second;
        return first;
    }

    static io_state* take_all_but_head(detail::linux_io_queue& queue) noexcept
    {
        if (queue.empty())
        {
            return nullptr;
        }
        io_state* rest = queue.head->next;
        queue.head->next = nullptr;
        queue.tail = queue.head;
        return rest;
    }

    // epoll: takes off each queue the IO that can finish now, in order, and completes them outside the lock.
    static void on_ready(detail::linux_slot& slot, std::uint32_t generation, std::uint32_t /*events*/) noexcept
    {
        io_state* finished = nullptr;
        io_state** tail = &finished;
        {
            std::lock_guard<std::mutex> held(slot.lock);
            if (slot.generation != generation || slot.fd < 0)
            {
                return;
            }
            for (detail::linux_io_queue* queue : {&slot.receives, &slot.sends})
            {
                while (!queue->empty() && try_now(slot.fd, *queue->head) == attempt::finished)
                {
                    io_state* io = queue->pop();
                    io->next = nullptr;
                    *tail = io;
                    tail = &io->next;
                }
            }
        }
        complete(slot, finished);
    }

    // io_uring: the completion of the head of a queue (res: bytes, or -errno), or (res == linux_start_request) a
    // head handed over to be submitted here. A send with bytes left goes on unless close asked for a cancel;
    // anything else finishes, and the next head goes to the kernel.
    static void on_cqe(io_state& io, int res) noexcept
    {
        detail::linux_slot& slot = *io.slot.load(std::memory_order_acquire);
        linux_engine& engine = *detail::current_linux_engine; // runs on a worker of the engine
        io_state* finished = nullptr;
        {
            std::lock_guard<std::mutex> held(slot.lock);
            if (res == detail::linux_start_request)
            {
                if (!io.cancel_requested)
                {
                    const int started = start_in_kernel(engine, slot, io);
                    if (started == 0)
                    {
                        return;
                    }
                    io.error = -started;
                }
                else
                {
                    io.error = ECANCELED;
                }
            }
            else if (res < 0)
            {
                io.error = -res;
            }
            else if (!io.is_send)
            {
                io.bytes = static_cast<std::uint32_t>(res);
            }
            else if (res == 0)
            {
                io.error = EPIPE; // a send of a non-empty buffer that moved nothing: the connection is gone
            }
            else if (!advance(io, static_cast<std::size_t>(res)))
            {
                const int started = io.cancel_requested ? -ECANCELED : start_in_kernel(engine, slot, io);
                if (started == 0)
                {
                    return; // the rest is in the kernel
                }
                io.error = -started;
            }
            finished = finish_head(engine, slot, io.is_send ? slot.sends : slot.receives);
        }
        complete(slot, finished);
    }

    // Takes the finished head off its queue and starts the next one; a next one that cannot start finishes too.
    // Returns the finished IO, in order. Under the slot's lock.
    static io_state* finish_head(linux_engine& engine, const detail::linux_slot& slot,
                                 detail::linux_io_queue& queue) noexcept
    {
        io_state* finished = queue.pop(); // only the head is ever in the kernel
        finished->next = nullptr;
        io_state* last = finished;
        while (!queue.empty())
        {
            const int started = start_in_kernel(engine, slot, *queue.head);
            if (started == 0)
            {
                break;
            }
            io_state* refused = queue.pop();
            refused->error = -started;
            refused->next = nullptr;
            last->next = refused;
            last = refused;
        }
        return finished;
    }

    linux_engine* engine_ = nullptr;
    detail::linux_slot* slot_ = nullptr;
    bool uring_ = false;
};

static_assert(check_backend<linux_backend>());

} // namespace async_socket
