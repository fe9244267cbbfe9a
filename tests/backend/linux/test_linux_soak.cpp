// The Linux soak: several connected pairs of async sockets on one engine stream checked bytes both ways at once,
// on io_uring and on epoll. Each direction of each pair moves ASYNC_SOCKET_SOAK_MIB MiB (1024 by default) as
// messages of 1 byte to 64 KiB, each sent as 1 to 8 scatter buffers, with several sends queued at a time; the
// receiver re-arms from its callback into 1 to 4 buffers of random sizes and checks every byte against the
// stream's pattern (memcmp against a pattern block whose length is a prime, so a lost, duplicated or reordered
// run of bytes shows). Figures (messages, bytes, time) are printed; the checks: 0 bytes wrong, every byte sent
// received, every accepted IO completed exactly once, nothing failed.
#include <async_socket/async_socket.hpp>
#include <async_socket/testing/linux_loopback.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

namespace
{

using async_socket::linux_async_socket;
using async_socket::linux_engine;
using async_socket::status;
using async_socket::testing::waiter;

constexpr std::size_t block_size = 1048573; // a prime: the pattern does not line up with any message size
constexpr std::size_t max_message = 65536;
constexpr int sends_in_flight = 4;

std::uint64_t next_random(std::uint64_t& state) noexcept
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

// The bytes of one direction's stream: byte at offset o is block[o % block_size] (twice the block, so that any
// run of up to block_size bytes from any offset is contiguous).
std::vector<std::uint8_t> make_block(std::uint64_t seed)
{
    std::vector<std::uint8_t> block(2 * block_size);
    std::uint64_t state = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (std::size_t i = 0; i < block_size; ++i)
    {
        block[i] = static_cast<std::uint8_t>(next_random(state) >> 56);
        block[i + block_size] = block[i];
    }
    return block;
}

// How many IO of one kind the socket accepted, and how many of those completed.
struct io_count
{
    std::atomic<std::uint64_t> accepted{0};
    std::atomic<std::uint64_t> completed{0};
};

struct totals
{
    io_count sends;
    io_count receives;
    std::atomic<std::uint64_t> failures{0};
    std::atomic<std::uint64_t> wrong_bytes{0};
    std::atomic<std::uint64_t> bytes_received{0};
    std::atomic<int> directions_done{0};
    waiter wake;
};

// One direction of one pair: `from` sends the stream, `to` receives and checks it.
struct direction
{
    linux_async_socket* from = nullptr;
    linux_async_socket* to = nullptr;
    std::vector<std::uint8_t> block;
    std::uint64_t length = 0; // bytes to move
    totals* sum = nullptr;

    // Sender: several messages in flight; each completion sends the next.
    struct send_slot
    {
        direction* owner = nullptr;
        ASYNC_SOCKET_BUFFER buffers[8]{};
    };
    send_slot slots[sends_in_flight];
    std::atomic<std::uint64_t> next_offset{0}; // the stream offset of the next message (given out under lock)
    std::recursive_mutex send_lock; // recursive: a send that completes at once runs on_send inside send_async
    std::uint64_t send_random = 0;

    // Receiver.
    std::vector<std::uint8_t> in = std::vector<std::uint8_t>(max_message);
    ASYNC_SOCKET_BUFFER receive_buffers[4]{};
    std::uint64_t received = 0;
    std::uint64_t receive_random = 0;

    // Starts the next message on `slot` if any of the stream is left. Messages leave in offset order because
    // the offset is taken and the send submitted under one lock (the socket keeps sends in order).
    void send_next(send_slot& slot) noexcept
    {
        std::lock_guard<std::recursive_mutex> held(send_lock);
        const std::uint64_t offset = next_offset.load(std::memory_order_relaxed);
        if (offset >= length)
        {
            return;
        }
        const std::uint64_t left = length - offset;
        std::uint64_t size = 1 + next_random(send_random) % max_message;
        size = size < left ? size : left;
        const auto count = static_cast<std::uint32_t>(1 + next_random(send_random) % 8);
        std::uint32_t used = 0;
        std::uint64_t at = 0;
        const std::uint8_t* source = block.data() + offset % block_size;
        for (std::uint32_t i = 0; i < count && at < size; ++i)
        {
            std::uint64_t piece = i + 1 == count ? size - at : 1 + next_random(send_random) % (size - at);
            slot.buffers[used++] = {const_cast<std::uint8_t*>(source + at), static_cast<std::uint32_t>(piece)};
            at += piece;
        }
        next_offset.store(offset + size, std::memory_order_relaxed);
        if (from->send_async(slot.buffers, used, &on_send, &slot) == status::ok)
        {
            sum->sends.accepted.fetch_add(1);
        }
        else
        {
            sum->wake.update([&] { sum->failures.fetch_add(1); });
        }
    }

