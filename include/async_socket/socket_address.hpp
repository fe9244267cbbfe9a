/// @file
/// async_socket: socket_address, an IPv4 or IPv6 address as the OS spells it (a sockaddr and its length), held by
/// value: what connect_async takes and what an accept gives as the peer.
///
/// No OS header is needed to name it: `sockaddr` is only declared here. Make one from what the OS gives
/// (`socket_address{reinterpret_cast<const sockaddr*>(&in6), sizeof in6}`) and hand data()/size() back to the OS.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

struct sockaddr; // the OS's own (sys/socket.h, winsock2.h); only pointed at here

namespace async_socket
{

/// A socket address of at most max_size bytes (the size of sockaddr_storage on Linux and on Windows).
class socket_address
{
public:
    /// The largest address held: sizeof(sockaddr_storage) on Linux and on Windows.
    static constexpr std::uint32_t max_size = 128;

    /// An empty address (size() 0).
    constexpr socket_address() noexcept = default;

    /// A copy of the `length` bytes at `address`; empty when address is null or length is 0 or over max_size.
    socket_address(const sockaddr* address, std::uint32_t length) noexcept
    {
        if (address != nullptr && length != 0 && length <= max_size)
        {
            std::memcpy(bytes_, address, length);
            length_ = length;
        }
    }

    /// The address, for the OS's calls (connect, getnameinfo); meaningless when empty().
    [[nodiscard]] const sockaddr* data() const noexcept
    {
        return reinterpret_cast<const sockaddr*>(bytes_);
    }
    /// The address, to be filled by the OS (accept, getsockname); set its length with resize() afterwards.
    [[nodiscard]] sockaddr* data() noexcept
    {
        return reinterpret_cast<sockaddr*>(bytes_);
    }
    /// The length in bytes (0: empty).
    [[nodiscard]] constexpr std::uint32_t size() const noexcept
    {
        return length_;
    }
    /// Sets the length after the OS filled data(); false (and nothing changed) above max_size.
    constexpr bool resize(std::uint32_t length) noexcept
    {
        if (length > max_size)
        {
            return false;
        }
        length_ = length;
        return true;
    }
    /// Whether no address is held.
    [[nodiscard]] constexpr bool empty() const noexcept
    {
        return length_ == 0;
    }
    /// The address family (AF_INET, AF_INET6: the first 16 bits of every sockaddr on Linux and Windows); 0 when
    /// empty.
    [[nodiscard]] std::uint16_t family() const noexcept
    {
        if (length_ < sizeof(std::uint16_t))
        {
            return 0;
        }
        std::uint16_t value = 0;
        std::memcpy(&value, bytes_, sizeof value);
        return value;
    }

private:
    alignas(8) unsigned char bytes_[max_size] = {};
    std::uint32_t length_ = 0;
};

} // namespace async_socket
