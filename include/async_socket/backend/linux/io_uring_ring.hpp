/// @file
/// async_socket: one io_uring ring and the loop of the worker that owns it (used by linux_engine, engine.hpp).
///
/// Only the worker touches the ring. The kernel cancels a thread's io_uring requests when that thread ends, so
/// socket IO put on a ring by a short-lived user thread would complete as cancelled; and a ring with one
/// submitter can be made IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN (completion work runs when the
/// worker asks for it, not by interrupting it), where the kernel has them. Other threads hand their requests over
/// instead: an IO to start, or one their try finished that is to complete here (hand_over), or a slot whose heads close
/// wants cancelled (hand_cancel), on lists under a lock, and an eventfd write that wakes the worker (the worker keeps a
/// read of the eventfd on the ring).
///
/// The worker's loop (run_round) submits what it prepared and waits in one io_uring_enter
/// (io_uring_submit_and_wait), takes the completions into the ring's own batch and runs them one by one, then
/// starts what was handed over. The batch and its cursor live in the ring, not on the stack, so that a loop run
/// inside a callback (run_until, when close on the worker waits for IO of its own ring) goes on with the same
/// batch: no completion taken from the kernel is left behind in an outer frame.
#pragma once

#include <async_socket/backend/linux/detail/os_calls.hpp>
#include <async_socket/backend/linux/slot.hpp>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <mutex>
#include <utility>

