// What echo_client (lambda handlers) and echo_client_coro (coroutines) share: the command line, the connection,
// the messages and their check, and the round trip both report their IO to. A program defines only how one round
// trip's IO is started, as a function echo(client::round_trip&) that starts the IO trip.message() and
// trip.rest() say and returns once trip.wait() has, and runs client::run("its name", argc, argv, echo).
//
//   NAME PORT [--host 127.0.0.1] [--messages 2000] [--size 4096] [--buffers 2] [--timeout 60]
//
// Connects to HOST:PORT and, for each of --messages messages, receives while it sends --size bytes as --buffers
// scatter/gather buffers, until the whole echo is in (a receive may return fewer bytes than asked; the rest is
// received with further receives), and checks every byte. Then it shuts down its sending side and expects the
// server to close without sending anything more. It prints the bytes moved, round trips per second and MiB/s, and
// exits 0 only when every echoed byte matched; 1 on any failure (a mismatch, an IO error, no whole echo within
// --timeout seconds), 2 on bad arguments.
#pragma once

#include "net.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <span>
#include <string>
#include <system_error>
#include <vector>

namespace client
{

struct options
{
    const char* host = "127.0.0.1";
    std::uint16_t port = 0;
    std::uint32_t messages = 2000;
    std::uint32_t size = 4096;
    std::uint32_t buffers = 2;
    std::uint32_t timeout_seconds = 60;
};

inline bool parse_u32(const char* text, std::uint32_t min, std::uint32_t max, std::uint32_t& value)
{
    char* end = nullptr;
    const unsigned long long parsed = std::strtoull(text, &end, 10);
    if (end == text || *end != '\0' || text[0] == '-' || parsed < min || parsed > max)
    {
        return false;
    }
    value = static_cast<std::uint32_t>(parsed);
    return true;
}

inline bool parse_options(int argc, char** argv, options& parsed)
{
    bool have_port = false;
    for (int i = 1; i < argc; ++i)
    {
        const char* name = argv[i];
        const char* value = i + 1 < argc ? argv[i + 1] : nullptr;
        std::uint32_t number = 0;
        if (std::strcmp(name, "--host") == 0 && value != nullptr)
        {
            parsed.host = value;
        }
        else if (std::strcmp(name, "--messages") == 0 && value != nullptr && parse_u32(value, 1, UINT32_MAX, number))
        {
            parsed.messages = number;
        }
        else if (std::strcmp(name, "--size") == 0 && value != nullptr && parse_u32(value, 1, 1u << 30, number))
        {
            parsed.size = number;
        }
        else if (std::strcmp(name, "--buffers") == 0 && value != nullptr && parse_u32(value, 1, 1024, number))
        {
            parsed.buffers = number;
        }
        else if (std::strcmp(name, "--timeout") == 0 && value != nullptr && parse_u32(value, 1, 86400, number))
        {
            parsed.timeout_seconds = number;
        }
        else if (!have_port && name[0] != '-' && parse_u32(name, 1, 65535, number))
        {
            parsed.port = static_cast<std::uint16_t>(number);
            have_port = true;
            continue;
        }
        else
        {
            return false;
        }
        ++i; // the option's value
    }
    return have_port && parsed.buffers <= parsed.size;
}

// The bytes of message `index`: a different sequence for every message, so a stale or shifted byte shows.
inline void fill_message(unsigned char* bytes, std::uint32_t size, std::uint32_t index)
{
    std::uint32_t state = index * 2654435761u + 12345u;
    for (std::uint32_t i = 0; i < size; ++i)
    {
        state = state * 1664525u + 1013904223u;
        bytes[i] = static_cast<unsigned char>(state >> 24);
    }
}

// Cuts bytes[offset, size) into at most `count` buffers along the same boundaries as a cut of [0, size) into
// `count` pieces of size / count bytes (the last one takes the remainder).
inline std::span<const ASYNC_SOCKET_BUFFER> cut(unsigned char* bytes, std::uint32_t size, std::uint32_t offset,
                                                std::vector<ASYNC_SOCKET_BUFFER>& out)
{
    const auto count = static_cast<std::uint32_t>(out.size());
    const std::uint32_t piece = size / count;
    std::size_t made = 0;
    for (std::uint32_t i = 0; i < count; ++i)
    {
        const std::uint32_t begin = i * piece;
        const std::uint32_t end = i + 1 == count ? size : begin + piece;
        if (end > offset)
        {
            const std::uint32_t from = begin > offset ? begin : offset;
            out[made++] = ASYNC_SOCKET_BUFFER{bytes + from, end - from};
        }
    }
    return {out.data(), made};
}

// Everything the client opens, released in reverse order whatever state it got to.
struct connection
{
    const char* program;
    options opts;
    net::session session;
    net::native_socket socket = net::no_socket;
    EXECUTION_ENGINE_HANDLE engine = nullptr;
    net::example_socket::handle async;
    // The message and its echo, and the buffer arrays that cut them: they outlive any pending IO.
    std::vector<unsigned char> tx, rx;
    std::vector<ASYNC_SOCKET_BUFFER> send_buffers, receive_buffers;

