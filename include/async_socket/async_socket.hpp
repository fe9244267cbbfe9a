// async_socket: the one header a C++ user includes.
//
// Brings in basic_async_socket (the template), the portable policies (std_sync, heap_alloc) and, on
// Windows, the Win32 policies (win32_threadpool, win32_sync), the execution engine and the alias
// win32_async_socket for the usual choice. The C-style API of the contract is in <async_socket/c_api.h>.
#pragma once

#ifdef _WIN32
#include <winsock2.h>
#include <windows.h>
#endif

#include <async_socket/basic_async_socket.hpp>
#include <async_socket/heap_alloc.hpp>
#include <async_socket/policies.hpp>
#include <async_socket/status.hpp>
#include <async_socket/std_sync.hpp>
#include <async_socket/types.h>

#ifdef _WIN32
#include <async_socket/win32/execution_engine.hpp>
#include <async_socket/win32/win32_sync.hpp>
#include <async_socket/win32/win32_threadpool.hpp>

namespace async_socket
{
// The async socket on the Win32 threadpool, malloc'd IO contexts and Interlocked/WaitOnAddress sync.
// Made with win32_async_socket::create(execution_engine, socket_handle); see basic_async_socket.
using win32_async_socket = basic_async_socket<win32_threadpool, heap_alloc, win32_sync>;
} // namespace async_socket
#endif
