// echo_server: a TCP echo server on async_socket's C++ API (win32_async_socket on Windows, linux_async_socket on
// Linux; examples/net.hpp holds the few platform differences).
//
//   echo_server [PORT] [--connections N]
//
// Listens on 127.0.0.1:PORT (0, the default, picks a free port), prints "listening on 127.0.0.1:PORT" and
// echoes every byte of every connection back to its sender until that client closes its side. Each
// connection is one chain on the execution engine's threadpool: receive_async -> send_async of what
// arrived -> receive_async -> ... With --connections N the server exits (status 0) once N connections
// have been served; without it, it serves until it is killed.
//
// One client never stops the server: an accept that fails for one incoming connection (reset or aborted
// before it was accepted, or for a moment no socket or buffer to give it) is logged and the loop goes on;
// only a failure of the listening socket itself ends it (status 1). A connection that fails (reset, IO
// error) is logged, closed and destroyed like one that ended well.
//
// What it shows:
// - on Windows a SOCKET must be overlapped (WSASocket with WSA_FLAG_OVERLAPPED; accept() keeps the attribute)
//   to be used with threadpool IO; on Linux a descriptor is passed as async_socket_handle_from_fd(fd);
// - the next IO is started from the completion callback of the previous one;
// - a socket is never closed or destroyed from its own callbacks (close would wait for the very callback
//   it runs in): a finished connection is handed to another thread, which closes and destroys it.
#include "net.hpp"

#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace
{

using async_socket::status;
using net::example_socket;

class connection;

// Closes and destroys finished connections on its own thread, away from their completion callbacks.
class reaper
{
public:
    reaper() : thread_([this] { run(); }) {}
    ~reaper()
    {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        changed_.notify_all();
        thread_.join();
    }
    reaper(const reaper&) = delete;
    reaper& operator=(const reaper&) = delete;

    // Hands over a finished connection (from any thread, also from its own callback).
    void retire(connection* finished)
    {
        {
            std::lock_guard lock(mutex_);
            queue_.push_back(finished);
        }
        changed_.notify_all();
    }

    // Blocks until `count` connections have been retired and destroyed.
    void wait_for_retired(std::uint64_t count)
    {
        std::unique_lock lock(mutex_);
        changed_.wait(lock, [&] { return retired_ >= count; });
    }

private:
    void run();

    std::mutex mutex_;
    std::condition_variable changed_;
    std::deque<connection*> queue_;
    std::uint64_t retired_ = 0;
    bool stopping_ = false;
    std::thread thread_; // last: starts once the members above exist
};

// One accepted client: its socket, the async socket over it and the buffer the echo chain reuses.
class connection
{
public:
    // Takes ownership of `socket` (closed here on failure) and starts echoing. Returns false on failure.
    static bool start(EXECUTION_ENGINE_HANDLE engine, net::native_socket socket, std::uint64_t id, reaper& reaper)
    {
        auto made = std::unique_ptr<connection>(new connection(socket, id, reaper));
        made->async_ = example_socket::create(net::engine_of(engine), net::as_handle(socket));
        if (!made->async_)
        {
            std::fprintf(stderr, "echo_server: connection %llu: the async socket could not be made\n",
                         static_cast<unsigned long long>(id));
            return false;
        }
        const status opened = made->async_->open_async([](void*, ASYNC_SOCKET_OPEN_RESULT) {}, nullptr);
        if (opened != status::ok)
        {
            std::fprintf(stderr, "echo_server: connection %llu: open_async failed: %s\n",
                         static_cast<unsigned long long>(id), async_socket::to_string(opened));
            return false;
        }
        // From here on the chain owns the connection: whatever ends it hands it to the reaper.
        made.release()->receive_next();
        return true;
    }

    ~connection()
    {
        // Destroying the async socket closes it if it is still open; the socket is ours to close after.
        async_.reset();
        net::close_socket(socket_);
    }
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;

    // Called by the reaper, never from a callback of this connection: waits for its last callback.
    void close() noexcept
    {
        (void)async_->close();
        std::printf("echo_server: connection %llu closed after echoing %llu bytes%s\n",
                    static_cast<unsigned long long>(id_), static_cast<unsigned long long>(bytes_echoed_),
                    failed_ ? " (ended by an error)" : "");
        std::fflush(stdout);
    }

private:
    static constexpr std::uint32_t buffer_size = 64 * 1024;

    connection(net::native_socket socket, std::uint64_t id, reaper& reaper)
        : socket_(socket), id_(id), reaper_(reaper), buffer_(buffer_size)
    {
    }

    void receive_next() noexcept
    {
        ASYNC_SOCKET_BUFFER whole{buffer_.data(), buffer_size};
        const status posted = async_->receive_async(&whole, 1, &connection::on_received, this);
        if (posted != status::ok)
        {
            fail("receive_async", async_socket::to_string(posted));
        }
    }

    static void on_received(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes) noexcept
    {
        auto* self = static_cast<connection*>(context);
        if (result != ASYNC_SOCKET_RECEIVE_OK)
        {
            self->fail("receive", result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE ? "closed" : "error");
            return;
        }
        if (bytes == 0)
        {
            // The client shut down its side: the echo is complete.
            self->reaper_.retire(self);
            return;
        }
        // Send back exactly what arrived; the send completes when every byte has been taken.
        self->in_flight_ = bytes;
        ASYNC_SOCKET_BUFFER echo{self->buffer_.data(), bytes};
        const status posted = self->async_->send_async(&echo, 1, &connection::on_sent, self);
        if (posted != status::ok)
        {
            self->fail("send_async", async_socket::to_string(posted));
        }
    }

    static void on_sent(void* context, ASYNC_SOCKET_SEND_RESULT result) noexcept
    {
        auto* self = static_cast<connection*>(context);
        if (result != ASYNC_SOCKET_SEND_OK)
        {
            self->fail("send", result == ASYNC_SOCKET_SEND_BECAUSE_CLOSE ? "closed" : "error");
            return;
        }
        self->bytes_echoed_ += self->in_flight_;
        self->receive_next();
    }

    void fail(const char* what, const char* why) noexcept
    {
        std::fprintf(stderr, "echo_server: connection %llu: %s failed: %s\n", static_cast<unsigned long long>(id_),
                     what, why);
        failed_ = true;
        reaper_.retire(this);
    }

    net::native_socket socket_;
    std::uint64_t id_;
    reaper& reaper_;
    std::vector<unsigned char> buffer_;
    example_socket::handle async_;
    std::uint32_t in_flight_ = 0;
    std::uint64_t bytes_echoed_ = 0;
    bool failed_ = false;
};

void reaper::run()
{
    std::unique_lock lock(mutex_);
    for (;;)
    {
        changed_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty())
        {
            return; // stopping, and nothing left to retire
        }
        connection* finished = queue_.front();
        queue_.pop_front();
        lock.unlock();
        finished->close();
        delete finished;
        lock.lock();
        ++retired_;
        changed_.notify_all();
    }
}

