/// @file
/// async_socket: the Linux backend, on io_uring or on epoll readiness (whichever the engine runs, engine.hpp).
///
/// The whole protocol of one IO:
/// - submit: when no IO of that direction is queued, the system call is tried at once (sendmsg/recvmsg with
///   MSG_DONTWAIT; sends with MSG_NOSIGNAL, so a reset peer never raises SIGPIPE); one that would block is queued.
///   A queued IO never lets a later one of the same direction pass it: only the head of a queue is being done.
///   epoll: an IO that finishes there is answered completed_at_once and the core completes it on the calling
///   thread. io_uring: on the ring's own worker (a callback starting IO) nothing is tried, the request goes on the
///   ring and joins the worker's next io_uring_enter (one system call for the round instead of one per IO, and a
///   receive's try mostly finds nothing); on another thread an IO that finishes at once stays the head of its
///   queue and is handed to the worker to complete. So on io_uring a callback never runs inside the call that
///   started its IO, and the IO a callback starts runs on the worker: a sender cannot run ahead of a receiver on
///   the same worker (measured: 64 KiB streaming went from 0.5 to about 0.9 of a raw liburing loop).
/// - io_uring requests of one buffer are IORING_OP_SEND/RECV (no message header for the kernel to copy); of more,
///   SENDMSG/RECVMSG.
/// - io_uring: the head of each queue is one request in the kernel (on the socket's ring, put there by the ring's
///   worker only: io_uring_ring.hpp); its completion finishes it or (a send that went out in part) submits the rest,
///   then submits the next head. Sends never overlap, so parts of two sends cannot interleave on the wire.
/// - readiness hints (slot.hpp): after an EAGAIN or a short transfer the next IO of that direction does not try
///   the call that would fail; epoll waits for the next edge. (On io_uring the worker's requests skip the try
///   anyway and the kernel makes its own first try.)
/// - epoll: a worker woken for the descriptor (edge-triggered, both directions registered once) tries the head of
///   each queue until it would block. Receives are tried before sends.
/// - Either way the completions run on the worker outside the socket's lock (so a callback may submit again);
///   bytes that arrived with the peer's FIN are received first and the end of the stream (0 bytes) is the next
///   receive's result.
/// - sends: every byte of every buffer goes out or the send fails. The OS may take part of a buffer list: the
///   send then advances over what went (iovecs consumed, the first one shortened) and goes on, and is answered
///   success only when nothing is left. At most IOV_MAX buffers go to one system call; more go in turns.
/// - cancel_all (close): every queued IO that is not in the kernel is taken off under the lock and completed as
///   cancelled (ECANCELED) on the closing thread, outside the lock; a head in the kernel gets IORING_OP_ASYNC_CANCEL
///   and completes through its ring. drain waits for all of them through the slot's count (engine memory); on the
///   ring's own worker (close from a callback) it runs the ring's loop until they are done.
/// - cancel_one (a stop_token): the same for one IO.
/// - errors: errno values, classified: ECONNRESET, EPIPE, ECONNABORTED are a reset; ECANCELED cancelled; others
///   other. The errno value stays in io_result::os_code.
///
/// Longer than 500 lines on purpose: the whole protocol of one IO (try, queue, continue a partial send, cancel,
/// drain) under one lock discipline, for both mechanisms; split, the lock's rules would be read in two files.
#pragma once

#include <async_socket/backend/linux/detail/os_calls.hpp>
#include <async_socket/backend/linux/engine.hpp>
#include <async_socket/backend/linux/slot.hpp>
#include <async_socket/concepts.hpp>
#include <async_socket/socket_address.hpp>
#include <async_socket/types.h>

#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <system_error>
#include <utility>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

namespace async_socket
{

/// An errno value as the core's io_result (os_code keeps the value).
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

/// The Backend (socket_backend, cancellable_backend) of linux_async_socket: one socket's IO on a linux_engine, by
/// io_uring or epoll (the protocol is described at the top of this file).
class linux_backend
{
public:
    using engine_type = linux_engine*;               ///< what create takes: the engine (linux_engine::create)
    using io_state = detail::linux_io_state;         ///< the per-IO block: queue links, iovecs left, bytes, errno
    using buffer_type = ::iovec;                     ///< one scatter/gather item
    using accept_area = detail::linux_accept_area;   ///< an accept's block: the new descriptor, the peer's address
    using connect_area = detail::linux_connect_area; ///< a connect's block: the address

