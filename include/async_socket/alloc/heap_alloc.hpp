// async_socket: an AllocPolicy on malloc/free.
#pragma once

#include <cstddef>
#include <cstdlib>

namespace async_socket
{

struct heap_alloc
{
    static void* allocate(std::size_t size) noexcept
    {
        return std::malloc(size);
    }

    static void deallocate(void* p, std::size_t /*size*/) noexcept
    {
        std::free(p);
    }
};

} // namespace async_socket