struct options
{
    std::uint16_t port = 0;
    std::uint64_t connections = 0; // 0: serve until killed
};

bool parse_unsigned(const char* text, std::uint64_t max, std::uint64_t& value)
{
    char* end = nullptr;
    const unsigned long long parsed = std::strtoull(text, &end, 10);
    if (end == text || *end != '\0' || text[0] == '-' || parsed > max)
    {
        return false;
    }
    value = parsed;
    return true;
}

constexpr const char* usage = "usage: echo_server [PORT] [--connections N]\n"
                              "  PORT 0 (default) picks a free port; --connections N exits after N connections\n";

bool parse_options(int argc, char** argv, options& parsed)
{
    bool have_port = false;
    for (int i = 1; i < argc; ++i)
    {
        std::uint64_t value = 0;
        if (std::strcmp(argv[i], "--connections") == 0 && i + 1 < argc &&
            parse_unsigned(argv[i + 1], UINT64_MAX, value))
        {
            parsed.connections = value;
            ++i;
        }
        else if (!have_port && parse_unsigned(argv[i], 65535, value))
        {
            parsed.port = static_cast<std::uint16_t>(value);
            have_port = true;
        }
        else
        {
            return false;
        }
    }
    return true;
}

// Whether a failed accept() means the listening socket itself is broken (the server must stop), as opposed
// to a failure that concerns one incoming connection or a passing shortage (the server goes on).
bool listener_failed(net::native_socket listener, int error)
{
    switch (error)
    {
    case net::errors::not_a_socket:    // the listener is not a socket (any more)
    case net::errors::not_listening:   // not listening
    case net::errors::not_supported:   // not a stream socket
    case net::errors::fault:           // the program's own bug
    case net::errors::not_initialised: // Winsock is gone (Windows); a closed descriptor (Linux)
        return true;
    default:
        break;
    }
    // Anything else (reset or aborted before accept, WSAENOTCONN from Wine for the same, running out of
    // descriptors or buffers, an interrupted call, ...) concerns one connection or a moment, as long as the listener
    // still listens.
    int listening = 0;
    net::address_length length = sizeof(listening);
    if (getsockopt(listener, SOL_SOCKET, SO_ACCEPTCONN, reinterpret_cast<char*>(&listening), &length) != 0)
    {
        return true;
    }
    return listening == 0;
}