    /// On epoll an IO the system call finishes during submit is answered completed_at_once (io_uring: never).
    static constexpr bool completes_at_once = true;

    /// io_result::os_code holds errno values: a C++ handler's std::error_code is in this category.
    static const std::error_category& error_category() noexcept
    {
        return std::generic_category();
    }

    linux_backend() noexcept = default;
    /// Only moved before bind (create moves the backend in).
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

    /// Takes a reference to the engine.
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

    /// Registers the descriptor (async_socket_fd_from_handle(socket)) with the engine. On epoll, fails for a
    /// descriptor epoll cannot watch (not a socket: EPERM; closed: EBADF) or one registered already.
    template <io_completion_fn Completion>
    bool bind(SOCKET_HANDLE socket, void* owner) noexcept
    {
        slot_ = engine_->register_socket(async_socket_fd_from_handle(socket), &on_ready, &on_cqe, Completion, owner);
        return slot_ != nullptr;
    }

    /// Unregisters the descriptor from the engine (at destroy, after the last drain).
    void unbind() noexcept
    {
        if (slot_ != nullptr)
        {
            engine_->unregister_socket(*slot_);
            slot_ = nullptr;
        }
    }

    /// Starts one send of the count buffers: tried at once when no send is queued, else queued behind them.
    submit_result submit_send(io_state& io, buffer_type* buffers, std::uint32_t count) noexcept
    {
        return submit<true>(io, buffers, count, detail::linux_io_op::transfer, nullptr);
    }

    /// Starts one receive into the count buffers: tried at once when no receive is queued, else queued.
    submit_result submit_receive(io_state& io, buffer_type* buffers, std::uint32_t count) noexcept
    {
        return submit<false>(io, buffers, count, detail::linux_io_op::transfer, nullptr);
    }

    /// Starts one accept on the listening descriptor: queued like a receive (it waits for readability). epoll: the
    /// descriptor is made non-blocking first (accept4 is tried on readiness and must not block a worker). Errors of
    /// one incoming connection only (ECONNABORTED, EPROTO and the network errors accept(2) lists) are skipped: the
    /// accept goes on with the next connection. The accepted descriptor is close-on-exec.
    submit_result submit_accept(io_state& io, accept_area& area) noexcept
    {
        area.fd = -1;
        area.length = sizeof area.peer;
        if (const int error = uring_ ? 0 : make_nonblocking(); error != 0)
        {
            return submit_result{submit_status::refused, static_cast<std::uint32_t>(error)};
        }
        return submit<false>(io, nullptr, 0, detail::linux_io_op::accept, &area);
    }

    /// Starts connecting the descriptor to `address`: queued like a send (it waits for writability). epoll: the
    /// descriptor is made non-blocking first and connect(2) is tried at once (EINPROGRESS: the next writable edge
    /// finishes it); io_uring: IORING_OP_CONNECT on the ring's worker. An address longer than sockaddr_storage is
    /// refused with EINVAL.
    submit_result submit_connect(io_state& io, connect_area& area, const socket_address& address) noexcept
    {
        if (address.size() > sizeof area.address)
        {
            return submit_result{submit_status::refused, static_cast<std::uint32_t>(EINVAL)};
        }
        std::memcpy(&area.address, address.data(), address.size());
        area.length = static_cast<socklen_t>(address.size());
        area.started = false;
        if (const int error = uring_ ? 0 : make_nonblocking(); error != 0)
        {
            return submit_result{submit_status::refused, static_cast<std::uint32_t>(error)};
        }
        return submit<true>(io, nullptr, 0, detail::linux_io_op::connect, &area);
    }

    /// The descriptor a successful accept made (now the caller's) and its peer's address.
    static SOCKET_HANDLE take_accepted(accept_area& area, socket_address& peer) noexcept
    {
        peer = socket_address(reinterpret_cast<const sockaddr*>(&area.peer), static_cast<std::uint32_t>(area.length));
        return async_socket_handle_from_fd(std::exchange(area.fd, -1));
    }

