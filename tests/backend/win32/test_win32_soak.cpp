// Soak of async_socket::win32_async_socket on real loopback TCP sockets, several connected pairs at once
// (under Wine when cross compiling). One test case per scenario:
// - bulk: per pair, a driver streams 64 MiB of a seeded xorshift pattern to an echo built on the library
//   (pipelined receive_async -> send_async), which checks it and sends it back; the driver checks what
//   comes back. Sends gather from several buffers, receives scatter over several.
// - messages: 100,000 small framed messages echoed over the pairs, a window of them in flight per pair,
//   each checked (sequence, length, content) when it comes back.
// - reset: the peer aborts the connection (SO_LINGER {1,0}, closesocket) while our sends and receives are
//   in flight; every accepted IO completes once, with OK or ERROR; then close and destroy work.
// - reopen: both ends stream to each other while one end is closed and reopened on the same SOCKET, again
//   and again. IO cut by close completes once with BECAUSE_CLOSE; the stream into the reopened end resumes
//   exactly where it stopped; the stream out of it resumes after a marker (a send cut by close may have
//   sent part of its bytes, so the old stream may end anywhere).
// Every IO is an entry with an id in a ledger: each accepted IO must complete exactly once, a refused one
// never, and none after its socket was destroyed. Each test case prints its figures.
//
// ASYNC_SOCKET_SOAK_SCALE (default 1) multiplies every amount: 0.1 for a quick run, 10 for a long soak
// (then raise ASYNC_SOCKET_TEST_WATCHDOG_SECONDS, 120 s per test case by default, and run the executable
// directly rather than through ctest and its timeout). See docs/reliability.md.
#include <async_socket/async_socket.hpp>

