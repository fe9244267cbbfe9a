// The core's accept_async and connect_async over a scripted backend (accepting_backend, connecting_backend written
// from the concept): every path of the core, whatever a real OS does. A refused submit, a failed allocation and a
// handler that throws while it is copied in leave no context and run nothing; an accept that finished during the
// call runs its handler there; a pending one completes once with the backend's socket and the peer's address, or the
// OS's error; close gives because_close, but an accept that succeeded while closing still hands over its socket; a
// stop_token cancels one; the address of a connect reaches the backend intact; a coroutine loop of accepts that
// finish during the call does not grow the stack.
#include <async_socket/basic_async_socket.hpp>
#include <async_socket/sync/std_sync.hpp>
#include <async_socket/testing/fault_alloc.hpp>

#include "task.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <vector>

namespace
{

using async_socket::accept_result;
using async_socket::connect_result;
using async_socket::io_completion;
using async_socket::io_outcome;
using async_socket::io_result;
using async_socket::socket_address;
using async_socket::status;
using async_socket::submit_result;
using async_socket::submit_status;
using async_socket::testing::alloc_ledger;
using async_socket::testing::fault_alloc;

constexpr std::uint32_t cancelled_code = 995; // what this backend's "OS" answers a cancelled IO with
constexpr std::uint32_t refused_code = 10055;

// The script: what the next accept or connect answers, and the IO waiting for the test to complete them.
struct script
{
    submit_status next = submit_status::pending;
    std::uintptr_t next_socket = 0x100; // the handle an accept makes (incremented per accept)
    bool closing_completes_with_success = false;
    struct waiting
    {
        void* io;
        void* area;
        bool accept;
    };
    std::vector<waiting> pending;
    std::vector<unsigned char> last_connect_address;
    int submits = 0;
    async_socket::io_completion_fn complete = nullptr;
    void* owner = nullptr;
};

class scripted_backend
{
public:
    using engine_type = script*;
    struct io_state
    {
        int unused;
    };
    struct buffer_type
    {
        void* data;
        std::uint32_t length;
    };
    struct accept_area
    {
        std::uintptr_t socket;
        unsigned char peer[16]; // an IPv4 sockaddr_in's size, filled with a pattern
        std::uint32_t peer_length;
    };
    struct connect_area
    {
        int unused;
    };
    static constexpr bool completes_at_once = true;

    scripted_backend() noexcept = default;
    scripted_backend(scripted_backend&& other) noexcept : script_(other.script_) {}

    bool attach(script* s) noexcept
    {
        script_ = s;
        return true;
    }
    template <async_socket::io_completion_fn Completion>
    bool bind(SOCKET_HANDLE, void* owner) noexcept
    {
        script_->complete = Completion;
        script_->owner = owner;
        return true;
    }
    void unbind() noexcept {}
    static void set_buffer(buffer_type& buffer, void* memory, std::uint32_t length) noexcept
    {
        buffer = {memory, length};
    }
    submit_result submit_send(io_state&, buffer_type*, std::uint32_t) noexcept
    {
        return {submit_status::refused, refused_code};
    }
    submit_result submit_receive(io_state&, buffer_type*, std::uint32_t) noexcept
    {
        return {submit_status::refused, refused_code};
    }

    submit_result submit_accept(io_state& io, accept_area& area) noexcept
    {
        ++script_->submits;
        area.socket = 0;
        area.peer_length = 0;
        if (script_->next == submit_status::refused)
        {
            return {submit_status::refused, refused_code};
        }
        if (script_->next == submit_status::completed_at_once)
        {
            make_accepted(*script_, area);
            return {submit_status::completed_at_once, 0};
        }
        script_->pending.push_back({&io, &area, true});
        return {submit_status::pending, 0};
    }
    submit_result submit_connect(io_state& io, connect_area& area, const socket_address& address) noexcept
    {
        ++script_->submits;
        const auto* bytes = reinterpret_cast<const unsigned char*>(address.data());
        script_->last_connect_address.assign(bytes, bytes + address.size());
        if (script_->next == submit_status::refused)
        {
            return {submit_status::refused, refused_code};
        }
        if (script_->next == submit_status::completed_at_once)
        {
            return {submit_status::completed_at_once, 0};
        }
        script_->pending.push_back({&io, &area, false});
        return {submit_status::pending, 0};
    }
    static SOCKET_HANDLE take_accepted(accept_area& area, socket_address& peer) noexcept
    {
        peer = socket_address(reinterpret_cast<const sockaddr*>(area.peer), area.peer_length);
        return reinterpret_cast<SOCKET_HANDLE>(area.socket);
    }

