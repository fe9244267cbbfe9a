/// @file
/// async_socket, Linux: the OS calls of the backend that can fail under load, behind small inline wrappers, and the
/// process-wide fault hook a test can install to make them fail (testing/linux_fault_hook.hpp).
///
/// Without ASYNC_SOCKET_LINUX_FAULT_HOOKS (production) each wrapper is the OS call itself. With it, each wrapper
/// first asks the installed hook, if any; a hook that answers an errno value makes the wrapper report that failure
/// as the OS call would (-1 and errno; nullptr for io_uring_get_sqe; -errno for io_uring_submit, as liburing
/// returns it) WITHOUT calling the OS. The one exception, uring_accept_result, has no call to skip: the kernel has
/// already taken the connection, so a fault closes the descriptor it gave and reports the error in its place.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>

#include <atomic>

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace async_socket::detail
{

/// The OS calls the fault hook can make fail.
enum class linux_os_call : std::uint8_t
{
    sendmsg,                  ///< sendmsg, or send for one buffer (the backend's try of a send)
    recvmsg,                  ///< recvmsg, or recv for one buffer (the backend's try of a receive)
    epoll_ctl,                ///< epoll_ctl (registration of a socket with the engine)
    io_uring_get_sqe,         ///< io_uring_get_sqe (a free submission entry; a fault means the ring is full)
    io_uring_submit,          ///< io_uring_submit (when the ring was full)
    io_uring_submit_and_wait, ///< io_uring_submit_and_wait (the worker's wait of each round)
    accept4,                  ///< accept4 (epoll: the try of an accept)
    uring_accept_result,      ///< the descriptor of an io_uring accept, as the worker reaps it
};

/// The number of linux_os_call values.
inline constexpr std::uint32_t linux_os_call_count = 8;

/// The hook: 0 to make the call, else the errno value to fail it with.
struct linux_fault_hook_entry
{
    int (*decide)(void* context, linux_os_call call) noexcept;
    void* context;
};

/// The installed hook (nullptr: none). Process-wide; read by the wrappers only with ASYNC_SOCKET_LINUX_FAULT_HOOKS.
inline std::atomic<const linux_fault_hook_entry*> linux_fault_hook{nullptr};

/// Whether the wrappers ask the hook (ASYNC_SOCKET_LINUX_FAULT_HOOKS defined).
#ifdef ASYNC_SOCKET_LINUX_FAULT_HOOKS
inline constexpr bool linux_fault_hooks_compiled_in = true;

/// 0 to make the call, else the errno value the installed hook chose.
[[nodiscard]] inline int linux_fault(linux_os_call call) noexcept
{
    const linux_fault_hook_entry* hook = linux_fault_hook.load(std::memory_order_acquire);
    return hook == nullptr ? 0 : hook->decide(hook->context, call);
}
#else
inline constexpr bool linux_fault_hooks_compiled_in = false;

[[nodiscard]] constexpr int linux_fault(linux_os_call) noexcept
{
    return 0;
}
#endif

inline ssize_t os_sendmsg(int fd, const msghdr* message, int flags) noexcept
{
    if (const int error = linux_fault(linux_os_call::sendmsg); error != 0)
    {
        errno = error;
        return -1;
    }
    return ::sendmsg(fd, message, flags);
}

/// send(2), for the try of a send of one buffer: the same fault point as sendmsg (the try of a send).
inline ssize_t os_send(int fd, const void* data, std::size_t length, int flags) noexcept
{
    if (const int error = linux_fault(linux_os_call::sendmsg); error != 0)
    {
        errno = error;
        return -1;
    }
    return ::send(fd, data, length, flags);
}

inline ssize_t os_recvmsg(int fd, msghdr* message, int flags) noexcept
{
    if (const int error = linux_fault(linux_os_call::recvmsg); error != 0)
    {
        errno = error;
        return -1;
    }
    return ::recvmsg(fd, message, flags);
}

/// recv(2), for the try of a receive into one buffer: the same fault point as recvmsg (the try of a receive).
inline ssize_t os_recv(int fd, void* data, std::size_t length, int flags) noexcept
{
    if (const int error = linux_fault(linux_os_call::recvmsg); error != 0)
    {
        errno = error;
        return -1;
    }
    return ::recv(fd, data, length, flags);
}

inline int os_accept4(int fd, sockaddr* address, socklen_t* length, int flags) noexcept
{
    if (const int error = linux_fault(linux_os_call::accept4); error != 0)
    {
        errno = error;
        return -1;
    }
    return ::accept4(fd, address, length, flags);
}

inline int os_epoll_ctl(int epoll_fd, int operation, int fd, epoll_event* event) noexcept
{
    // Only registrations fail: a removal that fails would leave nothing a test could see but a stale entry.
    if (operation == EPOLL_CTL_ADD)
    {
        if (const int error = linux_fault(linux_os_call::epoll_ctl); error != 0)
        {
            errno = error;
            return -1;
        }
    }
    return ::epoll_ctl(epoll_fd, operation, fd, event);
}

/// The result of an io_uring accept (a descriptor or -errno), as the worker reaps it. A fault closes a descriptor
/// the kernel gave and reports -error instead: the connection looks aborted before it was taken (ECONNABORTED), or
/// the process out of descriptors (EMFILE), which the kernel itself answers only under conditions a test cannot
/// arrange on a loopback listener.
inline int os_uring_accept_result(int res) noexcept
{
    if (res >= 0)
    {
        if (const int error = linux_fault(linux_os_call::uring_accept_result); error != 0)
        {
            (void)::close(res);
            return -error;
        }
    }
    return res;
}

} // namespace async_socket::detail

#if !defined(ASYNC_SOCKET_NO_IO_URING) && __has_include(<liburing.h>)
#include <liburing.h>

namespace async_socket::detail
{

inline io_uring_sqe* os_io_uring_get_sqe(io_uring* ring) noexcept
{
    if (linux_fault(linux_os_call::io_uring_get_sqe) != 0)
    {
        return nullptr; // as a full ring answers
    }
    return ::io_uring_get_sqe(ring);
}

inline int os_io_uring_submit(io_uring* ring) noexcept
{
    if (const int error = linux_fault(linux_os_call::io_uring_submit); error != 0)
    {
        return -error;
    }
    return ::io_uring_submit(ring);
}

inline int os_io_uring_submit_and_wait(io_uring* ring, unsigned wait_nr) noexcept
{
    if (const int error = linux_fault(linux_os_call::io_uring_submit_and_wait); error != 0)
    {
        return -error;
    }
    return ::io_uring_submit_and_wait(ring, wait_nr);
}

} // namespace async_socket::detail
#endif
