// async_socket: the Linux backend on epoll readiness (the fallback where io_uring is refused).
//
// The whole protocol of one IO, over a linux_engine (engine.hpp):
// - submit: when no IO of that direction is queued, the system call is tried at once (sendmsg/recvmsg with
//   MSG_DONTWAIT; sends with MSG_NOSIGNAL, so a reset peer never raises SIGPIPE). An IO that finishes there is
//   answered completed_at_once and the core completes it on the calling thread; one that would block is queued.
//   A queued IO of a direction never lets a later one of the same direction pass it: only the head is tried.
// - ready: a worker woken for the descriptor (edge-triggered, both directions registered once) takes the slot's
//   lock, tries the head of each queue until it would block, takes what finished off the queues, releases the
//   lock and only then runs the completions (a callback never runs under a lock, so it may submit again).
//   Receives are tried before sends; bytes that arrived with the peer's FIN are received first, and the end of
//   the stream (recvmsg returning 0) is the next receive's result.
// - sends: every byte of every buffer goes out or the send fails. The OS may take part of a buffer list: the
//   send then advances over what went (iovecs consumed, the first one shortened) and waits for room, and is
//   answered success only when nothing is left. At most IOV_MAX buffers go to one sendmsg; more are sent in turns.
// - cancel_all (close): every queued IO is taken off under the lock and completed as cancelled (ECANCELED) on
//   the closing thread, outside the lock. An IO a worker has taken off is completed by that worker; drain waits
//   for it through the slot's count, which lives in engine memory (engine.hpp).
// - errors: errno values, classified: ECONNRESET, EPIPE, ECONNABORTED are a reset; ECANCELED cancelled; others
//   other. The errno value stays in io_result::os_code.
#pragma once

#include <async_socket/backend/linux/engine.hpp>
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

class linux_epoll_backend
{
public:
    using engine_type = linux_engine*;
    using io_state = detail::linux_io_state;
    using buffer_type = ::iovec;

    static constexpr bool completes_at_once = true;

    linux_epoll_backend() noexcept = default;
    // Only moved before bind (create moves the backend in).
    linux_epoll_backend(linux_epoll_backend&& other) noexcept
        : engine_(std::exchange(other.engine_, nullptr)), slot_(std::exchange(other.slot_, nullptr))
    {
    }
    linux_epoll_backend& operator=(linux_epoll_backend&&) = delete;
    linux_epoll_backend(const linux_epoll_backend&) = delete;
    linux_epoll_backend& operator=(const linux_epoll_backend&) = delete;

