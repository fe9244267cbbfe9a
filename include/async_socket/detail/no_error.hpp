// async_socket: "no error" as a std::error_code, without a call per IO.
//
// std::error_code's default constructor calls std::system_category(), which libstdc++ defines out of line (a
// call through the PLT): paid on every IO that succeeds when a result is made. A function-local static would
// cost a guard check per IO, and its initialisation path keeps a callee-saved register busy in every function
// it is inlined into (g++ pushes and pops it per completion). So the category is looked up once, by the dynamic
// initialisation of a namespace-scope pointer: a plain load per IO. Before that initialisation has run (an IO
// made from another static initialiser) the pointer is still null and the lookup is made there and then.
// The code is the same as a default-constructed one (0, system category).
#pragma once

#include <system_error>

namespace async_socket::detail
{

[[gnu::noinline, gnu::cold]] inline const std::error_category* system_category_now() noexcept
{
    return &std::system_category();
}

inline const std::error_category* const system_category_at_start = system_category_now();

[[nodiscard]] inline std::error_code no_error() noexcept
{
    const std::error_category* system = system_category_at_start;
    if (system == nullptr) [[unlikely]]
    {
        system = system_category_now();
    }
    return std::error_code(0, *system);
}

} // namespace async_socket::detail
