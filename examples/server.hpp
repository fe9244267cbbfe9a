// What echo_server (lambda handlers) and echo_server_coro (coroutines) share: the command line, the listening
// socket and the meaning of each accept's result (acceptor), the connection they both echo on and the reaper that
// closes finished connections. A program defines how one connection echoes, as a class derived from
// server::connection with a start() that begins the echo, and how it keeps accepting (a handler chain, a coroutine
// loop on async_accept), and runs server::serve<that class, its accepting>("its name", argc, argv).
//
//   NAME [PORT] [--connections N]
//
// Listens on 127.0.0.1:PORT (0, the default, picks a free port), prints "listening on 127.0.0.1:PORT" and
// echoes every byte of every connection back to its sender until that client shuts down its side. With
// --connections N the server exits (status 0) once N connections have been served; without it, it serves until
// it is killed.
//
// Accepts are asynchronous (accept_async / co_await async_accept): no thread blocks in accept(). One client never
// stops the server: an error of one incoming connection (reset or aborted before it was accepted) never reaches it
// (the library goes on with the next connection), a passing shortage of sockets or memory makes it pause and accept
// again, and only a failure of the listening socket itself ends it (status 1). A connection that fails (reset, IO
// error) is logged and closed like one that ended well.
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
#include <new>
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

// Whether a failed accept means the listening socket itself is broken (the server must stop), as opposed to a
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

// After an accept failure for want of sockets or memory (WSAEMFILE/EMFILE, WSAENOBUFS/ENOBUFS), waits a little
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

// The listening side, on the library's asynchronous accept: the listener's async socket and what each accept's
// result means. A program starts accepts its own way (a handler chain, a coroutine loop: `Accepting`, see serve)
// and hands every result to take(), which says what to do next. The main thread waits in run() until
// --connections N have been served or the listener failed, starting the accepts again after a pause when the system
// ran short of sockets or memory (never on a completion thread: it must not sleep there).
template <class Connection>
class acceptor
{
public:
    enum class next : std::uint8_t
    {
        accept,      // start the next accept now
        retry_later, // a shortage: run() starts accepting again after a pause
        stop,        // done, the listener failed, or it was closed
    };

    acceptor(const char* program, net::native_socket listener, EXECUTION_ENGINE_HANDLE engine,
             std::uint64_t connections, reaper& finished)
        : program_(program), listener_(listener), engine_(engine), connections_(connections), finished_(finished)
    {
    }
    acceptor(const acceptor&) = delete;
    acceptor& operator=(const acceptor&) = delete;

    // The listener's async socket, made and opened. Says why when it cannot.
    bool open()
    {
        async_ = net::example_socket::create(net::engine_of(engine_), net::as_handle(listener_));
        if (!async_ || async_->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) != async_socket::status::ok)
        {
            std::fprintf(stderr, "%s: the listening socket's async socket could not be made and opened\n", program_);
            return false;
        }
        return true;
    }

    net::example_socket& socket() noexcept
    {
        return *async_;
    }

    // One accept's result (from a completion thread, or from the thread that started it).
    next take(const async_socket::accept_result& result) noexcept
    {
        if (result.ok())
        {
            return serve(net::from_handle(result.socket), result.peer);
        }
        if (result.completion == async_socket::io_completion::because_close)
        {
            return next::stop;
        }
        if (result.error.category() == async_socket::status_category())
        {
            return refused(static_cast<async_socket::status>(result.error.value()));
        }
        const int error = result.error.value();
        if (listener_failed(listener_, error))
        {
            std::fprintf(stderr, "%s: the listening socket failed: %s; stopping\n", program_,
                         result.error.message().c_str());
            return finish(true);
        }
        // Errors of one incoming connection never get here (the backend goes on with the next connection): this is
        // a shortage, of sockets or memory. Accepting again at once would fail at once.
        std::fprintf(stderr, "%s: accept failed: %s; trying again shortly\n", program_, result.error.message().c_str());
        return pause(error);
    }

    // An accept call that was refused (accept_async did not return ok).
    next refused(async_socket::status why) noexcept
    {
        if (why == async_socket::status::invalid_state)
        {
            return next::stop; // closed by run(): the server is ending
        }
        std::fprintf(stderr, "%s: accept_async failed: %s; trying again shortly\n", program_,
                     async_socket::to_string(why));
        return pause(0);
    }

    // Starts accepting with `start` (called again after each pause) and waits for the end. Returns the exit status.
    template <class Start>
    int run(Start&& start)
    {
        start();
        std::unique_lock lock(mutex_);
        for (;;)
        {
            changed_.wait(lock, [this] { return done_ || retry_; });
            if (done_)
            {
                break;
            }
            retry_ = false;
            if (succeeded_)
            {
                backoff_.after_success();
                succeeded_ = false;
            }
            const int error = last_error_;
            lock.unlock();
            backoff_.after_failure(error);
            start();
            lock.lock();
        }
        const std::uint64_t started = started_;
        const int exit_code = failed_ ? 1 : 0;
        lock.unlock();
        // No accept is left pending (or close cuts it); then every started connection ends when its client closes.
        (void)async_->close();
        finished_.wait_for_retired(started);
        async_.reset();
        return exit_code;
    }

