/// @file
/// async_socket testing, Linux: a seeded plan that makes chosen OS calls of the Linux backend fail, instead of
/// calling the OS, while it is installed as the process-wide fault hook (backend/linux/detail/os_calls.hpp).
///
/// Works only in a program built with ASYNC_SOCKET_LINUX_FAULT_HOOKS defined (the test's target sets it; without it
/// the wrappers are the OS calls and the plan sees nothing: linux_fault_plan::hooks_compiled_in is false). The calls:
///
/// | call (linux_os_call) | where the backend makes it                 | what a fault returns (default errors) |
/// |----------------------|--------------------------------------------|---------------------------------------|
/// | sendmsg              | the try of a send (epoll; io_uring off the worker) | -1, errno ENOBUFS or ECONNRESET |
/// |                      | (send(2) when the send has one buffer)     |                                       |
/// | recvmsg              | the try of a receive                       | -1, errno ENOBUFS or ECONNRESET       |
/// |                      | (recv(2) for one buffer, unless TCP_INQ)   |                                       |
/// | epoll_ctl            | EPOLL_CTL_ADD: a socket's first open, create | -1, errno ENOMEM                    |
/// | io_uring_get_sqe     | every request put on a ring                | nullptr (the ring is full)            |
/// | io_uring_submit      | after a get_sqe found the ring full        | -EAGAIN                               |
/// | io_uring_submit_and_wait | the worker's wait, each round          | -EINTR (the round waits again)        |
/// | accept4              | the try of an accept (epoll)               | -1, errno EMFILE                      |
/// | uring_accept_result  | an io_uring accept's descriptor, reaped    | the descriptor closed, -ECONNABORTED  |
///
///   linux_fault_plan plan(seed);
///   plan.set_rate(linux_os_call::sendmsg, 0.03);   // about 3 sendmsg in 100 fail
///   { linux_fault_plan::installation on(plan); ... traffic ... }   // installed in this scope only
///   ... plan.injected(linux_os_call::sendmsg) ...
/// Whether the k-th call of a kind fails depends only on the seed, the kind and k (splitmix64, fault_alloc.hpp).
#pragma once

#include <async_socket/backend/linux/detail/os_calls.hpp>
#include <async_socket/testing/fault_alloc.hpp>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <initializer_list>

namespace async_socket::testing
{

/// The OS calls a linux_fault_plan can make fail (see the header comment).
using linux_os_call = detail::linux_os_call;

/// The number of linux_os_call values.
inline constexpr std::size_t linux_os_call_count = detail::linux_os_call_count;

/// The name of an OS call ("sendmsg", ...).
[[nodiscard]] constexpr const char* to_string(linux_os_call call) noexcept
{
    switch (call)
    {
    case linux_os_call::sendmsg:
        return "sendmsg";
    case linux_os_call::recvmsg:
        return "recvmsg";
    case linux_os_call::epoll_ctl:
        return "epoll_ctl";
    case linux_os_call::io_uring_get_sqe:
        return "io_uring_get_sqe";
    case linux_os_call::io_uring_submit:
        return "io_uring_submit";
    case linux_os_call::io_uring_submit_and_wait:
        return "io_uring_submit_and_wait";
    case linux_os_call::accept4:
        return "accept4";
    case linux_os_call::uring_accept_result:
        return "uring_accept_result";
    }
    return "?";
}

/// Which calls fail and with what errno, and what they counted. Owned by the test; every member is thread-safe.
/// Rates start at 0 (no fault); errors at ENOBUFS and ECONNRESET (sendmsg, recvmsg, drawn by the seed), ENOMEM
/// (epoll_ctl), ENOBUFS (io_uring_get_sqe: the value only counts, the call returns nullptr), EAGAIN
/// (io_uring_submit), EINTR (io_uring_submit_and_wait), EMFILE (accept4), ECONNABORTED (uring_accept_result).
class linux_fault_plan
{
public:
    /// The most errors one call draws from.
    static constexpr std::size_t max_errors = 4;
    /// Whether the backend's wrappers ask the hook in this build (ASYNC_SOCKET_LINUX_FAULT_HOOKS).
    static constexpr bool hooks_compiled_in = detail::linux_fault_hooks_compiled_in;

    /// A plan seeded with `seed`: the same seed makes the same calls fail.
    explicit linux_fault_plan(std::uint64_t seed = 1) noexcept : seed_(seed)
    {
        set_errors(linux_os_call::sendmsg, {ENOBUFS, ECONNRESET});
        set_errors(linux_os_call::recvmsg, {ENOBUFS, ECONNRESET});
        set_errors(linux_os_call::epoll_ctl, {ENOMEM});
        set_errors(linux_os_call::io_uring_get_sqe, {ENOBUFS});
        set_errors(linux_os_call::io_uring_submit, {EAGAIN});
        set_errors(linux_os_call::io_uring_submit_and_wait, {EINTR});
        set_errors(linux_os_call::accept4, {EMFILE});
        set_errors(linux_os_call::uring_accept_result, {ECONNABORTED});
    }
    linux_fault_plan(const linux_fault_plan&) = delete;
    linux_fault_plan& operator=(const linux_fault_plan&) = delete;

    /// The seed given at construction.
    [[nodiscard]] std::uint64_t seed() const noexcept
    {
        return seed_;
    }

    /// Each later call of that kind fails with probability `rate` (0: never, 1: always).
    void set_rate(linux_os_call call, double rate) noexcept
    {
        at(call).threshold.store(fault_threshold(rate));
    }

