// The conformance suite (tests/conformance/suite.hpp) on the Linux backends, over real loopback TCP.
#include <async_socket/async_socket.hpp>
#include <async_socket/testing/linux_loopback.hpp>

#include "conformance/suite.hpp"

#include <sys/socket.h>
#include <unistd.h>

namespace
{

// The peer's half of a platform on Linux: blocking calls on the server end of the pair.
struct linux_peer
{
    using raw_pair = async_socket::testing::fd_pair;

    static raw_pair make_pair()
    {
        return async_socket::testing::make_loopback_fd_pair();
    }
    static SOCKET_HANDLE client_handle(const raw_pair& pair)
    {
        return async_socket_handle_from_fd(pair.client);
    }
    static long peer_send(const raw_pair& pair, const void* data, std::size_t size)
    {
        return static_cast<long>(send(pair.server, data, size, MSG_NOSIGNAL));
    }
    static long peer_receive(const raw_pair& pair, void* data, std::size_t size)
    {
        return static_cast<long>(recv(pair.server, data, size, 0));
    }
    static void peer_shutdown_send(const raw_pair& pair)
    {
        (void)shutdown(pair.server, SHUT_WR);
    }
    static void peer_shutdown_both(const raw_pair& pair)
    {
        (void)shutdown(pair.server, SHUT_RDWR);
    }
    static void peer_reset(raw_pair& pair)
    {
        const linger abortive{1, 0};
        (void)setsockopt(pair.server, SOL_SOCKET, SO_LINGER, &abortive, sizeof abortive);
        (void)close(pair.server);
        pair.server = -1;
    }
};

template <async_socket::linux_io_choice Io>
struct linux_platform : linux_peer
{
    using socket_type = async_socket::linux_async_socket;
    using engine_handle = async_socket::linux_engine::handle;
    static engine_handle make_engine()
    {
        return async_socket::linux_engine::create({.io = Io});
    }
    static async_socket::linux_engine* engine(const engine_handle& handle)
    {
        return handle.get();
    }
};

using linux_epoll_platform = linux_platform<async_socket::linux_io_choice::epoll>;
using linux_io_uring_platform = linux_platform<async_socket::linux_io_choice::io_uring>;

// The same over IPv6 loopback (::1).
template <class Platform>
struct over_ipv6 : Platform
{
    static typename Platform::raw_pair make_pair()
    {
        return async_socket::testing::make_loopback_fd_pair(AF_INET6);
    }
};

} // namespace

ASYNC_SOCKET_CONFORMANCE_SUITE(linux_epoll_platform, linux_io_uring_platform, over_ipv6<linux_epoll_platform>,
                               over_ipv6<linux_io_uring_platform>);