#include "support/engine_ref.hpp"
#include "support/loopback.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace
{

using async_socket::status;
using async_socket::win32_async_socket;
using win32_test::engine_ref;

constexpr std::size_t kib = 1024;
constexpr std::size_t mib = 1024 * 1024;
constexpr std::size_t pair_count = 4;

// A wait fails only when no IO at all has completed for this long: Wine on a loaded machine is slow, and
// the deadline is there only to end a run that would otherwise hang.
constexpr double stall_seconds = 60.0;

// ASYNC_SOCKET_SOAK_SCALE, or 1 when it is not set (or is not a positive number).
double soak_scale()
{
    static const double scale = []
    {
        const char* text = std::getenv("ASYNC_SOCKET_SOAK_SCALE");
        if (text == nullptr || *text == '\0')
        {
            return 1.0;
        }
        char* end = nullptr;
        const double value = std::strtod(text, &end);
        if (end == text || *end != '\0' || !std::isfinite(value) || value <= 0.0)
        {
            std::fprintf(stderr, "ASYNC_SOCKET_SOAK_SCALE=\"%s\" is not a positive number; using 1\n", text);
            return 1.0;
        }
        return value;
    }();
    return scale;
}

// base * scale, at least `minimum`.
std::uint64_t scaled(double base, std::uint64_t minimum)
{
    const double value = std::round(base * soak_scale());
    return value < static_cast<double>(minimum) ? minimum : static_cast<std::uint64_t>(value);
}

double seconds_since(std::chrono::steady_clock::time_point start)
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// splitmix64's finaliser: spreads any input over 64 bits.
constexpr std::uint64_t mix(std::uint64_t x) noexcept
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// The seed of one stream: scenario, pair, direction and epoch (a new one after every reopen).
constexpr std::uint64_t stream_seed(std::uint64_t scenario, std::uint64_t pair, std::uint64_t direction,
                                    std::uint64_t epoch) noexcept
{
    return mix(mix(mix(mix(scenario) ^ pair) ^ direction) ^ epoch);
}

// A byte stream from xorshift64: the same seed gives the same bytes, so a receiver checks what a sender made
// without sharing its memory. The bytes of each 64-bit word are taken low byte first.
class pattern_stream
{
public:
    explicit pattern_stream(std::uint64_t seed = 1) noexcept : state_(seed != 0 ? seed : 1) {}

    // Writes the next `size` bytes of the stream.
    void fill(std::uint8_t* out, std::size_t size) noexcept
    {
        while (size > 0 && left_ > 0)
        {
            *out++ = take_byte();
            --size;
        }
        while (size >= sizeof(std::uint64_t))
        {
            const std::uint64_t word = next_word();
            std::memcpy(out, &word, sizeof(word));
            out += sizeof(word);
            size -= sizeof(word);
        }
        if (size > 0)
        {
            word_ = next_word();
            left_ = sizeof(std::uint64_t);
            while (size > 0)
            {
                *out++ = take_byte();
                --size;
            }
        }
    }

    // Compares `size` bytes with the next bytes of the stream, which it consumes. Returns the index of the
    // first byte that differs, or `size` when all are the same.
    std::size_t compare(const std::uint8_t* data, std::size_t size) noexcept
    {
        std::array<std::uint8_t, 4096> expected;
        std::size_t done = 0;
        while (done < size)
        {
            const std::size_t part = std::min(expected.size(), size - done);
            fill(expected.data(), part);
            if (std::memcmp(expected.data(), data + done, part) != 0)
            {
                std::size_t index = 0;
                while (expected[index] == data[done + index])
                {
                    ++index;
                }
                return done + index;
            }
            done += part;
        }
        return size;
    }

private:
    std::uint64_t next_word() noexcept
    {
        state_ ^= state_ << 13;
        state_ ^= state_ >> 7;
        state_ ^= state_ << 17;
        return state_;
    }

    std::uint8_t take_byte() noexcept
    {
        const auto byte = static_cast<std::uint8_t>(word_);
        word_ >>= 8;
        --left_;
        return byte;
    }

    std::uint64_t state_;
    std::uint64_t word_ = 0;
    std::size_t left_ = 0;
};

// The bytes a sender puts before a new epoch of its stream; the receiver finds the new epoch by them.
std::vector<std::uint8_t> epoch_marker(std::uint64_t seed)
{
    std::vector<std::uint8_t> marker(64);
    pattern_stream(mix(seed ^ 0x6D61726B65720000ull)).fill(marker.data(), marker.size());
    return marker;
}

// Splits `length` bytes at `data` into 1 to `max_parts` buffers of at least one byte each, chosen by `r`.
std::uint32_t split(std::uint8_t* data, std::size_t length, std::uint64_t r, ASYNC_SOCKET_BUFFER* parts,
                    std::uint32_t max_parts)
{
    std::uint32_t count = 1 + static_cast<std::uint32_t>(r % max_parts);
    if (count > length)
    {
        count = static_cast<std::uint32_t>(length);
    }
    std::size_t offset = 0;
    for (std::uint32_t i = 0; i + 1 < count; ++i)
    {
        const std::size_t room = length - offset - (count - 1 - i); // leaves a byte for each later part
        r = mix(r);
        const std::size_t size = 1 + static_cast<std::size_t>(r % room);
        parts[i] = {data + offset, static_cast<std::uint32_t>(size)};
        offset += size;
    }
    parts[count - 1] = {data + offset, static_cast<std::uint32_t>(length - offset)};
    return count;
}

struct side;
struct op_record;

enum class io_kind : std::uint8_t
{
    send = 0,
    receive = 1,
};

// What posted an IO: its completion is handed back to it.
class io_user
{
public:
    virtual ~io_user() = default;
    virtual void send_done(op_record&, ASYNC_SOCKET_SEND_RESULT) {}
    virtual void receive_done(op_record&, ASYNC_SOCKET_RECEIVE_RESULT, std::uint32_t) {}
};

// One IO in the ledger, and the context its callback gets.
struct op_record
{
    std::uint64_t id = 0;
    side* owner = nullptr;
    io_user* user = nullptr;
    std::uint64_t tag = 0; // what the user needs to find the IO's buffers again
    io_kind kind = io_kind::send;
    bool accepted = false; // written only by the posting thread, before the call and after a refusal
    std::atomic<int> completions{0};
    std::atomic<int> result{0};
    std::atomic<std::uint32_t> bytes{0};
};

// What one test case shares: the ledger, the failures seen on any thread, the figures, and the waiter that
// the test's threads wait on. Callbacks change atomics and then notify(): that is safe here because the
// world outlives every socket, and destroying a socket waits for its callbacks to finish.
struct soak_world
{
    win32_test::waiter waiter;

    std::mutex ops_mutex;
    std::deque<op_record> ops; // a deque: records never move, callbacks hold pointers to them

    std::mutex failures_mutex;
    std::vector<std::string> failures; // the first few, with what went wrong
    std::atomic<std::uint64_t> failure_count{0};

    std::atomic<std::uint64_t> callbacks{0};
    std::atomic<std::uint64_t> duplicates{0};
    std::atomic<std::uint64_t> late{0};
    std::atomic<std::uint64_t> sends_ok{0};
    std::atomic<std::uint64_t> receives_ok{0};
    std::atomic<std::uint64_t> send_errors{0};
    std::atomic<std::uint64_t> receive_errors{0};
    std::atomic<std::uint64_t> sends_because_close{0};
    std::atomic<std::uint64_t> receives_because_close{0};
    std::atomic<std::uint64_t> end_of_stream{0};
    std::atomic<std::uint64_t> refused_while_closing{0};
    std::atomic<std::uint64_t> refused_after_reset{0};

    op_record& new_op(side& owner, io_user& user, std::uint64_t tag, io_kind kind)
    {
        std::lock_guard lock(ops_mutex);
        op_record& op = ops.emplace_back();
        op.id = ops.size();
        op.owner = &owner;
        op.user = &user;
        op.tag = tag;
        op.kind = kind;
        return op;
    }

    void fail(std::string what)
    {
        ++failure_count;
        std::lock_guard lock(failures_mutex);
        if (failures.size() < 20)
        {
            failures.push_back(std::move(what));
        }
    }

    [[nodiscard]] bool failed() const noexcept
    {
        return failure_count.load() != 0;
    }
};

// One end of a connection: the library's socket over a SOCKET, and what the test expects of it now.
struct side
{
    side(soak_world& world_, std::string name_) : world(world_), name(std::move(name_)) {}
    side(const side&) = delete;
    side& operator=(const side&) = delete;

    soak_world& world;
    std::string name;
    win32_async_socket::handle socket;
    std::atomic<bool> closing{false};        // close or destroy under way: BECAUSE_CLOSE and invalid_state expected
    std::atomic<bool> reset_expected{false}; // the peer reset the connection: ERROR and os_error expected
    std::atomic<bool> reset_reported{false}; // every IO in flight at the reset completed: end of stream allowed
    std::atomic<bool> destroyed{false};      // no callback may come any more
    std::array<std::atomic<std::uint64_t>, 2> accepted{};  // by io_kind; raised before the call
    std::array<std::atomic<std::uint64_t>, 2> completed{}; // by io_kind
    std::atomic<int> opens{0};

    // Accepted IO whose callback has not run yet.
    [[nodiscard]] std::uint64_t in_flight(io_kind kind) const noexcept
    {
        const auto k = static_cast<std::size_t>(kind);
        const std::uint64_t done = completed[k].load(); // first: accepted only grows past it
        return accepted[k].load() - done;
    }
};

std::string describe(const op_record& op)
{
    return std::string(op.kind == io_kind::send ? "send" : "receive") + " #" + std::to_string(op.id) + " of " +
           op.owner->name;
}

void on_open_complete(void* context, ASYNC_SOCKET_OPEN_RESULT result)
{
    auto* owner = static_cast<side*>(context);
    if (result != ASYNC_SOCKET_OPEN_OK)
    {
        owner->world.fail(owner->name + ": open completed with " + std::to_string(static_cast<int>(result)));
    }
    ++owner->opens;
}

// Counts a callback; false (and a failure) when it is the op's second one or comes after destroy.
bool begin_completion(op_record& op, int result, std::uint32_t bytes)
{
    side& owner = *op.owner;
    soak_world& world = owner.world;
    ++world.callbacks;
    if (op.completions.fetch_add(1) != 0)
    {
        ++world.duplicates;
        world.fail(describe(op) + " completed more than once");
        return false;
    }
    if (owner.destroyed)
    {
        ++world.late;
        world.fail(describe(op) + " completed after its socket was destroyed");
        return false;
    }
    op.result = result;
    op.bytes = bytes;
    return true;
}

void on_send_complete(void* context, ASYNC_SOCKET_SEND_RESULT result)
{
    auto& op = *static_cast<op_record*>(context);
    if (!begin_completion(op, static_cast<int>(result), 0))
    {
        return;
    }
    side& owner = *op.owner;
    soak_world& world = owner.world;
    switch (result)
    {
    case ASYNC_SOCKET_SEND_OK:
        ++world.sends_ok;
        break;
    case ASYNC_SOCKET_SEND_BECAUSE_CLOSE:
        ++world.sends_because_close;
        if (!owner.closing)
        {
            world.fail(describe(op) + " completed with SEND_BECAUSE_CLOSE while its socket was not closing");
        }
        break;
    case ASYNC_SOCKET_SEND_ERROR:
        ++world.send_errors;
        if (!owner.reset_expected)
        {
            world.fail(describe(op) + " completed with SEND_ERROR");
        }
        break;
    default:
        world.fail(describe(op) + " completed with an invalid result " + std::to_string(static_cast<int>(result)));
        break;
    }
    ++owner.completed[static_cast<std::size_t>(io_kind::send)];
    op.user->send_done(op, result);
}

void on_receive_complete(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes)
{
    auto& op = *static_cast<op_record*>(context);
    if (!begin_completion(op, static_cast<int>(result), bytes))
    {
        return;
    }
    side& owner = *op.owner;
    soak_world& world = owner.world;
    switch (result)
    {
    case ASYNC_SOCKET_RECEIVE_OK:
        if (bytes == 0)
        {
            // Under Wine 8.0 a WSARecv issued after a reset has been reported completes with NO_ERROR and 0
            // bytes (Linux's recv returns 0 once the reset's error was taken), where Windows fails it with
            // WSAECONNRESET; the receives pending when the reset arrives do complete with an error.
            ++world.end_of_stream;
            if (!owner.reset_reported)
            {
                world.fail(describe(op) + " completed with RECEIVE_OK and 0 bytes (end of stream)");
            }
        }
        else
        {
            ++world.receives_ok;
        }
        break;
    case ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE:
        ++world.receives_because_close;
        if (!owner.closing)
        {
            world.fail(describe(op) + " completed with RECEIVE_BECAUSE_CLOSE while its socket was not closing");
        }
        if (bytes != 0)
        {
            world.fail(describe(op) + " completed with RECEIVE_BECAUSE_CLOSE and " + std::to_string(bytes) + " bytes");
        }
        break;
    case ASYNC_SOCKET_RECEIVE_ERROR:
        ++world.receive_errors;
        if (!owner.reset_expected)
        {
            world.fail(describe(op) + " completed with RECEIVE_ERROR");
        }
        if (bytes != 0)
        {
            world.fail(describe(op) + " completed with RECEIVE_ERROR and " + std::to_string(bytes) + " bytes");
        }
        break;
    default:
        world.fail(describe(op) + " completed with an invalid result " + std::to_string(static_cast<int>(result)));
        break;
    }
    ++owner.completed[static_cast<std::size_t>(io_kind::receive)];
    op.user->receive_done(op, result, bytes);
}

// A refused call is fine only where the test expects it: invalid_state while the socket closes, os_error
// after the peer's reset.
void note_refusal(side& owner, status refused, const char* call)
{
    if (refused == status::invalid_state && owner.closing)
    {
        ++owner.world.refused_while_closing;
        return;
    }
    if (refused == status::os_error && owner.reset_expected)
    {
        ++owner.world.refused_after_reset;
        return;
    }
    owner.world.fail(owner.name + ": " + call + " refused with " + async_socket::to_string(refused));
}

status post_send(side& owner, io_user& user, std::uint64_t tag, const ASYNC_SOCKET_BUFFER* parts, std::uint32_t count)
{
    op_record& op = owner.world.new_op(owner, user, tag, io_kind::send);
    op.accepted = true;
    ++owner.accepted[static_cast<std::size_t>(io_kind::send)];
    const status posted = owner.socket->send_async(parts, count, &on_send_complete, &op);
    if (posted != status::ok)
    {
        op.accepted = false;
        --owner.accepted[static_cast<std::size_t>(io_kind::send)];
        note_refusal(owner, posted, "send_async");
    }
    return posted;
}

status post_receive(side& owner, io_user& user, std::uint64_t tag, ASYNC_SOCKET_BUFFER* parts, std::uint32_t count)
{
    op_record& op = owner.world.new_op(owner, user, tag, io_kind::receive);
    op.accepted = true;
    ++owner.accepted[static_cast<std::size_t>(io_kind::receive)];
    const status posted = owner.socket->receive_async(parts, count, &on_receive_complete, &op);
    if (posted != status::ok)
    {
        op.accepted = false;
        --owner.accepted[static_cast<std::size_t>(io_kind::receive)];
        note_refusal(owner, posted, "receive_async");
    }
    return posted;
}

// Creates and opens the side's socket over `socket`.
bool open_side(side& owner, EXECUTION_ENGINE_HANDLE engine, SOCKET socket)
{
    owner.socket = win32_async_socket::create(engine, win32_test::as_handle(socket));
    if (!owner.socket)
    {
        owner.world.fail(owner.name + ": create failed");
        return false;
    }
    const status opened = owner.socket->open_async(&on_open_complete, &owner);
    if (opened != status::ok)
    {
        owner.world.fail(owner.name + ": open_async failed with " + async_socket::to_string(opened));
        return false;
    }
    return true;
}

// Closes the side's socket; close must have waited for every callback of its IO.
void close_side(side& owner)
{
    owner.closing = true;
    const status closed = owner.socket->close();
    if (closed != status::ok)
    {
        owner.world.fail(owner.name + ": close failed with " + async_socket::to_string(closed));
    }
    if (owner.in_flight(io_kind::send) != 0 || owner.in_flight(io_kind::receive) != 0)
    {
        owner.world.fail(owner.name + ": close returned with " + std::to_string(owner.in_flight(io_kind::send)) +
                         " sends and " + std::to_string(owner.in_flight(io_kind::receive)) +
                         " receives whose callback had not run");
    }
}

// Destroys the side's socket (closing it if open); from then on no callback may come for it.
void destroy_side(side& owner)
{
    if (!owner.socket)
    {
        return;
    }
    owner.closing = true;
    owner.socket.reset();
    owner.destroyed = true;
}

// Waits until done() holds. Returns false early when a failure was recorded, and when no IO at all has
// completed for stall_seconds.
template <class Done>
bool wait_until(soak_world& world, Done done)
{
    std::uint64_t last_callbacks = world.callbacks.load();
    auto last_change = std::chrono::steady_clock::now();
    for (;;)
    {
        if (world.waiter.wait_for([&] { return world.failed() || done(); }, 1.0))
        {
            return !world.failed();
        }
        const std::uint64_t callbacks = world.callbacks.load();
        if (callbacks != last_callbacks)
        {
            last_callbacks = callbacks;
            last_change = std::chrono::steady_clock::now();
        }
        else if (seconds_since(last_change) > stall_seconds)
        {
            return false;
        }
    }
}

// After a wait that returned false: records why, unless an earlier failure ended the wait.
void fail_unless_failed(soak_world& world, std::string what)
{
    if (!world.failed())
    {
        world.fail(std::move(what) + " (no IO completed for " + std::to_string(static_cast<int>(stall_seconds)) +
                   " s)");
    }
}

// Keeps up to `window` receives posted on one side and hands their bytes on in the order the receives were
// posted, which is the order of the stream, whatever order their callbacks run in. Each receive scatters
// over up to three parts of its slot's buffer. An error, a close or the end of the stream stops the chain
// until start() is called again; so does a refused call.
class receive_ring : public io_user
{
public:
    receive_ring(side& owner, std::size_t window, std::size_t slot_size, std::uint64_t salt)
        : owner_(owner), slots_(window), salt_(salt)
    {
        for (slot& each : slots_)
        {
            each.buffer.resize(slot_size);
        }
    }

    void start()
    {
        {
            std::lock_guard lock(mutex_);
            active_ = true;
            pump();
        }
        owner_.world.waiter.notify();
    }

    // Posts nothing more until start(). Once it returns no post is under way either.
    void stop()
    {
        std::lock_guard lock(mutex_);
        active_ = false;
    }

    void receive_done(op_record& op, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes) override
    {
        {
            std::lock_guard lock(mutex_);
            slot& done = slots_[op.tag % slots_.size()];
            done.state = slot_state::received;
            done.result = result;
            done.bytes = bytes;
            consume_in_order();
            pump();
        }
        after_progress();
        owner_.world.waiter.notify();
    }

protected:
    // Under the lock: the bytes of the next receive in stream order. Returns true when the slot may be reused
    // at once, false to keep it until release_slot.
    virtual bool consume(std::size_t slot_index, std::uint8_t* data, std::uint32_t bytes) = 0;

    // Outside the lock, after each completion.
    virtual void after_progress() {}

    // Under the lock.
    void release_slot(std::size_t index)
    {
        slots_[index].state = slot_state::free;
    }
    void halt()
    {
        active_ = false;
    }
    [[nodiscard]] std::uint32_t slot_bytes(std::size_t index) const
    {
        return slots_[index].bytes;
    }

    // Under the lock: posts receives until the window is full.
    void pump()
    {
        while (active_ && next_post_ - next_consume_ < slots_.size())
        {
            slot& next = slots_[next_post_ % slots_.size()];
            if (next.state != slot_state::free)
            {
                break;
            }
            std::array<ASYNC_SOCKET_BUFFER, 3> parts{};
            const std::uint32_t count =
                split(next.buffer.data(), next.buffer.size(), mix(salt_ ^ next_post_), parts.data(), 3);
            next.state = slot_state::receiving;
            if (post_receive(owner_, *this, next_post_, parts.data(), count) != status::ok)
            {
                next.state = slot_state::free;
                active_ = false;
                break;
            }
            ++next_post_;
        }
    }

    side& owner_;
    std::mutex mutex_;

private:
    enum class slot_state
    {
        free,
        receiving,
        received,
        held,
    };
    struct slot
    {
        std::vector<std::uint8_t> buffer;
        slot_state state = slot_state::free;
        ASYNC_SOCKET_RECEIVE_RESULT result = ASYNC_SOCKET_RECEIVE_RESULT_INVALID;
        std::uint32_t bytes = 0;
    };

    void consume_in_order()
    {
        while (next_consume_ < next_post_)
        {
            const std::size_t index = next_consume_ % slots_.size();
            slot& next = slots_[index];
            if (next.state != slot_state::received)
            {
                break;
            }
            bool release = true;
            if (next.result == ASYNC_SOCKET_RECEIVE_OK && next.bytes > 0)
            {
                if (next.bytes > next.buffer.size())
                {
                    owner_.world.fail(owner_.name + ": a receive reported more bytes than its buffers hold");
                    active_ = false;
                }
                else
                {
                    release = consume(index, next.buffer.data(), next.bytes);
                }
            }
            else
            {
                active_ = false;
            }
            next.state = release ? slot_state::free : slot_state::held;
            ++next_consume_;
        }
    }

    std::vector<slot> slots_;
    std::uint64_t salt_;
    std::uint64_t next_post_ = 0;    // the sequence number of the next receive to post
    std::uint64_t next_consume_ = 0; // of the next one to hand on
    bool active_ = false;
};

// Keeps up to `window` sends posted on one side, each a chunk made by produce() and gathered from the parts
// it says. Sends are issued in the order of the stream, under the ring's lock. A send that does not complete
// with OK, or a refused call, stops the ring until start() is called again.
class send_ring : public io_user
{
public:
    send_ring(side& owner, std::size_t window, std::size_t slot_size) : owner_(owner), slots_(window)
    {
        for (slot& each : slots_)
        {
            each.buffer.resize(slot_size);
        }
    }

    void start()
    {
        {
            std::lock_guard lock(mutex_);
            active_ = true;
            pump();
        }
        owner_.world.waiter.notify();
    }

    // Posts what produce() has to give now.
    void kick()
    {
        {
            std::lock_guard lock(mutex_);
            pump();
        }
        owner_.world.waiter.notify();
    }

    // Posts nothing more until start(). Once it returns no post is under way either.
    void stop()
    {
        std::lock_guard lock(mutex_);
        active_ = false;
    }

    // Bytes of the sends that completed with OK.
    [[nodiscard]] std::uint64_t bytes_sent() const noexcept
    {
        return bytes_sent_.load();
    }

    void send_done(op_record& op, ASYNC_SOCKET_SEND_RESULT result) override
    {
        {
            std::lock_guard lock(mutex_);
            slot& done = slots_[op.tag % slots_.size()];
            done.busy = false;
            if (result == ASYNC_SOCKET_SEND_OK)
            {
                bytes_sent_ += done.length;
            }
            else
            {
                active_ = false;
            }
            pump();
        }
        owner_.world.waiter.notify();
    }

protected:
    // Under the lock: writes the next chunk (at most `capacity` bytes) to `out` and the buffers to send it
    // from to `parts` (at most 4) and `count`; returns its length, 0 when there is nothing to send now.
    virtual std::size_t produce(std::uint8_t* out, std::size_t capacity, std::uint64_t seq, ASYNC_SOCKET_BUFFER* parts,
                                std::uint32_t& count) = 0;

    side& owner_;
    std::mutex mutex_;

private:
    struct slot
    {
        std::vector<std::uint8_t> buffer;
        std::size_t length = 0;
        bool busy = false;
    };

    void pump()
    {
        while (active_)
        {
            slot& next = slots_[next_ % slots_.size()];
            if (next.busy)
            {
                break;
            }
            std::array<ASYNC_SOCKET_BUFFER, 4> parts{};
            std::uint32_t count = 0;
            const std::size_t length = produce(next.buffer.data(), next.buffer.size(), next_, parts.data(), count);
            if (length == 0)
            {
                break;
            }
            next.length = length;
            next.busy = true;
            if (post_send(owner_, *this, next_, parts.data(), count) != status::ok)
            {
                next.busy = false;
                active_ = false;
                break;
            }
            ++next_;
        }
    }

    std::vector<slot> slots_;
    std::uint64_t next_ = 0;
    std::atomic<std::uint64_t> bytes_sent_{0};
    bool active_ = false;
};

// Sends a pattern stream, `limit` bytes in all (UINT64_MAX: no end), in chunks of half to all of
// `chunk` bytes gathered from 1 to 4 buffers. new_epoch() starts a new stream, led by its marker.
class stream_sender final : public send_ring
{
public:
    stream_sender(side& owner, std::size_t window, std::size_t chunk, std::uint64_t seed, std::uint64_t limit,
                  std::uint64_t salt)
        : send_ring(owner, window, chunk), generator_(seed), limit_(limit), salt_(salt)
    {
    }

    // Only while the ring is stopped (its socket closed). Returns the bytes of the epoch that ends (its marker
    // included) whose sends completed with OK.
    std::uint64_t new_epoch(std::uint64_t seed)
    {
        std::lock_guard lock(mutex_);
        const std::uint64_t sent_in_epoch = bytes_sent() - epoch_start_;
        epoch_start_ = bytes_sent();
        generator_ = pattern_stream(seed);
        preamble_ = epoch_marker(seed);
        preamble_sent_ = 0;
        return sent_in_epoch;
    }

private:
    std::size_t produce(std::uint8_t* out, std::size_t capacity, std::uint64_t seq, ASYNC_SOCKET_BUFFER* parts,
                        std::uint32_t& count) override
    {
        if (produced_ >= limit_)
        {
            return 0;
        }
        const std::uint64_t r = mix(salt_ ^ seq);
        std::size_t length = capacity / 2 + static_cast<std::size_t>(r % (capacity / 2 + 1));
        if (length > limit_ - produced_)
        {
            length = static_cast<std::size_t>(limit_ - produced_);
        }
        const std::size_t from_preamble = std::min(length, preamble_.size() - preamble_sent_);
        if (from_preamble > 0)
        {
            std::memcpy(out, preamble_.data() + preamble_sent_, from_preamble);
            preamble_sent_ += from_preamble;
        }
        generator_.fill(out + from_preamble, length - from_preamble);
        produced_ += length;
        count = split(out, length, mix(r), parts, 4);
        return length;
    }

    pattern_stream generator_;
    std::vector<std::uint8_t> preamble_;
    std::size_t preamble_sent_ = 0;
    std::uint64_t epoch_start_ = 0; // bytes_sent() when the epoch began
    std::uint64_t produced_ = 0;
    std::uint64_t limit_;
    std::uint64_t salt_;
};

// Checks a pattern stream byte for byte. After expect_epoch() it looks for the new epoch's marker: the bytes
// before it must continue the old stream (they may stop anywhere), the bytes after it are the new stream.
class stream_verifier final : public receive_ring
{
public:
    stream_verifier(side& owner, std::size_t window, std::size_t slot_size, std::uint64_t seed, std::uint64_t salt)
        : receive_ring(owner, window, slot_size, salt), expected_(seed)
    {
    }

    [[nodiscard]] std::uint64_t verified() const noexcept
    {
        return verified_.load();
    }
    [[nodiscard]] std::uint64_t verified_in_epoch() const noexcept
    {
        return verified_in_epoch_.load();
    }
    [[nodiscard]] std::uint64_t epoch() const noexcept
    {
        return epoch_.load();
    }
    // The bytes that arrived of the epoch before the current one, its marker included.
    [[nodiscard]] std::uint64_t previous_epoch_bytes() const noexcept
    {
        return previous_epoch_bytes_.load();
    }

    // The peer's sender starts epoch `epoch` (seeded with `seed`) after the bytes it has sent so far.
    void expect_epoch(std::uint64_t epoch, std::uint64_t seed)
    {
        std::lock_guard lock(mutex_);
        if (scanning_)
        {
            owner_.world.fail(owner_.name + ": a new epoch was announced before the last one's marker arrived");
        }
        scanning_ = true;
        next_epoch_ = epoch;
        next_expected_ = pattern_stream(seed);
        marker_ = epoch_marker(seed);
    }

private:
    bool consume(std::size_t, std::uint8_t* data, std::uint32_t bytes) override
    {
        if (broken_)
        {
            return true;
        }
        if (!scanning_)
        {
            check(data, bytes);
            return true;
        }
        pending_.insert(pending_.end(), data, data + bytes);
        const auto found = std::search(pending_.begin(), pending_.end(), marker_.begin(), marker_.end());
        if (found == pending_.end())
        {
            // A marker can only start in the last marker-size-minus-one bytes: the others are the old stream.
            const std::size_t keep = std::min(pending_.size(), marker_.size() - 1);
            check(pending_.data(), pending_.size() - keep);
            pending_.erase(pending_.begin(), pending_.end() - static_cast<std::ptrdiff_t>(keep));
            return true;
        }
        const auto before = static_cast<std::size_t>(found - pending_.begin());
        check(pending_.data(), before);
        previous_epoch_bytes_ = epoch_marker_size_ + verified_in_epoch_.load();
        epoch_marker_size_ = marker_.size();
        expected_ = next_expected_;
        epoch_ = next_epoch_;
        verified_in_epoch_ = 0;
        scanning_ = false;
        check(pending_.data() + before + marker_.size(), pending_.size() - before - marker_.size());
        pending_.clear();
        return true;
    }

    void check(const std::uint8_t* data, std::size_t size)
    {
        if (broken_ || size == 0)
        {
            return;
        }
        const std::size_t same = expected_.compare(data, size);
        if (same != size)
        {
            broken_ = true;
            halt();
            owner_.world.fail(owner_.name + ": byte " + std::to_string(verified_in_epoch_.load() + same) +
                              " of epoch " + std::to_string(epoch_.load()) + " differs from the pattern");
            return;
        }
        verified_ += size;
        verified_in_epoch_ += size;
    }

    pattern_stream expected_;
    pattern_stream next_expected_;
    std::vector<std::uint8_t> marker_;
    std::vector<std::uint8_t> pending_;
    std::uint64_t next_epoch_ = 0;
    std::uint64_t epoch_marker_size_ = 0; // epoch 0 has no marker
    bool scanning_ = false;
    bool broken_ = false;
    std::atomic<std::uint64_t> verified_{0};
    std::atomic<std::uint64_t> verified_in_epoch_{0};
    std::atomic<std::uint64_t> epoch_{0}; // written after previous_epoch_bytes_
    std::atomic<std::uint64_t> previous_epoch_bytes_{0};
};

// The echo: receives into `window` slots and sends each receive's bytes back, in stream order, gathered from
// up to two buffers; a slot is received into again once its echo has been sent. With a seed it also checks
// the stream it echoes.
class echo_ring final : public receive_ring
{
public:
    echo_ring(side& owner, std::size_t window, std::size_t slot_size, bool verify, std::uint64_t seed,
              std::uint64_t salt)
        : receive_ring(owner, window, slot_size, salt), verify_(verify), expected_(seed), salt_(mix(salt))
    {
    }

    // Bytes whose echo completed with OK.
    [[nodiscard]] std::uint64_t echoed() const noexcept
    {
        return echoed_.load();
    }
    [[nodiscard]] std::uint64_t verified() const noexcept
    {
        return verified_.load();
    }

    void send_done(op_record& op, ASYNC_SOCKET_SEND_RESULT result) override
    {
        {
            std::lock_guard lock(mutex_);
            const auto index = static_cast<std::size_t>(op.tag);
            if (result == ASYNC_SOCKET_SEND_OK)
            {
                echoed_ += slot_bytes(index);
            }
            else
            {
                halt();
            }
            release_slot(index);
            pump();
        }
        owner_.world.waiter.notify();
    }

private:
    bool consume(std::size_t index, std::uint8_t* data, std::uint32_t bytes) override
    {
        if (verify_ && !broken_)
        {
            const std::size_t same = expected_.compare(data, bytes);
            if (same != bytes)
            {
                broken_ = true;
                owner_.world.fail(owner_.name + ": byte " + std::to_string(verified_.load() + same) +
                                  " of the stream it echoes differs from the pattern");
            }
            else
            {
                verified_ += bytes;
            }
        }
        std::array<ASYNC_SOCKET_BUFFER, 2> parts{};
        const std::uint32_t count = split(data, bytes, mix(salt_ ^ echoes_++), parts.data(), 2);
        if (post_send(owner_, *this, index, parts.data(), count) != status::ok)
        {
            halt();
            return true;
        }
        return false;
    }

    bool verify_;
    bool broken_ = false;
    pattern_stream expected_;
    std::uint64_t salt_;
    std::uint64_t echoes_ = 0;
    std::atomic<std::uint64_t> echoed_{0};
    std::atomic<std::uint64_t> verified_{0};
};

// Small framed messages: a 12-byte header (sequence number, payload length, check word) and 1 to 200 bytes
// of payload, all derived from the sequence number and the seed.
struct message_codec
{
    static constexpr std::size_t header_size = 12;
    static constexpr std::uint32_t max_payload = 200;

    std::uint64_t seed;

    [[nodiscard]] std::uint32_t payload_length(std::uint64_t seq) const noexcept
    {
        return 1 + static_cast<std::uint32_t>(mix(seed ^ (seq * 2 + 1)) % max_payload);
    }
    [[nodiscard]] std::uint32_t check_word(std::uint64_t seq) const noexcept
    {
        return static_cast<std::uint32_t>(mix(seed + seq) >> 32);
    }
    void payload(std::uint64_t seq, std::uint8_t* out, std::uint32_t length) const noexcept
    {
        pattern_stream(mix(seed ^ (seq * 2))).fill(out, length);
    }
};

// Sends messages 0 .. total-1, each as one send gathered from its header and its payload, with at most
// `window` messages sent and not yet come back.
class message_sender final : public send_ring
{
public:
    message_sender(side& owner, std::size_t window, message_codec codec, std::uint64_t total,
                   const std::atomic<std::uint64_t>& returned)
        : send_ring(owner, window, message_codec::header_size + message_codec::max_payload), window_(window),
          codec_(codec), total_(total), returned_(returned)
    {
    }

private:
    std::size_t produce(std::uint8_t* out, std::size_t, std::uint64_t seq, ASYNC_SOCKET_BUFFER* parts,
                        std::uint32_t& count) override
    {
        if (seq >= total_ || seq >= returned_.load() + window_)
        {
            return 0;
        }
        const std::uint32_t length = codec_.payload_length(seq);
        const std::array<std::uint32_t, 3> header = {static_cast<std::uint32_t>(seq), length, codec_.check_word(seq)};
        std::memcpy(out, header.data(), message_codec::header_size);
        codec_.payload(seq, out + message_codec::header_size, length);
        parts[0] = {out, static_cast<std::uint32_t>(message_codec::header_size)};
        parts[1] = {out + message_codec::header_size, length};
        count = 2;
        return message_codec::header_size + length;
    }

    std::size_t window_;
    message_codec codec_;
    std::uint64_t total_;
    const std::atomic<std::uint64_t>& returned_;
};

// Parses the echoed messages and checks each one: the next sequence number, its length, its check word and
// its payload. Tells the sender after each receive, so that it can fill its window again.
class message_receiver final : public receive_ring
{
public:
    message_receiver(side& owner, std::size_t window, std::size_t slot_size, message_codec codec, std::uint64_t salt)
        : receive_ring(owner, window, slot_size, salt), codec_(codec)
    {
    }

    void set_sender(send_ring* sender) noexcept
    {
        sender_ = sender;
    }
    [[nodiscard]] const std::atomic<std::uint64_t>& returned() const noexcept
    {
        return returned_;
    }
    [[nodiscard]] std::uint64_t bytes() const noexcept
    {
        return bytes_.load();
    }

private:
    bool consume(std::size_t, std::uint8_t* data, std::uint32_t bytes) override
    {
        if (broken_)
        {
            return true;
        }
        pending_.insert(pending_.end(), data, data + bytes);
        std::size_t offset = 0;
        while (pending_.size() - offset >= message_codec::header_size)
        {
            std::array<std::uint32_t, 3> header{};
            std::memcpy(header.data(), pending_.data() + offset, message_codec::header_size);
            const std::uint64_t seq = returned_.load();
            if (header[0] != static_cast<std::uint32_t>(seq) || header[1] != codec_.payload_length(seq) ||
                header[2] != codec_.check_word(seq))
            {
                fail_at(seq, "header");
                return true;
            }
            if (pending_.size() - offset < message_codec::header_size + header[1])
            {
                break;
            }
            std::array<std::uint8_t, message_codec::max_payload> expected{};
            codec_.payload(seq, expected.data(), header[1]);
            if (std::memcmp(expected.data(), pending_.data() + offset + message_codec::header_size, header[1]) != 0)
            {
                fail_at(seq, "payload");
                return true;
            }
            offset += message_codec::header_size + header[1];
            bytes_ += message_codec::header_size + header[1];
            ++returned_;
        }
        pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(offset));
        return true;
    }

    void after_progress() override
    {
        if (sender_ != nullptr)
        {
            sender_->kick();
        }
    }

    void fail_at(std::uint64_t seq, const char* part)
    {
        broken_ = true;
        halt();
        owner_.world.fail(owner_.name + ": the " + part + " of echoed message " + std::to_string(seq) +
                          " is not the one sent");
    }

    message_codec codec_;
    send_ring* sender_ = nullptr;
    std::vector<std::uint8_t> pending_;
    bool broken_ = false;
    std::atomic<std::uint64_t> returned_{0};
    std::atomic<std::uint64_t> bytes_{0};
};

