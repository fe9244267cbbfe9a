/// @file
/// async_socket: an AllocPolicy over any standard allocator (std::allocator, std::pmr::polymorphic_allocator,
/// or a user's own).
///
///   std::pmr::synchronized_pool_resource resource; // thread-safe: completions free on threadpool threads
///   using pmr_alloc = std_allocator_alloc<std::pmr::polymorphic_allocator<std::byte>>;
///   auto socket = basic_async_socket<win32_threadpool, pmr_alloc, win32_sync>::create(engine, s, {},
///                                                                                  pmr_alloc{&resource});
///
/// The allocator is rebound to a unit type of sizeof and alignof std::max_align_t, and a request of `size`
/// bytes takes ceil(size / sizeof(unit)) units: every block is aligned for std::max_align_t, as the
/// AllocPolicy concept asks. An exception thrown by the allocator (std::bad_alloc, or any other) becomes
/// nullptr, which the socket reports as out_of_memory. deallocate passes the same unit count back.
///
/// The socket keeps a copy of the policy and calls it from several threads at once (completions free their
/// contexts on threadpool threads): the allocator's copies must share their state, as standard allocators
/// do, and the allocator (or its memory resource) must be thread-safe. std::allocator is;
/// std::pmr::synchronized_pool_resource is, unsynchronized_pool_resource and monotonic_buffer_resource are
/// not (use them with one thread only). Copying an allocator does not throw (the Allocator requirements),
/// so copies of this policy are noexcept.
#pragma once

#include <async_socket/detail/config.hpp>

#include <async_socket/concepts.hpp>

#include <cstddef>
#include <memory>
#include <type_traits>

// The same definition as in basic_async_socket.hpp (an identical redefinition is allowed).

namespace async_socket
{

/// An AllocPolicy that takes its memory from a standard allocator (see the top of this file).
template <class Allocator>
class std_allocator_alloc
{
public:
    /// The unit a request is counted in: max_align_t's size and alignment.
    struct alignas(std::max_align_t) unit
    {
        std::byte bytes[alignof(std::max_align_t)]; ///< storage only: never read as such
    };
    static_assert(sizeof(unit) == alignof(std::max_align_t));

    /// Allocator rebound to unit.
    using allocator_type = typename std::allocator_traits<Allocator>::template rebind_alloc<unit>;
    /// The traits the policy allocates and deallocates through.
    using traits = std::allocator_traits<allocator_type>;

    /// A default allocator (for std::pmr, the default memory resource); deleted if it has none.
    std_allocator_alloc() = default;

    /// Any allocator of the family (rebound here), e.g. std::pmr::polymorphic_allocator<std::byte>{&resource}.
    template <class Other>
    requires std::is_constructible_v<allocator_type, const Other&>
    explicit std_allocator_alloc(const Other& allocator) noexcept : allocator_(allocator) {}

    /// A copy shares the allocator's state (as the Allocator requirements say copies do).
    std_allocator_alloc(const std_allocator_alloc& other) noexcept : allocator_(other.allocator_) {}

    /// As the allocator's (deleted for std::pmr::polymorphic_allocator).
    std_allocator_alloc& operator=(const std_allocator_alloc&) = default;

    ~std_allocator_alloc() = default;

    /// ceil(size / sizeof(unit)) units from the allocator, or nullptr if it throws.
    [[nodiscard]] void* allocate(std::size_t size) noexcept
    {
        try
        {
            return std::to_address(traits::allocate(allocator_, units(size)));
        }
        catch (...)
        {
            return nullptr;
        }
    }

    /// Gives back a block from allocate, with the size given to allocate. Allocators do not throw here.
    void deallocate(void* p, std::size_t size) noexcept
    {
        if (p == nullptr)
        {
            return;
        }
        traits::deallocate(
            allocator_, std::pointer_traits<typename traits::pointer>::pointer_to(*static_cast<unit*>(p)), units(size));
    }

    /// The rebound allocator the policy holds.
    [[nodiscard]] const allocator_type& get_allocator() const noexcept
    {
        return allocator_;
    }

private:
    /// Rounds up without overflow; 0 bytes take one unit, so that every block is distinct.
    static constexpr std::size_t units(std::size_t size) noexcept
    {
        const std::size_t whole = size / sizeof(unit) + (size % sizeof(unit) != 0 ? 1 : 0);
        return whole != 0 ? whole : 1;
    }

    ASYNC_SOCKET_NO_UNIQUE_ADDRESS allocator_type allocator_{};
};

static_assert(alloc_policy<std_allocator_alloc<std::allocator<std::byte>>>);

} // namespace async_socket
