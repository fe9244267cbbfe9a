// The Win32 tests' support lives in namespace win32_test; the loopback pair, Winsock session and waiter are
// shipped for users' tests too (<async_socket/testing/win32_loopback.hpp>) and are used here through it.
#pragma once

#include <async_socket/testing/win32_loopback.hpp>

namespace win32_test
{
using async_socket::testing::as_handle;
using async_socket::testing::make_loopback_pair;
using async_socket::testing::make_overlapped_tcp_socket;
using async_socket::testing::socket_pair;
using async_socket::testing::waiter;
using async_socket::testing::wsa_session;
} // namespace win32_test
