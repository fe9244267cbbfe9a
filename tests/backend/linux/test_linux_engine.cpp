// The Linux engine and what is particular to Linux sockets: engine parameters, the descriptor as a
// SOCKET_HANDLE (descriptor 0 included), descriptors epoll cannot watch, IPv6, many sockets on one engine.
#include <async_socket/async_socket.hpp>
#include <async_socket/testing/linux_loopback.hpp>

#include <doctest/doctest.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

namespace
{

using async_socket::linux_async_socket;
using async_socket::linux_engine;
using async_socket::status;
using async_socket::testing::waiter;

struct receive_log
{
    waiter wake;
    int ok = 0;
    int other = 0;
    std::uint32_t bytes = 0;

    static void on_open(void*, ASYNC_SOCKET_OPEN_RESULT) noexcept {}
    static void on_receive(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes) noexcept
    {
        auto* log = static_cast<receive_log*>(context);
        log->wake.update(
            [&]
            {
                (result == ASYNC_SOCKET_RECEIVE_OK ? log->ok : log->other) += 1;
                log->bytes += bytes;
            });
    }
};

// One byte from the peer end reaches a receive on `socket`.
bool one_byte_arrives(linux_async_socket& socket, int peer)
{
    receive_log log;
    std::uint8_t in = 0;
    ASYNC_SOCKET_BUFFER buffer{&in, 1};
    if (socket.receive_async(&buffer, 1, &receive_log::on_receive, &log) != status::ok)
    {
        return false;
    }
    const std::uint8_t byte = 0x42;
    if (send(peer, &byte, 1, MSG_NOSIGNAL) != 1)
    {
        return false;
    }
    return log.wake.wait_for([&] { return log.ok + log.other == 1; }, 60.0) && log.ok == 1 && in == 0x42;
}

} // namespace

TEST_CASE("linux_engine: one worker per core by default, a count can be given, too many is EINVAL")
{
    const linux_engine::handle by_default = linux_engine::create();
    REQUIRE(by_default != nullptr);
    CHECK(by_default->thread_count() == static_cast<std::uint32_t>(sysconf(_SC_NPROCESSORS_ONLN)));
    CHECK_FALSE(by_default->runs_this_thread());

    const linux_engine::handle three = linux_engine::create({.thread_count = 3});
    REQUIRE(three != nullptr);
    CHECK(three->thread_count() == 3);

    errno = 0;
    CHECK(linux_engine::create({.thread_count = linux_engine::max_thread_count + 1}) == nullptr);
    CHECK(errno == EINVAL);
}

TEST_CASE("linux_engine: io_uring unless refused, epoll when asked for or when ASYNC_SOCKET_IO_URING=0")
{
    using async_socket::linux_io_choice;
    using async_socket::linux_io_mechanism;
    const linux_engine::handle automatic = linux_engine::create({.thread_count = 1});
    REQUIRE(automatic != nullptr);
    // The kernel decides: io_uring where it is allowed (as on the CI machine), epoll with the reason otherwise.
    const bool refused = automatic->io_uring_refusal() != 0;
    CHECK(automatic->mechanism() == (refused ? linux_io_mechanism::epoll : linux_io_mechanism::io_uring));
    const std::string seen = std::string("automatic engine runs on ") + (refused ? "epoll" : "io_uring") +
                             " (io_uring_refusal: " + std::to_string(automatic->io_uring_refusal()) + ")";
    MESSAGE(seen);

    const linux_engine::handle forced_epoll = linux_engine::create({.thread_count = 1, .io = linux_io_choice::epoll});
    REQUIRE(forced_epoll != nullptr);
    CHECK(forced_epoll->mechanism() == linux_io_mechanism::epoll);
    CHECK(forced_epoll->io_uring_refusal() == -1);

    const linux_engine::handle forced_uring =
        linux_engine::create({.thread_count = 1, .io = linux_io_choice::io_uring});
    CHECK((forced_uring != nullptr) == !refused);
    if (forced_uring != nullptr)
    {
        CHECK(forced_uring->mechanism() == linux_io_mechanism::io_uring);
    }

    REQUIRE(setenv("ASYNC_SOCKET_IO_URING", "0", 1) == 0);
    const linux_engine::handle escaped = linux_engine::create({.thread_count = 1});
    REQUIRE(unsetenv("ASYNC_SOCKET_IO_URING") == 0);
    REQUIRE(escaped != nullptr);
    CHECK(escaped->mechanism() == linux_io_mechanism::epoll);
    CHECK(escaped->io_uring_refusal() == -1);
}

