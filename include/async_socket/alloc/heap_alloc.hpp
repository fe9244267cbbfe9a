/// @file
/// async_socket: an AllocPolicy on malloc/free.
#pragma once

#include <cstddef>
#include <cstdlib>

namespace async_socket
{

/// The AllocPolicy of the spec: every socket and IO context is a std::malloc'd block. Stateless.
struct heap_alloc
{
    /// std::malloc(size): nullptr on failure, aligned for std::max_align_t.
    static void* allocate(std::size_t size) noexcept
    {
        return std::malloc(size);
    }

    /// std::free(p); the size is not needed.
    static void deallocate(void* p, std::size_t /*size*/) noexcept
    {
        std::free(p);
    }
};

} // namespace async_socket