    void cancel_all() noexcept
    {
        while (!script_->pending.empty())
        {
            const io_result result = script_->closing_completes_with_success
                                         ? io_result{io_outcome::success, 0, 0}
                                         : io_result{io_outcome::cancelled, cancelled_code, 0};
            complete_oldest(*script_, result);
        }
    }
    void cancel_one(io_state& io) noexcept
    {
        for (std::size_t i = 0; i < script_->pending.size(); ++i)
        {
            if (script_->pending[i].io == &io)
            {
                script::waiting w = script_->pending[i];
                script_->pending.erase(script_->pending.begin() + static_cast<std::ptrdiff_t>(i));
                script_->complete(script_->owner, w.io, io_result{io_outcome::cancelled, cancelled_code, 0});
                return;
            }
        }
    }
    void drain() noexcept {} // every completion runs on the test's thread, inside a call

    static void make_accepted(script& s, accept_area& area) noexcept
    {
        area.socket = s.next_socket++;
        for (unsigned i = 0; i < sizeof area.peer; ++i)
        {
            area.peer[i] = static_cast<unsigned char>(0xA0 + i);
        }
        area.peer_length = sizeof area.peer;
    }

    // The test's hand: completes the oldest pending IO with `result` (an accept that succeeds gets a socket).
    static void complete_oldest(script& s, io_result result) noexcept
    {
        script::waiting w = s.pending.front();
        s.pending.erase(s.pending.begin());
        if (w.accept && result.outcome == io_outcome::success)
        {
            make_accepted(s, *static_cast<accept_area*>(w.area));
        }
        s.complete(s.owner, w.io, result);
    }

private:
    script* script_ = nullptr;
};

static_assert(async_socket::accepting_backend<scripted_backend>);
static_assert(async_socket::connecting_backend<scripted_backend>);
static_assert(async_socket::cancellable_backend<scripted_backend>);

using scripted_socket = async_socket::basic_async_socket<scripted_backend, fault_alloc, async_socket::std_sync>;

struct fixture
{
    script s;
    alloc_ledger ledger;
    scripted_socket::handle socket =
        scripted_socket::create(&s, reinterpret_cast<SOCKET_HANDLE>(std::uintptr_t{1}), {}, fault_alloc{&ledger});

    fixture()
    {
        REQUIRE(socket);
        REQUIRE(socket->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) == status::ok);
    }
    [[nodiscard]] std::int64_t contexts() const noexcept
    {
        return ledger.live_blocks() - 1; // the socket itself is one block
    }
};

// Records what its handler got, counting the runs.
template <class Result>
struct recorder
{
    std::optional<Result> result;
    int runs = 0;
    auto handler() noexcept
    {
        return [this](Result r) noexcept
        {
            result = std::move(r);
            ++runs;
        };
    }
};

struct throws_when_copied
{
    throws_when_copied() = default;
    throws_when_copied(const throws_when_copied&)
    {
        throw std::runtime_error("copy refused");
    }
    throws_when_copied(throws_when_copied&&) noexcept = default;
};

} // namespace

TEST_CASE_FIXTURE(fixture, "a refused accept or connect fails the call: no handler runs, each is destroyed, no context")
{
    s.next = submit_status::refused;
    auto token = std::make_shared<int>(0);
    int runs = 0;
    CHECK(socket->accept_async([token, &runs](accept_result) noexcept { ++runs; }) == status::os_error);
    CHECK(socket->connect_async(socket_address(reinterpret_cast<const sockaddr*>("\x02\x00\x00\x50"), 4),
                                [token, &runs](connect_result) noexcept { ++runs; }) == status::os_error);
    CHECK(runs == 0);
    CHECK(token.use_count() == 1); // both copies destroyed
    CHECK(contexts() == 0);
    CHECK(s.submits == 2);
}

TEST_CASE_FIXTURE(fixture, "bad arguments and a closed socket: refused before the backend sees anything")
{
    recorder<connect_result> connected;
    CHECK(socket->connect_async(socket_address{}, connected.handler()) == status::invalid_argument);
    CHECK(socket->close() == status::ok);
    recorder<accept_result> accepted;
    CHECK(socket->accept_async(accepted.handler()) == status::invalid_state);
    CHECK(socket->connect_async(socket_address(reinterpret_cast<const sockaddr*>("\x02\x00"), 2),
                                connected.handler()) == status::invalid_state);
    CHECK(s.submits == 0);
    CHECK(connected.runs + accepted.runs == 0);
    CHECK(contexts() == 0);
}

