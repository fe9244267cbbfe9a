/// @file
/// async_socket: the per-socket state the Linux engine keeps for a backend: the IO block, the queues, the slot.
///
/// A slot belongs to the engine (engine.hpp says why): the socket's lock, its two FIFO queues of IO, its count of
/// outstanding IO, and what its completions call. Only the head of a queue is ever being done by the OS.
#pragma once

#include <async_socket/concepts.hpp>

#include <atomic>
#include <cstdint>
#include <mutex>

#include <sys/socket.h>
#include <sys/uio.h>

namespace async_socket::detail
{

/// The backend's block of one IO (first in the IO context). The buffers are the context's iovec array; a send
/// that goes out in parts advances `buffers`/`count` (and the first iovec) past what has gone.
struct linux_slot;

/// What an IO is: a transfer (send or receive, by is_send), or an accept (on the receive queue: it waits for the
/// listener to be readable) or a connect (on the send queue: it waits for writability).
enum class linux_io_op : std::uint8_t
{
    transfer,
    accept,
    connect,
};

/// The accept_area of linux_backend: where the accepted descriptor and its peer's address are put.
struct linux_accept_area
{
    int fd;           ///< the accepted descriptor once the accept succeeded; -1 before
    socklen_t length; ///< in: sizeof peer; out: the address's length
    sockaddr_storage peer;
};

/// The connect_area of linux_backend: the address, which an io_uring request reads until it completes.
struct linux_connect_area
{
    sockaddr_storage address;
    socklen_t length;
    bool started; ///< connect(2) has been called once (epoll): later tries ask how it went
};

struct linux_io_state
{
    linux_io_state* next;
    /// The socket's slot, found again from a completion's user_data (io_uring). Atomic: the kernel hands the IO
    /// from the submitting thread to a worker, a hand-off no race detector sees; this store and load are the edge.
    std::atomic<linux_slot*> slot;
    bool is_send;
    linux_io_op op;
    void* area; ///< an accept's linux_accept_area, a connect's linux_connect_area; null for a transfer
    ::iovec* buffers;
    std::uint32_t count;
    std::uint32_t bytes; ///< bytes moved so far
    int error;           ///< errno of the failed call; 0 on success
    msghdr message;      ///< io_uring: the request's message header, which must live until its completion
    /// io_uring, for an IO handed to its ring's worker to submit (see linux_engine::hand_to_ring):
    linux_io_state* handed_next; ///< the ring's list of IO to submit
    bool cancel_requested;       ///< close or cancel_one asked: the worker cancels it (or, not started, completes it
                                 ///< as cancelled instead)
    bool finished_at_submit;     ///< done by the try in submit on another thread; handed over only to complete
};

/// A FIFO of queued IO of one direction; only its head can make progress.
struct linux_io_queue
{
    linux_io_state* head = nullptr;
    linux_io_state* tail = nullptr;