struct ledger_figures
{
    std::uint64_t accepted = 0;
    std::uint64_t refused = 0;
    std::uint64_t completions = 0;
};

// Each accepted IO completed exactly once, each refused one never.
ledger_figures check_ledger(soak_world& world)
{
    ledger_figures figures;
    std::lock_guard lock(world.ops_mutex);
    for (const op_record& op : world.ops)
    {
        const int completions = op.completions.load();
        figures.completions += static_cast<std::uint64_t>(completions);
        if (op.accepted)
        {
            ++figures.accepted;
            if (completions != 1)
            {
                world.fail(describe(op) + " was accepted and completed " + std::to_string(completions) + " times");
            }
        }
        else
        {
            ++figures.refused;
            if (completions != 0)
            {
                world.fail(describe(op) + " was refused and completed " + std::to_string(completions) + " times");
            }
        }
    }
    return figures;
}

// The side's IO in the ledger from id `first_id` on: kind, id, and the result, or "outstanding".
std::string describe_ops(soak_world& world, const side& owner, std::uint64_t first_id)
{
    std::string text;
    std::lock_guard lock(world.ops_mutex);
    for (auto op = world.ops.begin() + static_cast<std::ptrdiff_t>(std::min<std::uint64_t>(first_id, world.ops.size()));
         op != world.ops.end(); ++op)
    {
        if (op->owner != &owner)
        {
            continue;
        }
        text +=
            std::string(" ") + (op->kind == io_kind::send ? "send" : "receive") + "#" + std::to_string(op->id) + "=";
        if (!op->accepted)
        {
            text += "refused";
        }
        else if (op->completions.load() == 0)
        {
            text += "OUTSTANDING";
        }
        else
        {
            text += std::to_string(op->result.load()) + "/" + std::to_string(op->bytes.load());
        }
    }
    return text;
}