    static void on_send(void* context, ASYNC_SOCKET_SEND_RESULT result) noexcept
    {
        auto& slot = *static_cast<send_slot*>(context);
        slot.owner->sum->sends.completed.fetch_add(1);
        if (result != ASYNC_SOCKET_SEND_OK)
        {
            slot.owner->sum->wake.update([&] { slot.owner->sum->failures.fetch_add(1); });
            return;
        }
        slot.owner->send_next(slot);
    }

    bool arm_receive() noexcept
    {
        const auto count = static_cast<std::uint32_t>(1 + next_random(receive_random) % 4);
        std::size_t at = 0;
        for (std::uint32_t i = 0; i < count; ++i)
        {
            const std::size_t piece =
                i + 1 == count ? in.size() - at : 1 + next_random(receive_random) % ((in.size() - at) / 2);
            receive_buffers[i] = {in.data() + at, static_cast<std::uint32_t>(piece)};
            at += piece;
        }
        if (to->receive_async(receive_buffers, count, &on_receive, this) != status::ok)
        {
            sum->wake.update([&] { sum->failures.fetch_add(1); });
            return false;
        }
        sum->receives.accepted.fetch_add(1);
        return true;
    }

    static void on_receive(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes) noexcept
    {
        auto& self = *static_cast<direction*>(context);
        totals& sum = *self.sum;
        sum.receives.completed.fetch_add(1);
        if (result != ASYNC_SOCKET_RECEIVE_OK || bytes == 0)
        {
            sum.failures.fetch_add(1);
            sum.wake.update([&] { sum.directions_done.fetch_add(1); });
            return;
        }
        // The buffers were filled in order: in[0, bytes) is the stream from `received` on.
        if (std::memcmp(self.in.data(), self.block.data() + self.received % block_size, bytes) != 0)
        {
            sum.wrong_bytes.fetch_add(bytes);
        }
        self.received += bytes;
        sum.bytes_received.fetch_add(bytes);
        if (self.received >= self.length)
        {
            sum.wake.update([&] { sum.directions_done.fetch_add(1); });
            return;
        }
        if (!self.arm_receive())
        {
            sum.wake.update([&] { sum.directions_done.fetch_add(1); });
        }
    }
};

struct pair_of_sockets
{
    async_socket::testing::fd_pair fds;
    linux_async_socket::handle client;
    linux_async_socket::handle server;
};

void run_soak(async_socket::linux_io_choice io, const char* name)
{
    const char* setting = std::getenv("ASYNC_SOCKET_SOAK_MIB");
    const std::uint64_t mib = setting != nullptr ? std::strtoull(setting, nullptr, 10) : 1024;
    constexpr int pairs = 4;
    const linux_engine::handle engine = linux_engine::create({.thread_count = 2, .io = io});
    REQUIRE(engine != nullptr);

    totals sum;
    std::vector<pair_of_sockets> sockets(pairs);
    std::vector<std::unique_ptr<direction>> directions;
    for (int p = 0; p < pairs; ++p)
    {
        pair_of_sockets& s = sockets[static_cast<std::size_t>(p)];
        s.fds = async_socket::testing::make_loopback_fd_pair();
        REQUIRE(s.fds.valid());
        s.client = linux_async_socket::create(engine.get(), async_socket_handle_from_fd(s.fds.client));
        s.server = linux_async_socket::create(engine.get(), async_socket_handle_from_fd(s.fds.server));
        REQUIRE(s.client != nullptr);
        REQUIRE(s.server != nullptr);
        REQUIRE(s.client->open_async([](void*, ASYNC_SOCKET_OPEN_RESULT) noexcept {}, nullptr) == status::ok);
        REQUIRE(s.server->open_async([](void*, ASYNC_SOCKET_OPEN_RESULT) noexcept {}, nullptr) == status::ok);
        for (int d = 0; d < 2; ++d)
        {
            auto one = std::make_unique<direction>();
            one->from = d == 0 ? s.client.get() : s.server.get();
            one->to = d == 0 ? s.server.get() : s.client.get();
            one->block = make_block(static_cast<std::uint64_t>(p * 2 + d + 1));
            one->length = mib << 20;
            one->sum = &sum;
            one->send_random = 0x1234567ULL + static_cast<std::uint64_t>(p * 2 + d);
            one->receive_random = 0x7654321ULL + static_cast<std::uint64_t>(p * 2 + d);
            for (auto& slot : one->slots)
            {
                slot.owner = one.get();
            }
            directions.push_back(std::move(one));
        }
    }
    const auto start = std::chrono::steady_clock::now();
    for (auto& one : directions)
    {
        REQUIRE(one->arm_receive());
    }
    for (auto& one : directions)
    {
        for (auto& slot : one->slots)
        {
            one->send_next(slot);
        }
    }
    // Ends when every direction is done, or at the first failure (a refused send would otherwise stall its stream).
    const bool finished =
        sum.wake.wait_for([&] { return sum.directions_done.load() == 2 * pairs || sum.failures.load() != 0; }, 100.0);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    // Close and destroy while nothing is pending any more (the receivers have all they wait for).
    for (auto& s : sockets)
    {
        CHECK(s.client->close() == status::ok);
        CHECK(s.server->close() == status::ok);
    }
    std::printf("linux soak (%s): %d pairs x 2 directions x %llu MiB in %.1f s (%.0f MiB/s): sends %llu accepted, "
                "%llu completed; receives %llu accepted, %llu completed; %llu bytes received, %llu wrong, "
                "%llu failures\n",
                name, pairs, static_cast<unsigned long long>(mib), seconds,
                static_cast<double>(sum.bytes_received.load()) / 1048576.0 / seconds,
                static_cast<unsigned long long>(sum.sends.accepted.load()),
                static_cast<unsigned long long>(sum.sends.completed.load()),
                static_cast<unsigned long long>(sum.receives.accepted.load()),
                static_cast<unsigned long long>(sum.receives.completed.load()),
                static_cast<unsigned long long>(sum.bytes_received.load()),
                static_cast<unsigned long long>(sum.wrong_bytes.load()),
                static_cast<unsigned long long>(sum.failures.load()));
    REQUIRE(finished);
    CHECK(sum.failures.load() == 0);
    CHECK(sum.wrong_bytes.load() == 0);
    CHECK(sum.bytes_received.load() == 2ULL * pairs * (mib << 20));
    CHECK(sum.sends.completed.load() == sum.sends.accepted.load());
    CHECK(sum.receives.completed.load() == sum.receives.accepted.load());
    if (mib >= 1024)
    {
        CHECK(sum.sends.accepted.load() >= 100000); // the floor: 100k messages
    }
}

} // namespace

TEST_CASE("soak on io_uring: 4 pairs stream checked bytes both ways, nothing lost, duplicated or wrong")
{
    const linux_engine::handle probe = linux_engine::create({.thread_count = 1});
    REQUIRE(probe != nullptr);
    if (probe->mechanism() != async_socket::linux_io_mechanism::io_uring)
    {
        MESSAGE("io_uring refused here (errno " << probe->io_uring_refusal() << "): the epoll soak below covers it");
        return;
    }
    run_soak(async_socket::linux_io_choice::io_uring, "io_uring");
}

TEST_CASE("soak on epoll: 4 pairs stream checked bytes both ways, nothing lost, duplicated or wrong")
{
    run_soak(async_socket::linux_io_choice::epoll, "epoll");
}