private:
    next serve(net::native_socket client, const async_socket::socket_address& peer) noexcept
    {
        std::uint64_t id = 0;
        {
            std::lock_guard lock(mutex_);
            id = ++accepted_;
            succeeded_ = true;
        }
        const int no_delay = 1;
        (void)setsockopt(client, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<const char*>(&no_delay), sizeof(no_delay));
        char peer_name[INET_ADDRSTRLEN] = "?";
        unsigned peer_port = 0;
        if (peer.family() == AF_INET)
        {
            const auto* v4 = reinterpret_cast<const sockaddr_in*>(peer.data());
            (void)inet_ntop(AF_INET, &v4->sin_addr, peer_name, sizeof(peer_name));
            peer_port = ntohs(v4->sin_port);
        }
        std::printf("%s: connection %llu from %s:%u\n", program_, static_cast<unsigned long long>(id), peer_name,
                    peer_port);
        std::fflush(stdout);
        auto made = std::unique_ptr<Connection>(new (std::nothrow) Connection(program_, client, id, finished_));
        if (made == nullptr)
        {
            net::close_socket(client);
            return pause(0);
        }
        if (!made->open(engine_))
        {
            return next::accept; // logged; destroying it closes the socket. One connection is not the server's end.
        }
        // From here on the echo owns the connection: whatever ends it hands it to the reaper.
        made.release()->start();
        std::lock_guard lock(mutex_);
        ++started_;
        if (connections_ != 0 && started_ >= connections_)
        {
            done_ = true;
            changed_.notify_all();
            return next::stop;
        }
        return next::accept;
    }

    next finish(bool failed) noexcept
    {
        std::lock_guard lock(mutex_);
        failed_ = failed_ || failed;
        done_ = true;
        changed_.notify_all();
        return next::stop;
    }

    next pause(int error) noexcept
    {
        std::lock_guard lock(mutex_);
        last_error_ = error;
        retry_ = true;
        changed_.notify_all();
        return next::retry_later;
    }

    const char* program_;
    net::native_socket listener_;
    EXECUTION_ENGINE_HANDLE engine_;
    std::uint64_t connections_;
    reaper& finished_;
    net::example_socket::handle async_;
    accept_backoff backoff_; // used by run()'s thread only
    std::mutex mutex_;
    std::condition_variable changed_;
    // Guarded by mutex_:
    std::uint64_t accepted_ = 0;
    std::uint64_t started_ = 0;
    bool done_ = false;
    bool failed_ = false;
    bool retry_ = false;
    bool succeeded_ = false;
    int last_error_ = 0;
};

// The whole server: command line, listening socket, engine, accepts (see the top of this file). `Accepting` is how
// the program starts accepting: made as Accepting(acceptor&), its start() begins (or begins again, after a pause)
// accepts that hand every result to acceptor::take and go on while it says next::accept.
template <class Connection, class Accepting>
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
    // On Windows overlapped, as threadpool IO (and AcceptEx) needs it.
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
        net::print_io(engine);
        std::printf("listening on 127.0.0.1:%u\n", ntohs(address.sin_port));
        std::fflush(stdout);
        {
            reaper finished_connections;
            acceptor<Connection> accepting(program, listener, engine, opts.connections, finished_connections);
            if (accepting.open())
            {
                Accepting starter(accepting);
                exit_code = accepting.run([&] { starter.start(); });
            }
        }
        execution_engine_dec_ref(engine);
    }
    net::close_socket(listener);
    return exit_code;
}

} // namespace server