    /// Makes every outstanding IO of the socket complete soon, as cancelled (close); see the top of this file.
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
                bool any = false;
                for (detail::linux_io_queue* queue : {&slot.receives, &slot.sends})
                {
                    if (!queue->empty())
                    {
                        // In the kernel: the ring's worker asks for its cancel. Handed over and not yet started:
                        // the worker sees the flag and completes it as cancelled.
                        queue->head->cancel_requested = true;
                        any = true;
                    }
                }
#ifdef ASYNC_SOCKET_HAS_IO_URING
                if (any)
                {
                    engine_->ring(slot.ring).hand_cancel(slot);
                }
#else
                (void)any;
#endif
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

    /// Per-IO cancellation. A queued IO not in the kernel (epoll: any; io_uring: behind the head) is taken off its
    /// queue and completed as cancelled here, outside the lock; an io_uring head is cancelled in the kernel by its
    /// ring's worker, as close does. An IO no longer queued has completed or is completing: nothing to do.
    void cancel_one(io_state& io) noexcept
    {
        detail::linux_slot& slot = *slot_;
        {
            std::lock_guard<std::mutex> held(slot.lock);
            detail::linux_io_queue& queue = io.is_send ? slot.sends : slot.receives;
            if (uring_ && queue.head == &io)
            {
#ifdef ASYNC_SOCKET_HAS_IO_URING
                if (!io.cancel_requested)
                {
                    io.cancel_requested = true;
                    engine_->ring(slot.ring).hand_cancel(slot);
                }
#endif
                return;
            }
            if (!queue.remove(io))
            {
                return;
            }
        }
        io.error = ECANCELED;
        complete(slot, &io);
    }

    /// Returns once no completion of the socket is outstanding or running; on the socket's own ring worker it
    /// runs the ring's loop meanwhile.
    void drain() noexcept
    {
#ifdef ASYNC_SOCKET_HAS_IO_URING
        if (uring_ && engine_->owns_ring(slot_->ring))
        {
            // Close from a callback on this socket's own ring: only this thread can reap its IO, so it runs the
            // ring's loop until the IO is done instead of blocking.
            detail::linux_slot& slot = *slot_;
            engine_->ring(slot.ring).run_until(
                [&]() noexcept
                { return (slot.outstanding.load(std::memory_order_acquire) & ~detail::linux_slot::waiter_flag) == 0; });
            return;
        }
#endif
        slot_->wait_for_outstanding();
    }

    /// Points one iovec at length bytes at memory.
    static void set_buffer(buffer_type& buffer, void* memory, std::uint32_t length) noexcept
    {
        buffer.iov_base = memory;
        buffer.iov_len = length;
    }

private:
    enum class attempt : std::uint8_t
    {
        finished,    ///< done: io.error says how (0: success)
        would_block, ///< the descriptor has no room or no data now
    };

    static std::uint32_t batch(const io_state& io) noexcept
    {
        return io.count < static_cast<std::uint32_t>(IOV_MAX) ? io.count : static_cast<std::uint32_t>(IOV_MAX);
    }

    /// A send moved `sent` more bytes: steps over whole buffers, then part of the next. True when all went.
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

    /// What one system call of the IO asks for (the first IOV_MAX buffers).
    static std::size_t requested(const io_state& io) noexcept
    {
        std::size_t total = 0;
        for (std::uint32_t i = 0, n = batch(io); i < n; ++i)
        {
            total += io.buffers[i].iov_len;
        }
        return total;
    }

    /// Records what a transfer says about the socket: a short one (or EAGAIN, moved == -1) means drained/full.
    static void note_transfer(detail::linux_slot& slot, bool is_send, long moved, std::size_t asked) noexcept
    {
        const bool more = slot.hung_up || (moved >= 0 && static_cast<std::size_t>(moved) == asked);
        (is_send ? slot.maybe_writable : slot.maybe_readable) = more;
    }

