// The version in one place: the macros of <async_socket/version.hpp> are what CMake made the project version
// (passed in as ASYNC_SOCKET_PROJECT_VERSION), so find_package, the .pc file and the header agree.
#include <async_socket/version.hpp>

#include <doctest/doctest.h>

#include <string>

#ifndef ASYNC_SOCKET_PROJECT_VERSION
#error "the build passes CMake's PROJECT_VERSION as ASYNC_SOCKET_PROJECT_VERSION"
#endif

TEST_CASE("the header's version is the CMake project's version")
{
    const std::string from_header = std::to_string(ASYNC_SOCKET_VERSION_MAJOR) + "." +
                                    std::to_string(ASYNC_SOCKET_VERSION_MINOR) + "." +
                                    std::to_string(ASYNC_SOCKET_VERSION_PATCH);
    CHECK(from_header == ASYNC_SOCKET_PROJECT_VERSION);
    CHECK(ASYNC_SOCKET_VERSION ==
          ASYNC_SOCKET_VERSION_MAJOR * 10000 + ASYNC_SOCKET_VERSION_MINOR * 100 + ASYNC_SOCKET_VERSION_PATCH);
}