    connection(const char* name, const options& parsed)
        : program(name), opts(parsed), tx(parsed.size), rx(parsed.size),
          send_buffers(parsed.buffers, ASYNC_SOCKET_BUFFER{nullptr, 0}),
          receive_buffers(parsed.buffers, ASYNC_SOCKET_BUFFER{nullptr, 0})
    {
    }
    ~connection()
    {
        async.reset(); // closes: cancels any IO still pending and waits for its callbacks, which use the buffers
        if (engine != nullptr)
        {
            execution_engine_dec_ref(engine);
        }
        if (socket != net::no_socket)
        {
            net::close_socket(socket);
        }
    }
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;

    // Makes the socket and its async socket, then connects it with `connect` (the program's way: a handler, a
    // coroutine), which returns the connect's result. Says why when it cannot.
    template <class Connect>
    bool open(Connect&& connect)
    {
        if (session.error != 0)
        {
            std::fprintf(stderr, "%s: WSAStartup failed: %d\n", program, session.error);
            return false;
        }
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(opts.port);
        if (inet_pton(AF_INET, opts.host, &address.sin_addr) != 1)
        {
            std::fprintf(stderr, "%s: --host must be an IPv4 address, not \"%s\"\n", program, opts.host);
            return false;
        }
        socket = net::make_tcp_socket(); // on Windows overlapped: threadpool IO needs it
        if (socket == net::no_socket)
        {
            std::fprintf(stderr, "%s: socket failed: %d\n", program, net::last_error());
            return false;
        }
        engine = execution_engine_create(nullptr);
        if (engine == nullptr)
        {
            std::fprintf(stderr, "%s: execution_engine_create failed\n", program);
            return false;
        }
        net::print_io(engine);
        async = net::example_socket::create(net::engine_of(engine), net::as_handle(socket));
        if (!async || async->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) != async_socket::status::ok)
        {
            std::fprintf(stderr, "%s: the async socket could not be made and opened\n", program);
            return false;
        }
        const async_socket::connect_result connected =
            connect(*this, async_socket::socket_address(reinterpret_cast<const sockaddr*>(&address), sizeof(address)));
        if (!connected)
        {
            std::fprintf(stderr, "%s: cannot connect to %s:%u: %s\n", program, opts.host, opts.port,
                         connected.completion == async_socket::io_completion::because_close ? "timed out"
                         : connected.error ? connected.error.message().c_str()
                                           : "error");
            return false;
        }
        const int no_delay = 1;
        (void)setsockopt(socket, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<const char*>(&no_delay), sizeof(no_delay));
        return true;
    }
};

// A connect's result, left by a completion thread for the main thread. result() waits --timeout seconds at most;
// then it closes the async socket, which cuts the connect (because_close) and returns once its handler has run.
class connect_wait
{
public:
    void set(const async_socket::connect_result& result) noexcept
    {
        std::lock_guard hold(mutex_);
        result_ = result;
        arrived_ = true;
        changed_.notify_all();
    }

    async_socket::connect_result result(connection& c)
    {
        {
            std::unique_lock hold(mutex_);
            if (changed_.wait_for(hold, std::chrono::duration<double>(c.opts.timeout_seconds),
                                  [this] { return arrived_; }))
            {
                return result_;
            }
        }
        (void)c.async->close();
        std::lock_guard hold(mutex_);
        return result_;
    }

private:
    std::mutex mutex_;
    std::condition_variable changed_;
    async_socket::connect_result result_{async_socket::io_completion::because_close, {}};
    bool arrived_ = false;
};

