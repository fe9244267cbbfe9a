// async_socket: the memory layout of one send or receive, and its size check.
#pragma once

#include <async_socket/concepts.hpp>
#include <async_socket/types.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace async_socket::detail
{

enum class io_kind : std::uint8_t
{
    send,
    receive,
    accept,  // no buffers: the backend's accept_area sits where the buffer array would
    connect, // likewise its connect_area
};

// The fixed part of an IO context. The backend's io_state (the OVERLAPPED on Win32) comes first, so the
// completion routine gets from the io_state* the backend hands back to the context without a lookup. The
// buffer array follows the header in the same allocation (see io_context_layout).
template <class IoState>
struct io_context_header
{
    IoState io;
    void* callback_context;
    ON_ASYNC_SOCKET_SEND_COMPLETE on_send_complete;       // set for a send
    ON_ASYNC_SOCKET_RECEIVE_COMPLETE on_receive_complete; // set for a receive
    // A C++ handler's IO (send_async/receive_async with a callable) sets this instead of the callbacks above: it
    // takes the handler out of the context (which holds it after the buffer array), frees the context and runs
    // the handler with the mapped result.
    void (*complete_handler)(void* socket, io_context_header* context, io_result result, bool closing) noexcept;
    std::uint32_t context_size; // bytes allocated for the context
    std::uint32_t total_length; // sum of the buffer lengths
    std::uint32_t buffer_count;
    io_kind kind;
    // Skip-completion mode only: an IO that finished at once, waiting on its thread's queue to complete.
    std::uint32_t bytes_at_once;
    io_context_header* next_at_once; // the next one in the queue
};

constexpr std::uint64_t round_up(std::uint64_t value, std::uint64_t alignment) noexcept
{
    return (value + alignment - 1) / alignment * alignment;
}

// Where the buffer array starts and how large a context with `buffer_count` buffers is, computed in 64
// bits so that nothing wraps. The caller rejects sizes over UINT32_MAX.
template <class Header, class Buffer>
struct io_context_layout
{
    static_assert(std::is_standard_layout_v<Header>, "the io_state must be reachable from the context");
    static_assert(alignof(Buffer) <= alignof(std::max_align_t), "allocations are max_align_t aligned");

    static constexpr std::uint64_t buffers_offset = round_up(sizeof(Header), alignof(Buffer));

    static constexpr std::uint64_t size(std::uint32_t buffer_count) noexcept
    {
        return buffers_offset + std::uint64_t{buffer_count} * sizeof(Buffer);
    }

    static Buffer* buffers(Header* header) noexcept
    {
        return reinterpret_cast<Buffer*>(reinterpret_cast<std::byte*>(header) + buffers_offset);
    }
};

} // namespace async_socket::detail
