// What echo_server (lambda handlers) and echo_server_coro (coroutines) share: the command line, the listening
// socket and its accept loop, the connection they both echo on and the reaper that closes finished connections.
// A program defines only how one connection echoes, as a class derived from server::connection with a
// start() that begins the echo, and runs server::serve<that class>("its name", argc, argv).
//
//   NAME [PORT] [--connections N]
//
// Listens on 127.0.0.1:PORT (0, the default, picks a free port), prints "listening on 127.0.0.1:PORT" and
// echoes every byte of every connection back to its sender until that client shuts down its side. With
// --connections N the server exits (status 0) once N connections have been served; without it, it serves until
// it is killed.
//
// One client never stops the server: an accept that fails for one incoming connection (reset or aborted before
// it was accepted, or for a moment no socket or buffer to give it) is logged and the loop goes on; only a failure
// of the listening socket itself ends it (status 1). A connection that fails (reset, IO error) is logged and
// closed like one that ended well.
//
// Why the reaper: a socket is never closed or destroyed from its own callbacks (close() would wait for the very
// callback it runs in, so it returns called_from_callback; destroying aborts). A finished connection is handed
// to the reaper's thread, which destroys it there.
#pragma once

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
#include <system_error>
#include <thread>
#include <vector>

namespace server
{

class connection;

// Destroys finished connections on its own thread, away from their completion callbacks.
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

    // Takes a finished connection (from any thread, also from its own callback).
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

// One accepted client: its socket, the async socket over it and the buffer its echo reuses. Destroyed by the
// reaper (or by serve() when it could not start), never from one of its own callbacks.
class connection
{
public:
    static constexpr std::uint32_t buffer_size = 64 * 1024;

    connection(const char* program, net::native_socket socket, std::uint64_t id, server::reaper& reaper)
        : program_(program), socket_(socket), id_(id), reaper_(reaper), buffer_(buffer_size)
    {
    }
    // Destroying the async socket closes it, which waits for its last callback; the native socket is ours to close
    // after that.
    virtual ~connection()
    {
        async_.reset();
        net::close_socket(socket_);
        std::printf("%s: connection %llu closed after echoing %llu bytes%s\n", program_,
                    static_cast<unsigned long long>(id_), static_cast<unsigned long long>(bytes_echoed_),
                    !started_ ? " (could not start)"
                    : failed_ ? " (ended by an error)"
                              : "");
        std::fflush(stdout);
    }
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;

    // Makes and opens the async socket. Says why when it cannot.
    bool open(EXECUTION_ENGINE_HANDLE engine)
    {
        async_ = net::example_socket::create(net::engine_of(engine), net::as_handle(socket_));
        if (!async_)
        {
            std::fprintf(stderr, "%s: connection %llu: the async socket could not be made\n", program_,
                         static_cast<unsigned long long>(id_));
            return false;
        }
        const async_socket::status opened = async_->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {});
        if (opened != async_socket::status::ok)
        {
            std::fprintf(stderr, "%s: connection %llu: open_async failed: %s\n", program_,
                         static_cast<unsigned long long>(id_), async_socket::to_string(opened));
            return false;
        }
        started_ = true;
        return true;
    }

protected:
    // The echo is complete (or failed): from here on the connection belongs to the reaper. Touch nothing of it
    // after this call.
    void retire() noexcept
    {
        reaper_.retire(this);
    }
    // Logs the failed IO (`why`: the OS's error, or the status of a refused call) and retires the connection.
    void fail(const char* what, async_socket::io_completion completion, const std::error_code& why) noexcept
    {
        std::fprintf(stderr, "%s: connection %llu: %s failed: %s\n", program_, static_cast<unsigned long long>(id_),
                     what,
                     completion == async_socket::io_completion::because_close ? "closed"
                     : why                                                    ? why.message().c_str()
                                                                              : "error");
        failed_ = true;
        retire();
    }
    void fail(const char* what, async_socket::status refused) noexcept
    {
        fail(what, async_socket::io_completion::error, make_error_code(refused));
    }

    // The whole buffer, to receive into; the first `bytes` of it, to send back.
    ASYNC_SOCKET_BUFFER whole() noexcept
    {
        return {buffer_.data(), buffer_size};
    }
    ASYNC_SOCKET_BUFFER first(std::uint32_t bytes) noexcept
    {
        return {buffer_.data(), bytes};
    }

    net::example_socket::handle async_;
    std::uint64_t bytes_echoed_ = 0;

private:
    const char* program_;
    net::native_socket socket_;
    std::uint64_t id_;
    server::reaper& reaper_;
    std::vector<unsigned char> buffer_;
    bool started_ = false;
    bool failed_ = false;
};

inline void reaper::run()
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

inline bool parse_unsigned(const char* text, std::uint64_t max, std::uint64_t& value)
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

inline bool parse_options(int argc, char** argv, options& parsed)
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

