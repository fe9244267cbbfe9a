// Fake Win32 calls with two test hooks in CreateThreadpoolIo: a test's function run there (while the socket is
// OPENING), and the completion routine it registers kept, so that a test can run it as the OS would for a completion
// without an OVERLAPPED (fake_os has no public way to do that). Used by test_send.cpp and test_completion.cpp.
#pragma once

#include "fixtures.hpp"

#include <cstddef>

namespace test_support
{

class probe_calls : public async_socket::testing::fake_threadpool_calls
{
public:
    probe_calls() noexcept = default;
    probe_calls(probe_calls&&) noexcept = default;

    template <async_socket::win32_completion_routine Completion>
    bool create_io(SOCKET_HANDLE socket, void* callback_context) noexcept
    {
        if (while_opening != nullptr)
        {
            while_opening(while_opening_context);
        }
        completion_ = Completion;
        callback_context_ = callback_context;
        return fake_threadpool_calls::create_io<Completion>(socket, callback_context);
    }

    bool deliver_null_overlapped(async_socket::win32_error io_result, std::size_t bytes_transferred) const
    {
        if (completion_ == nullptr)
        {
            return false;
        }
        completion_(callback_context_, nullptr, io_result, bytes_transferred);
        return true;
    }

    void (*while_opening)(void*) = nullptr;
    void* while_opening_context = nullptr;

private:
    async_socket::win32_completion_routine completion_ = nullptr;
    void* callback_context_ = nullptr;
};

using probe_socket_type = async_socket::basic_async_socket<async_socket::win32_threadpool_backend<probe_calls>,
                                                           fault_alloc, async_socket::std_sync>;

} // namespace test_support
