// The examples' few platform differences in one place: the native socket type and its calls (Winsock on
// Windows, POSIX descriptors on Linux), the error numbers a server tells apart, and the async socket type and
// engine the examples run on. Everything else in the examples is the same code on both.
#pragma once

#include <async_socket/async_socket.hpp>
#include <async_socket/c_api.h>

#ifdef _WIN32
#include <ws2tcpip.h>
#else
#include <arpa/inet.h>
#include <cerrno>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>
#endif

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

namespace net
{

#ifdef _WIN32
using native_socket = SOCKET;
using address_length = int;
inline const native_socket no_socket = INVALID_SOCKET;
// The async socket of the C++ examples, made on the C API's engine.
using example_socket = async_socket::win32_async_socket;
inline EXECUTION_ENGINE_HANDLE engine_of(EXECUTION_ENGINE_HANDLE engine) noexcept
{
    return engine;
}
// Says what the IO runs on: one line, "io: ...".
inline void print_io(EXECUTION_ENGINE_HANDLE) noexcept
{
    std::printf("io: Windows threadpool IO\n");
    std::fflush(stdout);
}

// Overlapped, so that threadpool IO can use it (and the sockets accept() makes from it).
inline native_socket make_tcp_socket() noexcept
{
    return WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, WSA_FLAG_OVERLAPPED);
}
inline void close_socket(native_socket socket) noexcept
{
    (void)closesocket(socket);
}
inline int last_error() noexcept
{
    return WSAGetLastError();
}
inline SOCKET_HANDLE as_handle(native_socket socket) noexcept
{
    return reinterpret_cast<SOCKET_HANDLE>(socket);
}
// The socket an accept hands over.
inline native_socket from_handle(SOCKET_HANDLE handle) noexcept
{
    return reinterpret_cast<native_socket>(handle);
}
inline int shutdown_send(native_socket socket) noexcept
{
    return ::shutdown(socket, SD_SEND);
}

// WSAStartup/WSACleanup.
struct session
{
    int error = 0;
    session()
    {
        WSADATA data{};
        error = WSAStartup(MAKEWORD(2, 2), &data);
    }
    ~session()
    {
        if (error == 0)
        {
            WSACleanup();
        }
    }
    session(const session&) = delete;
    session& operator=(const session&) = delete;
};

namespace errors
{
constexpr int not_a_socket = WSAENOTSOCK, not_listening = WSAEINVAL, not_supported = WSAEOPNOTSUPP, fault = WSAEFAULT,
              not_initialised = WSANOTINITIALISED;
constexpr int reset = WSAECONNRESET, aborted = WSAECONNABORTED, not_connected = WSAENOTCONN, timed_out = WSAETIMEDOUT,
              interrupted = WSAEINTR, would_block = WSAEWOULDBLOCK, network_reset = WSAENETRESET,
              protocol = WSAECONNABORTED;
} // namespace errors
#else
using native_socket = int;
using address_length = socklen_t;
inline const native_socket no_socket = -1;
using example_socket = async_socket::linux_async_socket;
inline async_socket::linux_engine* engine_of(EXECUTION_ENGINE_HANDLE engine) noexcept
{
    return execution_engine_linux_get_engine(engine);
}
// Says what the IO runs on: one line, "io: io_uring", or "io: epoll" and why io_uring is not in use.
inline void print_io(EXECUTION_ENGINE_HANDLE engine) noexcept
{
    const async_socket::linux_engine* linux_engine = engine_of(engine);
    if (linux_engine->mechanism() == async_socket::linux_io_mechanism::io_uring)
    {
        std::printf("io: io_uring\n");
    }
    else if (const int refusal = linux_engine->io_uring_refusal(); refusal > 0)
    {
        std::printf("io: epoll (io_uring refused: %s)\n", std::strerror(refusal));
    }
    else
    {
        std::printf("io: epoll (asked for: ASYNC_SOCKET_IO_URING=0)\n");
    }
    std::fflush(stdout);
}

inline native_socket make_tcp_socket() noexcept
{
    return ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
}
inline void close_socket(native_socket socket) noexcept
{
    (void)::close(socket);
}
inline int last_error() noexcept
{
    return errno;
}
inline SOCKET_HANDLE as_handle(native_socket socket) noexcept
{
    return async_socket_handle_from_fd(socket);
}
inline native_socket from_handle(SOCKET_HANDLE handle) noexcept
{
    return async_socket_fd_from_handle(handle);
}
inline int shutdown_send(native_socket socket) noexcept
{
    return ::shutdown(socket, SHUT_WR);
}

// Nothing to start on POSIX.
struct session
{
    int error = 0;
};

namespace errors
{
constexpr int not_a_socket = ENOTSOCK, not_listening = EINVAL, not_supported = EOPNOTSUPP, fault = EFAULT,
              not_initialised = EBADF;
// accept(2) also passes on errors of the pending connection (ENETDOWN, EPROTO, ENOPROTOOPT, EHOSTDOWN, ...).
constexpr int reset = ECONNRESET, aborted = ECONNABORTED, not_connected = ENOTCONN, timed_out = ETIMEDOUT,
              interrupted = EINTR, would_block = EAGAIN, network_reset = ENETRESET, protocol = EPROTO;
} // namespace errors
#endif

inline void sleep_ms(unsigned milliseconds)
{
    std::this_thread::sleep_for(std::chrono::milliseconds(milliseconds));
}

} // namespace net
