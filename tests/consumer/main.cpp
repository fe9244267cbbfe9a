// Uses the installed headers: a socket over the shipped fakes opens, sends and closes.
#include <async_socket/basic_async_socket.hpp>
#include <async_socket/alloc/heap_alloc.hpp>
#include <async_socket/sync/std_sync.hpp>
#include <async_socket/testing/fake_threadpool.hpp>
#include <async_socket/version.hpp>

#include <cstdio>
#include <string>

int main()
{
#ifdef ASYNC_SOCKET_PACKAGE_VERSION
    // The version find_package saw is the header's.
    const std::string header_version = std::to_string(ASYNC_SOCKET_VERSION_MAJOR) + "." +
                                       std::to_string(ASYNC_SOCKET_VERSION_MINOR) + "." +
                                       std::to_string(ASYNC_SOCKET_VERSION_PATCH);
    if (header_version != ASYNC_SOCKET_PACKAGE_VERSION)
    {
        std::printf("consumer: package version %s, header version %s\n", ASYNC_SOCKET_PACKAGE_VERSION,
                    header_version.c_str());
        return 1;
    }
#endif
    using socket_type = async_socket::basic_async_socket<async_socket::testing::fake_threadpool,
                                                         async_socket::heap_alloc, async_socket::std_sync>;
    async_socket::testing::fake_os os;
    auto socket = socket_type::create(&os, async_socket::testing::fake_socket(1));
    if (!socket || socket->open_async([](void*, ASYNC_SOCKET_OPEN_RESULT) {}, nullptr) != async_socket::status::ok)
    {
        std::puts("consumer: open failed");
        return 1;
    }
    char byte = 'x';
    ASYNC_SOCKET_BUFFER buffer{&byte, 1};
    int result = 0;
    if (socket->send_async(
            &buffer, 1, [](void* c, ASYNC_SOCKET_SEND_RESULT r) { *static_cast<int*>(c) = r; }, &result) !=
            async_socket::status::ok ||
        !os.complete_oldest(async_socket::win32_no_error, 1) || result != ASYNC_SOCKET_SEND_OK)
    {
        std::puts("consumer: send failed");
        return 1;
    }
    (void)socket->close();
    std::puts("consumer: ok");
    return 0;
}
