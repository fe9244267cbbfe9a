// async_socket: "no error" as a std::error_code, without a call per IO.
//
// std::error_code's default constructor calls std::system_category(), which libstdc++ defines out of line (a
// call through the PLT): paid on every IO that succeeds when a result is made. The category is looked up
// once here instead; the code is the same as a default-constructed one (0, system category).
#pragma once

#include <system_error>

namespace async_socket::detail
{

[[nodiscard]] inline std::error_code no_error() noexcept
{
    static const std::error_category& system = std::system_category();
    return std::error_code(0, system);
}

} // namespace async_socket::detail