TEST_CASE_FIXTURE(fixture, "out of memory and a handler that throws while copied in: no IO started, nothing left")
{
    recorder<accept_result> accepted;
    ledger.fail_nth(1);
    CHECK(socket->accept_async(accepted.handler()) == status::out_of_memory);
    int runs = 0;
    auto refuses = [&runs, t = throws_when_copied{}](accept_result) noexcept { ++runs; };
    CHECK(socket->accept_async(refuses) == status::handler_threw); // an lvalue: copied in, and the copy throws
    CHECK(s.submits == 0);
    CHECK(accepted.runs + runs == 0);
    CHECK(contexts() == 0);
}

TEST_CASE_FIXTURE(fixture, "an accept that finished during the call runs its handler there, with the socket and peer")
{
    s.next = submit_status::completed_at_once;
    recorder<accept_result> accepted;
    REQUIRE(socket->accept_async(accepted.handler()) == status::ok);
    REQUIRE(accepted.runs == 1);
    CHECK(accepted.result->completion == io_completion::ok);
    CHECK(accepted.result->socket == reinterpret_cast<SOCKET_HANDLE>(std::uintptr_t{0x100}));
    REQUIRE(accepted.result->peer.size() == 16);
    CHECK(reinterpret_cast<const unsigned char*>(accepted.result->peer.data())[15] == 0xAF);
    CHECK(!accepted.result->error);
    CHECK(contexts() == 0);
}

TEST_CASE_FIXTURE(fixture, "pending accepts complete once each: success, the OS's error, in the order given")
{
    recorder<accept_result> first;
    recorder<accept_result> second;
    REQUIRE(socket->accept_async(first.handler()) == status::ok);
    REQUIRE(socket->accept_async(second.handler()) == status::ok);
    CHECK(contexts() == 2);
    CHECK(first.runs + second.runs == 0);
    scripted_backend::complete_oldest(s, io_result{io_outcome::success, 0, 0});
    REQUIRE(first.runs == 1);
    CHECK(first.result->ok());
    CHECK(first.result->socket == reinterpret_cast<SOCKET_HANDLE>(std::uintptr_t{0x100}));
    scripted_backend::complete_oldest(s, io_result{io_outcome::other, 10024, 0}); // WSAEMFILE, say
    REQUIRE(second.runs == 1);
    CHECK(second.result->completion == io_completion::error);
    CHECK(second.result->socket == nullptr);
    CHECK(second.result->peer.empty());
    CHECK(second.result->error == std::error_code(10024, std::system_category()));
    CHECK(first.runs == 1);
    CHECK(contexts() == 0);
}

TEST_CASE_FIXTURE(fixture,
                  "close: pending accepts and connects complete as because_close; one that succeeded keeps its "
                  "socket")
{
    recorder<accept_result> accepted;
    recorder<connect_result> connected;
    REQUIRE(socket->accept_async(accepted.handler()) == status::ok);
    REQUIRE(socket->connect_async(socket_address(reinterpret_cast<const sockaddr*>("\x02\x00\x1f\x90"), 4),
                                  connected.handler()) == status::ok);
    CHECK(socket->close() == status::ok);
    REQUIRE(accepted.runs == 1);
    REQUIRE(connected.runs == 1);
    CHECK(accepted.result->completion == io_completion::because_close);
    CHECK(accepted.result->socket == nullptr);
    CHECK(connected.result->completion == io_completion::because_close);
    CHECK(contexts() == 0);

    // An accept whose success races close: the socket is handed over, not lost.
    REQUIRE(socket->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) == status::ok);
    recorder<accept_result> raced;
    REQUIRE(socket->accept_async(raced.handler()) == status::ok);
    s.closing_completes_with_success = true;
    CHECK(socket->close() == status::ok);
    REQUIRE(raced.runs == 1);
    CHECK(raced.result->completion == io_completion::ok);
    CHECK(raced.result->socket != nullptr);
    CHECK(contexts() == 0);
}