std::uint64_t ops_so_far(soak_world& world)
{
    std::lock_guard lock(world.ops_mutex);
    return world.ops.size();
}

// Turns what the threads recorded into test failures.
void check_world(soak_world& world)
{
    std::lock_guard lock(world.failures_mutex);
    for (const std::string& failure : world.failures)
    {
        FAIL_CHECK(failure);
    }
    CHECK(world.failure_count.load() == 0);
    CHECK(world.duplicates.load() == 0);
    CHECK(world.late.load() == 0);
}

double mib_of(std::uint64_t bytes)
{
    return static_cast<double>(bytes) / static_cast<double>(mib);
}

std::string pair_name(std::size_t index, const char* role)
{
    return "pair " + std::to_string(index) + " " + role;
}

// A loopback connection with the library's socket on each end.
struct connected_sides
{
    connected_sides(soak_world& world, std::size_t index, const char* client_role, const char* server_role)
        : client(world, pair_name(index, client_role)), server(world, pair_name(index, server_role))
    {
    }
    ~connected_sides()
    {
        destroy_sides();
    }
    connected_sides(const connected_sides&) = delete;
    connected_sides& operator=(const connected_sides&) = delete;

    bool open(EXECUTION_ENGINE_HANDLE engine)
    {
        if (!sockets.valid())
        {
            client.world.fail(client.name + ": no loopback connection");
            return false;
        }
        return open_side(client, engine, sockets.client) && open_side(server, engine, sockets.server);
    }
    void close_sides()
    {
        close_side(client);
        close_side(server);
    }
    void destroy_sides()
    {
        destroy_side(client);
        destroy_side(server);
    }

