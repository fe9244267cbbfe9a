/// @file
/// async_socket: the one header a C++ user includes.
///
/// Brings in basic_async_socket (the template), the portable policies (std_sync, heap_alloc,
/// recycling_pool_alloc) and, on Windows, the Win32 policies (basic_win32_threadpool and its options,
/// win32_sync), the execution engine and two aliases: win32_async_socket (the spec's behaviour) and
/// win32_no_event_skip_port_async_socket (the fastest configuration on threadpool IO); and the completion-port policy
/// (backend/win32/iocp.hpp: win32_iocp_engine, basic_win32_iocp_threadpool, win32_iocp_async_socket), for
/// Asio-like dispatch on threads of one's own. On Linux: the engine (backend/linux/engine.hpp, worker threads over
/// epoll) and linux_async_socket. The C-style API of the contract is in <async_socket/c_api.h>.
#pragma once

#ifdef _WIN32
#include <winsock2.h>
#include <windows.h>
#endif

#include <async_socket/version.hpp>
#include <async_socket/basic_async_socket.hpp>
#include <async_socket/alloc/heap_alloc.hpp>
#include <async_socket/concepts.hpp>
#include <async_socket/alloc/recycling_pool_alloc.hpp>
#include <async_socket/status.hpp>
#include <async_socket/sync/std_sync.hpp>
#include <async_socket/types.h>

#ifdef _WIN32
#include <async_socket/backend/win32/execution_engine.hpp>
#include <async_socket/backend/win32/win32_sync.hpp>
#include <async_socket/backend/win32/threadpool.hpp>

namespace async_socket
{
// Both are made with X::create(execution_engine, socket_handle); see basic_async_socket.

/// The spec's behaviour: an event made and closed per IO, every completion through the pool, malloc'd contexts.
using win32_async_socket = basic_async_socket<win32_threadpool, heap_alloc, win32_sync>;

/// The fastest: no event, IO done at once completed on the calling thread, contexts recycled (no malloc per IO).
using win32_no_event_skip_port_async_socket = basic_async_socket<
    basic_win32_threadpool<win32_options{.events = win32_event_mode::none, .skip_completion_on_success = true}>,
    recycling_pool_alloc, win32_sync>;
} // namespace async_socket

#include <async_socket/backend/win32/iocp.hpp>
#elif defined(__linux__)
#include <async_socket/backend/linux/engine.hpp>
#include <async_socket/backend/linux/backend.hpp>

namespace async_socket
{
/// Linux: made with linux_async_socket::create(engine.get(), async_socket_handle_from_fd(fd)), engine from
/// linux_engine::create() (io_uring, or epoll where it is refused). IO done at once completes on the calling
/// thread; contexts recycled.
using linux_async_socket = basic_async_socket<linux_backend, recycling_pool_alloc, std_sync>;
} // namespace async_socket
#endif
