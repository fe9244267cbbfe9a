// libFuzzer target: send_async/receive_async argument validation, the UINT32_MAX checks (sum of the buffer
// lengths, size of the IO context) and the completion's result mapping, against a reference model.
//
// The input describes one call (see read_case): send or receive, the buffer array (a count, one length for
// every buffer, then patches: NULL buffers and other lengths at chosen indexes), a NULL array or callback,
// the socket's state, one failure to inject, and how the IO then completes. The model computes the statuses
// the call may return; any other status, a callback where none may run, a missing or second callback, a
// wrong result, a leak or a broken OS rule ends the run with __builtin_trap().
//
// The fake threadpool uses a large WSABUF stand-in (big_buffer, 8 KiB), so that a count of about 523,000,
// which fits an 8 MiB ASYNC_SOCKET_BUFFER array, makes the IO context exceed UINT32_MAX. The allocator
// refuses blocks over 4 MiB (out_of_memory), so no run touches gigabytes.
#include <async_socket/basic_async_socket.hpp>
#include <async_socket/sync/std_sync.hpp>
#include <async_socket/testing/fake_threadpool.hpp>
#include <async_socket/testing/fault_alloc.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <vector>

namespace
{

using async_socket::status;
using namespace async_socket::testing;

// A WSABUF stand-in much larger than WSABUF: len and buf, as the fake needs them, then padding.
struct big_buffer
{
    std::uint32_t len;
    char* buf;
    char padding[8192];
};

constexpr std::size_t array_bytes = std::size_t{8} << 20; // the largest ASYNC_SOCKET_BUFFER array built
constexpr std::uint32_t array_capacity = array_bytes / sizeof(ASYNC_SOCKET_BUFFER);
constexpr std::uint64_t allocation_limit = std::uint64_t{4} << 20; // larger blocks are refused
constexpr unsigned max_patches = 64;

// The size of an IO context as its documented layout says: the context header, then `count` buffers
// aligned as a buffer must be. Computed here, not with the core's io_context_layout.
constexpr std::uint64_t header_bytes =
    (sizeof(async_socket::detail::io_context_header<async_socket::testing::fake_threadpool::io_state>) +
     alignof(big_buffer) - 1) /
    alignof(big_buffer) * alignof(big_buffer);

constexpr std::uint64_t context_size(std::uint64_t count)
{
    return header_bytes + count * sizeof(big_buffer);
}

// The smallest count whose context exceeds UINT32_MAX; the array must be able to hold it.
constexpr std::uint32_t limit_count =
    static_cast<std::uint32_t>((std::uint64_t{UINT32_MAX} - header_bytes) / sizeof(big_buffer) + 1);
static_assert(context_size(limit_count) > UINT32_MAX && context_size(limit_count - 1) <= UINT32_MAX);
static_assert(limit_count + 128 < array_capacity, "the context-size limit must be reachable with the array");

// fault_alloc (leak and misuse ledger, failure on demand) that refuses blocks over allocation_limit and
// remembers the size asked for last.
struct capped_alloc
{
    alloc_ledger* ledger = nullptr;
    std::uint64_t* last_request = nullptr;

    void* allocate(std::size_t size) noexcept
    {
        *last_request = size;
        if (size > allocation_limit)
        {
            return nullptr;
        }
        return fault_alloc{ledger}.allocate(size);
    }

    void deallocate(void* p, std::size_t size) noexcept
    {
        fault_alloc{ledger}.deallocate(p, size);
    }
};

using socket_type =
    async_socket::basic_async_socket<basic_fake_threadpool<big_buffer>, capped_alloc, async_socket::std_sync>;

enum class fault : std::uint8_t
{
    none,
    allocation,   // the context's allocation fails
    create_event, // CreateEvent fails
    issue,        // WSASend/WSARecv fails
};

enum class start_state : std::uint8_t
{
    open,
    never_opened,
    closed,   // opened, then closed
    reopened, // opened, closed, opened again
};

enum class ending : std::uint8_t
{
    exact,   // NO_ERROR, all the bytes
    fewer,   // NO_ERROR, fewer bytes
    more,    // NO_ERROR, more bytes than the buffers hold
    nothing, // NO_ERROR, 0 bytes
    error,   // ERROR_NETNAME_DELETED
    close,   // cancelled by close: ERROR_OPERATION_ABORTED while CLOSING
};

struct fuzz_case
{
    bool receive = false;
    bool null_array = false;
    bool null_callback = false;
    start_state state = start_state::open;
    fault injected = fault::none;
    std::uint32_t count = 0;
    ending end = ending::exact;
    std::uint32_t bytes_seed = 0;
};

class reader
{
public:
    reader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}

