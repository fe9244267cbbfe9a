/// @file
/// async_socket: what the members of basic_async_socket return.
///
/// The spec asks for 0 on success and "a non-zero value" on failure; status keeps that (ok is 0, the C
/// API returns the value as an int) and says which failure it was.
#pragma once

#include <string>
#include <system_error>
#include <type_traits>

/// Everything the library declares: the socket template, its policies, their concepts and the backends.
namespace async_socket
{

/// What a member of basic_async_socket returns: ok (0), or which failure refused the call.
enum class status : int
{
    ok = 0,               ///< the call was accepted (or done)
    invalid_argument,     ///< a NULL pointer, a zero count or length, a NULL callback
    invalid_state,        ///< the call does not fit the socket's state (send while not OPEN, ...)
    size_overflow,        ///< the buffer lengths or the IO context would exceed UINT32_MAX
    out_of_memory,        ///< the AllocPolicy returned nullptr
    os_error,             ///< the ThreadpoolPolicy reported a failure of the OS
    called_from_callback, ///< close from inside one of this socket's own completion callbacks
    handler_threw,        ///< a C++ handler threw while it was moved or copied into the IO's context
    cancelled,            ///< the std::stop_token given to the call was stopped already: nothing was started
};

/// The enumerator's name ("ok", "invalid_argument", ...); "unknown" for a value that is none of them.
constexpr const char* to_string(status s) noexcept
{
    switch (s)
    {
    case status::ok:
        return "ok";
    case status::invalid_argument:
        return "invalid_argument";
    case status::invalid_state:
        return "invalid_state";
    case status::size_overflow:
        return "size_overflow";
    case status::out_of_memory:
        return "out_of_memory";
    case status::os_error:
        return "os_error";
    case status::called_from_callback:
        return "called_from_callback";
    case status::handler_threw:
        return "handler_threw";
    case status::cancelled:
        return "cancelled";
    }
    return "unknown";
}

/// A refused call as a std::error_code (what co_await of a refused IO gives): status values in their own
/// category, named by to_string.
class status_error_category final : public std::error_category
{
public:
    /// "async_socket".
    [[nodiscard]] const char* name() const noexcept override
    {
        return "async_socket";
    }
    /// The name of the status value (to_string).
    [[nodiscard]] std::string message(int value) const override
    {
        return to_string(static_cast<status>(value));
    }
};

/// The one status_error_category object, which every error_code made from a status refers to.
inline const std::error_category& status_category() noexcept
{
    static const status_error_category category;
    return category;
}

/// s as a std::error_code in status_category(); found by argument-dependent lookup, so `std::error_code ec = s;` works.
inline std::error_code make_error_code(status s) noexcept
{
    return {static_cast<int>(s), status_category()};
}

} // namespace async_socket

/// Makes status convertible to std::error_code (through make_error_code).
template <>
struct std::is_error_code_enum<async_socket::status> : std::true_type
{
};
