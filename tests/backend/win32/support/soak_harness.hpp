// The harness of the Win32 soak (test_win32_soak): a ledger of every IO of a test case (each accepted IO must
// complete exactly once, a refused one never, none after its socket was destroyed), the two ends of a loopback
// connection over win32_async_socket, rings that keep a window of sends or receives posted from completion
// callbacks, pattern streams that a receiver checks without sharing the sender's memory, and what a test case
// needs around them (scale, waits that end only on a stall, the final checks).
//
// Header-only; Win32, the async_socket C++ API, doctest (the final checks only, on the test's thread) and the
// standard library.
#pragma once

#include <async_socket/async_socket.hpp>

#include "engine_ref.hpp"
#include "loopback.hpp"

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
#include <utility>
#include <vector>

namespace soak_test
{

using async_socket::status;
using async_socket::win32_async_socket;
using win32_test::engine_ref;

inline constexpr std::size_t kib = 1024;
inline constexpr std::size_t mib = 1024 * 1024;
inline constexpr std::size_t pair_count = 4;

// A wait fails only when no IO at all has completed for this long: Wine on a loaded machine is slow, and
// the deadline is there only to end a run that would otherwise hang.
inline constexpr double stall_seconds = 60.0;

// ASYNC_SOCKET_SOAK_SCALE, or 1 when it is not set (or is not a positive number).
inline double soak_scale()
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
inline std::uint64_t scaled(double base, std::uint64_t minimum)
{
    const double value = std::round(base * soak_scale());
    return value < static_cast<double>(minimum) ? minimum : static_cast<std::uint64_t>(value);
}

inline double seconds_since(std::chrono::steady_clock::time_point start)
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// splitmix64's finaliser: spreads any input over 64 bits.
inline constexpr std::uint64_t mix(std::uint64_t x) noexcept
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// The seed of one stream: scenario, pair, direction and epoch (a new one after every reopen).
inline constexpr std::uint64_t stream_seed(std::uint64_t scenario, std::uint64_t pair, std::uint64_t direction,
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
inline std::vector<std::uint8_t> epoch_marker(std::uint64_t seed)
{
    std::vector<std::uint8_t> marker(64);
    pattern_stream(mix(seed ^ 0x6D61726B65720000ull)).fill(marker.data(), marker.size());
    return marker;
}

// Splits `length` bytes at `data` into 1 to `max_parts` buffers of at least one byte each, chosen by `r`.
inline std::uint32_t split(std::uint8_t* data, std::size_t length, std::uint64_t r, ASYNC_SOCKET_BUFFER* parts,
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

// How the IO of one kind completed: OK (a receive with bytes), BECAUSE_CLOSE, ERROR.
struct result_counts
{
    std::atomic<std::uint64_t> ok{0};
    std::atomic<std::uint64_t> because_close{0};
    std::atomic<std::uint64_t> errors{0};
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
    result_counts sends;
    result_counts receives;
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

    [[nodiscard]] result_counts& results(io_kind kind) noexcept
    {
        return kind == io_kind::send ? sends : receives;
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

inline std::string describe(const op_record& op)
{
    return std::string(op.kind == io_kind::send ? "send" : "receive") + " #" + std::to_string(op.id) + " of " +
           op.owner->name;
}

inline void on_open_complete(void* context, ASYNC_SOCKET_OPEN_RESULT result)
{
    auto* owner = static_cast<side*>(context);
    if (result != ASYNC_SOCKET_OPEN_OK)
    {
        owner->world.fail(owner->name + ": open completed with " + std::to_string(static_cast<int>(result)));
    }
    ++owner->opens;
}

// Counts a callback; false (and a failure) when it is the op's second one or comes after destroy.
inline bool begin_completion(op_record& op, int result, std::uint32_t bytes)
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

// What a completion's result says, whichever kind of IO it ends.
enum class io_outcome
{
    ok,
    because_close,
    error,
    invalid,
};

inline io_outcome outcome_of(ASYNC_SOCKET_SEND_RESULT result) noexcept
{
    switch (result)
    {
    case ASYNC_SOCKET_SEND_OK:
        return io_outcome::ok;
    case ASYNC_SOCKET_SEND_BECAUSE_CLOSE:
        return io_outcome::because_close;
    case ASYNC_SOCKET_SEND_ERROR:
        return io_outcome::error;
    default:
        return io_outcome::invalid;
    }
}

inline io_outcome outcome_of(ASYNC_SOCKET_RECEIVE_RESULT result) noexcept
{
    switch (result)
    {
    case ASYNC_SOCKET_RECEIVE_OK:
        return io_outcome::ok;
    case ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE:
        return io_outcome::because_close;
    case ASYNC_SOCKET_RECEIVE_ERROR:
        return io_outcome::error;
    default:
        return io_outcome::invalid;
    }
}

// Counts the completion of `op` (after begin_completion) and records a failure where the test does not expect
// its result: BECAUSE_CLOSE only while the socket closes, ERROR only after the peer's reset, a receive's end of
// stream (OK, 0 bytes) only once the reset was reported, and no bytes with either BECAUSE_CLOSE or ERROR.
inline void count_completion(op_record& op, int result, io_outcome outcome, std::uint32_t bytes)
{
    side& owner = *op.owner;
    soak_world& world = owner.world;
    result_counts& counts = world.results(op.kind);
    const std::string result_name = op.kind == io_kind::send ? "SEND_" : "RECEIVE_";
    switch (outcome)
    {
    case io_outcome::ok:
        if (op.kind == io_kind::receive && bytes == 0)
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
            ++counts.ok;
        }
        break;
    case io_outcome::because_close:
        ++counts.because_close;
        if (!owner.closing)
        {
            world.fail(describe(op) + " completed with " + result_name +
                       "BECAUSE_CLOSE while its socket was not closing");
        }
        break;
    case io_outcome::error:
        ++counts.errors;
        if (!owner.reset_expected)
        {
            world.fail(describe(op) + " completed with " + result_name + "ERROR");
        }
        break;
    case io_outcome::invalid:
        world.fail(describe(op) + " completed with an invalid result " + std::to_string(result));
        break;
    }
    if ((outcome == io_outcome::because_close || outcome == io_outcome::error) && bytes != 0)
    {
        world.fail(describe(op) + " completed with " + result_name +
                   (outcome == io_outcome::because_close ? "BECAUSE_CLOSE" : "ERROR") + " and " +
                   std::to_string(bytes) + " bytes");
    }
    ++owner.completed[static_cast<std::size_t>(op.kind)];
}

inline void on_send_complete(void* context, ASYNC_SOCKET_SEND_RESULT result)
{
    auto& op = *static_cast<op_record*>(context);
    if (begin_completion(op, static_cast<int>(result), 0))
    {
        count_completion(op, static_cast<int>(result), outcome_of(result), 0);
        op.user->send_done(op, result);
    }
}

inline void on_receive_complete(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes)
{
    auto& op = *static_cast<op_record*>(context);
    if (begin_completion(op, static_cast<int>(result), bytes))
    {
        count_completion(op, static_cast<int>(result), outcome_of(result), bytes);
        op.user->receive_done(op, result, bytes);
    }
}

// A refused call is fine only where the test expects it: invalid_state while the socket closes, os_error
// after the peer's reset.
inline void note_refusal(side& owner, status refused, const char* call)
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

// Enters an IO of `kind` in the ledger, counts it accepted and makes the call, post(op); a refused call is
// taken back out of the counts and checked by note_refusal.
template <class Post>
status post_io(side& owner, io_user& user, std::uint64_t tag, io_kind kind, const char* call, Post post)
{
    op_record& op = owner.world.new_op(owner, user, tag, kind);
    std::atomic<std::uint64_t>& accepted = owner.accepted[static_cast<std::size_t>(kind)];
    op.accepted = true;
    ++accepted;
    const status posted = post(op);
    if (posted != status::ok)
    {
        op.accepted = false;
        --accepted;
        note_refusal(owner, posted, call);
    }
    return posted;
}

inline status post_send(side& owner, io_user& user, std::uint64_t tag, const ASYNC_SOCKET_BUFFER* parts,
                        std::uint32_t count)
{
    return post_io(owner, user, tag, io_kind::send, "send_async",
                   [&](op_record& op) { return owner.socket->send_async(parts, count, &on_send_complete, &op); });
}

inline status post_receive(side& owner, io_user& user, std::uint64_t tag, ASYNC_SOCKET_BUFFER* parts,
                           std::uint32_t count)
{
    return post_io(owner, user, tag, io_kind::receive, "receive_async",
                   [&](op_record& op) { return owner.socket->receive_async(parts, count, &on_receive_complete, &op); });
}

// Creates and opens the side's socket over `socket`.
inline bool open_side(side& owner, EXECUTION_ENGINE_HANDLE engine, SOCKET socket)
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
inline void close_side(side& owner)
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
inline void destroy_side(side& owner)
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
inline bool wait_until(soak_world& world, Done done)
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
inline void fail_unless_failed(soak_world& world, std::string what)
{
    if (!world.failed())
    {
        world.fail(std::move(what) + " (no IO completed for " + std::to_string(static_cast<int>(stall_seconds)) +
                   " s)");
    }
}

// What the send and receive rings share: their side, the lock their state is under, and whether they post.
// pump() posts, under the lock, what the ring has room and work for.
class io_ring : public io_user
{
public:
    explicit io_ring(side& owner) : owner_(owner) {}

    void start()
    {
        update([&] { active_ = true; });
    }

    // Posts nothing more until start(). Once it returns no post is under way either.
    void stop()
    {
        std::lock_guard lock(mutex_);
        active_ = false;
    }

protected:
    // Under the lock.
    virtual void pump() = 0;

    // Outside the lock, after each update.
    virtual void after_progress() {}

    // Runs change() and then pump() under the lock, then after_progress(), and wakes the test's waits.
    template <class Change>
    void update(Change change)
    {
        {
            std::lock_guard lock(mutex_);
            change();
            pump();
        }
        after_progress();
        owner_.world.waiter.notify();
    }

    // Under the lock.
    void halt()
    {
        active_ = false;
    }

    side& owner_;
    std::mutex mutex_;
    bool active_ = false;
};

// Keeps up to `window` receives posted on one side and hands their bytes on in the order the receives were
// posted, which is the order of the stream, whatever order their callbacks run in. Each receive scatters
// over up to three parts of its slot's buffer. An error, a close or the end of the stream stops the chain
// until start() is called again; so does a refused call.
class receive_ring : public io_ring
{
public:
    receive_ring(side& owner, std::size_t window, std::size_t slot_size, std::uint64_t salt)
        : io_ring(owner), slots_(window), salt_(salt)
    {
        for (slot& each : slots_)
        {
            each.buffer.resize(slot_size);
        }
    }

    void receive_done(op_record& op, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes) override
    {
        update(
            [&]
            {
                slot& done = slots_[op.tag % slots_.size()];
                done.state = slot_state::received;
                done.result = result;
                done.bytes = bytes;
                consume_in_order();
            });
    }

protected:
    // Under the lock: the bytes of the next receive in stream order. Returns true when the slot may be reused
    // at once, false to keep it until release_slot.
    virtual bool consume(std::size_t slot_index, std::uint8_t* data, std::uint32_t bytes) = 0;

    // Under the lock.
    void release_slot(std::size_t index)
    {
        slots_[index].state = slot_state::free;
    }
    [[nodiscard]] std::uint32_t slot_bytes(std::size_t index) const
    {
        return slots_[index].bytes;
    }

    // Under the lock: posts receives until the window is full.
    void pump() override
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
};

// Keeps up to `window` sends posted on one side, each a chunk made by produce() and gathered from the parts
// it says. Sends are issued in the order of the stream, under the ring's lock. A send that does not complete
// with OK, or a refused call, stops the ring until start() is called again.
class send_ring : public io_ring
{
public:
    send_ring(side& owner, std::size_t window, std::size_t slot_size) : io_ring(owner), slots_(window)
    {
        for (slot& each : slots_)
        {
            each.buffer.resize(slot_size);
        }
    }

    // Posts what produce() has to give now.
    void kick()
    {
        update([] {});
    }

    // Bytes of the sends that completed with OK.
    [[nodiscard]] std::uint64_t bytes_sent() const noexcept
    {
        return bytes_sent_.load();
    }

    void send_done(op_record& op, ASYNC_SOCKET_SEND_RESULT result) override
    {
        update(
            [&]
            {
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
            });
    }

protected:
    // Under the lock: writes the next chunk (at most `capacity` bytes) to `out` and the buffers to send it
    // from to `parts` (at most 4) and `count`; returns its length, 0 when there is nothing to send now.
    virtual std::size_t produce(std::uint8_t* out, std::size_t capacity, std::uint64_t seq, ASYNC_SOCKET_BUFFER* parts,
                                std::uint32_t& count) = 0;

private:
    struct slot
    {
        std::vector<std::uint8_t> buffer;
        std::size_t length = 0;
        bool busy = false;
    };

    void pump() override
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
        update(
            [&]
            {
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
            });
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

struct ledger_figures
{
    std::uint64_t accepted = 0;
    std::uint64_t refused = 0;
    std::uint64_t completions = 0;
};

// Each accepted IO completed exactly once, each refused one never.
inline ledger_figures check_ledger(soak_world& world)
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
inline std::string describe_ops(soak_world& world, const side& owner, std::uint64_t first_id)
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

inline std::uint64_t ops_so_far(soak_world& world)
{
    std::lock_guard lock(world.ops_mutex);
    return world.ops.size();
}

// Turns what the threads recorded into test failures.
inline void check_world(soak_world& world)
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

inline double mib_of(std::uint64_t bytes)
{
    return static_cast<double>(bytes) / static_cast<double>(mib);
}

inline std::string pair_name(std::size_t index, const char* role)
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

// The last member of a pair or an end: destroys the sockets of its sides (NULL: none) first, before the rings
// their callbacks use.
struct sockets_destroyed_first
{
    std::array<side*, 2> sides;

    ~sockets_destroyed_first()
    {
        for (side* each : sides)
        {
            if (each != nullptr)
            {
                destroy_side(*each);
            }
        }
    }
};

// IO figures for a test case's message: accepted and refused in the ledger, callbacks and how they ended.
inline std::string io_figures(soak_world& world, const ledger_figures& ledger)
{
    return "IO accepted " + std::to_string(ledger.accepted) + ", refused " + std::to_string(ledger.refused) +
           ", callbacks " + std::to_string(world.callbacks.load()) + " (sends OK " +
           std::to_string(world.sends.ok.load()) + ", receives OK " + std::to_string(world.receives.ok.load()) +
           ", receives BECAUSE_CLOSE at the final close " + std::to_string(world.receives.because_close.load()) +
           ", errors " + std::to_string(world.sends.errors.load() + world.receives.errors.load()) + ")";
}

// What every soak test case has, in this order: Winsock, the world (which outlives every socket) and an engine.
struct soak_run
{
    win32_test::wsa_session wsa;
    soak_world world;
    engine_ref engine;

    soak_run()
    {
        REQUIRE(wsa.ok());
        REQUIRE(engine.engine != nullptr);
    }

    // pair_count pairs, made by make(index), each with its connection open.
    template <class Pair, class Make>
    std::vector<std::unique_ptr<Pair>> open_pairs(Make make)
    {
        std::vector<std::unique_ptr<Pair>> pairs;
        for (std::size_t i = 0; i < pair_count; ++i)
        {
            pairs.push_back(make(i));
            REQUIRE(pairs.back()->ends.open(engine.engine));
        }
        return pairs;
    }

    // Closes both ends of every pair (which cuts what they still had posted) and calls check(pair) after each,
    // then checks the ledger and destroys the sockets. Returns the ledger's figures.
    template <class Pair, class Check>
    ledger_figures close_pairs(std::vector<std::unique_ptr<Pair>>& pairs, Check check)
    {
        for (auto& pair : pairs)
        {
            pair->ends.close_sides();
            check(*pair);
        }
        const ledger_figures ledger = check_ledger(world);
        for (auto& pair : pairs)
        {
            pair->ends.destroy_sides();
        }
        return ledger;
    }

    // The last checks of a test case: every callback was an accepted IO's, and nothing went wrong on any thread.
    void check_end(const ledger_figures& ledger)
    {
        CHECK(world.callbacks.load() == ledger.accepted);
        check_world(world);
    }
};

} // namespace soak_test