#include <liburing.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace async_socket::detail
{

class linux_ring
{
public:
    static constexpr unsigned entries = 256;

    /// Makes the ring, with the single-issuer flags where the kernel has them. 0 or the errno of the refusal.
    int init() noexcept
    {
        wake_fd_ = eventfd(0, EFD_CLOEXEC);
        if (wake_fd_ < 0)
        {
            return errno;
        }
        // A completion queue 16 times the submission queue: completions of many sockets pile up while the worker
        // runs callbacks (the kernel keeps the overflow, IORING_FEAT_NODROP, but that is slower).
        io_uring_params params{};
        params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
                       IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED;
        params.cq_entries = entries * 16;
        int made = io_uring_queue_init_params(entries, &ring_, &params);
        if (made == -EINVAL)
        {
            // Before Linux 6.1: no DEFER_TASKRUN (or SINGLE_ISSUER, 6.0; SUBMIT_ALL, 5.18).
            params = io_uring_params{};
            params.flags = IORING_SETUP_CQSIZE;
            params.cq_entries = entries * 16;
            made = io_uring_queue_init_params(entries, &ring_, &params);
        }
        if (made < 0)
        {
            return -made;
        }
        made_ = true;
        disabled_ = (params.flags & IORING_SETUP_R_DISABLED) != 0;
        return 0;
    }

    ~linux_ring()
    {
        if (made_)
        {
            io_uring_queue_exit(&ring_);
        }
        if (wake_fd_ >= 0)
        {
            (void)close(wake_fd_);
        }
    }

    /// A free submission entry, on the worker only; nullptr when the ring is full even after a submit.
    io_uring_sqe* entry() noexcept
    {
        io_uring_sqe* sqe = os_io_uring_get_sqe(&ring_);
        if (sqe == nullptr)
        {
            (void)os_io_uring_submit(&ring_);
            sqe = os_io_uring_get_sqe(&ring_);
        }
        return sqe;
    }

    /// From any thread but the worker: the worker starts `io` (its slot's on_cqe with linux_start_request).
    void hand_over(linux_io_state& io) noexcept
    {
        bool first = false;
        {
            std::lock_guard<std::mutex> held(handed_lock_);
            io.handed_next = handed_;
            handed_ = &io;
            first = io.handed_next == nullptr && cancels_ == nullptr;
        }
        if (first)
        {
            wake();
        }
    }

    /// From any thread: the worker asks the kernel to cancel every head of the slot's queues that has
    /// cancel_requested set (a head not yet started is completed as cancelled when the worker starts it).
    void hand_cancel(linux_slot& slot) noexcept
    {
        bool first = false;
        {
            std::lock_guard<std::mutex> held(handed_lock_);
            if (slot.cancel_handed)
            {
                return;
            }
            slot.cancel_handed = true;
            slot.cancel_next = cancels_;
            cancels_ = &slot;
            first = slot.cancel_next == nullptr && handed_ == nullptr;
        }
        if (first)
        {
            wake();
        }
    }

    /// Makes the worker end its loop (the engine joins it).
    void stop() noexcept
    {
        stopping_.store(true, std::memory_order_release);
        wake();
    }

    /// The worker's whole life: enables the ring (it becomes the single issuer), arms the wake-up read, loops.
    void run() noexcept
    {
        if (disabled_)
        {
            // io_uring_enable_rings is declared by liburing 2.3 but not exported; the system call is the same.
            (void)syscall(__NR_io_uring_register, ring_.ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0);
        }
        arm_wake();
        while (!stopping_.load(std::memory_order_acquire))
        {
            run_round();
        }
    }

    /// On the worker, inside a callback: runs rounds until done() holds (close waiting for IO of this ring).
    template <class Done>
    void run_until(Done done) noexcept
    {
        while (!done())
        {
            run_round();
        }
    }

private:
    struct completion
    {
        std::uint64_t data;
        int result;
    };
    static constexpr unsigned batch_size = 64;
    static constexpr std::uint64_t wake_data = 1; ///< no IO block has address 1

    void wake() noexcept
    {
        while (eventfd_write(wake_fd_, 1) != 0 && errno == EINTR)
        {
        }
    }

    void arm_wake() noexcept
    {
        io_uring_sqe* sqe = entry();
        while (sqe == nullptr)
        {
            // Full even after a submit (io_uring_enter refused: EAGAIN, EBUSY). Without this read no hand-over
            // would ever wake the worker again, so wait for room as the cancels do (start_handed).
            (void)os_io_uring_submit_and_wait(&ring_, 0);
            sqe = entry();
        }
        io_uring_prep_read(sqe, wake_fd_, &wake_value_, sizeof wake_value_, 0);
        io_uring_sqe_set_data64(sqe, wake_data);
    }

    void run_round() noexcept
    {
        if (next_ == count_)
        {
            (void)os_io_uring_submit_and_wait(&ring_, 1); // EINTR and the like: the next round waits again
            next_ = 0;
            count_ = 0;
            unsigned head = 0;
            io_uring_cqe* cqe = nullptr;
            io_uring_for_each_cqe(&ring_, head, cqe)
            {
                taken_[count_++] = {io_uring_cqe_get_data64(cqe), cqe->res};
                if (count_ == batch_size)
                {
                    break;
                }
            }
            io_uring_cq_advance(&ring_, count_);
        }
        while (next_ < count_)
        {
            const completion done = taken_[next_++];
            if (done.data == wake_data)
            {
                arm_wake();
            }
            else if (done.data != 0) // 0: a request whose completion says nothing (a cancel)
            {
                auto* io = reinterpret_cast<linux_io_state*>(static_cast<std::uintptr_t>(done.data));
                linux_slot* slot = io->slot.load(std::memory_order_acquire);
                slot->on_cqe.load(std::memory_order_acquire)(*io, done.result);
            }
        }
        start_handed();
    }

    void start_handed() noexcept
    {
        linux_io_state* handed = nullptr;
        linux_slot* cancels = nullptr;
        {
            std::lock_guard<std::mutex> held(handed_lock_);
            handed = std::exchange(handed_, nullptr);
            cancels = std::exchange(cancels_, nullptr);
        }
        // Starts before cancels: a head handed over and then cancelled is completed as cancelled when started.
        while (handed != nullptr)
        {
            linux_io_state* io = handed;
            handed = io->handed_next;
            linux_slot* slot = io->slot.load(std::memory_order_acquire);
            slot->on_cqe.load(std::memory_order_acquire)(*io, linux_start_request);
        }
        while (cancels != nullptr)
        {
            linux_slot* slot = cancels;
            cancels = slot->cancel_next;
            std::lock_guard<std::mutex> held(slot->lock);
            {
                std::lock_guard<std::mutex> listed(handed_lock_);
                slot->cancel_handed = false;
            }
            for (linux_io_queue* queue : {&slot->receives, &slot->sends})
            {
                if (!queue->empty() && queue->head->cancel_requested)
                {
                    io_uring_sqe* sqe = entry();
                    while (sqe == nullptr)
                    {
                        // Full of requests the kernel has not taken: submit and wait for room.
                        (void)os_io_uring_submit_and_wait(&ring_, 0);
                        sqe = entry();
                    }
                    io_uring_prep_cancel64(sqe, reinterpret_cast<std::uintptr_t>(queue->head), 0);
                    io_uring_sqe_set_data64(sqe, 0);
                }
            }
        }
    }

    io_uring ring_{};
    bool made_ = false;
    bool disabled_ = false;
    int wake_fd_ = -1;
    std::uint64_t wake_value_ = 0;
    std::atomic<bool> stopping_{false};
    std::mutex handed_lock_;
    linux_io_state* handed_ = nullptr;
    linux_slot* cancels_ = nullptr;
    completion taken_[batch_size]{};
    unsigned next_ = 0;
    unsigned count_ = 0;
};

} // namespace async_socket::detail
