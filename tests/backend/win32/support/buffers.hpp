// Test support for the Win32 integration tests: pattern bytes to send (so that a byte out of place shows) and
// the part of a list of buffers still to be filled by a receive.
//
// Header-only; only the async_socket C types and the standard library.
#pragma once

#include <async_socket/types.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace win32_test
{

// The pattern byte at `offset` of a stream: a hash of the offset, so that a byte lost, doubled or moved shows.
inline std::uint8_t pattern(std::size_t offset) noexcept
{
    std::uint32_t x = static_cast<std::uint32_t>(offset) * 2654435761u;
    x ^= x >> 15;
    return static_cast<std::uint8_t>(x ^ (x >> 8));
}

// `size` pattern bytes from `first_offset` of the stream on.
inline std::vector<std::uint8_t> make_bytes(std::size_t size, std::size_t first_offset = 0)
{
    std::vector<std::uint8_t> bytes(size);
    for (std::size_t i = 0; i < size; ++i)
    {
        bytes[i] = pattern(first_offset + i);
    }
    return bytes;
}

// The regions from byte `offset` of their concatenation onwards: the first partly filled one is cut there.
inline std::vector<ASYNC_SOCKET_BUFFER> regions_from(std::span<const ASYNC_SOCKET_BUFFER> regions, std::size_t offset)
{
    std::vector<ASYNC_SOCKET_BUFFER> rest;
    for (const ASYNC_SOCKET_BUFFER& region : regions)
    {
        if (offset >= region.length)
        {
            offset -= region.length;
            continue;
        }
        rest.push_back(
            {static_cast<std::uint8_t*>(region.buffer) + offset, static_cast<std::uint32_t>(region.length - offset)});
        offset = 0;
    }
    return rest;
}

// The total length of the regions.
inline std::size_t total_length(std::span<const ASYNC_SOCKET_BUFFER> regions) noexcept
{
    std::size_t total = 0;
    for (const ASYNC_SOCKET_BUFFER& region : regions)
    {
        total += region.length;
    }
    return total;
}

} // namespace win32_test
