// Asynchronous accept and connect (AcceptEx, ConnectEx) on real Winsock over loopback TCP, IPv4 and IPv6, for the
// threadpool-IO sockets (win32_async_socket: an event per IO; win32_no_event_skip_port_async_socket: skip mode) and
// the completion-port one (win32_iocp_async_socket): accept + connect + bytes both ways, a refused connect
// (WSAECONNREFUSED), close with three accepts pending, a stop_token cancel then a successful accept, and a burst of
// connections, one in five reset by its client, all accepted (or skipped) and the others echoed. Every wait has a
// deadline; handlers only record, the main thread checks.
#include <async_socket/async_socket.hpp>
#include <async_socket/testing/win32_loopback.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

namespace
{

using async_socket::accept_result;
using async_socket::connect_result;
using async_socket::io_completion;
using async_socket::receive_result;
using async_socket::send_result;
using async_socket::socket_address;
using async_socket::status;
using async_socket::testing::waiter;

constexpr double deadline_seconds = 60.0;

SOCKET_HANDLE handle_of(SOCKET s)
{
    return reinterpret_cast<SOCKET_HANDLE>(s);
}

SOCKET socket_of(SOCKET_HANDLE h)
{
    return reinterpret_cast<SOCKET>(h);
}

// The engines of the socket types.
struct threadpool_engine
{
    EXECUTION_ENGINE_HANDLE engine = execution_engine_create(nullptr);
    ~threadpool_engine()
    {
        execution_engine_dec_ref(engine);
    }
    EXECUTION_ENGINE_HANDLE get() const noexcept
    {
        return engine;
    }
};

struct iocp_engine
{
    async_socket::win32_iocp_engine::handle engine =
        async_socket::win32_iocp_engine::create(async_socket::win32_iocp_engine_parameters{.thread_count = 2});
    async_socket::win32_iocp_engine* get() const noexcept
    {
        return engine.get();
    }
};

template <class Socket, class Engine>
struct kind
{
    using socket = Socket;
    using engine = Engine;
    const char* name;
};

const kind<async_socket::win32_async_socket, threadpool_engine> threadpool_per_io{"threadpool IO, event per IO"};
const kind<async_socket::win32_no_event_skip_port_async_socket, threadpool_engine> threadpool_skip{
    "threadpool IO, skip mode"};
const kind<async_socket::win32_iocp_async_socket, iocp_engine> iocp_skip{"completion port, skip mode"};

// A SOCKET closed by the destructor.
struct socket_owner
{
    SOCKET s = INVALID_SOCKET;
    socket_owner() noexcept = default;
    explicit socket_owner(SOCKET value) noexcept : s(value) {}
    socket_owner(socket_owner&& other) noexcept : s(std::exchange(other.s, INVALID_SOCKET)) {}
    socket_owner& operator=(socket_owner&& other) noexcept
    {
        reset(std::exchange(other.s, INVALID_SOCKET));
        return *this;
    }
    ~socket_owner()
    {
        reset();
    }
    void reset(SOCKET value = INVALID_SOCKET) noexcept
    {
        if (s != INVALID_SOCKET)
        {
            (void)closesocket(s);
        }
        s = value;
    }
};

socket_address loopback(int family, std::uint16_t port)
{
    sockaddr_storage storage{};
    int length = 0;
    if (family == AF_INET6)
    {
        auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
        v6->sin6_family = AF_INET6;
        v6->sin6_addr = in6addr_loopback;
        v6->sin6_port = htons(port);
        length = sizeof(sockaddr_in6);
    }
    else
    {
        auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
        v4->sin_family = AF_INET;
        v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        v4->sin_port = htons(port);
        length = sizeof(sockaddr_in);
    }
    return socket_address(reinterpret_cast<const sockaddr*>(&storage), static_cast<std::uint32_t>(length));
}

std::uint16_t port_of(const socket_address& address)
{
    if (address.family() == AF_INET6)
    {
        return ntohs(reinterpret_cast<const sockaddr_in6*>(address.data())->sin6_port);
    }
    return ntohs(reinterpret_cast<const sockaddr_in*>(address.data())->sin_port);
}

socket_address local_address(SOCKET s)
{
    socket_address address;
    int length = static_cast<int>(socket_address::max_size);
    REQUIRE(getsockname(s, address.data(), &length) == 0);
    REQUIRE(address.resize(static_cast<std::uint32_t>(length)));
    return address;
}

// A listening overlapped socket on the loopback address of `family`; INVALID_SOCKET if the family does not work.
socket_owner make_listener(int family, int backlog = 64)
{
    socket_owner listener(async_socket::testing::make_overlapped_tcp_socket(family));
    if (listener.s == INVALID_SOCKET)
    {
        return listener;
    }
    const socket_address address = loopback(family, 0);
    if (bind(listener.s, address.data(), static_cast<int>(address.size())) != 0 || listen(listener.s, backlog) != 0)
    {
        listener.reset();
    }
    return listener;
}

template <class Result>
struct seen
{
    waiter wake;
    std::optional<Result> result; // guarded by wake
    int calls = 0;                // guarded by wake

