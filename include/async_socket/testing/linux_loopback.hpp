/// @file
/// async_socket testing, Linux: a connected pair of real TCP sockets over 127.0.0.1 (or ::1); and the waiter
/// (testing/waiter.hpp).
///
/// Header-only; only POSIX and the standard library.
#pragma once

#include <async_socket/testing/waiter.hpp>
#include <async_socket/types.h>

#include <utility>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

namespace async_socket::testing
{

/// Two connected TCP sockets, closed by the destructor. Movable, not copyable.
struct fd_pair
{
    int client = -1; ///< the connecting side's descriptor; -1 when none
    int server = -1; ///< the accepted side's descriptor; -1 when none

    fd_pair() noexcept = default;
    /// Takes other's descriptors; other is left with none.
    fd_pair(fd_pair&& other) noexcept : client(std::exchange(other.client, -1)), server(std::exchange(other.server, -1))
    {
    }
    /// Closes its own descriptors, then takes other's.
    fd_pair& operator=(fd_pair&& other) noexcept
    {
        if (this != &other)
        {
            close();
            client = std::exchange(other.client, -1);
            server = std::exchange(other.server, -1);
        }
        return *this;
    }
    fd_pair(const fd_pair&) = delete;
    fd_pair& operator=(const fd_pair&) = delete;
    ~fd_pair()
    {
        close();
    }

    /// Whether both descriptors are open.
    [[nodiscard]] bool valid() const noexcept
    {
        return client >= 0 && server >= 0;
    }

    /// Closes both descriptors now (idempotent).
    void close() noexcept
    {
        if (client >= 0)
        {
            (void)::close(client);
            client = -1;
        }
        if (server >= 0)
        {
            (void)::close(server);
            server = -1;
        }
    }
};

/// Two connected TCP sockets over the loopback address of `family` (AF_INET: 127.0.0.1, AF_INET6: ::1): listens
/// on an ephemeral port, connects, accepts. TCP_NODELAY on both. On any failure both members are -1.
inline fd_pair make_loopback_fd_pair(int family = AF_INET) noexcept
{
    fd_pair pair;
    const int listener = socket(family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
    if (listener < 0)
    {
        return pair;
    }
    sockaddr_storage address{};
    socklen_t length = 0;
    if (family == AF_INET6)
    {
        auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
        v6->sin6_family = AF_INET6;
        v6->sin6_addr = in6addr_loopback;
        length = sizeof(sockaddr_in6);
    }
    else
    {
        auto* v4 = reinterpret_cast<sockaddr_in*>(&address);
        v4->sin_family = AF_INET;
        v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        length = sizeof(sockaddr_in);
    }
    auto* name = reinterpret_cast<sockaddr*>(&address);
    bool ok =
        bind(listener, name, length) == 0 && listen(listener, 1) == 0 && getsockname(listener, name, &length) == 0;
    if (ok)
    {
        pair.client = socket(family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
        ok = pair.client >= 0 && connect(pair.client, name, length) == 0;
    }
    if (ok)
    {
        pair.server = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        ok = pair.server >= 0;
    }
    (void)::close(listener);
    if (!ok)
    {
        pair.close();
        return pair;
    }
    const int one = 1;
    (void)setsockopt(pair.client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    (void)setsockopt(pair.server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return pair;
}

} // namespace async_socket::testing