TEST_CASE_FIXTURE(fixture, "a stop_token cancels one pending accept; the socket stays open and accepts again")
{
    std::stop_source stop;
    recorder<accept_result> cancelled;
    recorder<accept_result> kept;
    REQUIRE(socket->accept_async(cancelled.handler(), stop.get_token()) == status::ok);
    REQUIRE(socket->accept_async(kept.handler()) == status::ok);
    stop.request_stop();
    REQUIRE(cancelled.runs == 1);
    CHECK(cancelled.result->completion == io_completion::cancelled);
    CHECK(cancelled.result->error == std::error_code(static_cast<int>(cancelled_code), std::system_category()));
    CHECK(kept.runs == 0);
    scripted_backend::complete_oldest(s, io_result{io_outcome::success, 0, 0});
    REQUIRE(kept.runs == 1);
    CHECK(kept.result->ok());
    CHECK(socket->state() == async_socket::socket_state::open);
    CHECK(contexts() == 0);

    // A connect, likewise; a token stopped already starts nothing.
    std::stop_source stop_connect;
    recorder<connect_result> connect_cancelled;
    const socket_address to(reinterpret_cast<const sockaddr*>("\x02\x00\x1f\x90"), 4);
    REQUIRE(socket->connect_async(to, connect_cancelled.handler(), stop_connect.get_token()) == status::ok);
    stop_connect.request_stop();
    REQUIRE(connect_cancelled.runs == 1);
    CHECK(connect_cancelled.result->completion == io_completion::cancelled);
    CHECK(socket->connect_async(to, connect_cancelled.handler(), stop_connect.get_token()) == status::cancelled);
    CHECK(connect_cancelled.runs == 1);
    CHECK(contexts() == 0);
}

TEST_CASE_FIXTURE(fixture, "the address of a connect reaches the backend byte for byte; the connect completes once")
{
    unsigned char address[28];
    for (unsigned i = 0; i < sizeof address; ++i)
    {
        address[i] = static_cast<unsigned char>(i * 3 + 1);
    }
    recorder<connect_result> connected;
    REQUIRE(socket->connect_async(socket_address(reinterpret_cast<const sockaddr*>(address), sizeof address),
                                  connected.handler()) == status::ok);
    REQUIRE(s.last_connect_address.size() == sizeof address);
    CHECK(std::memcmp(s.last_connect_address.data(), address, sizeof address) == 0);
    scripted_backend::complete_oldest(s, io_result{io_outcome::other, 10061, 0}); // WSAECONNREFUSED
    REQUIRE(connected.runs == 1);
    CHECK(connected.result->completion == io_completion::error);
    CHECK(connected.result->error == std::error_code(10061, std::system_category()));
    CHECK(contexts() == 0);
}

namespace
{
[[gnu::noinline]] std::uintptr_t stack_depth_marker()
{
    return reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
}

struct loop_figures
{
    int accepted = 0;
    std::uintptr_t first_depth = 0;
    bool same_depth = true;
};

example::task accept_many(scripted_socket& socket, int rounds, loop_figures& figures)
{
    figures.first_depth = stack_depth_marker();
    for (int i = 0; i < rounds; ++i)
    {
        const accept_result r = co_await socket.async_accept();
        figures.accepted += r.ok() ? 1 : 0;
        figures.same_depth = figures.same_depth && stack_depth_marker() == figures.first_depth;
    }
}

// `to` by value: the task starts later, after the caller's temporary address is gone.
example::task connect_once(scripted_socket& socket, socket_address to, std::optional<connect_result>& out)
{
    out = co_await socket.async_connect(to);
}
} // namespace

TEST_CASE_FIXTURE(fixture, "coroutines: 100,000 accepts that finish during the call do not grow the stack; a connect")
{
    s.next = submit_status::completed_at_once;
    loop_figures figures;
    example::task running = accept_many(*socket, 100000, figures);
    running.start();
    CHECK(figures.accepted == 100000);
    CHECK(figures.same_depth);
    CHECK(contexts() == 0);

    s.next = submit_status::pending;
    std::optional<connect_result> connected;
    example::task connecting =
        connect_once(*socket, socket_address(reinterpret_cast<const sockaddr*>("\x02\x00"), 2), connected);
    connecting.start();
    CHECK_FALSE(connected.has_value()); // suspended
    scripted_backend::complete_oldest(s, io_result{io_outcome::success, 0, 0});
    REQUIRE(connected.has_value());
    CHECK(connected->ok());

    // A refused call resumes at once with the status as its error.
    s.next = submit_status::refused;
    std::optional<connect_result> refused;
    example::task refusing =
        connect_once(*socket, socket_address(reinterpret_cast<const sockaddr*>("\x02\x00"), 2), refused);
    refusing.start();
    REQUIRE(refused.has_value());
    CHECK(refused->completion == io_completion::error);
    CHECK(refused->error == async_socket::make_error_code(status::os_error));
    CHECK(contexts() == 0);
}