    auto handler() noexcept
    {
        return [this](Result r) noexcept
        {
            wake.update(
                [&]
                {
                    result = std::move(r);
                    ++calls;
                });
        };
    }
    bool arrived()
    {
        return wake.wait_for([&] { return result.has_value(); }, deadline_seconds);
    }
};

template <class Socket, class Engine>
typename Socket::handle make_open(const Engine& engine, SOCKET s)
{
    typename Socket::handle made = Socket::create(engine.get(), handle_of(s));
    REQUIRE(made != nullptr);
    REQUIRE(made->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) == status::ok);
    return made;
}

ASYNC_SOCKET_BUFFER buffer_of(void* memory, std::size_t length)
{
    return ASYNC_SOCKET_BUFFER{memory, static_cast<std::uint32_t>(length)};
}

// Whether this host (Wine) has a working IPv6 loopback: a listener on ::1.
bool ipv6_loopback_works()
{
    socket_owner listener = make_listener(AF_INET6);
    return listener.s != INVALID_SOCKET;
}

template <class Kind>
void accept_and_connect(const Kind& /*k*/, int family)
{
    using Socket = typename Kind::socket;
    typename Kind::engine engine;
    REQUIRE(engine.get() != nullptr);
    socket_owner listener = make_listener(family);
    REQUIRE(listener.s != INVALID_SOCKET);
    const socket_address listening = local_address(listener.s);
    socket_owner client(async_socket::testing::make_overlapped_tcp_socket(family)); // not bound: connect binds it
    REQUIRE(client.s != INVALID_SOCKET);

    typename Socket::handle acceptor = make_open<Socket>(engine, listener.s);
    typename Socket::handle connector = make_open<Socket>(engine, client.s);
    seen<accept_result> accepted;
    seen<connect_result> connected;
    REQUIRE(acceptor->accept_async(accepted.handler()) == status::ok);
    REQUIRE(connector->connect_async(listening, connected.handler()) == status::ok);
    REQUIRE(connected.arrived());
    REQUIRE(accepted.arrived());
    CHECK(connected.result->completion == io_completion::ok);
    CHECK_MESSAGE(!connected.result->error, connected.result->error.value());
    REQUIRE(accepted.result->completion == io_completion::ok);
    CHECK(!accepted.result->error);
    socket_owner server(socket_of(accepted.result->socket));
    REQUIRE(server.s != INVALID_SOCKET);
    const socket_address client_address = local_address(client.s);
    CHECK(accepted.result->peer.family() == family);
    CHECK(accepted.result->peer.size() == client_address.size());
    CHECK(port_of(accepted.result->peer) == port_of(client_address));
    // SO_UPDATE_ACCEPT_CONTEXT / SO_UPDATE_CONNECT_CONTEXT: getpeername works on both ends.
    socket_address peer_of_server;
    int length = static_cast<int>(socket_address::max_size);
    CHECK(getpeername(server.s, peer_of_server.data(), &length) == 0);
    socket_address peer_of_client;
    length = static_cast<int>(socket_address::max_size);
    CHECK(getpeername(client.s, peer_of_client.data(), &length) == 0);
    CHECK(port_of(peer_of_client) == port_of(listening));

    typename Socket::handle served = make_open<Socket>(engine, server.s);
    char out[] = "hello over an accepted socket";
    char in[sizeof out] = {};
    for (int round = 0; round < 2; ++round)
    {
        Socket& from = round == 0 ? *connector : *served;
        Socket& to = round == 0 ? *served : *connector;
        std::memset(in, 0, sizeof in);
        seen<receive_result> received;
        seen<send_result> sent;
        ASYNC_SOCKET_BUFFER into[1] = {buffer_of(in, sizeof in)};
        ASYNC_SOCKET_BUFFER from_out[1] = {buffer_of(out, sizeof out)};
        REQUIRE(to.receive_async(std::span<const ASYNC_SOCKET_BUFFER>(into, 1), received.handler()) == status::ok);
        REQUIRE(from.send_async(std::span<const ASYNC_SOCKET_BUFFER>(from_out, 1), sent.handler()) == status::ok);
        REQUIRE(sent.arrived());
        REQUIRE(received.arrived());
        CHECK(sent.result->ok());
        CHECK(received.result->ok());
        CHECK(received.result->bytes == sizeof out);
        CHECK(std::memcmp(in, out, sizeof out) == 0);
    }
    CHECK(accepted.calls == 1);
    CHECK(connected.calls == 1);
    served.reset();
    connector.reset();
    acceptor.reset();
}