    win32_test::socket_pair sockets = win32_test::make_loopback_pair(); // closed after the sockets over it
    side client;
    side server;
};

// Bulk: the client drives (sends the stream, checks the echo), the server echoes (and checks).
struct bulk_pair
{
    bulk_pair(soak_world& world, std::size_t index, std::uint64_t bytes)
        : ends(world, index, "driver", "echo"),
          sender(ends.client, 4, 256 * kib, stream_seed(1, index, 0, 0), bytes, mix(index * 8 + 1)),
          verifier(ends.client, 4, 64 * kib, stream_seed(1, index, 0, 0), mix(index * 8 + 2)),
          echo(ends.server, 8, 64 * kib, true, stream_seed(1, index, 0, 0), mix(index * 8 + 3))
    {
    }
    ~bulk_pair()
    {
        ends.destroy_sides(); // before the rings the callbacks use
    }
    bulk_pair(const bulk_pair&) = delete;
    bulk_pair& operator=(const bulk_pair&) = delete;

    connected_sides ends;
    stream_sender sender;
    stream_verifier verifier;
    echo_ring echo;
};

// Messages: the client sends messages and checks them as they come back, the server echoes.
struct message_pair
{
    message_pair(soak_world& world, std::size_t index, std::uint64_t messages, std::size_t window)
        : ends(world, index, "driver", "echo"), codec{stream_seed(2, index, 0, 0)},
          receiver(ends.client, 4, 16 * kib, codec, mix(index * 8 + 4)),
          sender(ends.client, window, codec, messages, receiver.returned()),
          echo(ends.server, 4, 16 * kib, false, 0, mix(index * 8 + 5)), total(messages)
    {
        receiver.set_sender(&sender);
    }
    ~message_pair()
    {
        ends.destroy_sides();
    }
    message_pair(const message_pair&) = delete;
    message_pair& operator=(const message_pair&) = delete;