    /// set_rate(call, rate) for every call.
    void set_all_rates(double rate) noexcept
    {
        for (std::size_t i = 0; i < linux_os_call_count; ++i)
        {
            set_rate(static_cast<linux_os_call>(i), rate);
        }
    }

    /// Besides the rate: the calls of that kind numbered first to first + count - 1 from now (1 = the next one) fail,
    /// whatever the rate says (as alloc_ledger::fail_nth does for allocations). count 0 cancels such a plan.
    void fail_calls(linux_os_call call, std::uint64_t first, std::uint64_t count) noexcept
    {
        point_state& state = at(call);
        const std::uint64_t begin = state.calls.load() + (first == 0 ? 0 : first - 1);
        state.window_end.store(0);
        state.window_begin.store(begin);
        state.window_end.store(count == 0 ? 0 : begin + count);
    }

    /// The errno values a fault of that call reports, one drawn per fault (the first max_errors; an empty list
    /// leaves them as they were). Counts of earlier faults by error are reset.
    void set_errors(linux_os_call call, std::initializer_list<int> errors) noexcept
    {
        if (errors.size() == 0)
        {
            return;
        }
        point_state& state = at(call);
        std::size_t n = 0;
        for (const int error : errors)
        {
            if (n == max_errors)
            {
                break;
            }
            state.errors[n].store(error);
            state.by_error[n].store(0);
            ++n;
        }
        state.error_count.store(n);
    }

    /// Decides one call: 0 to make it, else the errno value to fail it with. Counts the call, and the fault.
    [[nodiscard]] int draw(linux_os_call call) noexcept
    {
        point_state& state = at(call);
        const std::uint64_t k = state.calls.fetch_add(1);
        const std::uint64_t threshold = state.threshold.load();
        const bool planned = k >= state.window_begin.load() && k < state.window_end.load();
        if (threshold == 0 && !planned)
        {
            return 0;
        }
        const std::uint64_t r = splitmix64(seed_ + (static_cast<std::uint64_t>(call) + 1) * 0xD1B54A32D192ED03ull +
                                           k * 0x9E3779B97F4A7C15ull);
        if (!planned && !fault_drawn(r, threshold))
        {
            return 0;
        }
        state.injected.fetch_add(1);
        const std::size_t count = state.error_count.load();
        const std::size_t which = static_cast<std::size_t>(splitmix64(r) % count);
        state.by_error[which].fetch_add(1);
        return state.errors[which].load();
    }

    /// Calls of that kind that reached the hook (faulted or not) while the plan was installed.
    [[nodiscard]] std::uint64_t calls(linux_os_call call) const noexcept
    {
        return at(call).calls.load();
    }
    /// Calls of that kind the plan made fail.
    [[nodiscard]] std::uint64_t injected(linux_os_call call) const noexcept
    {
        return at(call).injected.load();
    }
    /// Faults of that call that reported `error` (since its errors were last set).
    [[nodiscard]] std::uint64_t injected(linux_os_call call, int error) const noexcept
    {
        const point_state& state = at(call);
        std::uint64_t sum = 0;
        for (std::size_t i = 0; i < state.error_count.load(); ++i)
        {
            if (state.errors[i].load() == error)
            {
                sum += state.by_error[i].load();
            }
        }
        return sum;
    }
    /// Faults of every call.
    [[nodiscard]] std::uint64_t injected_total() const noexcept
    {
        std::uint64_t sum = 0;
        for (const point_state& state : points_)
        {
            sum += state.injected.load();
        }
        return sum;
    }

    /// Installs the plan as the process-wide hook for its lifetime (RAII); the previous hook is put back by the
    /// destructor. One at a time in practice: installations nest, they do not combine. The plan outlives it, and no
    /// OS call of the backend may run while it is destroyed (stop the traffic first).
    class installation
    {
    public:
        /// Makes `plan` the hook.
        explicit installation(linux_fault_plan& plan) noexcept
            : entry_{&decide, &plan}, previous_(detail::linux_fault_hook.exchange(&entry_))
        {
        }
        /// Puts the previous hook back (none, usually).
        ~installation()
        {
            detail::linux_fault_hook.store(previous_);
        }
        installation(const installation&) = delete;
        installation& operator=(const installation&) = delete;

    private:
        static int decide(void* context, linux_os_call call) noexcept
        {
            return static_cast<linux_fault_plan*>(context)->draw(call);
        }

        detail::linux_fault_hook_entry entry_;
        const detail::linux_fault_hook_entry* previous_;
    };

private:
    struct point_state
    {
        std::atomic<std::uint64_t> threshold{0};
        std::atomic<std::uint64_t> calls{0};
        std::atomic<std::uint64_t> injected{0};
        std::atomic<std::uint64_t> window_begin{0}; ///< fail_calls: the first call number (0-based) that fails
        std::atomic<std::uint64_t> window_end{0};   ///< and the one after the last
        std::atomic<std::size_t> error_count{0};
        std::array<std::atomic<int>, max_errors> errors{};
        std::array<std::atomic<std::uint64_t>, max_errors> by_error{};
    };

    point_state& at(linux_os_call call) noexcept
    {
        return points_[static_cast<std::size_t>(call)];
    }
    const point_state& at(linux_os_call call) const noexcept
    {
        return points_[static_cast<std::size_t>(call)];
    }

    std::uint64_t seed_;
    std::array<point_state, linux_os_call_count> points_{};
};

} // namespace async_socket::testing