    ~linux_epoll_backend()
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
        return true;
    }

    // Registers the descriptor (async_socket_fd_from_handle(socket)) with the engine's epoll. Fails for a
    // descriptor epoll cannot watch (not a socket: EPERM; closed: EBADF) or one registered already.
    template <io_completion_fn Completion>
    bool bind(SOCKET_HANDLE socket, void* owner) noexcept
    {
        slot_ = engine_->register_socket(async_socket_fd_from_handle(socket), &on_ready, Completion, owner);
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
        return submit<&try_send, &detail::linux_slot::sends>(io, buffers, count);
    }

    submit_result submit_receive(io_state& io, buffer_type* buffers, std::uint32_t count) noexcept
    {
        return submit<&try_receive, &detail::linux_slot::receives>(io, buffers, count);
    }

    void cancel_all() noexcept
    {
        detail::linux_io_state* taken = nullptr;
        io_completion_fn completion = nullptr;
        void* owner = nullptr;
        {
            std::lock_guard<std::mutex> held(slot_->lock);
            taken = append(slot_->receives.take_all(), slot_->sends.take_all());
            completion = slot_->completion;
            owner = slot_->owner;
        }
        for (auto* io = taken; io != nullptr; io = io->next)
        {
            io->error = ECANCELED;
        }
        complete(*slot_, taken, completion, owner);
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

    static attempt try_send(int fd, io_state& io) noexcept
    {
        for (;;)
        {
            msghdr message{};
            message.msg_iov = io.buffers;
            message.msg_iovlen = batch(io);
            const ssize_t sent = sendmsg(fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (sent < 0)
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
            io.bytes += static_cast<std::uint32_t>(sent);
            // Step over what went: whole buffers, then part of the next.
            auto left = static_cast<std::size_t>(sent);
            while (io.count != 0 && left >= io.buffers->iov_len)
            {
                left -= io.buffers->iov_len;
                ++io.buffers;
                --io.count;
            }
            if (io.count == 0)
            {
                io.error = 0;
                return attempt::finished;
            }
            io.buffers->iov_base = static_cast<char*>(io.buffers->iov_base) + left;
            io.buffers->iov_len -= left;
        }
    }

    static attempt try_receive(int fd, io_state& io) noexcept
    {
        for (;;)
        {
            msghdr message{};
            message.msg_iov = io.buffers;
            message.msg_iovlen = batch(io);
            const ssize_t received = recvmsg(fd, &message, MSG_DONTWAIT);
            if (received < 0)
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
            io.bytes = static_cast<std::uint32_t>(received); // 0: the peer ended the stream
            io.error = 0;
            return attempt::finished;
        }
    }

    template <attempt (*Try)(int, io_state&) noexcept, detail::linux_io_queue detail::linux_slot::*Queue>
    submit_result submit(io_state& io, buffer_type* buffers, std::uint32_t count) noexcept
    {
        io.next = nullptr;
        io.buffers = buffers;
        io.count = count;
        io.bytes = 0;
        io.error = 0;
        detail::linux_slot& slot = *slot_;
        {
            std::lock_guard<std::mutex> held(slot.lock);
            detail::linux_io_queue& queue = slot.*Queue;
            if (!queue.empty() || Try(slot.fd, io) == attempt::would_block)
            {
                slot.outstanding.fetch_add(1, std::memory_order_relaxed);
                queue.push(io);
                return submit_result{submit_status::pending, 0};
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
        io.next = nullptr;
        complete(slot, &io, slot.completion, slot.owner);
        return submit_result{submit_status::pending, 0};
    }

    // Runs the completions of a list of IO taken off the queues, then takes them off the slot's count.
    static void complete(detail::linux_slot& slot, io_state* list, io_completion_fn completion, void* owner) noexcept
    {
        std::uint32_t count = 0;
        while (list != nullptr)
        {
            io_state* io = list;
            list = io->next; // the context is freed by the completion
            completion(owner, io, classify_errno(io->error, io->bytes));
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

    // Takes off each queue the IO that can finish now, in order, and completes them outside the lock.
    static void on_ready(detail::linux_slot& slot, std::uint32_t generation, std::uint32_t /*events*/) noexcept
    {
        io_state* finished = nullptr;
        io_state** tail = &finished;
        io_completion_fn completion = nullptr;
        void* owner = nullptr;
        {
            std::lock_guard<std::mutex> held(slot.lock);
            if (slot.generation != generation || slot.fd < 0)
            {
                return;
            }
            for (detail::linux_io_queue* queue : {&slot.receives, &slot.sends})
            {
                attempt (*try_one)(int, io_state&) noexcept = queue == &slot.sends ? &try_send : &try_receive;
                while (!queue->empty() && try_one(slot.fd, *queue->head) == attempt::finished)
                {
                    io_state* io = queue->pop();
                    io->next = nullptr;
                    *tail = io;
                    tail = &io->next;
                }
            }
            completion = slot.completion;
            owner = slot.owner;
        }
        complete(slot, finished, completion, owner);
    }

    linux_engine* engine_ = nullptr;
    detail::linux_slot* slot_ = nullptr;
};

static_assert(check_backend<linux_epoll_backend>());

} // namespace async_socket