    [[nodiscard]] bool empty() const noexcept
    {
        return head == nullptr;
    }
    void push(linux_io_state& io) noexcept
    {
        io.next = nullptr;
        if (tail == nullptr)
        {
            head = &io;
        }
        else
        {
            tail->next = &io;
        }
        tail = &io;
    }
    linux_io_state* pop() noexcept
    {
        linux_io_state* io = head;
        head = io->next;
        if (head == nullptr)
        {
            tail = nullptr;
        }
        return io;
    }
    /// Takes `io` out wherever it is; false when it is not queued here.
    bool remove(linux_io_state& io) noexcept
    {
        linux_io_state* before = nullptr;
        for (linux_io_state* at = head; at != nullptr; before = at, at = at->next)
        {
            if (at != &io)
            {
                continue;
            }
            (before == nullptr ? head : before->next) = io.next;
            if (tail == &io)
            {
                tail = before;
            }
            io.next = nullptr;
            return true;
        }
        return false;
    }
    /// Takes every item, leaving the queue empty.
    linux_io_state* take_all() noexcept
    {
        linux_io_state* all = head;
        head = nullptr;
        tail = nullptr;
        return all;
    }
};

/// What a worker runs for a ready descriptor: the backend that owns the IO protocol finishes what the slot's
/// queued IO can now do. It checks `generation` under the slot's lock: an event of an earlier registration is
/// ignored (at worst it is a spurious wake-up of a later one, which finds nothing to do).
using linux_ready_fn = void (*)(linux_slot& slot, std::uint32_t generation, std::uint32_t events) noexcept;

/// What a worker runs for an io_uring completion of one IO: `result` is the completion's res (bytes, or -errno),
/// or linux_start_request for an IO handed to the worker to submit.
using linux_cqe_fn = void (*)(linux_io_state& io, int result) noexcept;
inline constexpr int linux_start_request = INT32_MIN;

/// Whether a slot's descriptor reports the bytes a receive left (TCP_INQ). Asked for at the first receive that
/// filled its buffers (a receive that stops short says "drained" already); given back when the slot is.
enum class linux_inq : std::uint8_t
{
    unasked, ///< no receive has filled its buffers yet
    ours,    ///< set by the backend: unset again when the socket is unregistered
    owners,  ///< set already by the descriptor's owner: used, and left set
    refused, ///< not a TCP socket (or the kernel has no TCP_INQ): never asked again
};

/// One socket's registration with the engine. Engine-owned memory: it outlives every socket that used it.
struct linux_slot
{
    /// In `outstanding` beside the count: a drain waits for the count to reach 0.
    static constexpr std::uint32_t waiter_flag = 0x80000000U;

    std::mutex lock;
    std::uint32_t generation = 0; ///< changed (under lock) whenever the slot is taken or given back
    int fd = -1;                  ///< -1 while free
    io_completion_fn completion = nullptr;
    void* owner = nullptr;
    std::atomic<linux_ready_fn> ready{nullptr}; ///< epoll: read by workers without the lock
    std::atomic<linux_cqe_fn> on_cqe{nullptr};  ///< io_uring: likewise
    std::uint32_t ring = 0;                     ///< io_uring: the ring (and worker) the socket's IO goes to
    /// Hints, under the lock: false once a receive (send) found the socket drained (full): an EAGAIN or a short
    /// transfer. Then the next IO of that direction skips the try that would fail and waits for readiness
    /// (epoll: the next edge sets the hint again; io_uring: the kernel's own try of the request).
    bool maybe_readable = true;
    bool maybe_writable = true;
    /// epoll: the peer hung up or the connection failed (EPOLLRDHUP, EPOLLHUP, EPOLLERR seen). Such a state raises
    /// no further edge, so from then on every IO tries its call (the hints above stay true).
    bool hung_up = false;
    /// TCP_INQ on the descriptor (under the lock): with it each receive's try learns how many bytes it left in
    /// the socket, so a receive that filled its buffers and left nothing clears maybe_readable like a short one.
    linux_inq inq = linux_inq::unasked;
    linux_slot* cancel_next = nullptr; ///< io_uring: the ring's list of slots whose heads close cancels
    bool cancel_handed = false;
    linux_io_queue sends;
    linux_io_queue receives;
    std::atomic<std::uint32_t> outstanding{0}; ///< IO accepted and not yet completed, plus waiter_flag
    std::uint32_t next_free = 0;

    /// One IO is done (its completion returned, or it was never accepted). Touches only engine memory.
    void done(std::uint32_t count) noexcept
    {
        if (outstanding.fetch_sub(count, std::memory_order_acq_rel) == (waiter_flag | count))
        {
            outstanding.notify_all();
        }
    }

    /// Blocks until no IO of the slot is outstanding (drain). Never called from one of its own completions.
    void wait_for_outstanding() noexcept
    {
        std::uint32_t seen = outstanding.fetch_or(waiter_flag, std::memory_order_acq_rel) | waiter_flag;
        while (seen != waiter_flag)
        {
            outstanding.wait(seen, std::memory_order_acquire);
            seen = outstanding.load(std::memory_order_acquire);
        }
        outstanding.fetch_and(~waiter_flag, std::memory_order_acq_rel);
    }
};

} // namespace async_socket::detail