    std::uint8_t byte()
    {
        return at_ < size_ ? data_[at_++] : 0;
    }

    std::uint32_t u32()
    {
        std::uint32_t value = 0;
        for (int i = 0; i < 4; ++i)
        {
            value |= static_cast<std::uint32_t>(byte()) << (8 * i);
        }
        return value;
    }

    bool empty() const
    {
        return at_ >= size_;
    }

private:
    const std::uint8_t* data_;
    std::size_t size_;
    std::size_t at_ = 0;
};

char payload[64];

ASYNC_SOCKET_BUFFER* buffer_array()
{
    static const std::unique_ptr<ASYNC_SOCKET_BUFFER[]> array(new ASYNC_SOCKET_BUFFER[array_capacity]);
    return array.get();
}

// The fuzzer's own loops over up to half a million buffers are not instrumented for coverage: tracing each of
// their comparisons would cost ten times the code under test, and they hold nothing to discover.
#define FUZZ_HARNESS_LOOP __attribute__((no_sanitize("coverage"), noinline))

FUZZ_HARNESS_LOOP void fill(ASYNC_SOCKET_BUFFER* array, std::uint32_t count, std::uint32_t length)
{
    for (std::uint32_t i = 0; i < count; ++i)
    {
        array[i] = ASYNC_SOCKET_BUFFER{payload, length};
    }
}

FUZZ_HARNESS_LOOP void scan(const ASYNC_SOCKET_BUFFER* array, std::uint32_t count, bool& invalid_buffer,
                            std::uint64_t& total_length)
{
    for (std::uint32_t i = 0; i < count; ++i)
    {
        invalid_buffer = invalid_buffer || array[i].buffer == nullptr || array[i].length == 0;
        total_length += array[i].length;
    }
}

// Input layout (missing bytes read as 0):
//   [0]      bit 0 receive, bit 1 NULL array, bit 2 NULL callback, bits 3-4 start_state, bits 5-6 fault
//   [1]      count mode (mod 6): 0 up to 16, 1 up to 4096, 2 the context-size limit +-128, 3 up to the array's
//            capacity, 4 any u32 (over the capacity only with a NULL array), 5 zero
//   [2..5]   count (u32)
//   [6]      length mode: 0 any u32, 1 UINT32_MAX / count +-128 (sums near UINT32_MAX), 2 small, 3 near
//            UINT32_MAX
//   [7..10]  length (u32)
//   [11]     ending (mod 6)
//   [12..15] bytes seed (u32)
//   then up to 64 patches of 9 bytes: kind (mod 4: NULL buffer, zero length, set length, add to length),
//   index (u32, mod count), value (u32)
fuzz_case read_case(reader& in, ASYNC_SOCKET_BUFFER* array)
{
    fuzz_case c;
    const std::uint8_t flags = in.byte();
    c.receive = (flags & 1) != 0;
    c.null_array = (flags & 2) != 0;
    c.null_callback = (flags & 4) != 0;
    c.state = static_cast<start_state>((flags >> 3) & 3);
    c.injected = static_cast<fault>((flags >> 5) & 3);

    const std::uint8_t count_mode = in.byte() % 6;
    const std::uint32_t raw_count = in.u32();
    switch (count_mode)
    {
    case 0:
        c.count = raw_count % 17;
        break;
    case 1:
        c.count = raw_count % 4097;
        break;
    case 2:
        c.count = limit_count + static_cast<std::int8_t>(raw_count & 0xff);
        break;
    case 3:
        c.count = raw_count % (array_capacity + 1);
        break;
    case 4:
        c.count = c.null_array ? raw_count : std::min(raw_count, array_capacity);
        break;
    default:
        c.count = 0;
        break;
    }

    const std::uint8_t length_mode = in.byte() % 4;
    const std::uint32_t raw_length = in.u32();
    std::uint32_t length = raw_length;
    if (length_mode == 1 && c.count != 0)
    {
        length = UINT32_MAX / c.count + static_cast<std::uint32_t>(static_cast<std::int8_t>(raw_length & 0xff));
    }
    else if (length_mode == 2)
    {
        length = 1 + raw_length % 4096;
    }
    else if (length_mode == 3)
    {
        length = UINT32_MAX - raw_length % 4;
    }

    c.end = static_cast<ending>(in.byte() % 6);
    c.bytes_seed = in.u32();

    if (c.null_array || c.count == 0)
    {
        return c;
    }
    fill(array, c.count, length);
    for (unsigned patch = 0; patch < max_patches && !in.empty(); ++patch)
    {
        const std::uint8_t kind = in.byte() % 4;
        ASYNC_SOCKET_BUFFER& target = array[in.u32() % c.count];
        const std::uint32_t value = in.u32();
        switch (kind)
        {
        case 0:
            target.buffer = nullptr;
            break;
        case 1:
            target.length = 0;
            break;
        case 2:
            target.length = value;
            break;
        default:
            target.length += value;
            break;
        }
    }
    return c;
}