// One round trip: the send of a message (none after the last one) and the receives of its echo into rx, until
// `expected` bytes are in or the stream ends. The IO reports here from the completion threads; wait() returns
// once all of it has ended, or at the first failure or the timeout, after closing the socket so that nothing
// still pending refers to the round trip.
class round_trip
{
public:
    round_trip(connection& c, std::span<const ASYNC_SOCKET_BUFFER> message, std::uint32_t expected)
        : c_(c), message_(message), expected_(expected), pending_(message.empty() ? 1 : 2)
    {
    }
    round_trip(const round_trip&) = delete;
    round_trip& operator=(const round_trip&) = delete;

    net::example_socket& socket() noexcept
    {
        return *c_.async;
    }
    // What to send (empty: nothing), and where the rest of the echo goes.
    std::span<const ASYNC_SOCKET_BUFFER> message() const noexcept
    {
        return message_;
    }
    std::span<const ASYNC_SOCKET_BUFFER> rest() noexcept
    {
        return cut(c_.rx.data(), c_.opts.size, received_, c_.receive_buffers);
    }

    // The send has completed.
    void sent(const async_socket::send_result& result) noexcept
    {
        std::lock_guard lock(mutex_);
        if (!result)
        {
            note_failure("the send", result.completion, result.error);
        }
        sent_ = result.ok();
        end_one();
    }
    // A receive has completed. True: receive the rest, into rest(). False: the receives are over.
    [[nodiscard]] bool received(const async_socket::receive_result& result) noexcept
    {
        std::lock_guard lock(mutex_);
        if (!result)
        {
            note_failure("a receive", result.completion, result.error);
        }
        ended_ = result.end_of_stream();
        received_ += result.ok() ? result.bytes : 0;
        if (result.ok() && !ended_ && received_ < expected_ && failure_.empty())
        {
            return true;
        }
        end_one();
        return false;
    }
    // A send_async/receive_async call that was refused: that IO is over before it began.
    void refused(const char* call, async_socket::status why) noexcept
    {
        std::lock_guard lock(mutex_);
        failure_ = std::string(call) + " was refused: " + async_socket::to_string(why);
        end_one();
    }

    // Waits until every IO is over, or the first failure, or the timeout. Whatever is still pending then is ended by
    // closing the socket (its handlers run with because_close, before close returns).
    void wait()
    {
        std::unique_lock lock(mutex_);
        timed_out_ = !changed_.wait_for(lock, std::chrono::seconds(c_.opts.timeout_seconds),
                                        [&] { return pending_ == 0 || !failure_.empty(); });
        if (pending_ != 0)
        {
            lock.unlock();
            (void)c_.async->close();
        }
    }

    // After wait(): says what went wrong with message `index` (`what` names it), false when it went wrong.
    bool report(const char* what, std::uint32_t index) const
    {
        const unsigned number = index + 1;
        if (timed_out_)
        {
            std::fprintf(stderr, "%s: %s %u: no whole echo within %u s (send %s, %u of %u bytes echoed)\n", c_.program,
                         what, number, c_.opts.timeout_seconds, sent_ ? "done" : "pending", received_, expected_);
        }
        else if (!failure_.empty())
        {
            std::fprintf(stderr, "%s: %s %u: %s after %u of %u bytes\n", c_.program, what, number, failure_.c_str(),
                         received_, expected_);
        }
        else if (ended_ && received_ < expected_)
        {
            std::fprintf(stderr, "%s: %s %u: the server closed the connection after %u of %u bytes\n", c_.program, what,
                         number, received_, expected_);
        }
        else
        {
            return true;
        }
        return false;
    }

    std::uint32_t bytes_received() const noexcept
    {
        return received_;
    }

private:
    void note_failure(const char* io, async_socket::io_completion completion, const std::error_code& error)
    {
        if (failure_.empty())
        {
            failure_ = std::string(io) + " failed: " +
                       (completion == async_socket::io_completion::because_close ? std::string("closed")
                        : error                                                  ? error.message()
                                                                                 : std::string("error"));
        }
    }
    void end_one() noexcept
    {
        --pending_;
        changed_.notify_all();
    }

