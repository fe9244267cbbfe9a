// echo_client: a client of echo_server written against the contract's C API only (<async_socket/c_api.h>),
// the way code written for the original C library uses it.
//
//   echo_client PORT [--host 127.0.0.1] [--messages 2000] [--size 4096] [--buffers 2] [--timeout 60]
//
// Connects to HOST:PORT and, for each of --messages messages, posts a receive, sends --size bytes as
// --buffers scatter/gather buffers, waits for the whole echo (a receive may return fewer bytes than asked;
// the rest is received with further receives) and checks every byte. Then it shuts down its sending side
// and expects the server to close without sending anything more. It prints the bytes moved, round trips
// per second and MiB/s, and exits 0 only when every echoed byte matched; 1 on any failure (a mismatch, an
// IO error, no answer within --timeout seconds), 2 on bad arguments.
#include <async_socket/c_api.h>

#include "net.hpp"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace
{

struct options
{
    const char* host = "127.0.0.1";
    uint16_t port = 0;
    uint32_t messages = 2000;
    uint32_t size = 4096;
    uint32_t buffers = 2;
    uint32_t timeout_seconds = 60;
};

// What the callbacks report to the main thread, under the mutex: a send or a receive is done (each flag is
// cleared by the wait that takes it, like an auto-reset event) and its result.
struct echo_state
{
    std::mutex mutex;
    std::condition_variable changed;
    bool send_done = false;
    bool receive_done = false;
    ASYNC_SOCKET_SEND_RESULT send_result = ASYNC_SOCKET_SEND_RESULT_INVALID;
    ASYNC_SOCKET_RECEIVE_RESULT receive_result = ASYNC_SOCKET_RECEIVE_RESULT_INVALID;
    uint32_t bytes_received = 0;
};

enum class woken
{
    send,
    receive,
    timeout,
};

// Waits up to `seconds` for a send or (if `receive_too`) a receive to be done; a send first when both are.
woken wait_for_io(echo_state& state, uint32_t seconds, bool send_too = true)
{
    std::unique_lock<std::mutex> lock(state.mutex);
    if (!state.changed.wait_for(lock, std::chrono::seconds(seconds),
                                [&] { return (send_too && state.send_done) || state.receive_done; }))
    {
        return woken::timeout;
    }
    if (send_too && state.send_done)
    {
        state.send_done = false;
        return woken::send;
    }
    state.receive_done = false;
    return woken::receive;
}

void on_open_complete(void* context, ASYNC_SOCKET_OPEN_RESULT open_result)
{
    *static_cast<ASYNC_SOCKET_OPEN_RESULT*>(context) = open_result;
}

void on_send_complete(void* context, ASYNC_SOCKET_SEND_RESULT send_result)
{
    echo_state* state = static_cast<echo_state*>(context);
    std::lock_guard<std::mutex> lock(state->mutex);
    state->send_result = send_result;
    state->send_done = true;
    state->changed.notify_all();
}

void on_receive_complete(void* context, ASYNC_SOCKET_RECEIVE_RESULT receive_result, uint32_t bytes_received)
{
    echo_state* state = static_cast<echo_state*>(context);
    std::lock_guard<std::mutex> lock(state->mutex);
    state->receive_result = receive_result;
    state->bytes_received = bytes_received;
    state->receive_done = true;
    state->changed.notify_all();
}

const char* send_result_name(ASYNC_SOCKET_SEND_RESULT result)
{
    switch (result)
    {
    case ASYNC_SOCKET_SEND_OK:
        return "ASYNC_SOCKET_SEND_OK";
    case ASYNC_SOCKET_SEND_ERROR:
        return "ASYNC_SOCKET_SEND_ERROR";
    case ASYNC_SOCKET_SEND_BECAUSE_CLOSE:
        return "ASYNC_SOCKET_SEND_BECAUSE_CLOSE";
    default:
        return "an invalid send result";
    }
}

const char* receive_result_name(ASYNC_SOCKET_RECEIVE_RESULT result)
{
    switch (result)
    {
    case ASYNC_SOCKET_RECEIVE_OK:
        return "ASYNC_SOCKET_RECEIVE_OK";
    case ASYNC_SOCKET_RECEIVE_ERROR:
        return "ASYNC_SOCKET_RECEIVE_ERROR";
    case ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE:
        return "ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE";
    default:
        return "an invalid receive result";
    }
}

// The bytes of message `index`: a different sequence for every message, so a stale or shifted byte shows.
void fill_message(unsigned char* bytes, uint32_t size, uint32_t index)
{
    uint32_t state = index * 2654435761u + 12345u;
    for (uint32_t i = 0; i < size; ++i)
    {
        state = state * 1664525u + 1013904223u;
        bytes[i] = static_cast<unsigned char>(state >> 24);
    }
}

// Cuts bytes[offset, size) into at most `count` buffers along the same boundaries as a cut of [0, size)
// into `count` pieces of size / count bytes (the last one takes the remainder). Returns how many.
uint32_t cut(unsigned char* bytes, uint32_t size, uint32_t count, uint32_t offset, ASYNC_SOCKET_BUFFER* out)
{
    const uint32_t piece = size / count;
    uint32_t made = 0;
    for (uint32_t i = 0; i < count; ++i)
    {
        const uint32_t begin = i * piece;
        const uint32_t end = i + 1 == count ? size : begin + piece;
        if (end <= offset)
        {
            continue;
        }
        const uint32_t from = begin > offset ? begin : offset;
        out[made].buffer = bytes + from;
        out[made].length = end - from;
        ++made;
    }
    return made;
}

bool parse_u32(const char* text, uint32_t min, uint32_t max, uint32_t& value)
{
    char* end = nullptr;
    const unsigned long long parsed = std::strtoull(text, &end, 10);
    if (end == text || *end != '\0' || text[0] == '-' || parsed < min || parsed > max)
    {
        return false;
    }
    value = static_cast<uint32_t>(parsed);
    return true;
}

constexpr const char* usage =
    "usage: echo_client PORT [--host 127.0.0.1] [--messages 2000] [--size 4096] [--buffers 2] [--timeout 60]\n";

bool parse_options(int argc, char** argv, options& parsed)
{
    bool have_port = false;
    for (int i = 1; i < argc; ++i)
    {
        const char* name = argv[i];
        const char* value = i + 1 < argc ? argv[i + 1] : nullptr;
        uint32_t number = 0;
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
            parsed.port = static_cast<uint16_t>(number);
            have_port = true;
            continue;
        }
        else
        {
            return false;
        }
        ++i; // the option's value
    }
    if (parsed.buffers > parsed.size)
    {
        std::fprintf(stderr, "echo_client: --buffers (%u) must not exceed --size (%u)\n", parsed.buffers, parsed.size);
        return false;
    }
    return have_port;
}