bool allows(const std::vector<status>& allowed, status s)
{
    return std::find(allowed.begin(), allowed.end(), s) != allowed.end();
}

// The reference model of a call's status. `refusals` lists what the call may return when the request itself is
// wrong (any one of them when several apply; then nothing else may happen); otherwise `outcome` is the one
// status of the call.
struct model
{
    std::vector<status> refusals;
    status outcome = status::ok;
    std::uint64_t total_length = 0;
    bool allocates = false;
};

model expect(const fuzz_case& c, const ASYNC_SOCKET_BUFFER* array)
{
    model m;
    if (c.null_array || c.count == 0)
    {
        m.refusals.push_back(status::invalid_argument);
    }
    else
    {
        bool invalid_buffer = false;
        scan(array, c.count, invalid_buffer, m.total_length);
        if (invalid_buffer)
        {
            m.refusals.push_back(status::invalid_argument);
        }
        if (m.total_length > UINT32_MAX)
        {
            m.refusals.push_back(status::size_overflow);
        }
    }
    if (c.null_callback)
    {
        m.refusals.push_back(status::invalid_argument);
    }
    if (c.state == start_state::never_opened || c.state == start_state::closed)
    {
        m.refusals.push_back(status::invalid_state);
    }
    if (context_size(c.count) > UINT32_MAX)
    {
        m.refusals.push_back(status::size_overflow);
    }
    if (!m.refusals.empty())
    {
        return m;
    }
    m.allocates = true;
    if (c.injected == fault::allocation || context_size(c.count) > allocation_limit)
    {
        m.outcome = status::out_of_memory;
    }
    else if (c.injected == fault::create_event || c.injected == fault::issue)
    {
        m.outcome = status::os_error;
    }
    return m;
}

struct recorder
{
    int calls = 0;
    int result = -1;
    std::uint32_t bytes = 0;

    static void on_send(void* context, ASYNC_SOCKET_SEND_RESULT result)
    {
        auto* self = static_cast<recorder*>(context);
        ++self->calls;
        self->result = result;
    }

    static void on_receive(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes)
    {
        auto* self = static_cast<recorder*>(context);
        ++self->calls;
        self->result = result;
        self->bytes = bytes;
    }
};

void noop_open(void*, ASYNC_SOCKET_OPEN_RESULT) {}