    connected_sides ends;
    message_codec codec;
    message_receiver receiver;
    message_sender sender;
    echo_ring echo;
    std::uint64_t total;
};

// Reopen: each end streams to the other; client to server is direction 0, server to client direction 1.
struct reopen_pair
{
    reopen_pair(soak_world& world, std::size_t index)
        : ends(world, index, "client", "server"),
          client_out(ends.client, 4, 64 * kib, stream_seed(4, index, 0, 0), UINT64_MAX, mix(index * 8 + 6)),
          server_out(ends.server, 4, 64 * kib, stream_seed(4, index, 1, 0), UINT64_MAX, mix(index * 8 + 7)),
          client_in(ends.client, 4, 32 * kib, stream_seed(4, index, 1, 0), mix(index * 8 + 8)),
          server_in(ends.server, 4, 32 * kib, stream_seed(4, index, 0, 0), mix(index * 8 + 9))
    {
    }
    ~reopen_pair()
    {
        ends.destroy_sides();
    }
    reopen_pair(const reopen_pair&) = delete;
    reopen_pair& operator=(const reopen_pair&) = delete;

    void start()
    {
        client_in.start();
        server_in.start();
        client_out.start();
        server_out.start();
    }

    connected_sides ends;
    stream_sender client_out;
    stream_sender server_out;
    stream_verifier client_in;
    stream_verifier server_in;
    std::uint64_t reopens = 0;
    std::uint64_t cuts_with_bytes_out = 0;    // closes after which more of the old stream arrived than OK sends held
    std::uint64_t bytes_out_of_cut_sends = 0; // those extra bytes: sent by sends that completed with BECAUSE_CLOSE
};

// Closes one end while both streams flow, starts a new epoch of its outgoing stream, reopens it on the same
// SOCKET and waits until both streams have moved on by `resume_bytes`; `cycles` times, alternating ends.
void run_reopen_cycles(soak_world& world, reopen_pair& pair, std::size_t index, std::uint64_t cycles,
                       std::uint64_t resume_bytes)
{
    std::array<std::uint64_t, 2> epochs{};
    std::uint64_t client_mark = pair.client_in.verified();
    std::uint64_t server_mark = pair.server_in.verified();
    for (std::uint64_t cycle = 0; cycle < cycles && !world.failed(); ++cycle)
    {
        // Traffic flows both ways.
        if (!wait_until(world,
                        [&]
                        {
                            return pair.client_in.verified() >= client_mark + resume_bytes &&
                                   pair.server_in.verified() >= server_mark + resume_bytes;
                        }))
        {
            fail_unless_failed(world, pair_name(index, "") + ": traffic did not flow both ways before close " +
                                          std::to_string(cycle));
            return;
        }

        const bool client_turn = cycle % 2 == 0;
        const std::size_t direction = client_turn ? 0 : 1;
        side& closed = client_turn ? pair.ends.client : pair.ends.server;
        stream_sender& out = client_turn ? pair.client_out : pair.server_out;
        stream_verifier& in = client_turn ? pair.client_in : pair.server_in;
        stream_verifier& peer_in = client_turn ? pair.server_in : pair.client_in;

        close_side(closed);

        const std::uint64_t epoch = ++epochs[direction];
        const std::uint64_t seed = stream_seed(4, index, direction, epoch);
        const std::uint64_t sent_ok = out.new_epoch(seed);
        peer_in.expect_epoch(epoch, seed);

        const status opened = closed.socket->open_async(&on_open_complete, &closed);
        if (opened != status::ok)
        {
            world.fail(closed.name + ": reopen failed with " + async_socket::to_string(opened));
            return;
        }
        closed.closing = false;
        ++pair.reopens;
        const std::uint64_t in_mark = in.verified();
        in.start();
        out.start();

        // The stream into the reopened end continues where it stopped; the stream out of it starts its new
        // epoch after the marker.
        if (!wait_until(world,
                        [&]
                        {
                            return in.verified() >= in_mark + resume_bytes && peer_in.epoch() == epoch &&
                                   peer_in.verified_in_epoch() >= resume_bytes;
                        }))
        {
            fail_unless_failed(world, closed.name + ": traffic did not resume after reopen " + std::to_string(cycle));
            return;
        }
        // Every byte of a send that completed with OK arrived before the marker; a send cut by close may have
        // sent some of its bytes too.
        const std::uint64_t arrived = peer_in.previous_epoch_bytes();
        if (arrived < sent_ok)
        {
            world.fail(closed.name + ": " + std::to_string(sent_ok - arrived) + " bytes of sends that completed with " +
                       "OK before close " + std::to_string(cycle) + " never arrived");
        }
        else if (arrived > sent_ok)
        {
            ++pair.cuts_with_bytes_out;
            pair.bytes_out_of_cut_sends += arrived - sent_ok;
        }
        client_mark = pair.client_in.verified();
        server_mark = pair.server_in.verified();
    }
}

// Reads exactly `size` bytes from a blocking SOCKET and checks them against `expected`.
bool receive_blocking(SOCKET socket, std::size_t size, pattern_stream& expected, std::string& why)
{
    std::vector<std::uint8_t> buffer(64 * kib);
    std::size_t done = 0;
    while (done < size)
    {
        const int got = recv(socket, reinterpret_cast<char*>(buffer.data()),
                             static_cast<int>(std::min(buffer.size(), size - done)), 0);
        if (got <= 0)
        {
            why = "recv returned " + std::to_string(got) + ", error " + std::to_string(WSAGetLastError());
            return false;
        }
        if (expected.compare(buffer.data(), static_cast<std::size_t>(got)) != static_cast<std::size_t>(got))
        {
            why = "the bytes the peer received differ from the pattern";
            return false;
        }
        done += static_cast<std::size_t>(got);
    }
    return true;
}

// Writes `size` bytes of `source` to a blocking SOCKET.
bool send_blocking(SOCKET socket, std::size_t size, pattern_stream& source, std::string& why)
{
    std::vector<std::uint8_t> buffer(64 * kib);
    std::size_t done = 0;
    while (done < size)
    {
        const std::size_t part = std::min(buffer.size(), size - done);
        source.fill(buffer.data(), part);
        std::size_t written = 0;
        while (written < part)
        {
            const int put = send(socket, reinterpret_cast<const char*>(buffer.data() + written),
                                 static_cast<int>(part - written), 0);
            if (put <= 0)
            {
                why = "send returned " + std::to_string(put) + ", error " + std::to_string(WSAGetLastError());
                return false;
            }
            written += static_cast<std::size_t>(put);
        }
        done += part;
    }
    return true;
}