    /// Whether the descriptor's receives carry TCP_INQ's control message.
    static bool inq_reported(const detail::linux_slot& slot) noexcept
    {
        return slot.inq == detail::linux_inq::ours || slot.inq == detail::linux_inq::owners;
    }

    /// A receive filled its buffers: whether bytes are left is what TCP_INQ tells (its control message: the bytes
    /// still queued after this read; a FIN counts as 1). Nothing left: the next receive waits for the next edge
    /// (epoll) or goes to the kernel (io_uring) instead of a try that would find nothing, which in a
    /// request-response exchange is one recvmsg and its EAGAIN saved per message. Every byte that arrives after
    /// this read raises an edge of its own, so no wait is missed. The first full receive of a socket asks for
    /// TCP_INQ (once: refused on a socket that is not TCP); the engine unsets it when the socket is unregistered,
    /// unless the owner had set it.
    static void note_full_receive(detail::linux_slot& slot, msghdr& message) noexcept
    {
        if (slot.inq == detail::linux_inq::unasked)
        {
            int value = 0;
            socklen_t length = sizeof value;
            const int on = 1;
            if (::getsockopt(slot.fd, IPPROTO_TCP, TCP_INQ, &value, &length) != 0)
            {
                slot.inq = detail::linux_inq::refused;
            }
            else if (value != 0)
            {
                slot.inq = detail::linux_inq::owners;
            }
            else
            {
                slot.inq = ::setsockopt(slot.fd, IPPROTO_TCP, TCP_INQ, &on, sizeof on) == 0
                               ? detail::linux_inq::ours
                               : detail::linux_inq::refused;
            }
            return;
        }
        if (!inq_reported(slot) || slot.hung_up)
        {
            return;
        }
        for (cmsghdr* item = CMSG_FIRSTHDR(&message); item != nullptr; item = CMSG_NXTHDR(&message, item))
        {
            if (item->cmsg_level == IPPROTO_TCP && item->cmsg_type == TCP_CM_INQ &&
                item->cmsg_len >= CMSG_LEN(sizeof(int)))
            {
                int left = 0;
                std::memcpy(&left, CMSG_DATA(item), sizeof left);
                if (left == 0)
                {
                    slot.maybe_readable = false;
                }
                return;
            }
        }
    }