template <class Kind>
void refused_connect(const Kind& k, int family)
{
    using Socket = typename Kind::socket;
    typename Kind::engine engine;
    // A port nobody listens on: bound, then closed without listen.
    socket_address target;
    {
        socket_owner probe(async_socket::testing::make_overlapped_tcp_socket(family));
        REQUIRE(probe.s != INVALID_SOCKET);
        const socket_address any = loopback(family, 0);
        REQUIRE(bind(probe.s, any.data(), static_cast<int>(any.size())) == 0);
        target = local_address(probe.s);
    }
    socket_owner client(async_socket::testing::make_overlapped_tcp_socket(family));
    typename Socket::handle connector = make_open<Socket>(engine, client.s);
    seen<connect_result> connected;
    const auto started = std::chrono::steady_clock::now();
    REQUIRE(connector->connect_async(target, connected.handler()) == status::ok);
    REQUIRE(connected.arrived());
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    MESSAGE(std::string(k.name) << ": refused connect completed in " << took << " s with "
                                << connected.result->error.value());
    CHECK(connected.result->completion == io_completion::error);
    CHECK(connected.result->error.value() == WSAECONNREFUSED);
    CHECK(connected.calls == 1);
}

template <class Kind>
void close_with_accepts_pending(const Kind& k, int family)
{
    using Socket = typename Kind::socket;
    typename Kind::engine engine;
    socket_owner listener = make_listener(family);
    REQUIRE(listener.s != INVALID_SOCKET);
    typename Socket::handle acceptor = make_open<Socket>(engine, listener.s);
    seen<accept_result> accepted[3];
    for (auto& one : accepted)
    {
        REQUIRE(acceptor->accept_async(one.handler()) == status::ok);
    }
    const auto started = std::chrono::steady_clock::now();
    CHECK(acceptor->close() == status::ok);
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    MESSAGE(std::string(k.name) << ": close with 3 accepts pending took " << took << " s");
    CHECK(took < 5.0);
    for (auto& one : accepted)
    {
        REQUIRE(one.arrived()); // close waited for them: already there
        CHECK(one.result->completion == io_completion::because_close);
        CHECK(one.result->socket == nullptr);
        CHECK(one.calls == 1);
    }

    // Open again, a stop_token cancels one accept, then an accept succeeds.
    REQUIRE(acceptor->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) == status::ok);
    std::stop_source stop;
    seen<accept_result> cancelled;
    REQUIRE(acceptor->accept_async(cancelled.handler(), stop.get_token()) == status::ok);
    stop.request_stop();
    REQUIRE(cancelled.arrived());
    CHECK(cancelled.result->completion == io_completion::cancelled);
    CHECK(cancelled.result->socket == nullptr);

    seen<accept_result> next;
    REQUIRE(acceptor->accept_async(next.handler(), std::stop_source().get_token()) == status::ok);
    socket_owner client(async_socket::testing::make_overlapped_tcp_socket(family));
    const socket_address listening = local_address(listener.s);
    REQUIRE(connect(client.s, listening.data(), static_cast<int>(listening.size())) == 0);
    REQUIRE(next.arrived());
    REQUIRE(next.result->completion == io_completion::ok);
    socket_owner server(socket_of(next.result->socket));
    CHECK(port_of(next.result->peer) == port_of(local_address(client.s)));
    acceptor.reset();
}