TEST_CASE("a descriptor is passed as a SOCKET_HANDLE of descriptor + 1: 0 is valid, -1 is NULL")
{
    CHECK(async_socket_handle_from_fd(-1) == nullptr);
    CHECK(async_socket_handle_from_fd(0) != nullptr);
    CHECK(async_socket_fd_from_handle(async_socket_handle_from_fd(0)) == 0);
    CHECK(async_socket_fd_from_handle(async_socket_handle_from_fd(12345)) == 12345);
    CHECK(async_socket_fd_from_handle(nullptr) == -1);

    const linux_engine::handle engine = linux_engine::create({.thread_count = 1});
    REQUIRE(engine != nullptr);
    CHECK(linux_async_socket::create(engine.get(), async_socket_handle_from_fd(-1)) == nullptr);
}

TEST_CASE("descriptor 0 works as a socket")
{
    const linux_engine::handle engine = linux_engine::create({.thread_count = 1});
    REQUIRE(engine != nullptr);
    async_socket::testing::fd_pair pair = async_socket::testing::make_loopback_fd_pair();
    REQUIRE(pair.valid());
    // Put the client end on descriptor 0 (standard input), keeping the old 0 to restore it.
    const int saved_stdin = fcntl(0, F_DUPFD_CLOEXEC, 3);
    REQUIRE(dup2(pair.client, 0) == 0);
    bool arrived = false;
    {
        auto socket = linux_async_socket::create(engine.get(), async_socket_handle_from_fd(0));
        REQUIRE(socket != nullptr);
        receive_log opened;
        REQUIRE(socket->open_async(&receive_log::on_open, &opened) == status::ok);
        arrived = one_byte_arrives(*socket, pair.server);
    }
    if (saved_stdin >= 0)
    {
        (void)dup2(saved_stdin, 0);
        (void)close(saved_stdin);
    }
    else
    {
        (void)close(0);
    }
    CHECK(arrived);
}

TEST_CASE("a descriptor epoll cannot watch fails the open with an error, and nothing is called")
{
    const linux_engine::handle engine =
        linux_engine::create({.thread_count = 1, .io = async_socket::linux_io_choice::epoll});
    REQUIRE(engine != nullptr);
    const int file = open("/dev/null", O_RDONLY | O_CLOEXEC); // epoll refuses regular files and /dev/null: EPERM
    REQUIRE(file >= 0);
    {
        auto socket = linux_async_socket::create(engine.get(), async_socket_handle_from_fd(file));
        REQUIRE(socket != nullptr);
        int opens = 0;
        CHECK(socket->open_async([](void* context, ASYNC_SOCKET_OPEN_RESULT) noexcept
                                 { ++*static_cast<int*>(context); },
                                 &opens) == status::os_error);
        CHECK(opens == 0);
        CHECK(socket->state() == async_socket::socket_state::closed);
    }
    (void)close(file);
}

TEST_CASE("IPv6 loopback: a receive gets the peer's byte")
{
    const linux_engine::handle engine = linux_engine::create({.thread_count = 2});
    REQUIRE(engine != nullptr);
    async_socket::testing::fd_pair pair = async_socket::testing::make_loopback_fd_pair(AF_INET6);
    REQUIRE(pair.valid());
    auto socket = linux_async_socket::create(engine.get(), async_socket_handle_from_fd(pair.client));
    REQUIRE(socket != nullptr);
    receive_log opened;
    REQUIRE(socket->open_async(&receive_log::on_open, &opened) == status::ok);
    CHECK(one_byte_arrives(*socket, pair.server));
}