// After an accept() failure for want of sockets or memory (WSAEMFILE/EMFILE, WSAENOBUFS/ENOBUFS), waits a little before
// the next try: the next accept would fail at once again, and a loop that spins on it would starve the connections
// being served. Doubles from 1 ms to 250 ms while the shortage lasts; a success resets it. A connection reset or
// aborted before it was accepted costs nothing: the next one is taken at once.
class accept_backoff
{
public:
    void after_failure(int error)
    {
        const bool known_per_connection = error == net::errors::reset || error == net::errors::aborted ||
                                          error == net::errors::not_connected || error == net::errors::timed_out ||
                                          error == net::errors::interrupted || error == net::errors::would_block ||
                                          error == net::errors::network_reset || error == net::errors::protocol;
        if (known_per_connection)
        {
            return;
        }
        net::sleep_ms(delay_ms_);
        delay_ms_ = delay_ms_ >= 125 ? 250 : delay_ms_ * 2;
    }
    void after_success() noexcept
    {
        delay_ms_ = 1;
    }

private:
    unsigned delay_ms_ = 1;
};

} // namespace

int main(int argc, char** argv)
{
    options opts;
    if (!net::parse_command_line(argc, argv, opts, parse_options, usage))
    {
        return 2;
    }

    const net::session session;
    if (session.error != 0)
    {
        std::fprintf(stderr, "echo_server: WSAStartup failed: %d\n", session.error);
        return 1;
    }

    // On Windows overlapped, so that the sockets accept() makes from it can be used with threadpool IO.
    const net::native_socket listener = net::make_tcp_socket();
    if (listener == net::no_socket)
    {
        std::fprintf(stderr, "echo_server: socket failed: %d\n", net::last_error());
        return 1;
    }
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(opts.port);
    net::address_length address_length = sizeof(address);
    if (bind(listener, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0 ||
        listen(listener, SOMAXCONN) != 0 ||
        getsockname(listener, reinterpret_cast<sockaddr*>(&address), &address_length) != 0)
    {
        std::fprintf(stderr, "echo_server: cannot listen on 127.0.0.1:%u: error %d\n", opts.port, net::last_error());
        net::close_socket(listener);
        return 1;
    }

    EXECUTION_ENGINE_HANDLE engine = execution_engine_create(nullptr);
    if (engine == nullptr)
    {
        std::fprintf(stderr, "echo_server: execution_engine_create failed\n");
        net::close_socket(listener);
        return 1;
    }

    std::printf("listening on 127.0.0.1:%u\n", ntohs(address.sin_port));
    std::fflush(stdout);

    int exit_code = 0;
    std::uint64_t started = 0;
    {
        reaper finished_connections;
        accept_backoff backoff;
        std::uint64_t accepted = 0;
        while (opts.connections == 0 || started < opts.connections)
        {
            sockaddr_in peer{};
            net::address_length peer_length = sizeof(peer);
            const net::native_socket client = accept(listener, reinterpret_cast<sockaddr*>(&peer), &peer_length);
            if (client == net::no_socket)
            {
                const int error = net::last_error();
                if (listener_failed(listener, error))
                {
                    std::fprintf(stderr, "echo_server: the listening socket failed: error %d; stopping\n", error);
                    exit_code = 1;
                    break;
                }
                std::fprintf(stderr, "echo_server: accept failed for one connection: error %d; going on\n", error);
                backoff.after_failure(error);
                continue;
            }
            backoff.after_success();
            ++accepted;
            const int no_delay = 1;
            (void)setsockopt(client, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<const char*>(&no_delay),
                             sizeof(no_delay));
            char peer_name[INET_ADDRSTRLEN] = "?";
            (void)inet_ntop(AF_INET, &peer.sin_addr, peer_name, sizeof(peer_name));
            std::printf("echo_server: connection %llu from %s:%u\n", static_cast<unsigned long long>(accepted),
                        peer_name, ntohs(peer.sin_port));
            std::fflush(stdout);
            if (connection::start(engine, client, accepted, finished_connections))
            {
                ++started;
            }
            else
            {
                // Already logged and closed; one connection that could not start is not the server's end.
                std::printf("echo_server: connection %llu closed after echoing 0 bytes (could not start)\n",
                            static_cast<unsigned long long>(accepted));
                std::fflush(stdout);
            }
        }
        // Every started connection ends when its client closes; wait for them before leaving.
        finished_connections.wait_for_retired(started);
    }

    net::close_socket(listener);
    execution_engine_dec_ref(engine);
    return exit_code;
}