// Our end of a reset round: the library's socket streams to the peer and checks the peer's stream.
struct reset_end
{
    static constexpr std::uint64_t send_window = 4;
    static constexpr std::uint64_t receive_window = 4;

    // The IO issued after the reset; its completions are only counted (by the ledger and the side).
    struct late_io : io_user
    {
        std::array<std::uint8_t, 64> send_bytes{};
        std::array<std::uint8_t, 64> receive_bytes{};
    };

    reset_end(soak_world& world, std::string name, std::uint64_t up_seed, std::uint64_t down_seed, std::uint64_t salt)
        : ours(world, std::move(name)), sender(ours, send_window, 64 * kib, up_seed, UINT64_MAX, salt),
          verifier(ours, receive_window, 16 * kib, down_seed, mix(salt))
    {
    }
    ~reset_end()
    {
        destroy_side(ours);
    }
    reset_end(const reset_end&) = delete;
    reset_end& operator=(const reset_end&) = delete;

    side ours;
    stream_sender sender;
    stream_verifier verifier;
    late_io late;
};

struct reset_figures
{
    std::uint64_t late_sends_accepted = 0;
    std::uint64_t late_receives_accepted = 0;
};

// `rounds` times: a new connection; our end (the library) streams both ways with the peer (a raw blocking
// SOCKET on this thread), which takes `peer_reads` bytes, sends `peer_writes` bytes, and once those have
// arrived and our sends and receives are in flight, aborts the connection.
void run_reset_rounds(soak_world& world, EXECUTION_ENGINE_HANDLE engine, std::size_t index, std::uint64_t rounds,
                      std::size_t peer_reads, std::size_t peer_writes, reset_figures& figures,
                      std::mutex& figures_mutex)
{
    for (std::uint64_t round = 0; round < rounds && !world.failed(); ++round)
    {
        win32_test::socket_pair sockets = win32_test::make_loopback_pair(); // outlives `end` below
        const std::string name = pair_name(index, "round ") + std::to_string(round);
        if (!sockets.valid())
        {
            world.fail(name + ": no loopback connection");
            return;
        }
        const std::uint64_t up_seed = stream_seed(3, index, 0, round);
        const std::uint64_t down_seed = stream_seed(3, index, 1, round);
        // Small buffers, so that our sends soon wait for the peer and are still pending when it resets. Not
        // below the loopback MSS (64 KiB): a smaller window stalls TCP on its persist timer.
        const int small_buffer = 128 * kib;
        setsockopt(sockets.client, SOL_SOCKET, SO_SNDBUF, reinterpret_cast<const char*>(&small_buffer),
                   sizeof(small_buffer));
        setsockopt(sockets.server, SOL_SOCKET, SO_RCVBUF, reinterpret_cast<const char*>(&small_buffer),
                   sizeof(small_buffer));
        reset_end end(world, name, up_seed, down_seed, mix(index * 1000 + round));
        if (!open_side(end.ours, engine, sockets.client))
        {
            return;
        }
        end.verifier.start();
        end.sender.start();

        pattern_stream up(up_seed);
        pattern_stream down(down_seed);
        std::string why;
        if (!receive_blocking(sockets.server, peer_reads, up, why) ||
            !send_blocking(sockets.server, peer_writes, down, why))
        {
            world.fail(name + ": the peer: " + why);
            return;
        }
        // Both windows full: all the peer's bytes arrived and every receive after them is posted, and every
        // send slot is busy. Then the chains stop, so that no IO is issued at the moment of the reset: under
        // Wine 8.0 a WSARecv issued concurrently with the arrival of the reset may stay pending until cancelled
        // (seen with raw threadpool IO as well; docs/reliability.md).
        if (!wait_until(world,
                        [&]
                        {
                            return end.verifier.verified() >= peer_writes &&
                                   end.ours.in_flight(io_kind::receive) == reset_end::receive_window &&
                                   end.ours.in_flight(io_kind::send) == reset_end::send_window;
                        }))
        {
            fail_unless_failed(world, name + ": the peer's bytes did not arrive, or the windows did not fill");
            return;
        }
        end.verifier.stop();
        end.sender.stop();

        const std::uint64_t ops_before_reset = ops_so_far(world);
        end.ours.reset_expected = true;
        const linger abort_on_close{1, 0};
        if (setsockopt(sockets.server, SOL_SOCKET, SO_LINGER, reinterpret_cast<const char*>(&abort_on_close),
                       sizeof(abort_on_close)) != 0)
        {
            world.fail(name + ": setsockopt(SO_LINGER) failed");
            return;
        }
        sockets.close_server();

        // Every IO in flight completes: the receives with ERROR, the sends with OK (if their bytes were taken
        // before the reset) or ERROR.
        const auto all_completed = [&]
        { return end.ours.in_flight(io_kind::send) == 0 && end.ours.in_flight(io_kind::receive) == 0; };
        if (!wait_until(world, all_completed))
        {
            fail_unless_failed(
                world,
                name + ": IO still outstanding after the peer's reset; its IO from the reset " + "on (result/bytes):" +
                    describe_ops(world, end.ours, ops_before_reset - std::min<std::uint64_t>(ops_before_reset, 8)));
            return;
        }
        if (end.verifier.verified() != peer_writes)
        {
            world.fail(name + ": received " + std::to_string(end.verifier.verified()) + " bytes, the peer sent " +
                       std::to_string(peer_writes));
        }

        // IO issued once the reset has been reported: refused (os_error), or accepted and completed once with
        // ERROR (or, under Wine, a receive with end of stream).
        end.ours.reset_reported = true;
        ASYNC_SOCKET_BUFFER late_send{end.late.send_bytes.data(),
                                      static_cast<std::uint32_t>(end.late.send_bytes.size())};
        ASYNC_SOCKET_BUFFER late_receive{end.late.receive_bytes.data(),
                                         static_cast<std::uint32_t>(end.late.receive_bytes.size())};
        const bool late_send_accepted = post_send(end.ours, end.late, 0, &late_send, 1) == status::ok;
        const bool late_receive_accepted = post_receive(end.ours, end.late, 0, &late_receive, 1) == status::ok;
        if (!wait_until(world, all_completed))
        {
            fail_unless_failed(world, name + ": IO issued after the reset did not complete:" +
                                          describe_ops(world, end.ours, ops_before_reset));
            return;
        }
        {
            std::lock_guard lock(figures_mutex);
            figures.late_sends_accepted += late_send_accepted ? 1 : 0;
            figures.late_receives_accepted += late_receive_accepted ? 1 : 0;
        }
        close_side(end.ours);
        destroy_side(end.ours);
    }
}

} // namespace

TEST_CASE("soak: streams of 64 MiB each way per pair through an echo built on the library arrive byte for byte")
{
    win32_test::wsa_session wsa;
    REQUIRE(wsa.ok());
    soak_world world; // outlives every socket
    engine_ref engine;
    REQUIRE(engine.engine != nullptr);
    const std::uint64_t bytes = scaled(64.0 * mib, 64 * kib);

    std::vector<std::unique_ptr<bulk_pair>> pairs;
    for (std::size_t i = 0; i < pair_count; ++i)
    {
        pairs.push_back(std::make_unique<bulk_pair>(world, i, bytes));
        REQUIRE(pairs.back()->ends.open(engine.engine));
    }

    const auto start = std::chrono::steady_clock::now();
    for (auto& pair : pairs)
    {
        pair->echo.start();
        pair->verifier.start();
        pair->sender.start();
    }
    const bool finished = wait_until(world,
                                     [&]
                                     {
                                         return std::all_of(pairs.begin(), pairs.end(),
                                                            [&](const auto& pair) {
                                                                return pair->verifier.verified() >= bytes &&
                                                                       pair->echo.echoed() >= bytes &&
                                                                       pair->sender.bytes_sent() >= bytes;
                                                            });
                                     });
    const double seconds = seconds_since(start);
    CHECK(finished);

    // The receives still posted (the driver's window, the echo's) are cut by close.
    for (auto& pair : pairs)
    {
        pair->ends.close_sides();
        CHECK(pair->sender.bytes_sent() == bytes);
        CHECK(pair->echo.verified() == bytes);
        CHECK(pair->echo.echoed() == bytes);
        CHECK(pair->verifier.verified() == bytes);
    }
    const ledger_figures ledger = check_ledger(world);
    for (auto& pair : pairs)
    {
        pair->ends.destroy_sides();
    }

    const std::uint64_t each_way = bytes * pair_count;
    MESSAGE("bulk (scale " << soak_scale() << "): " << pair_count << " pairs, " << mib_of(each_way)
                           << " MiB each way checked byte for byte (driver->echo and echo->driver) in " << seconds
                           << " s: " << mib_of(2 * each_way) / seconds << " MiB/s both ways together; IO accepted "
                           << ledger.accepted << ", refused " << ledger.refused << ", callbacks "
                           << world.callbacks.load() << " (sends OK " << world.sends_ok.load() << ", receives OK "
                           << world.receives_ok.load() << ", receives BECAUSE_CLOSE at the final close "
                           << world.receives_because_close.load() << ", errors "
                           << world.send_errors.load() + world.receive_errors.load() << ")");
    CHECK(world.callbacks.load() == ledger.accepted);
    check_world(world);
}