// Whether a failed accept() means the listening socket itself is broken (the server must stop), as opposed to a
// failure that concerns one incoming connection or a passing shortage (the server goes on).
inline bool listener_failed(net::native_socket listener, int error)
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
    // Anything else (reset or aborted before accept, WSAENOTCONN from Wine for the same, running out of descriptors
    // or buffers, an interrupted call, ...) concerns one connection or a moment, as long as the listener still
    // listens.
    int listening = 0;
    net::address_length length = sizeof(listening);
    if (getsockopt(listener, SOL_SOCKET, SO_ACCEPTCONN, reinterpret_cast<char*>(&listening), &length) != 0)
    {
        return true;
    }
    return listening == 0;
}

// After an accept() failure for want of sockets or memory (WSAEMFILE/EMFILE, WSAENOBUFS/ENOBUFS), waits a little
// before the next try: the next accept would fail at once again, and a loop that spins on it would starve the
// connections being served. Doubles from 1 ms to 250 ms while the shortage lasts; a success resets it. A connection
// reset or aborted before it was accepted costs nothing: the next one is taken at once.
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

// Accepts connections until --connections N have been served (or the listener fails) and gives each to a new
// Connection (made as Connection(program, socket, id, reaper), then open(engine) and start()). Returns the exit
// status. Once start() is called, the connection must retire itself when its echo ends, whatever ends it.
template <class Connection>
int accept_loop(const char* program, net::native_socket listener, EXECUTION_ENGINE_HANDLE engine,
                std::uint64_t connections)
{
    reaper finished_connections;
    accept_backoff backoff;
    std::uint64_t accepted = 0;
    std::uint64_t started = 0;
    int exit_code = 0;
    while (connections == 0 || started < connections)
    {
        sockaddr_in peer{};
        net::address_length peer_length = sizeof(peer);
        const net::native_socket client = accept(listener, reinterpret_cast<sockaddr*>(&peer), &peer_length);
        if (client == net::no_socket)
        {
            const int error = net::last_error();
            if (listener_failed(listener, error))
            {
                std::fprintf(stderr, "%s: the listening socket failed: error %d; stopping\n", program, error);
                exit_code = 1;
                break;
            }
            std::fprintf(stderr, "%s: accept failed for one connection: error %d; going on\n", program, error);
            backoff.after_failure(error);
            continue;
        }
        backoff.after_success();
        ++accepted;
        const int no_delay = 1;
        (void)setsockopt(client, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<const char*>(&no_delay), sizeof(no_delay));
        char peer_name[INET_ADDRSTRLEN] = "?";
        (void)inet_ntop(AF_INET, &peer.sin_addr, peer_name, sizeof(peer_name));
        std::printf("%s: connection %llu from %s:%u\n", program, static_cast<unsigned long long>(accepted), peer_name,
                    ntohs(peer.sin_port));
        std::fflush(stdout);
        auto made = std::make_unique<Connection>(program, client, accepted, finished_connections);
        if (made->open(engine))
        {
            // From here on the echo owns the connection: whatever ends it hands it to the reaper.
            made.release()->start();
            ++started;
        }
        // else: logged; destroying it closes the socket. One connection that could not start is not the server's end.
    }
    // Every started connection ends when its client closes; wait for them before leaving.
    finished_connections.wait_for_retired(started);
    return exit_code;
}

// The whole server: command line, listening socket, engine, accept loop (see the top of this file).
template <class Connection>
int serve(const char* program, int argc, char** argv)
{
    options opts;
    if (!parse_options(argc, argv, opts))
    {
        std::fprintf(stderr,
                     "usage: %s [PORT] [--connections N]\n"
                     "  PORT 0 (default) picks a free port; --connections N exits after N connections\n",
                     program);
        return 2;
    }
    const net::session session;
    if (session.error != 0)
    {
        std::fprintf(stderr, "%s: WSAStartup failed: %d\n", program, session.error);
        return 1;
    }
    // On Windows overlapped, so that the sockets accept() makes from it can be used with threadpool IO.
    const net::native_socket listener = net::make_tcp_socket();
    if (listener == net::no_socket)
    {
        std::fprintf(stderr, "%s: socket failed: %d\n", program, net::last_error());
        return 1;
    }
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(opts.port);
    net::address_length address_length = sizeof(address);
    EXECUTION_ENGINE_HANDLE engine = nullptr;
    if (bind(listener, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0 ||
        listen(listener, SOMAXCONN) != 0 ||
        getsockname(listener, reinterpret_cast<sockaddr*>(&address), &address_length) != 0)
    {
        std::fprintf(stderr, "%s: cannot listen on 127.0.0.1:%u: error %d\n", program, opts.port, net::last_error());
    }
    else if ((engine = execution_engine_create(nullptr)) == nullptr)
    {
        std::fprintf(stderr, "%s: execution_engine_create failed\n", program);
    }
    int exit_code = 1;
    if (engine != nullptr)
    {
        std::printf("listening on 127.0.0.1:%u\n", ntohs(address.sin_port));
        std::fflush(stdout);
        exit_code = accept_loop<Connection>(program, listener, engine, opts.connections);
        execution_engine_dec_ref(engine);
    }
    net::close_socket(listener);
    return exit_code;
}

} // namespace server
