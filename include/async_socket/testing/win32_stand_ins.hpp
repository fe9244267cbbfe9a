/// @file
/// async_socket testing: Win32 shapes without Windows, shared by the calls policies that stand in for the OS
/// (testing/fake_threadpool.hpp, and bench/native's inline_threadpool.hpp): fake_overlapped mirrors OVERLAPPED,
/// fake_wsabuf mirrors WSABUF (len, then buf), fake_event a HANDLE; stand_in_calls gives a policy the types and the
/// static set_overlapped_event and set_buffer that win32_threadpool_backend asks for.
///
/// Header-only; only the standard library.
#pragma once

#include <cstdint>

namespace async_socket::testing
{

/// Stands in for OVERLAPPED: the same fields, in the same order.
struct fake_overlapped
{
    std::uintptr_t internal;      ///< Internal
    std::uintptr_t internal_high; ///< InternalHigh
    std::uint64_t offset;         ///< Offset and OffsetHigh
    std::uintptr_t event;         ///< hEvent (a fake_event)
};

/// Stands in for WSABUF: len, then buf.
struct fake_wsabuf
{
    std::uint32_t len; ///< the buffer's length in bytes
    char* buf;         ///< the buffer's first byte
};

using fake_event = std::uintptr_t; ///< 0 is "no event"

/// What a calls policy over the stand-ins declares the same way, for it to inherit: its engine_type (Engine),
/// overlapped_type, buffer_type (Buffer, the WSABUF stand-in, with the members `len` and `buf`) and event_type, and
/// its static set_overlapped_event and set_buffer (no OS call).
template <class Engine, class Buffer = fake_wsabuf>
struct stand_in_calls
{
    using engine_type = Engine;              ///< what the policy's acquire_pool takes
    using overlapped_type = fake_overlapped; ///< the OVERLAPPED stand-in
    using buffer_type = Buffer;              ///< the WSABUF stand-in
    using event_type = fake_event;           ///< the event HANDLE stand-in

    /// Zeroes the OVERLAPPED and sets its event, as the backend does before each IO.
    static void set_overlapped_event(fake_overlapped& overlapped, fake_event event) noexcept
    {
        overlapped = fake_overlapped{};
        overlapped.event = event;
    }

    /// Points one buffer at length bytes at memory.
    static void set_buffer(Buffer& buffer, void* memory, std::uint32_t length) noexcept
    {
        buffer.buf = static_cast<char*>(memory);
        buffer.len = length;
    }
};

} // namespace async_socket::testing