// Everything the client opens, released in reverse order by release() whatever state it got to.
struct client
{
    net::session session;
    net::native_socket socket = net::no_socket;
    EXECUTION_ENGINE_HANDLE engine = NULL;
    ASYNC_SOCKET_HANDLE async_socket = NULL;
    echo_state state;
    // The message and its echo, and the buffer arrays that cut them: they outlive any pending IO.
    std::vector<unsigned char> tx;
    std::vector<unsigned char> rx;
    std::vector<ASYNC_SOCKET_BUFFER> send_buffers;
    std::vector<ASYNC_SOCKET_BUFFER> receive_buffers;

    void release()
    {
        // close cancels any IO still pending (after a timeout) and waits for its callbacks, which use
        // `state` and the message buffers: those stay alive until this returns.
        async_socket_close(async_socket);
        async_socket_destroy(async_socket);
        async_socket = NULL;
        execution_engine_dec_ref(engine);
        engine = NULL;
        if (socket != net::no_socket)
        {
            net::close_socket(socket);
            socket = net::no_socket;
        }
    }
};

bool connect_and_open(client& c, const options& opts)
{
    if (c.session.error != 0)
    {
        std::fprintf(stderr, "echo_client: WSAStartup failed: %d\n", c.session.error);
        return false;
    }

    sockaddr_in address = {};
    address.sin_family = AF_INET;
    address.sin_port = htons(opts.port);
    if (inet_pton(AF_INET, opts.host, &address.sin_addr) != 1)
    {
        std::fprintf(stderr, "echo_client: --host must be an IPv4 address, not \"%s\"\n", opts.host);
        return false;
    }

    // On Windows overlapped: threadpool IO needs it.
    c.socket = net::make_tcp_socket();
    if (c.socket == net::no_socket)
    {
        std::fprintf(stderr, "echo_client: socket failed: %d\n", net::last_error());
        return false;
    }
    if (connect(c.socket, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0)
    {
        std::fprintf(stderr, "echo_client: cannot connect to %s:%u: error %d\n", opts.host, opts.port,
                     net::last_error());
        return false;
    }
    const int no_delay = 1;
    (void)setsockopt(c.socket, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<const char*>(&no_delay), sizeof(no_delay));

    c.engine = execution_engine_create(NULL);
    if (c.engine == NULL)
    {
        std::fprintf(stderr, "echo_client: execution_engine_create failed\n");
        return false;
    }
    c.async_socket = async_socket_create(c.engine, net::as_handle(c.socket));
    if (c.async_socket == NULL)
    {
        std::fprintf(stderr, "echo_client: async_socket_create failed\n");
        return false;
    }
    ASYNC_SOCKET_OPEN_RESULT open_result = ASYNC_SOCKET_OPEN_RESULT_INVALID;
    if (async_socket_open_async(c.async_socket, on_open_complete, &open_result) != 0 ||
        open_result != ASYNC_SOCKET_OPEN_OK)
    {
        std::fprintf(stderr, "echo_client: async_socket_open_async failed\n");
        return false;
    }
    return true;
}

// Posts a receive for rx[offset, size) cut like the message. Says why when it cannot.
bool post_receive(client& c, const options& opts, uint32_t offset, uint32_t message)
{
    const uint32_t count = cut(c.rx.data(), opts.size, opts.buffers, offset, c.receive_buffers.data());
    if (async_socket_receive_async(c.async_socket, c.receive_buffers.data(), count, on_receive_complete, &c.state) != 0)
    {
        std::fprintf(stderr, "echo_client: message %u: async_socket_receive_async failed\n", message + 1);
        return false;
    }
    return true;
}

// One round trip: posts the receive for the echo, sends message `index` and handles both completions as
// they come (the send of a large message completes only once the echo has started to flow back, so the
// receives must go on meanwhile). Then checks every byte. Says what went wrong when it returns false.
bool echo_one(client& c, const options& opts, uint32_t index)
{
    fill_message(c.tx.data(), opts.size, index);
    if (!post_receive(c, opts, 0, index))
    {
        return false;
    }
    const uint32_t count = cut(c.tx.data(), opts.size, opts.buffers, 0, c.send_buffers.data());
    if (async_socket_send_async(c.async_socket, c.send_buffers.data(), count, on_send_complete, &c.state) != 0)
    {
        std::fprintf(stderr, "echo_client: message %u: async_socket_send_async failed\n", index + 1);
        return false;
    }

    bool sent = false;
    uint32_t received = 0;
    while (!sent || received < opts.size)
    {
        const woken waited = wait_for_io(c.state, opts.timeout_seconds);
        if (waited == woken::send)
        {
            if (c.state.send_result != ASYNC_SOCKET_SEND_OK)
            {
                std::fprintf(stderr, "echo_client: message %u: the send completed with %s\n", index + 1,
                             send_result_name(c.state.send_result));
                return false;
            }
            sent = true;
        }
        else if (waited == woken::receive)
        {
            if (c.state.receive_result != ASYNC_SOCKET_RECEIVE_OK)
            {
                std::fprintf(stderr, "echo_client: message %u: a receive completed with %s after %u of %u bytes\n",
                             index + 1, receive_result_name(c.state.receive_result), received, opts.size);
                return false;
            }
            if (c.state.bytes_received == 0)
            {
                std::fprintf(stderr, "echo_client: message %u: the server closed the connection after %u of %u bytes\n",
                             index + 1, received, opts.size);
                return false;
            }
            received += c.state.bytes_received;
            if (received < opts.size && !post_receive(c, opts, received, index))
            {
                return false;
            }
        }
        else
        {
            std::fprintf(stderr,
                         "echo_client: message %u: nothing happened for %u s (send %s, %u of %u bytes echoed)\n",
                         index + 1, opts.timeout_seconds, sent ? "done" : "pending", received, opts.size);
            return false;
        }
    }

    if (std::memcmp(c.tx.data(), c.rx.data(), opts.size) != 0)
    {
        uint32_t at = 0;
        while (c.tx[at] == c.rx[at])
        {
            ++at;
        }
        std::fprintf(stderr, "echo_client: message %u: echoed byte %u is 0x%02x, expected 0x%02x\n", index + 1, at,
                     c.rx[at], c.tx[at]);
        return false;
    }
    return true;
}

// After the last message: shuts down the sending side and expects the server to close its side too,
// without sending anything that was not echoed.
bool finish(client& c, const options& opts)
{
    if (net::shutdown_send(c.socket) != 0)
    {
        std::fprintf(stderr, "echo_client: shutdown failed: %d\n", net::last_error());
        return false;
    }
    if (!post_receive(c, opts, 0, opts.messages))
    {
        return false;
    }
    if (wait_for_io(c.state, opts.timeout_seconds, false) != woken::receive)
    {
        std::fprintf(stderr, "echo_client: the server did not close the connection within %u s\n",
                     opts.timeout_seconds);
        return false;
    }
    if (c.state.receive_result != ASYNC_SOCKET_RECEIVE_OK || c.state.bytes_received != 0)
    {
        std::fprintf(stderr, "echo_client: after the last echo the server sent %u more bytes (%s)\n",
                     c.state.bytes_received, receive_result_name(c.state.receive_result));
        return false;
    }
    return true;
}

int run(client& c, const options& opts)
{
    if (!connect_and_open(c, opts))
    {
        return 1;
    }
    c.tx.assign(opts.size, 0);
    c.rx.assign(opts.size, 0);
    c.send_buffers.assign(opts.buffers, ASYNC_SOCKET_BUFFER{NULL, 0});
    c.receive_buffers.assign(opts.buffers, ASYNC_SOCKET_BUFFER{NULL, 0});
    std::printf("echo_client: connected to %s:%u; echoing %u messages of %u bytes, %u buffers each\n", opts.host,
                opts.port, opts.messages, opts.size, opts.buffers);
    std::fflush(stdout);

    const auto start = std::chrono::steady_clock::now();
    for (uint32_t i = 0; i < opts.messages; ++i)
    {
        if (!echo_one(c, opts, i))
        {
            std::fprintf(stderr, "echo_client: FAILED after %u of %u messages\n", i, opts.messages);
            return 1;
        }
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!finish(c, opts))
    {
        return 1;
    }

    const double bytes = static_cast<double>(opts.messages) * opts.size;
    const double mib_per_second = seconds > 0 ? bytes / (1024.0 * 1024.0) / seconds : 0.0;
    std::printf("echo_client: sent %.0f bytes and received %.0f bytes back in %u messages; every byte matched\n", bytes,
                bytes, opts.messages);
    std::printf("echo_client: %.3f s: %.1f round trips/s, %.2f MiB/s each way (%.2f MiB/s both ways)\n", seconds,
                seconds > 0 ? opts.messages / seconds : 0.0, mib_per_second, 2 * mib_per_second);
    std::fflush(stdout);
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    options opts;
    if (!net::parse_command_line(argc, argv, opts, parse_options, usage))
    {
        return 2;
    }
    client c;
    const int result = run(c, opts);
    c.release();
    return result;
}