TEST_CASE("many sockets on one engine, made and destroyed in turn, reuse its slots")
{
    const linux_engine::handle engine = linux_engine::create({.thread_count = 2});
    REQUIRE(engine != nullptr);
    int arrived = 0;
    for (int round = 0; round < 3; ++round)
    {
        std::vector<async_socket::testing::fd_pair> pairs;
        std::vector<linux_async_socket::handle> sockets;
        for (int i = 0; i < 64; ++i)
        {
            pairs.push_back(async_socket::testing::make_loopback_fd_pair());
            REQUIRE(pairs.back().valid());
            sockets.push_back(
                linux_async_socket::create(engine.get(), async_socket_handle_from_fd(pairs.back().client)));
            REQUIRE(sockets.back() != nullptr);
            receive_log opened;
            REQUIRE(sockets.back()->open_async(&receive_log::on_open, &opened) == status::ok);
        }
        for (int i = 0; i < 64; ++i)
        {
            arrived +=
                one_byte_arrives(*sockets[static_cast<std::size_t>(i)], pairs[static_cast<std::size_t>(i)].server) ? 1
                                                                                                                   : 0;
        }
    }
    CHECK(arrived == 3 * 64);
}

namespace
{

// Socket A's receive callback closes socket B, whose receive is pending; on a one-worker engine both live on
// the one ring (io_uring) or epoll thread, so B's close runs on the only thread that can complete B's IO.
struct closer
{
    linux_async_socket* other = nullptr;
    waiter wake;
    bool closed = false;
    status close_status = status::invalid_state;

    static void on_receive(void* context, ASYNC_SOCKET_RECEIVE_RESULT, std::uint32_t) noexcept
    {
        auto* self = static_cast<closer*>(context);
        const status closed = self->other->close();
        self->wake.update(
            [&]
            {
                self->close_status = closed;
                self->closed = true;
            });
    }
};

void close_from_a_callback_of_another_socket(async_socket::linux_io_choice io)
{
    const linux_engine::handle engine = linux_engine::create({.thread_count = 1, .io = io});
    REQUIRE(engine != nullptr);
    async_socket::testing::fd_pair pair_a = async_socket::testing::make_loopback_fd_pair();
    async_socket::testing::fd_pair pair_b = async_socket::testing::make_loopback_fd_pair();
    REQUIRE(pair_a.valid());
    REQUIRE(pair_b.valid());
    auto a = linux_async_socket::create(engine.get(), async_socket_handle_from_fd(pair_a.client));
    auto b = linux_async_socket::create(engine.get(), async_socket_handle_from_fd(pair_b.client));
    REQUIRE(a != nullptr);
    REQUIRE(b != nullptr);
    receive_log opened;
    REQUIRE(a->open_async(&receive_log::on_open, &opened) == status::ok);
    REQUIRE(b->open_async(&receive_log::on_open, &opened) == status::ok);

    receive_log b_log;
    std::uint8_t b_in = 0;
    ASYNC_SOCKET_BUFFER b_buffer{&b_in, 1};
    REQUIRE(b->receive_async(&b_buffer, 1, &receive_log::on_receive, &b_log) == status::ok); // stays pending

    closer on_a;
    on_a.other = b.get();
    std::uint8_t a_in = 0;
    ASYNC_SOCKET_BUFFER a_buffer{&a_in, 1};
    REQUIRE(a->receive_async(&a_buffer, 1, &closer::on_receive, &on_a) == status::ok);
    const std::uint8_t byte = 1;
    REQUIRE(send(pair_a.server, &byte, 1, MSG_NOSIGNAL) == 1);

    REQUIRE(on_a.wake.wait_for([&] { return on_a.closed; }, 60.0));
    CHECK(on_a.close_status == status::ok);
    CHECK(b->state() == async_socket::socket_state::closed);
    CHECK(b_log.ok + b_log.other == 1); // B's receive completed once (because of the close) before close returned
    CHECK(b_log.ok == 0);
}

} // namespace