// The burst: an async echo server (accepts kept pending, each connection echoes until its peer ends it) and
// client threads with blocking sockets.
template <class Socket, class Engine>
struct burst_server
{
    struct connection
    {
        SOCKET s = INVALID_SOCKET;
        typename Socket::handle socket;
        unsigned char data[512];
        ASYNC_SOCKET_BUFFER buffer{};
        burst_server* server = nullptr;
    };

    const Engine* engine = nullptr;
    Socket* acceptor = nullptr;
    waiter wake;
    std::vector<std::unique_ptr<connection>> connections; // guarded by wake
    std::atomic<bool> accepting{true};
    std::atomic<int> accepts_in_flight{0};
    std::atomic<std::uint64_t> accepted{0};
    std::atomic<std::uint64_t> accept_errors{0};
    std::atomic<int> last_accept_error{0};
    std::atomic<std::uint64_t> accept_calls_refused{0};
    std::atomic<std::uint64_t> could_not_start{0};
    std::atomic<std::uint64_t> ended_by_peer{0};
    std::atomic<std::uint64_t> ended_by_error{0};
    std::atomic<std::uint64_t> echoed_bytes{0};

    void accept_next() noexcept
    {
        if (!accepting.load())
        {
            return;
        }
        accepts_in_flight.fetch_add(1);
        const status started = acceptor->accept_async([this](accept_result r) noexcept { on_accept(std::move(r)); });
        if (started != status::ok)
        {
            accepts_in_flight.fetch_sub(1);
            accept_calls_refused.fetch_add(1);
            wake.notify();
        }
    }

    void on_accept(accept_result r) noexcept
    {
        if (r.ok())
        {
            accepted.fetch_add(1);
            accept_next();
            start(socket_of(r.socket));
        }
        else
        {
            if (r.completion == io_completion::error)
            {
                last_accept_error.store(r.error.value());
                accept_errors.fetch_add(1);
                accept_next();
            }
        }
        accepts_in_flight.fetch_sub(1);
        wake.notify();
    }

    void start(SOCKET s) noexcept
    {
        auto made = std::make_unique<connection>();
        made->s = s;
        made->server = this;
        made->socket = Socket::create(engine->get(), handle_of(s));
        connection* c = made.get();
        wake.update([&] { connections.push_back(std::move(made)); });
        if (c->socket == nullptr || c->socket->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) != status::ok)
        {
            could_not_start.fetch_add(1);
            ended_by_error.fetch_add(1);
            wake.notify();
            return;
        }
        receive(c);
    }

    void receive(connection* c) noexcept
    {
        c->buffer = buffer_of(c->data, sizeof c->data);
        const status started =
            c->socket->receive_async(std::span<const ASYNC_SOCKET_BUFFER>(&c->buffer, 1),
                                     [c](receive_result r) noexcept { c->server->on_received(c, r); });
        if (started != status::ok)
        {
            ended_by_error.fetch_add(1);
            wake.notify();
        }
    }

    void on_received(connection* c, const receive_result& r) noexcept
    {
        if (r.ok() && r.bytes != 0)
        {
            c->buffer = buffer_of(c->data, r.bytes);
            const std::size_t bytes = r.bytes;
            const status started = c->socket->send_async(std::span<const ASYNC_SOCKET_BUFFER>(&c->buffer, 1),
                                                         [c, bytes](send_result s) noexcept
                                                         {
                                                             if (s.ok())
                                                             {
                                                                 c->server->echoed_bytes.fetch_add(bytes);
                                                                 c->server->receive(c);
                                                             }
                                                             else
                                                             {
                                                                 c->server->ended_by_error.fetch_add(1);
                                                                 c->server->wake.notify();
                                                             }
                                                         });
            if (started != status::ok)
            {
                ended_by_error.fetch_add(1);
                wake.notify();
            }
            return;
        }
        (void)shutdown(c->s, SD_SEND); // the server ends its side once it saw the peer's end
        (r.ok() ? ended_by_peer : ended_by_error).fetch_add(1);
        wake.notify();
    }

    std::uint64_t ended() const noexcept
    {
        return ended_by_peer.load() + ended_by_error.load();
    }

    // After the last callback: destroy the async sockets, then close the SOCKETs.
    void destroy_all()
    {
        std::vector<std::unique_ptr<connection>> all;
        wake.update([&] { all.swap(connections); });
        for (auto& c : all)
        {
            c->socket.reset();
            (void)closesocket(c->s);
        }
    }
};

