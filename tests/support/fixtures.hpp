// Shared pieces of the unit tests: the socket type under test and recorders for its callbacks.
#pragma once

#include <async_socket/basic_async_socket.hpp>
#include <async_socket/sync/std_sync.hpp>
#include <async_socket/testing/fake_threadpool.hpp>
#include <async_socket/testing/fault_alloc.hpp>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace test_support
{

using async_socket::status;
using namespace async_socket::testing;

using fake_socket_type = async_socket::basic_async_socket<fake_threadpool, fault_alloc, async_socket::std_sync>;

// Lines (the fake's violations, say) in one message.
inline std::string joined(const std::vector<std::string>& lines)
{
    std::string all;
    for (const auto& line : lines)
    {
        all += line;
        all += "; ";
    }
    return all;
}

// Counts open callbacks and keeps the last result.
struct open_recorder
{
    std::atomic<int> calls{0};
    std::atomic<ASYNC_SOCKET_OPEN_RESULT> last{ASYNC_SOCKET_OPEN_RESULT_INVALID};

    static void callback(void* context, ASYNC_SOCKET_OPEN_RESULT result)
    {
        auto* self = static_cast<open_recorder*>(context);
        self->last = result;
        ++self->calls;
    }
};

// Keeps every send result, in the order the callbacks ran.
struct send_recorder
{
    std::mutex mutex;
    std::vector<ASYNC_SOCKET_SEND_RESULT> results;

    static void callback(void* context, ASYNC_SOCKET_SEND_RESULT result)
    {
        auto* self = static_cast<send_recorder*>(context);
        std::lock_guard lock(self->mutex);
        self->results.push_back(result);
    }

    std::vector<ASYNC_SOCKET_SEND_RESULT> seen()
    {
        std::lock_guard lock(mutex);
        return results;
    }
};

// Keeps every receive result and byte count, in the order the callbacks ran.
struct receive_recorder
{
    struct completion
    {
        ASYNC_SOCKET_RECEIVE_RESULT result;
        std::uint32_t bytes;
    };
    std::mutex mutex;
    std::vector<completion> results;

    static void callback(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes)
    {
        auto* self = static_cast<receive_recorder*>(context);
        std::lock_guard lock(self->mutex);
        self->results.push_back({result, bytes});
    }

    std::vector<completion> seen()
    {
        std::lock_guard lock(mutex);
        return results;
    }
};

// A fake world, a ledger and one socket over fake socket 42, created and (by default) opened.
struct fixture
{
    fake_os os;
    alloc_ledger ledger;
    open_recorder opened;
    fake_socket_type::handle socket;

    explicit fixture(bool open = true)
    {
        socket = fake_socket_type::create(&os, fake_socket(42), {}, fault_alloc{&ledger});
        if (socket && open)
        {
            (void)socket->open_async(&open_recorder::callback, &opened);
        }
    }
};

} // namespace test_support