[[noreturn]] void mismatch(const char* what, const fuzz_case& c, status got)
{
    std::fprintf(stderr,
                 "fuzz_buffers: %s: %s, count %u, null array %d, null callback %d, state %d, fault %d, ending %d, "
                 "returned %s\n",
                 what, c.receive ? "receive" : "send", c.count, c.null_array, c.null_callback,
                 static_cast<int>(c.state), static_cast<int>(c.injected), static_cast<int>(c.end),
                 async_socket::to_string(got));
    std::fflush(stderr);
    __builtin_trap();
}

#define FUZZ_EXPECT(condition, what)                                                                                   \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(condition))                                                                                              \
        {                                                                                                              \
            mismatch(what, c, got);                                                                                    \
        }                                                                                                              \
    } while (false)

} // namespace

// Tests_SRS_ASYNC_SOCKET_WIN32_01_101: [ If the sum of buffer lengths for all the buffers in payload is greater than
// UINT32_MAX, async_socket_send_async shall fail and return a non-zero value. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_096: [ If the sum of buffer lengths for all the buffers in payload is greater than
// UINT32_MAX, async_socket_receive_async shall fail and return a non-zero value. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_103: [ If the amount of memory needed to allocate the context and the WSABUF items
// is exceeding UINT32_MAX, async_socket_send_async shall fail and return a non-zero value. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_104: [ If the amount of memory needed to allocate the context and the WSABUF items
// is exceeding UINT32_MAX, async_socket_receive_async shall fail and return a non-zero value. ]
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    ASYNC_SOCKET_BUFFER* const array = buffer_array();
    reader in(data, size);
    const fuzz_case c = read_case(in, array);
    const model m = expect(c, array);

    fake_os os;
    alloc_ledger ledger;
    std::uint64_t last_request = 0;
    auto socket = socket_type::create(&os, fake_socket(1), {}, capped_alloc{&ledger, &last_request});
    status got = socket ? status::ok : status::out_of_memory;
    FUZZ_EXPECT(socket != nullptr, "create failed");
    if (c.state != start_state::never_opened)
    {
        FUZZ_EXPECT(socket->open_async(&noop_open, nullptr) == status::ok, "open failed");
    }
    if (c.state == start_state::closed || c.state == start_state::reopened)
    {
        FUZZ_EXPECT(socket->close() == status::ok, "close failed");
    }
    if (c.state == start_state::reopened)
    {
        FUZZ_EXPECT(socket->open_async(&noop_open, nullptr) == status::ok, "reopen failed");
    }
    os.clear_calls();
    const std::int64_t blocks_before = ledger.live_blocks();

    switch (c.injected)
    {
    case fault::allocation:
        ledger.fail_nth(1);
        break;
    case fault::create_event:
        os.fail(fake_call::create_event);
        break;
    case fault::issue:
        os.fail(c.receive ? fake_call::wsa_recv : fake_call::wsa_send);
        break;
    case fault::none:
        break;
    }

    recorder done;
    last_request = 0;
    ASYNC_SOCKET_BUFFER* const buffers = c.null_array ? nullptr : array;
    if (c.receive)
    {
        got = socket->receive_async(buffers, c.count, c.null_callback ? nullptr : &recorder::on_receive, &done);
    }
    else
    {
        got = socket->send_async(buffers, c.count, c.null_callback ? nullptr : &recorder::on_send, &done);
    }

    if (!m.refusals.empty())
    {
        FUZZ_EXPECT(allows(m.refusals, got), "a wrong request got a status the model does not allow");
    }
    else
    {
        FUZZ_EXPECT(got == m.outcome, "the status differs from the model's");
    }
    if (m.allocates && c.injected != fault::allocation)
    {
        FUZZ_EXPECT(last_request == context_size(c.count), "the IO context is not the size of its layout");
    }
    FUZZ_EXPECT(os.violations().empty(), "an OS rule was broken");

    if (got != status::ok)
    {
        FUZZ_EXPECT(done.calls == 0, "a failed call ran its callback");
        FUZZ_EXPECT(os.pending_count() == 0, "a failed call left an IO outstanding");
        FUZZ_EXPECT(os.live_events() == 0, "a failed call left an event open");
        FUZZ_EXPECT(ledger.live_blocks() == blocks_before, "a failed call leaked memory");
    }
    else
    {
        // The WSABUF array handed to the OS is the caller's, item for item.
        const std::vector<call_record> calls = os.calls();
        const auto issued = std::find_if(calls.begin(), calls.end(),
                                         [&](const call_record& r)
                                         { return r.call == (c.receive ? fake_call::wsa_recv : fake_call::wsa_send); });
        FUZZ_EXPECT(issued != calls.end() && issued->buffer_count == c.count && issued->buffers.size() == c.count,
                    "the IO was not issued with the caller's buffer count");
        for (std::uint32_t i = 0; i < c.count; ++i)
        {
            FUZZ_EXPECT(issued->buffers[i].buf == array[i].buffer && issued->buffers[i].len == array[i].length,
                        "a WSABUF differs from the caller's buffer");
        }
        FUZZ_EXPECT(os.pending_count() == 1 && done.calls == 0, "the IO completed before the OS completed it");

        // Complete it, and check the one callback against the mapping the spec gives.
        const std::uint64_t total = m.total_length;
        std::uint64_t bytes = 0;
        async_socket::win32_error io_result = async_socket::win32_no_error;
        int expected_result =
            c.receive ? static_cast<int>(ASYNC_SOCKET_RECEIVE_OK) : static_cast<int>(ASYNC_SOCKET_SEND_OK);
        std::uint64_t expected_bytes = 0;
        switch (c.end)
        {
        case ending::exact:
            bytes = total;
            break;
        case ending::fewer:
            bytes = c.bytes_seed % total;
            break;
        case ending::more:
            bytes = total + 1 + c.bytes_seed % 4096;
            break;
        case ending::nothing:
            bytes = 0;
            break;
        case ending::error:
            io_result = 64; // ERROR_NETNAME_DELETED
            break;
        case ending::close:
            io_result = async_socket::win32_operation_aborted;
            break;
        }
        if (c.receive)
        {
            if (c.end == ending::close)
            {
                expected_result = ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE;
            }
            else if (io_result != async_socket::win32_no_error)
            {
                expected_result = ASYNC_SOCKET_RECEIVE_ERROR;
            }
            else if (bytes > total)
            {
                expected_result = ASYNC_SOCKET_RECEIVE_ERROR;
                expected_bytes = std::min<std::uint64_t>(bytes, UINT32_MAX);
            }
            else
            {
                expected_bytes = bytes;
            }
        }
        else if (c.end == ending::close)
        {
            expected_result = ASYNC_SOCKET_SEND_BECAUSE_CLOSE;
        }
        else if (io_result != async_socket::win32_no_error || bytes != total)
        {
            expected_result = ASYNC_SOCKET_SEND_ERROR;
        }

        if (c.end == ending::close)
        {
            os.set_cancel_behavior(cancel_behavior::abort_inline);
            FUZZ_EXPECT(socket->close() == status::ok, "close failed");
        }
        else
        {
            FUZZ_EXPECT(os.complete(issued->overlapped, io_result, static_cast<std::size_t>(bytes)),
                        "the fake found no IO to complete");
        }
        FUZZ_EXPECT(done.calls == 1, "an accepted IO did not complete exactly once");
        FUZZ_EXPECT(done.result == expected_result, "the completion's result differs from the model's");
        FUZZ_EXPECT(!c.receive || done.bytes == expected_bytes, "the received byte count differs from the model's");
        FUZZ_EXPECT(os.live_events() == 0 && os.pending_count() == 0, "the completion left an event or an IO");
        FUZZ_EXPECT(ledger.live_blocks() == blocks_before, "the completion leaked the IO context");
    }

    socket.reset();
    FUZZ_EXPECT(done.calls == (got == status::ok ? 1 : 0), "a callback ran during destroy");
    FUZZ_EXPECT(ledger.live_blocks() == 0 && ledger.misuse() == 0, "destroy leaked or misused memory");
    FUZZ_EXPECT(os.violations().empty() && os.live_ios() == 0 && os.live_events() == 0, "destroy left OS state");
    return 0;
}