struct client_figures
{
    int connected = 0;
    int reset = 0;
    int echoed = 0;
    int failed = 0;
};

// Clients of one thread: connect `count` connections (every fifth reset at once with SO_LINGER {1, 0}), then echo
// 256 bytes on each of the others, half-close and wait for the server's end.
client_figures run_clients(const socket_address& to, int count, int first)
{
    client_figures figures;
    std::vector<SOCKET> open;
    for (int i = 0; i < count; ++i)
    {
        const SOCKET s = socket(to.family(), SOCK_STREAM, IPPROTO_TCP);
        if (s == INVALID_SOCKET)
        {
            ++figures.failed;
            continue;
        }
        const DWORD timeout_ms = 30000;
        (void)setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, reinterpret_cast<const char*>(&timeout_ms), sizeof timeout_ms);
        (void)setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, reinterpret_cast<const char*>(&timeout_ms), sizeof timeout_ms);
        if (connect(s, to.data(), static_cast<int>(to.size())) != 0)
        {
            ++figures.failed;
            (void)closesocket(s);
            continue;
        }
        ++figures.connected;
        if ((first + i) % 5 == 0)
        {
            const linger hard{1, 0};
            (void)setsockopt(s, SOL_SOCKET, SO_LINGER, reinterpret_cast<const char*>(&hard), sizeof hard);
            (void)closesocket(s); // RST, likely before the server accepted it
            ++figures.reset;
            continue;
        }
        open.push_back(s);
    }
    for (std::size_t k = 0; k < open.size(); ++k)
    {
        const SOCKET s = open[k];
        char message[256];
        for (std::size_t b = 0; b < sizeof message; ++b)
        {
            message[b] = static_cast<char>((first + static_cast<int>(k)) * 7 + static_cast<int>(b));
        }
        bool ok = send(s, message, sizeof message, 0) == static_cast<int>(sizeof message);
        char reply[sizeof message];
        int got = 0;
        while (ok && got < static_cast<int>(sizeof reply))
        {
            const int n = recv(s, reply + got, static_cast<int>(sizeof reply) - got, 0);
            ok = n > 0;
            got += ok ? n : 0;
        }
        ok = ok && std::memcmp(message, reply, sizeof reply) == 0 && shutdown(s, SD_SEND) == 0;
        ok = ok && recv(s, reply, sizeof reply, 0) == 0; // the server ends its side once it saw ours
        (ok ? figures.echoed : figures.failed) += 1;
        (void)closesocket(s);
    }
    return figures;
}

int burst_size()
{
    if (const char* asked = std::getenv("ASYNC_SOCKET_ACCEPT_BURST"); asked != nullptr && std::atoi(asked) > 0)
    {
        return std::atoi(asked);
    }
    return 1000;
}