    connection& c_;
    std::span<const ASYNC_SOCKET_BUFFER> message_;
    std::uint32_t expected_;
    std::mutex mutex_;
    std::condition_variable changed_;
    // Guarded by mutex_:
    int pending_;         // IO chains not yet over: the send, the receives
    std::string failure_; // the first failure, empty while none
    bool sent_ = false;
    bool ended_ = false; // a receive saw the end of the stream
    std::uint32_t received_ = 0;
    bool timed_out_ = false;
};

// Echoes message `index`: fills it, lets `echo` do the IO, and checks every byte of the echo.
template <class Echo>
bool echo_message(connection& c, std::uint32_t index, Echo& echo)
{
    fill_message(c.tx.data(), c.opts.size, index);
    round_trip trip(c, cut(c.tx.data(), c.opts.size, 0, c.send_buffers), c.opts.size);
    echo(trip);
    if (!trip.report("message", index))
    {
        return false;
    }
    if (std::memcmp(c.tx.data(), c.rx.data(), c.opts.size) != 0)
    {
        std::uint32_t at = 0;
        while (c.tx[at] == c.rx[at])
        {
            ++at;
        }
        std::fprintf(stderr, "%s: message %u: echoed byte %u is 0x%02x, expected 0x%02x\n", c.program, index + 1, at,
                     c.rx[at], c.tx[at]);
        return false;
    }
    return true;
}

// After the last message: shuts down the sending side and expects the server to close its side too, without
// sending anything that was not echoed.
template <class Echo>
bool finish(connection& c, Echo& echo)
{
    if (net::shutdown_send(c.socket) != 0)
    {
        std::fprintf(stderr, "%s: shutdown failed: %d\n", c.program, net::last_error());
        return false;
    }
    round_trip trip(c, {}, 0); // nothing is expected: the first receive must see the end of the stream
    echo(trip);
    if (!trip.report("after message", c.opts.messages - 1))
    {
        return false;
    }
    if (trip.bytes_received() != 0)
    {
        std::fprintf(stderr, "%s: after the last echo the server sent %u more bytes\n", c.program,
                     trip.bytes_received());
        return false;
    }
    return true;
}

// The whole client (see the top of this file). Returns the exit status.
template <class Echo, class Connect>
int run(const char* program, int argc, char** argv, Echo echo, Connect connect)
{
    options opts;
    if (!parse_options(argc, argv, opts))
    {
        std::fprintf(stderr,
                     "usage: %s PORT [--host 127.0.0.1] [--messages 2000] [--size 4096] [--buffers 2] [--timeout 60]\n"
                     "  (--buffers at most --size)\n",
                     program);
        return 2;
    }
    connection c(program, opts);
    if (!c.open(connect))
    {
        return 1;
    }
    std::printf("%s: connected to %s:%u; echoing %u messages of %u bytes, %u buffers each\n", program, opts.host,
                opts.port, opts.messages, opts.size, opts.buffers);
    std::fflush(stdout);

    const auto start = std::chrono::steady_clock::now();
    for (std::uint32_t i = 0; i < opts.messages; ++i)
    {
        if (!echo_message(c, i, echo))
        {
            std::fprintf(stderr, "%s: FAILED after %u of %u messages\n", program, i, opts.messages);
            return 1;
        }
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!finish(c, echo))
    {
        std::fprintf(stderr, "%s: FAILED after the last message\n", program);
        return 1;
    }
    const double bytes = static_cast<double>(opts.messages) * opts.size;
    const double mib_per_second = seconds > 0 ? bytes / (1024.0 * 1024.0) / seconds : 0.0;
    std::printf("%s: sent %.0f bytes and received %.0f bytes back in %u messages; every byte matched\n", program, bytes,
                bytes, opts.messages);
    std::printf("%s: %.3f s: %.1f round trips/s, %.2f MiB/s each way (%.2f MiB/s both ways)\n", program, seconds,
                seconds > 0 ? opts.messages / seconds : 0.0, mib_per_second, 2 * mib_per_second);
    std::fflush(stdout);
    return 0;
}

} // namespace client