TEST_CASE("close of a socket with IO in flight, from a callback of another socket on a one-worker engine")
{
    SUBCASE("epoll")
    {
        close_from_a_callback_of_another_socket(async_socket::linux_io_choice::epoll);
    }
    SUBCASE("io_uring (where the kernel allows it)")
    {
        const linux_engine::handle probe = linux_engine::create({.thread_count = 1});
        REQUIRE(probe != nullptr);
        if (probe->mechanism() == async_socket::linux_io_mechanism::io_uring)
        {
            close_from_a_callback_of_another_socket(async_socket::linux_io_choice::io_uring);
        }
    }
}

TEST_CASE("each socket's completions run on one worker, and the sockets are given out to every worker in turn")
{
    // epoll has an instance per worker and io_uring a ring per worker: a socket's readiness (or its completions)
    // always reaches the same worker. Receives are started before the peer sends, so each completes on a worker.
    constexpr std::uint32_t workers = 4;
    constexpr int sockets = 8;
    constexpr int messages = 40;
    for (const async_socket::linux_io_choice io :
         {async_socket::linux_io_choice::io_uring, async_socket::linux_io_choice::epoll})
    {
        linux_engine::handle engine = linux_engine::create({.thread_count = workers, .io = io});
        if (engine == nullptr)
        {
            REQUIRE(io == async_socket::linux_io_choice::io_uring);
            MESSAGE("io_uring refused by this kernel: its half skipped");
            continue;
        }
        CAPTURE(static_cast<int>(io));
        std::vector<async_socket::testing::fd_pair> pairs;
        std::vector<linux_async_socket::handle> made;
        for (int i = 0; i < sockets; ++i)
        {
            pairs.push_back(async_socket::testing::make_loopback_fd_pair());
            REQUIRE(pairs.back().valid());
            made.push_back(linux_async_socket::create(engine.get(), async_socket_handle_from_fd(pairs.back().client)));
            REQUIRE(made.back() != nullptr);
            REQUIRE(made.back()->open_async(&receive_log::on_open, nullptr) == status::ok);
        }
        struct thread_log
        {
            waiter wake;
            int done = 0;
            std::vector<pthread_t> threads; // guarded by wake
            static void on_receive(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t) noexcept
            {
                auto* log = static_cast<thread_log*>(context);
                log->wake.update(
                    [&]
                    {
                        log->threads.push_back(result == ASYNC_SOCKET_RECEIVE_OK ? pthread_self() : pthread_t{});
                        ++log->done;
                    });
            }
        };
        std::vector<thread_log> logs(sockets);
        for (int round = 0; round < messages; ++round)
        {
            std::uint8_t in[sockets] = {};
            ASYNC_SOCKET_BUFFER buffers[sockets];
            for (int i = 0; i < sockets; ++i)
            {
                buffers[i] = ASYNC_SOCKET_BUFFER{&in[i], 1};
                REQUIRE(made[i]->receive_async(&buffers[i], 1, &thread_log::on_receive, &logs[i]) == status::ok);
            }
            for (int i = 0; i < sockets; ++i)
            {
                const std::uint8_t byte = static_cast<std::uint8_t>(round + i);
                REQUIRE(send(pairs[i].server, &byte, 1, MSG_NOSIGNAL) == 1);
            }
            for (int i = 0; i < sockets; ++i)
            {
                REQUIRE(logs[i].wake.wait_for([&] { return logs[i].done == round + 1; }, 60.0));
                CHECK(in[i] == static_cast<std::uint8_t>(round + i));
            }
        }
        std::vector<pthread_t> first_threads;
        for (int i = 0; i < sockets; ++i)
        {
            std::vector<pthread_t> seen;
            {
                const std::lock_guard<std::mutex> held(logs[i].wake.mutex());
                seen = logs[i].threads;
            }
            REQUIRE(seen.size() == static_cast<std::size_t>(messages));
            for (const pthread_t thread : seen)
            {
                CHECK(pthread_equal(thread, seen.front()) != 0);
            }
            CHECK(pthread_equal(seen.front(), pthread_self()) == 0);
            bool known = false;
            for (const pthread_t thread : first_threads)
            {
                known = known || pthread_equal(thread, seen.front()) != 0;
            }
            if (!known)
            {
                first_threads.push_back(seen.front());
            }
        }
        CHECK(first_threads.size() == workers); // 8 sockets given out in turn over 4 workers: every worker has two
        made.clear();
    }
}