template <class Kind>
void burst(const Kind& k)
{
    using Socket = typename Kind::socket;
    using Engine = typename Kind::engine;
    const int clients = burst_size();
    constexpr int threads = 4;
    const auto started = std::chrono::steady_clock::now();
    Engine engine;
    REQUIRE(engine.get() != nullptr);
    socket_owner listener = make_listener(AF_INET, 1024);
    REQUIRE(listener.s != INVALID_SOCKET);
    const socket_address listening = local_address(listener.s);
    typename Socket::handle acceptor = make_open<Socket>(engine, listener.s);
    burst_server<Socket, Engine> server;
    server.engine = &engine;
    server.acceptor = acceptor.get();
    for (int i = 0; i < 4; ++i)
    {
        server.accept_next(); // four accepts pending at a time
    }
    std::vector<client_figures> figures(threads);
    std::vector<std::thread> running;
    for (int t = 0; t < threads; ++t)
    {
        running.emplace_back([&, t]
                             { figures[t] = run_clients(listening, clients / threads, t * (clients / threads)); });
    }
    for (std::thread& t : running)
    {
        t.join();
    }
    client_figures total;
    for (const client_figures& f : figures)
    {
        total.connected += f.connected;
        total.reset += f.reset;
        total.echoed += f.echoed;
        total.failed += f.failed;
    }
    const std::uint64_t echoing = static_cast<std::uint64_t>(clients - clients / 5);
    // Every connection that was not reset was accepted and has ended; a reset one was accepted (and ended by an
    // error) or skipped by the backend before it was accepted (never reported).
    const bool all_ended = server.wake.wait_for(
        [&] { return server.accepted.load() >= echoing && server.ended() == server.accepted.load(); },
        deadline_seconds);
    // The listener still accepts.
    const std::uint64_t before_late = server.accepted.load();
    socket_owner late(socket(AF_INET, SOCK_STREAM, IPPROTO_TCP));
    REQUIRE(connect(late.s, listening.data(), static_cast<int>(listening.size())) == 0);
    const bool late_accepted =
        server.wake.wait_for([&] { return server.accepted.load() == before_late + 1; }, deadline_seconds);
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    MESSAGE(std::string(k.name) << " burst: " << clients << " clients in " << took << " s: connected "
                                << total.connected << ", reset by the client " << total.reset << ", echoed and ended "
                                << total.echoed << ", failed " << total.failed << "; server: accepted " << before_late
                                << " (so " << static_cast<std::uint64_t>(clients) - before_late
                                << " not accepted), accept errors " << server.accept_errors.load() << " (last code "
                                << server.last_accept_error.load() << "), ended by the peer "
                                << server.ended_by_peer.load() << ", by an error " << server.ended_by_error.load()
                                << ", bytes echoed " << server.echoed_bytes.load());
    CHECK(all_ended);
    CHECK(late_accepted);
    CHECK(total.connected == clients);
    CHECK(total.reset == clients / 5);
    CHECK(total.echoed == clients - clients / 5);
    CHECK(total.failed == 0);
    CHECK(before_late <= static_cast<std::uint64_t>(clients));
    CHECK(before_late >= echoing);
    CHECK(server.accept_errors.load() == 0);
    CHECK(server.accept_calls_refused.load() == 0);
    CHECK(server.could_not_start.load() == 0);
    CHECK(server.echoed_bytes.load() == echoing * 256);
    CHECK(server.ended_by_peer.load() >= echoing);
    server.accepting.store(false);
    CHECK(acceptor->close() == status::ok); // cuts the accepts still pending
    CHECK(server.accepts_in_flight.load() == 0);
    late.reset();
    CHECK(server.wake.wait_for([&] { return server.ended() == server.accepted.load(); }, deadline_seconds));
    acceptor.reset();
    server.destroy_all();
}

template <class Kind>
void each_family(const Kind& k, void (*test)(const Kind&, int))
{
    const std::string name(k.name);
    CAPTURE(name);
    test(k, AF_INET);
    if (ipv6_loopback_works())
    {
        test(k, AF_INET6);
    }
    else
    {
        MESSAGE("IPv6 loopback does not work here: the IPv6 case is skipped");
    }
}

} // namespace

TEST_CASE("accept and connect, IPv4 and IPv6, then bytes both ways on the accepted socket")
{
    async_socket::testing::wsa_session wsa;
    REQUIRE(wsa.ok());
    each_family(threadpool_per_io, &accept_and_connect);
    each_family(threadpool_skip, &accept_and_connect);
    each_family(iocp_skip, &accept_and_connect);
}

TEST_CASE("a refused connect completes once with WSAECONNREFUSED")
{
    async_socket::testing::wsa_session wsa;
    REQUIRE(wsa.ok());
    each_family(threadpool_per_io, &refused_connect);
    each_family(threadpool_skip, &refused_connect);
    each_family(iocp_skip, &refused_connect);
}

TEST_CASE("close with three accepts pending returns promptly (because_close); a stop_token cancel; then an accept")
{
    async_socket::testing::wsa_session wsa;
    REQUIRE(wsa.ok());
    each_family(threadpool_per_io, &close_with_accepts_pending);
    each_family(threadpool_skip, &close_with_accepts_pending);
    each_family(iocp_skip, &close_with_accepts_pending);
}

TEST_CASE("a burst of connections, one in five reset by its client: all accepted or skipped, the others echoed")
{
    async_socket::testing::wsa_session wsa;
    REQUIRE(wsa.ok());
    {
        const std::string name(threadpool_per_io.name);
        CAPTURE(name);
        burst(threadpool_per_io);
    }
    {
        const std::string name(threadpool_skip.name);
        CAPTURE(name);
        burst(threadpool_skip);
    }
    {
        const std::string name(iocp_skip.name);
        CAPTURE(name);
        burst(iocp_skip);
    }
}