    /// One non-blocking try of the IO's system call (repeated while a send goes out in part). Under the lock.
    static attempt try_now(detail::linux_slot& slot, io_state& io) noexcept
    {
        if (io.op == detail::linux_io_op::accept)
        {
            return try_accept(slot, io);
        }
        if (io.op == detail::linux_io_op::connect)
        {
            return try_connect(slot, io);
        }
        // Room for the TCP_INQ control message (an int) and any other one the owner's options add; a message that
        // does not fit is cut off (MSG_CTRUNC) and the hint then stays as it is.
        alignas(cmsghdr) unsigned char control[CMSG_SPACE(sizeof(int)) * 4];
        for (;;)
        {
            msghdr message{};
            message.msg_iov = io.buffers;
            message.msg_iovlen = batch(io);
            if (!io.is_send && inq_reported(slot))
            {
                message.msg_control = control;
                message.msg_controllen = sizeof control;
            }
            const std::size_t asked = requested(io);
            // One buffer goes with send(2)/recv(2): no message header for the kernel to copy in and check (the
            // io_uring side uses IORING_OP_SEND/RECV for the same reason); a receive that wants TCP_INQ's control
            // message needs recvmsg.
            const bool one = message.msg_iovlen == 1;
            ssize_t moved = 0;
            if (io.is_send)
            {
                moved = one ? detail::os_send(slot.fd, io.buffers->iov_base, io.buffers->iov_len,
                                              MSG_NOSIGNAL | MSG_DONTWAIT)
                            : detail::os_sendmsg(slot.fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
            }
            else
            {
                moved = one && message.msg_control == nullptr
                            ? detail::os_recv(slot.fd, io.buffers->iov_base, io.buffers->iov_len, MSG_DONTWAIT)
                            : detail::os_recvmsg(slot.fd, &message, MSG_DONTWAIT);
            }
            if (moved < 0)
            {
                if (errno == EINTR)
                {
                    continue;
                }
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                {
                    note_transfer(slot, io.is_send, -1, asked);
                    return attempt::would_block;
                }
                io.error = errno;
                return attempt::finished;
            }
            note_transfer(slot, io.is_send, static_cast<long>(moved), asked);
            io.error = 0;
            if (!io.is_send)
            {
                io.bytes = static_cast<std::uint32_t>(moved); // 0: the peer ended the stream
                if (moved != 0 && static_cast<std::size_t>(moved) == asked)
                {
                    note_full_receive(slot, message);
                }
                return attempt::finished;
            }
            if (advance(io, static_cast<std::size_t>(moved)))
            {
                return attempt::finished;
            }
        }
    }

    /// An error of accept(2) that concerns only the incoming connection it was taking (accept(2): "treat them like
    /// EAGAIN by retrying"): the accept goes on with the next one, so one bad client never fails a listener's accept.
    static bool error_of_one_connection(int error) noexcept
    {
        return error == ECONNABORTED || error == EPROTO || error == ENETDOWN || error == ENOPROTOOPT ||
               error == EHOSTDOWN || error == ENONET || error == EHOSTUNREACH || error == EOPNOTSUPP ||
               error == ENETUNREACH;
    }

    /// epoll: one non-blocking accept4 (repeated over errors of single connections). Under the lock.
    static attempt try_accept(detail::linux_slot& slot, io_state& io) noexcept
    {
        auto& area = *static_cast<accept_area*>(io.area);
        for (;;)
        {
            area.length = sizeof area.peer;
            const int accepted =
                detail::os_accept4(slot.fd, reinterpret_cast<sockaddr*>(&area.peer), &area.length, SOCK_CLOEXEC);
            if (accepted >= 0)
            {
                area.fd = accepted;
                io.error = 0;
                return attempt::finished;
            }
            const int error = errno;
            if (error == EINTR || error_of_one_connection(error))
            {
                continue;
            }
            if (error == EAGAIN || error == EWOULDBLOCK)
            {
                slot.maybe_readable = slot.hung_up;
                return attempt::would_block;
            }
            io.error = error;
            return attempt::finished;
        }
    }

    /// epoll: connect(2) the first time; afterwards connect(2) again says how it went (EALREADY: still under way;
    /// EISCONN: connected; else the error that ended it). Under the lock.
    static attempt try_connect(detail::linux_slot& slot, io_state& io) noexcept
    {
        auto& area = *static_cast<connect_area*>(io.area);
        const bool again = area.started;
        area.started = true;
        const int connected = ::connect(slot.fd, reinterpret_cast<const sockaddr*>(&area.address), area.length);
        const int error = connected == 0 ? 0 : errno;
        if (error == EINPROGRESS || error == EALREADY || error == EINTR || error == EAGAIN)
        {
            slot.maybe_writable = false; // the connection's writable edge (or its error) finishes it
            return attempt::would_block;
        }
        io.error = (error == EISCONN && again) ? 0 : error;
        if (io.error == 0)
        {
            // Registered before it was connected, the socket showed EPOLLHUP (not connected); that is over now.
            slot.hung_up = false;
            slot.maybe_readable = true;
            slot.maybe_writable = true;
        }
        return attempt::finished;
    }

    /// epoll: accept and connect need a descriptor that never blocks (they have no MSG_DONTWAIT). Once per
    /// socket; 0 or errno.
    int make_nonblocking() noexcept
    {
        if (nonblocking_.load(std::memory_order_acquire))
        {
            return 0;
        }
        const int fd = slot_->fd;
        const int flags = ::fcntl(fd, F_GETFL);
        if (flags < 0 || ((flags & O_NONBLOCK) == 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0))
        {
            return errno;
        }
        nonblocking_.store(true, std::memory_order_release);
        return 0;
    }

    /// io_uring: puts the IO (the head of its queue) on its ring, or hands it to the ring's worker when this
    /// thread is not that worker (io_uring_ring.hpp says why). Under the slot's lock. 0 or -errno.
    static int start_in_kernel(linux_engine& engine, const detail::linux_slot& slot, io_state& io) noexcept
    {
#ifdef ASYNC_SOCKET_HAS_IO_URING
        detail::linux_ring& ring = engine.ring(slot.ring);
        if (!engine.owns_ring(slot.ring))
        {
            ring.hand_over(io);
            return 0;
        }
        io_uring_sqe* sqe = ring.entry();
        if (sqe == nullptr)
        {
            return -EBUSY;
        }
        if (io.op == detail::linux_io_op::accept)
        {
            auto& area = *static_cast<accept_area*>(io.area);
            area.length = sizeof area.peer;
            io_uring_prep_accept(sqe, slot.fd, reinterpret_cast<sockaddr*>(&area.peer), &area.length, SOCK_CLOEXEC);
        }
        else if (io.op == detail::linux_io_op::connect)
        {
            auto& area = *static_cast<connect_area*>(io.area);
            io_uring_prep_connect(sqe, slot.fd, reinterpret_cast<const sockaddr*>(&area.address), area.length);
        }
        else if (io.count == 1)
        {
            // One buffer: IORING_OP_SEND/RECV, which spare the kernel copying and checking a message header.
            if (io.is_send)
            {
                io_uring_prep_send(sqe, slot.fd, io.buffers->iov_base, io.buffers->iov_len, MSG_NOSIGNAL);
            }
            else
            {
                io_uring_prep_recv(sqe, slot.fd, io.buffers->iov_base, io.buffers->iov_len, 0);
            }
        }
        else
        {
            io.message = msghdr{};
            io.message.msg_iov = io.buffers;
            io.message.msg_iovlen = batch(io);
            if (io.is_send)
            {
                io_uring_prep_sendmsg(sqe, slot.fd, &io.message, MSG_NOSIGNAL);
            }
            else
            {
                io_uring_prep_recvmsg(sqe, slot.fd, &io.message, 0);
            }
        }
        // No IORING_RECVSEND_POLL_FIRST after a short transfer: a short receive of a stream mostly means more is
        // on its way by the time the request runs, and skipping the kernel's first try cost 20% of streaming and
        // 15% of ping-pong in the benchmarks (docs/benchmarks.md).
        io_uring_sqe_set_data(sqe, &io);
        return 0;
#else
        (void)engine;
        (void)slot;
        (void)io;
        return -ENOSYS;
#endif
    }

    template <bool IsSend>
    submit_result submit(io_state& io, buffer_type* buffers, std::uint32_t count, detail::linux_io_op op,
                         void* area) noexcept
    {
        io.next = nullptr;
        io.slot.store(slot_, std::memory_order_release);
        io.is_send = IsSend;
        io.op = op;
        io.area = area;
        io.buffers = buffers;
        io.count = count;
        io.bytes = 0;
        io.error = 0;
        io.handed_next = nullptr;
        io.cancel_requested = false;
        io.finished_at_submit = false;
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
            // On the ring's own worker (a callback starting IO) the request goes straight on the ring: the
            // worker's next io_uring_enter submits it with everything else prepared in this round and waits, one
            // system call where a try would cost one more (and a receive's try mostly finds nothing). The
            // completion then runs on a later turn, so a sender cannot run ahead of a receiver on the same worker.
            // io_uring: an accept or connect is never tried here (the kernel's request does it, and the descriptor
            // stays as the caller made it: a blocking connect(2) would block this thread). epoll: a connect is
            // always tried, whatever the hint says (an earlier failed connect leaves "not writable", and no edge
            // would ever start this one).
            const bool hinted = IsSend ? slot.maybe_writable : slot.maybe_readable;
            const bool worth_a_try =
                uring_ ? hinted && op == detail::linux_io_op::transfer && !engine_->owns_ring(slot.ring)
                       : hinted || op == detail::linux_io_op::connect;
            const bool tried = worth_a_try;
            if (!worth_a_try || try_now(slot, io) == attempt::would_block)
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
#ifdef ASYNC_SOCKET_HAS_IO_URING
            else if (uring_ && tried && io.error == 0)
            {
                // Finished here, on a thread that is not the ring's worker: its completion is handed to the
                // worker instead of running inside this call, so the callback (and the IO it starts) runs there,
                // where the next request joins the worker's batch; the IO stays the head of its queue until then,
                // so a later one of its direction still waits behind it.
                io.finished_at_submit = true;
                slot.outstanding.fetch_add(1, std::memory_order_relaxed);
                queue.push(io);
                engine_->ring(slot.ring).hand_over(io);
                return submit_result{submit_status::pending, 0};
            }
#endif
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

    /// Runs the completions of a list of IO taken off the queues, then takes them off the slot's count.
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

    /// epoll: takes off each queue the IO that can finish now, in order, and completes them outside the lock.
    static void on_ready(detail::linux_slot& slot, std::uint32_t generation, std::uint32_t events) noexcept
    {
        io_state* finished = nullptr;
        io_state** tail = &finished;
        {
            std::lock_guard<std::mutex> held(slot.lock);
            if (slot.generation != generation || slot.fd < 0)
            {
                return;
            }
            if ((events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0)
            {
                slot.hung_up = true;
            }
            if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0)
            {
                slot.maybe_readable = true;
            }
            if ((events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0)
            {
                slot.maybe_writable = true;
            }
            for (detail::linux_io_queue* queue : {&slot.receives, &slot.sends})
            {
                while (!queue->empty() && try_now(slot, *queue->head) == attempt::finished)
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

    /// io_uring: the completion of the head of a queue (res: bytes, or -errno), or (res == linux_start_request) a
    /// head handed over to be submitted here. A send with bytes left goes on unless close asked for a cancel;
    /// anything else finishes, and the next head goes to the kernel.
    static void on_cqe(io_state& io, int res) noexcept
    {
        detail::linux_slot& slot = *io.slot.load(std::memory_order_acquire);
        linux_engine& engine = *detail::current_linux_engine; // runs on a worker of the engine
        io_state* finished = nullptr;
        {
            std::lock_guard<std::mutex> held(slot.lock);
            if (res == detail::linux_start_request)
            {
                if (io.finished_at_submit)
                {
                    // Done before it was handed over (submit): completes with what it moved, cancel or not.
                }
                else if (!io.cancel_requested)
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
            else if (io.op != detail::linux_io_op::transfer)
            {
                if (io.op == detail::linux_io_op::accept)
                {
                    res = detail::os_uring_accept_result(res);
                }
                if (io.op == detail::linux_io_op::accept && res < 0 && error_of_one_connection(-res) &&
                    !io.cancel_requested)
                {
                    const int started = start_in_kernel(engine, slot, io); // the next incoming connection
                    if (started == 0)
                    {
                        return;
                    }
                    res = started;
                }
                io.error = res < 0 ? -res : 0;
                if (io.op == detail::linux_io_op::accept && res >= 0)
                {
                    static_cast<accept_area*>(io.area)->fd = res;
                }
            }
            else if (res < 0)
            {
                io.error = -res;
            }
            else if (!io.is_send)
            {
                note_transfer(slot, false, res, requested(io));
                io.bytes = static_cast<std::uint32_t>(res);
            }
            else if (res == 0)
            {
                io.error = EPIPE; // a send of a non-empty buffer that moved nothing: the connection is gone
            }
            else
            {
                note_transfer(slot, true, res, requested(io));
                if (!advance(io, static_cast<std::size_t>(res)))
                {
                    const int started = io.cancel_requested ? -ECANCELED : start_in_kernel(engine, slot, io);
                    if (started == 0)
                    {
                        return; // the rest is in the kernel
                    }
                    io.error = -started;
                }
            }
            finished = finish_head(engine, slot, io.is_send ? slot.sends : slot.receives);
        }
        complete(slot, finished);
    }

    /// Takes the finished head off its queue and starts the next one; a next one that cannot start finishes too.
    /// Returns the finished IO, in order. Under the slot's lock.
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
    std::atomic<bool> nonblocking_{false}; ///< epoll: make_nonblocking has set O_NONBLOCK on the descriptor
};

static_assert(check_backend<linux_backend>());
static_assert(accepting_backend<linux_backend> && connecting_backend<linux_backend>);

} // namespace async_socket