TEST_CASE("soak: 100,000 small messages echoed over several pairs come back complete and in order")
{
    win32_test::wsa_session wsa;
    REQUIRE(wsa.ok());
    soak_world world;
    engine_ref engine;
    REQUIRE(engine.engine != nullptr);
    const std::uint64_t total = scaled(100000.0, pair_count);
    constexpr std::size_t window = 32; // messages in flight per pair

    std::vector<std::unique_ptr<message_pair>> pairs;
    for (std::size_t i = 0; i < pair_count; ++i)
    {
        const std::uint64_t share = total / pair_count + (i < total % pair_count ? 1 : 0);
        pairs.push_back(std::make_unique<message_pair>(world, i, share, window));
        REQUIRE(pairs.back()->ends.open(engine.engine));
    }

    const auto start = std::chrono::steady_clock::now();
    for (auto& pair : pairs)
    {
        pair->echo.start();
        pair->receiver.start();
        pair->sender.start();
    }
    const auto returned = [&]
    {
        std::uint64_t sum = 0;
        for (const auto& pair : pairs)
        {
            sum += pair->receiver.returned().load();
        }
        return sum;
    };
    const bool finished = wait_until(world, [&] { return returned() >= total; });
    const double seconds = seconds_since(start);
    CHECK(finished);

    std::uint64_t bytes = 0;
    for (auto& pair : pairs)
    {
        pair->ends.close_sides();
        CHECK(pair->receiver.returned().load() == pair->total);
        CHECK(pair->echo.echoed() == pair->receiver.bytes());
        bytes += pair->receiver.bytes();
    }
    const ledger_figures ledger = check_ledger(world);
    for (auto& pair : pairs)
    {
        pair->ends.destroy_sides();
    }

    MESSAGE("messages (scale " << soak_scale() << "): " << returned() << " messages of 13 to 212 bytes ("
                               << mib_of(bytes) << " MiB) echoed and checked over " << pair_count << " pairs, "
                               << window << " in flight per pair, in " << seconds
                               << " s: " << static_cast<double>(returned()) / seconds << " messages/s; IO accepted "
                               << ledger.accepted << ", refused " << ledger.refused << ", callbacks "
                               << world.callbacks.load() << " (sends OK " << world.sends_ok.load() << ", receives OK "
                               << world.receives_ok.load() << ", receives BECAUSE_CLOSE at the final close "
                               << world.receives_because_close.load() << ", errors "
                               << world.send_errors.load() + world.receive_errors.load() << ")");
    CHECK(returned() == total);
    CHECK(world.callbacks.load() == ledger.accepted);
    check_world(world);
}

TEST_CASE("soak: a peer's reset in mid-stream completes every accepted IO exactly once with OK or ERROR")
{
    win32_test::wsa_session wsa;
    REQUIRE(wsa.ok());
    soak_world world;
    engine_ref engine;
    REQUIRE(engine.engine != nullptr);
    const std::uint64_t rounds = scaled(32.0, 1);

    const auto start = std::chrono::steady_clock::now();
    reset_figures figures;
    std::mutex figures_mutex;
    std::vector<std::thread> peers;
    for (std::size_t i = 0; i < pair_count; ++i)
    {
        peers.emplace_back(
            [&, i]
            { run_reset_rounds(world, engine.engine, i, rounds, 512 * kib, 256 * kib, figures, figures_mutex); });
    }
    for (auto& peer : peers)
    {
        peer.join();
    }
    const double seconds = seconds_since(start);
    const ledger_figures ledger = check_ledger(world);

    MESSAGE("reset (scale " << soak_scale() << "): " << pair_count * rounds << " connections reset by the peer ("
                            << pair_count << " at once) in " << seconds << " s; IO accepted " << ledger.accepted
                            << ", callbacks " << world.callbacks.load() << ": sends OK " << world.sends_ok.load()
                            << ", sends ERROR " << world.send_errors.load() << ", receives OK "
                            << world.receives_ok.load() << ", receives ERROR " << world.receive_errors.load()
                            << ", end of stream " << world.end_of_stream.load() << ", BECAUSE_CLOSE "
                            << world.sends_because_close.load() + world.receives_because_close.load()
                            << "; IO issued after the reset: sends accepted " << figures.late_sends_accepted
                            << " (the others refused with os_error), receives accepted "
                            << figures.late_receives_accepted << "; calls refused after the reset (os_error) "
                            << world.refused_after_reset.load());
    CHECK(world.callbacks.load() == ledger.accepted);
    CHECK(world.sends_because_close.load() + world.receives_because_close.load() == 0);
    // The receives in flight at the reset had no data to wait for: each completed with ERROR.
    CHECK(world.receive_errors.load() >= reset_end::receive_window * pair_count * rounds);
    check_world(world);
}

TEST_CASE("soak: close and reopen while traffic flows cut IO with BECAUSE_CLOSE once and traffic resumes intact")
{
    win32_test::wsa_session wsa;
    REQUIRE(wsa.ok());
    soak_world world;
    engine_ref engine;
    REQUIRE(engine.engine != nullptr);
    const std::uint64_t cycles = scaled(16.0, 2);
    constexpr std::uint64_t resume_bytes = 512 * kib;

    std::vector<std::unique_ptr<reopen_pair>> pairs;
    for (std::size_t i = 0; i < pair_count; ++i)
    {
        pairs.push_back(std::make_unique<reopen_pair>(world, i));
        REQUIRE(pairs.back()->ends.open(engine.engine));
    }

    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> closers;
    for (std::size_t i = 0; i < pair_count; ++i)
    {
        pairs[i]->start();
        closers.emplace_back([&, i] { run_reopen_cycles(world, *pairs[i], i, cycles, resume_bytes); });
    }
    for (auto& closer : closers)
    {
        closer.join();
    }
    const double seconds = seconds_since(start);

    std::uint64_t reopens = 0;
    std::uint64_t bytes = 0;
    std::uint64_t cuts_with_bytes_out = 0;
    std::uint64_t bytes_out_of_cut_sends = 0;
    for (auto& pair : pairs)
    {
        pair->ends.close_sides();
        reopens += pair->reopens;
        cuts_with_bytes_out += pair->cuts_with_bytes_out;
        bytes_out_of_cut_sends += pair->bytes_out_of_cut_sends;
        bytes += pair->client_in.verified() + pair->server_in.verified();
        CHECK(pair->ends.client.opens.load() + pair->ends.server.opens.load() == 2 + static_cast<int>(pair->reopens));
    }
    const ledger_figures ledger = check_ledger(world);
    for (auto& pair : pairs)
    {
        pair->ends.destroy_sides();
    }

    MESSAGE("reopen (scale " << soak_scale() << "): " << reopens << " closes and reopens on the same SOCKETs while "
                             << pair_count << " pairs streamed both ways; " << mib_of(bytes)
                             << " MiB checked byte for byte across them in " << seconds << " s ("
                             << mib_of(bytes) / seconds << " MiB/s); IO accepted " << ledger.accepted << ", refused "
                             << ledger.refused << " (invalid_state while closing: "
                             << world.refused_while_closing.load() << "), callbacks " << world.callbacks.load()
                             << ": sends BECAUSE_CLOSE " << world.sends_because_close.load()
                             << ", receives BECAUSE_CLOSE " << world.receives_because_close.load() << ", errors "
                             << world.send_errors.load() + world.receive_errors.load() << "; closes after which a send "
                             << "cut by close had put bytes on the wire: " << cuts_with_bytes_out << " ("
                             << bytes_out_of_cut_sends << " bytes)");
    CHECK(reopens == cycles * pair_count);
    CHECK(world.callbacks.load() == ledger.accepted);
    CHECK(world.sends_because_close.load() + world.receives_because_close.load() > 0); // close did cut IO
    check_world(world);
}
