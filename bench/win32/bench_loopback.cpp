// bench_loopback: async_socket against hand-written Win32 threadpool IO and Asio, over real loopback TCP.
//
// Every configuration runs in the same executable, so that one run measures them all under the same load:
//   spec_default      async_socket::win32_async_socket (the spec's behaviour: a new event per IO, every
//                     completion through the pool, malloc'd contexts)
//   recycled_events   the spec's event per IO, taken from a few kept events (win32_event_mode::recycled)
//   fast              async_socket::win32_no_event_skip_port_async_socket (no event, skip-completion-port-on-success,
//                     recycled contexts)
//   raw_event_per_io  hand-written threadpool IO (CreateThreadpoolIo/StartThreadpoolIo/WSASend/WSARecv, an
//                     OVERLAPPED malloc'd per IO), CreateEvent + CloseHandle around each IO, like the spec
//   raw               the same without events
//   raw_skip          the same without events, with FILE_SKIP_COMPLETION_PORT_ON_SUCCESS
//                     (| FILE_SKIP_SET_EVENT_ON_HANDLE, as the library sets it)
//   asio              Asio's tcp::socket (async_write / async_read_some) on an io_context run by one thread
//   iocp_fast         async_socket::win32_iocp_async_socket: the fast options over a plain IO completion port
//                     (win32_iocp_engine, default parameters: one dispatcher thread calling
//                     GetQueuedCompletionStatus) that both ends share, like Asio's io_context
//   iocp              the same port and thread without skip mode: every completion through the port
//   iocp_fast_batch   iocp_fast with the dispatcher taking up to 16 completions per GetQueuedCompletionStatusEx
//
// Benchmarks:
//   pingpong_64B/<config>   one connection; the client sends 64 bytes, receives the 64-byte echo, and starts
//                           the next round trip only when both its send and its receive have completed.
//                           items_per_second = round trips per second.
//   stream_64KiB/<config>   one direction; the sender keeps 4 sends of 64 KiB in flight, the receiver
//                           drains with one 64 KiB receive at a time. bytes_per_second = throughput.
//
// Both ends of a connection use the configuration under test (the echo peer of the ping-pong and the
// receiver of the stream are built the same way as the measured side): a round trip then costs what two
// peers built that way cost, and the difference between configurations is not diluted by a peer that is
// the same for all of them. The protocol (what is sent, when the next IO starts) is written once, over a
// small transport interface that each configuration implements, so that only the IO mechanism differs.
//
// Each benchmark iteration is one batch of IO chained from completion callbacks; the benchmark thread only
// starts the batch and waits for its end (wall-clock time, UseRealTime). Connection set-up and a warm-up
// batch are not timed.
//
//   bench_loopback [--quick] [--pingpong_iterations=N] [--stream_iterations=N] [--mark_timed_region]
//                  [Google Benchmark flags]
//     --quick: a short smoke run; --*_iterations override the iteration counts (batches) of each benchmark;
//     --mark_timed_region: see mark_timed_region.
#include <async_socket/async_socket.hpp>
#include <async_socket/backend/win32/iocp.hpp>

#include <async_socket/testing/win32_loopback.hpp>

#if ASYNC_SOCKET_BENCH_HAVE_ASIO
#include <asio.hpp>
#endif

#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <utility>

namespace
{

using async_socket::status;

constexpr std::uint32_t message_size = 64;
constexpr std::uint32_t block_size = 64 * 1024;
constexpr std::uint32_t stream_depth = 4; // sends in flight
constexpr DWORD batch_timeout_ms = 60'000;

// Threads of the pool of every threadpool configuration: the execution engine's default minimum.
constexpr DWORD pool_min_threads = EXECUTION_ENGINE_DEFAULT_MIN_THREAD_COUNT;

// How much each benchmark does; --quick shrinks it for a smoke run.
struct workload
{
    std::uint32_t pingpong_batch = 100;     // round trips per iteration
    std::uint32_t pingpong_iterations = 30; // 3,000 round trips: 1.5 to 4 s under Wine
    std::uint32_t stream_batch_blocks = 64; // 4 MiB per iteration
    std::uint32_t stream_iterations = 30;   // 120 MiB: 0.3 to 1.5 s under Wine
    bool mark_timed_region = false;         // --mark_timed_region (scripts/bench_wine_requests.py)
};
workload work;

// ---------------------------------------------------------------------------------------------------------
// The end of a batch, signalled from completion callbacks to the benchmark thread.
class batch_signal
{
public:
    batch_signal() : event_(CreateEventW(nullptr, FALSE, FALSE, nullptr)) {}
    ~batch_signal()
    {
        if (event_ != nullptr)
        {
            CloseHandle(event_);
        }
    }
    batch_signal(const batch_signal&) = delete;
    batch_signal& operator=(const batch_signal&) = delete;

    [[nodiscard]] bool valid() const noexcept
    {
        return event_ != nullptr;
    }

    // The batch ends after `parts` calls of arrive().
    void arm(int parts) noexcept
    {
        parts_.store(parts, std::memory_order_release);
    }

    // One part of the batch is done; the last one wakes the benchmark thread. The caller touches nothing of
    // the benchmark after this.
    void arrive() noexcept
    {
        if (parts_.fetch_sub(1, std::memory_order_acq_rel) == 1)
        {
            SetEvent(event_);
        }
    }

    // An IO failed. Ignored once the connection is being shut down (cancelled IO is expected then).
    void fail(const char* what) noexcept
    {
        if (stopping_.load(std::memory_order_acquire))
        {
            return;
        }
        const char* expected = nullptr;
        (void)failure_.compare_exchange_strong(expected, what, std::memory_order_acq_rel);
        SetEvent(event_);
    }

    void stop() noexcept
    {
        stopping_.store(true, std::memory_order_release);
    }

    // Waits for the batch; nullptr on success, else what went wrong.
    const char* wait() noexcept
    {
        const DWORD waited = WaitForSingleObject(event_, batch_timeout_ms);
        if (const char* failure = failure_.load(std::memory_order_acquire); failure != nullptr)
        {
            return failure;
        }
        return waited == WAIT_OBJECT_0 ? nullptr : "timed out waiting for the batch";
    }

private:
    HANDLE event_;
    std::atomic<int> parts_{0};
    std::atomic<bool> stopping_{false};
    std::atomic<const char*> failure_{nullptr};
};

// ---------------------------------------------------------------------------------------------------------
// The transport interface the protocols use; one implementation per configuration.
//
//   bool send(const void* data, std::uint32_t length, const completion* done) noexcept
//   bool receive(void* data, std::uint32_t length, const completion* done) noexcept
//
// Each starts one IO and returns true, then calls (*done)(ok, bytes) exactly once when it completes (on any
// thread, possibly before send/receive returns); or returns false and calls nothing. A send completes with
// ok only when every byte was sent; a receive reports how many bytes arrived (up to length).
struct completion
{
    void (*fn)(void* owner, bool ok, std::uint32_t bytes) noexcept;
    void* owner;

    void operator()(bool ok, std::uint32_t bytes) const noexcept
    {
        fn(owner, ok, bytes);
    }
};

// ---------------------------------------------------------------------------------------------------------
// Protocols, written once.

// The measured side of the ping-pong: send 64 bytes, receive the echo, repeat.
template <class Transport>
class pingpong_client
{
public:
    pingpong_client(Transport& transport, batch_signal& signal) noexcept : transport_(transport), signal_(signal) {}

    void start_batch(std::uint32_t round_trips) noexcept
    {
        remaining_ = round_trips;
        begin();
    }

private:
    void begin() noexcept
    {
        ++sequence_;
        std::memset(message_, static_cast<unsigned char>(sequence_), sizeof(message_));
        received_ = 0;
        parts_.store(2, std::memory_order_release);
        if (!transport_.send(message_, message_size, &on_sent_))
        {
            signal_.fail("ping-pong: the send could not start");
            return;
        }
        if (!transport_.receive(reply_, message_size, &on_received_))
        {
            signal_.fail("ping-pong: the receive could not start");
        }
    }

    static void sent(void* owner, bool ok, std::uint32_t) noexcept
    {
        auto* self = static_cast<pingpong_client*>(owner);
        if (!ok)
        {
            self->signal_.fail("ping-pong: a send failed");
            return;
        }
        self->part_done();
    }

    static void received(void* owner, bool ok, std::uint32_t bytes) noexcept
    {
        auto* self = static_cast<pingpong_client*>(owner);
        if (!ok || bytes == 0)
        {
            self->signal_.fail("ping-pong: a receive failed or the peer shut down");
            return;
        }
        self->received_ += bytes;
        if (self->received_ < message_size)
        {
            if (!self->transport_.receive(self->reply_ + self->received_, message_size - self->received_,
                                          &self->on_received_))
            {
                self->signal_.fail("ping-pong: the receive could not start");
            }
            return;
        }
        if (self->received_ != message_size || std::memcmp(self->reply_, self->message_, message_size) != 0)
        {
            self->signal_.fail("ping-pong: the echo differs from the message");
            return;
        }
        self->part_done();
    }

    // The send and the receive of a round trip both call this; the second one goes on.
    void part_done() noexcept
    {
        if (parts_.fetch_sub(1, std::memory_order_acq_rel) != 1)
        {
            return;
        }
        if (--remaining_ == 0)
        {
            signal_.arrive();
            return;
        }
        begin();
    }

    Transport& transport_;
    batch_signal& signal_;
    const completion on_sent_{&sent, this};
    const completion on_received_{&received, this};
    std::atomic<int> parts_{0};
    std::uint32_t remaining_ = 0;
    std::uint32_t received_ = 0;
    std::uint32_t sequence_ = 0;
    unsigned char message_[message_size]{};
    unsigned char reply_[message_size]{};
};

// The peer of the ping-pong: receive, send back what arrived, receive again.
template <class Transport>
class echo_server
{
public:
    echo_server(Transport& transport, batch_signal& signal) noexcept : transport_(transport), signal_(signal) {}

    void start() noexcept
    {
        receive_next();
    }

private:
    void receive_next() noexcept
    {
        if (!transport_.receive(buffer_, sizeof(buffer_), &on_received_))
        {
            signal_.fail("echo: the receive could not start");
        }
    }

    static void received(void* owner, bool ok, std::uint32_t bytes) noexcept
    {
        auto* self = static_cast<echo_server*>(owner);
        if (!ok || bytes == 0)
        {
            self->signal_.fail("echo: a receive failed or the peer shut down");
            return;
        }
        if (!self->transport_.send(self->buffer_, bytes, &self->on_sent_))
        {
            self->signal_.fail("echo: the send could not start");
        }
    }

    static void sent(void* owner, bool ok, std::uint32_t) noexcept
    {
        auto* self = static_cast<echo_server*>(owner);
        if (!ok)
        {
            self->signal_.fail("echo: a send failed");
            return;
        }
        self->receive_next();
    }

    Transport& transport_;
    batch_signal& signal_;
    const completion on_received_{&received, this};
    const completion on_sent_{&sent, this};
    unsigned char buffer_[4096]{};
};

// The sending side of the stream: `stream_depth` sends of one block in flight until the batch is sent.
template <class Transport>
class stream_sender
{
public:
    stream_sender(Transport& transport, batch_signal& signal) : transport_(transport), signal_(signal), block_(nullptr)
    {
        block_ = static_cast<unsigned char*>(std::malloc(block_size));
        if (block_ != nullptr)
        {
            std::memset(block_, 0x5a, block_size);
        }
    }
    ~stream_sender()
    {
        std::free(block_);
    }
    stream_sender(const stream_sender&) = delete;
    stream_sender& operator=(const stream_sender&) = delete;

    [[nodiscard]] bool valid() const noexcept
    {
        return block_ != nullptr;
    }

    void start_batch(std::uint32_t blocks) noexcept
    {
        to_issue_.store(static_cast<std::int64_t>(blocks), std::memory_order_release);
        to_complete_.store(blocks, std::memory_order_release);
        for (std::uint32_t i = 0; i < stream_depth && i < blocks; ++i)
        {
            issue();
        }
    }

private:
    void issue() noexcept
    {
        if (to_issue_.fetch_sub(1, std::memory_order_acq_rel) <= 0)
        {
            return;
        }
        if (!transport_.send(block_, block_size, &on_sent_))
        {
            signal_.fail("stream: the send could not start");
        }
    }

    static void sent(void* owner, bool ok, std::uint32_t) noexcept
    {
        auto* self = static_cast<stream_sender*>(owner);
        if (!ok)
        {
            self->signal_.fail("stream: a send failed");
            return;
        }
        self->issue();
        if (self->to_complete_.fetch_sub(1, std::memory_order_acq_rel) == 1)
        {
            self->signal_.arrive();
        }
    }

    Transport& transport_;
    batch_signal& signal_;
    const completion on_sent_{&sent, this};
    std::atomic<std::int64_t> to_issue_{0};
    std::atomic<std::uint32_t> to_complete_{0};
    unsigned char* block_;
};

// The receiving side of the stream: one receive of a block at a time, for as long as the connection lasts.
template <class Transport>
class stream_receiver
{
public:
    stream_receiver(Transport& transport, batch_signal& signal)
        : transport_(transport), signal_(signal), block_(nullptr)
    {
        block_ = static_cast<unsigned char*>(std::malloc(block_size));
    }
    ~stream_receiver()
    {
        std::free(block_);
    }
    stream_receiver(const stream_receiver&) = delete;
    stream_receiver& operator=(const stream_receiver&) = delete;

    [[nodiscard]] bool valid() const noexcept
    {
        return block_ != nullptr;
    }

    // Before the batch's first send: how many bytes end it.
    void expect(std::uint64_t bytes) noexcept
    {
        expected_.store(bytes, std::memory_order_release);
    }

    void start() noexcept
    {
        receive_next();
    }

private:
    void receive_next() noexcept
    {
        if (!transport_.receive(block_, block_size, &on_received_))
        {
            signal_.fail("stream: the receive could not start");
        }
    }

    static void received(void* owner, bool ok, std::uint32_t bytes) noexcept
    {
        auto* self = static_cast<stream_receiver*>(owner);
        if (!ok || bytes == 0)
        {
            self->signal_.fail("stream: a receive failed or the peer shut down");
            return;
        }
        self->received_ += bytes;
        const std::uint64_t expected = self->expected_.load(std::memory_order_acquire);
        if (self->received_ > expected)
        {
            self->signal_.fail("stream: more bytes than were sent");
            return;
        }
        const bool batch_done = self->received_ == expected;
        if (batch_done)
        {
            self->received_ = 0;
        }
        // The next receive is started before the batch is reported, so that no IO is started after the
        // benchmark thread may have begun to shut the connection down.
        self->receive_next();
        if (batch_done)
        {
            self->signal_.arrive();
        }
    }

    Transport& transport_;
    batch_signal& signal_;
    const completion on_received_{&received, this};
    std::atomic<std::uint64_t> expected_{0};
    std::uint64_t received_ = 0;
    unsigned char* block_;
};

// ---------------------------------------------------------------------------------------------------------
// Configurations. Each connection type makes a connected loopback pair and both its ends, and provides
//   transport_type, bool ok(), const char* error(), client(), server(),
//   run(f)       calls f where IO of the connection may be started (Asio: on its io_context thread),
//   shutdown()   ends every IO and waits for every callback (idempotent; the destructor calls it).

// async_socket, with Socket = basic_async_socket<...>.
template <class Socket>
class library_transport
{
public:
    explicit library_transport(Socket* socket) noexcept : socket_(socket) {}

    bool send(const void* data, std::uint32_t length, const completion* done) noexcept
    {
        const ASYNC_SOCKET_BUFFER buffer{const_cast<void*>(data), length};
        return socket_->send_async(&buffer, 1, &on_sent, const_cast<completion*>(done)) == status::ok;
    }

    bool receive(void* data, std::uint32_t length, const completion* done) noexcept
    {
        ASYNC_SOCKET_BUFFER buffer{data, length};
        return socket_->receive_async(&buffer, 1, &on_received, const_cast<completion*>(done)) == status::ok;
    }

private:
    static void on_sent(void* context, ASYNC_SOCKET_SEND_RESULT result) noexcept
    {
        (*static_cast<const completion*>(context))(result == ASYNC_SOCKET_SEND_OK, 0);
    }

    static void on_received(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes) noexcept
    {
        (*static_cast<const completion*>(context))(result == ASYNC_SOCKET_RECEIVE_OK, bytes);
    }

    Socket* socket_;
};

// The engine of a library configuration: an execution engine (a pool of pool_min_threads threads), or a
// win32_iocp_engine with one dispatcher thread for the completion-port policy.
template <class Engine>
struct library_engine;

template <>
struct library_engine<EXECUTION_ENGINE_HANDLE>
{
    static EXECUTION_ENGINE_HANDLE make() noexcept
    {
        const EXECUTION_ENGINE_PARAMETERS parameters{pool_min_threads, EXECUTION_ENGINE_NO_MAX_THREAD_COUNT};
        return execution_engine_create(&parameters);
    }
    static void release(EXECUTION_ENGINE_HANDLE engine) noexcept
    {
        execution_engine_dec_ref(engine);
    }
};

// EntriesPerDequeue: 1, the engine's default, makes the dispatcher call GetQueuedCompletionStatus, as Asio does;
// more, GetQueuedCompletionStatusEx.
template <std::uint32_t EntriesPerDequeue = async_socket::win32_iocp_engine_parameters{}.entries_per_dequeue>
struct iocp_engine
{
    static async_socket::win32_iocp_engine* make() noexcept
    {
        return async_socket::win32_iocp_engine::create({.thread_count = 1, .entries_per_dequeue = EntriesPerDequeue})
            .release();
    }
    static void release(async_socket::win32_iocp_engine* engine) noexcept
    {
        async_socket::win32_iocp_engine::release(engine);
    }
};

template <>
struct library_engine<async_socket::win32_iocp_engine*> : iocp_engine<>
{
};

template <class Socket, class Engine = library_engine<typename Socket::engine_type>>
class library_connection
{
public:
    using transport_type = library_transport<Socket>;
    using engine_type = typename Socket::engine_type;

    explicit library_connection(batch_signal& signal) : signal_(signal)
    {
        engine_ = Engine::make();
        if (engine_ == nullptr)
        {
            error_ = "making the engine failed";
            return;
        }
        pair_ = async_socket::testing::make_loopback_pair();
        if (!pair_.valid())
        {
            error_ = "no loopback connection";
            return;
        }
        client_socket_ = Socket::create(engine_, async_socket::testing::as_handle(pair_.client));
        server_socket_ = Socket::create(engine_, async_socket::testing::as_handle(pair_.server));
        if (!client_socket_ || !server_socket_)
        {
            error_ = "create failed";
            return;
        }
        client_ = transport_type(client_socket_.get());
        server_ = transport_type(server_socket_.get());
        const auto opened = [](void*, ASYNC_SOCKET_OPEN_RESULT) noexcept {};
        if (client_socket_->open_async(opened, nullptr) != status::ok ||
            server_socket_->open_async(opened, nullptr) != status::ok)
        {
            error_ = "open_async failed";
            return;
        }
        open_ = true;
    }

    ~library_connection()
    {
        shutdown();
        client_socket_.reset();
        server_socket_.reset();
        pair_.close();
        Engine::release(engine_);
    }
    library_connection(const library_connection&) = delete;
    library_connection& operator=(const library_connection&) = delete;

    [[nodiscard]] bool ok() const noexcept
    {
        return error_ == nullptr;
    }
    [[nodiscard]] const char* error() const noexcept
    {
        return error_;
    }
    transport_type& client() noexcept
    {
        return client_;
    }
    transport_type& server() noexcept
    {
        return server_;
    }

    template <class F>
    void run(F&& f)
    {
        std::forward<F>(f)();
    }

    void shutdown() noexcept
    {
        signal_.stop();
        if (open_)
        {
            (void)server_socket_->close();
            (void)client_socket_->close();
            open_ = false;
        }
    }

private:
    batch_signal& signal_;
    engine_type engine_{};
    async_socket::testing::socket_pair pair_;
    typename Socket::handle client_socket_;
    typename Socket::handle server_socket_;
    transport_type client_{nullptr};
    transport_type server_{nullptr};
    const char* error_ = nullptr;
    bool open_ = false;
};

// Hand-written threadpool IO: what an implementation of the contract does at the least, without the library.
// Events: CreateEvent + CloseHandle around each IO. Skip: FILE_SKIP_COMPLETION_PORT_ON_SUCCESS, an IO that
// finishes at once is completed on the calling thread.
struct raw_io
{
    OVERLAPPED overlapped; // first: the completion's OVERLAPPED* is the raw_io*
    WSABUF buffer;
    const completion* done;
    HANDLE event;
    DWORD bytes_at_once;
    raw_io* next;
};

template <bool Events, bool Skip>
class raw_transport
{
public:
    raw_transport() noexcept = default;
    raw_transport(const raw_transport&) = delete;
    raw_transport& operator=(const raw_transport&) = delete;
    ~raw_transport()
    {
        wait_and_close();
    }

    bool bind(SOCKET socket, PTP_CALLBACK_ENVIRON environment) noexcept
    {
        socket_ = socket;
        if constexpr (Skip)
        {
            if (!SetFileCompletionNotificationModes(reinterpret_cast<HANDLE>(socket),
                                                    FILE_SKIP_COMPLETION_PORT_ON_SUCCESS |
                                                        FILE_SKIP_SET_EVENT_ON_HANDLE))
            {
                return false;
            }
        }
        io_ = CreateThreadpoolIo(reinterpret_cast<HANDLE>(socket), &on_complete, nullptr, environment);
        return io_ != nullptr;
    }

    // After the socket was closed: waits for the callbacks of every IO, then releases the threadpool IO.
    void wait_and_close() noexcept
    {
        if (io_ != nullptr)
        {
            WaitForThreadpoolIoCallbacks(io_, FALSE);
            CloseThreadpoolIo(io_);
            io_ = nullptr;
        }
    }

    bool send(const void* data, std::uint32_t length, const completion* done) noexcept
    {
        return issue(true, const_cast<void*>(data), length, done);
    }

    bool receive(void* data, std::uint32_t length, const completion* done) noexcept
    {
        return issue(false, data, length, done);
    }

private:
    bool issue(bool is_send, void* data, std::uint32_t length, const completion* done) noexcept
    {
        auto* io = static_cast<raw_io*>(std::malloc(sizeof(raw_io)));
        if (io == nullptr)
        {
            return false;
        }
        *io = raw_io{};
        io->buffer.buf = static_cast<CHAR*>(data);
        io->buffer.len = static_cast<ULONG>(length);
        io->done = done;
        if constexpr (Events)
        {
            io->event = CreateEventW(nullptr, TRUE, FALSE, nullptr);
            if (io->event == nullptr)
            {
                std::free(io);
                return false;
            }
            io->overlapped.hEvent = io->event;
        }
        StartThreadpoolIo(io_);
        DWORD bytes = 0;
        DWORD flags = 0;
        const int result =
            is_send ? WSASend(socket_, &io->buffer, 1, Skip ? &bytes : nullptr, 0, &io->overlapped, nullptr)
                    : WSARecv(socket_, &io->buffer, 1, Skip ? &bytes : nullptr, &flags, &io->overlapped, nullptr);
        if (result == 0)
        {
            if constexpr (Skip)
            {
                CancelThreadpoolIo(io_);
                complete_at_once(io, bytes);
            }
            return true; // without Skip the completion comes through the pool
        }
        if (WSAGetLastError() == WSA_IO_PENDING)
        {
            return true;
        }
        CancelThreadpoolIo(io_);
        release(io);
        return false;
    }

    static void release(raw_io* io) noexcept
    {
        if constexpr (Events)
        {
            CloseHandle(io->event);
        }
        std::free(io);
    }

    // Frees the IO first, so that the callback may start the next one.
    static void deliver(raw_io* io, bool ok, std::uint32_t bytes) noexcept
    {
        const completion* done = io->done;
        release(io);
        (*done)(ok, bytes);
    }

    // An IO that finished at once completes on this thread; one that finishes at once while this thread is
    // already completing one is queued and run by the outer call, so that chained IO does not recurse.
    static void complete_at_once(raw_io* io, DWORD bytes) noexcept
    {
        thread_local raw_io* head = nullptr;
        thread_local raw_io* tail = nullptr;
        thread_local bool running = false;
        io->bytes_at_once = bytes;
        io->next = nullptr;
        (tail != nullptr ? tail->next : head) = io;
        tail = io;
        if (running)
        {
            return;
        }
        running = true;
        while (head != nullptr)
        {
            raw_io* next = head;
            head = next->next;
            if (head == nullptr)
            {
                tail = nullptr;
            }
            deliver(next, true, next->bytes_at_once);
        }
        running = false;
    }

    static VOID CALLBACK on_complete(PTP_CALLBACK_INSTANCE, PVOID, PVOID overlapped, ULONG io_result, ULONG_PTR bytes,
                                     PTP_IO)
    {
        if (overlapped != nullptr)
        {
            deliver(static_cast<raw_io*>(overlapped), io_result == NO_ERROR, static_cast<std::uint32_t>(bytes));
        }
    }

    SOCKET socket_ = INVALID_SOCKET;
    PTP_IO io_ = nullptr;
};

template <bool Events, bool Skip>
class raw_connection
{
public:
    using transport_type = raw_transport<Events, Skip>;

    explicit raw_connection(batch_signal& signal) : signal_(signal)
    {
        InitializeThreadpoolEnvironment(&environment_);
        pool_ = CreateThreadpool(nullptr);
        if (pool_ == nullptr || !SetThreadpoolThreadMinimum(pool_, pool_min_threads))
        {
            error_ = "CreateThreadpool failed";
            return;
        }
        SetThreadpoolCallbackPool(&environment_, pool_);
        pair_ = async_socket::testing::make_loopback_pair();
        if (!pair_.valid())
        {
            error_ = "no loopback connection";
            return;
        }
        if (!client_.bind(pair_.client, &environment_) || !server_.bind(pair_.server, &environment_))
        {
            error_ = "CreateThreadpoolIo or SetFileCompletionNotificationModes failed";
        }
    }

    ~raw_connection()
    {
        shutdown();
        DestroyThreadpoolEnvironment(&environment_);
        if (pool_ != nullptr)
        {
            CloseThreadpool(pool_);
        }
    }
    raw_connection(const raw_connection&) = delete;
    raw_connection& operator=(const raw_connection&) = delete;

    [[nodiscard]] bool ok() const noexcept
    {
        return error_ == nullptr;
    }
    [[nodiscard]] const char* error() const noexcept
    {
        return error_;
    }
    transport_type& client() noexcept
    {
        return client_;
    }
    transport_type& server() noexcept
    {
        return server_;
    }

    template <class F>
    void run(F&& f)
    {
        std::forward<F>(f)();
    }

    // Closing the sockets completes every pending IO with an error and makes every later one fail at once, so
    // the wait for callbacks cannot hang on an IO a callback starts meanwhile.
    void shutdown() noexcept
    {
        signal_.stop();
        pair_.close();
        client_.wait_and_close();
        server_.wait_and_close();
    }

private:
    batch_signal& signal_;
    TP_CALLBACK_ENVIRON environment_{};
    PTP_POOL pool_ = nullptr;
    async_socket::testing::socket_pair pair_;
    transport_type client_;
    transport_type server_;
    const char* error_ = nullptr;
};

#if ASYNC_SOCKET_BENCH_HAVE_ASIO
// Asio: both ends on one io_context, run by one thread; every socket operation runs on that thread.
class asio_transport
{
public:
    explicit asio_transport(asio::ip::tcp::socket& socket) noexcept : socket_(socket) {}

    bool send(const void* data, std::uint32_t length, const completion* done) noexcept
    {
        asio::async_write(socket_, asio::buffer(data, length),
                          [done](const asio::error_code& error, std::size_t bytes) noexcept
                          { (*done)(!error, static_cast<std::uint32_t>(bytes)); });
        return true;
    }

    bool receive(void* data, std::uint32_t length, const completion* done) noexcept
    {
        socket_.async_read_some(asio::buffer(data, length),
                                [done](const asio::error_code& error, std::size_t bytes) noexcept
                                { (*done)(!error, static_cast<std::uint32_t>(bytes)); });
        return true;
    }

private:
    asio::ip::tcp::socket& socket_;
};

class asio_connection
{
public:
    using transport_type = asio_transport;

    explicit asio_connection(batch_signal& signal)
        : signal_(signal), io_(1), work_(asio::make_work_guard(io_)), client_socket_(io_), server_socket_(io_),
          client_(client_socket_), server_(server_socket_)
    {
        async_socket::testing::socket_pair pair = async_socket::testing::make_loopback_pair();
        if (!pair.valid())
        {
            error_ = "no loopback connection";
            return;
        }
        asio::error_code error;
        client_socket_.assign(asio::ip::tcp::v4(), pair.client, error);
        if (error)
        {
            error_ = "asio: assign failed";
            return;
        }
        pair.client = INVALID_SOCKET; // Asio owns it now
        server_socket_.assign(asio::ip::tcp::v4(), pair.server, error);
        if (error)
        {
            error_ = "asio: assign failed";
            return;
        }
        pair.server = INVALID_SOCKET;
        thread_ = std::thread([this] { io_.run(); });
    }

    ~asio_connection()
    {
        shutdown();
    }
    asio_connection(const asio_connection&) = delete;
    asio_connection& operator=(const asio_connection&) = delete;

    [[nodiscard]] bool ok() const noexcept
    {
        return error_ == nullptr;
    }
    [[nodiscard]] const char* error() const noexcept
    {
        return error_;
    }
    transport_type& client() noexcept
    {
        return client_;
    }
    transport_type& server() noexcept
    {
        return server_;
    }

    template <class F>
    void run(F f)
    {
        asio::post(io_, std::move(f));
    }

    void shutdown() noexcept
    {
        signal_.stop();
        if (thread_.joinable())
        {
            asio::post(io_,
                       [this]
                       {
                           asio::error_code ignored;
                           client_socket_.close(ignored);
                           server_socket_.close(ignored);
                       });
            work_.reset();
            thread_.join();
        }
    }

private:
    batch_signal& signal_;
    asio::io_context io_;
    asio::executor_work_guard<asio::io_context::executor_type> work_;
    asio::ip::tcp::socket client_socket_;
    asio::ip::tcp::socket server_socket_;
    transport_type client_;
    transport_type server_;
    std::thread thread_;
    const char* error_ = nullptr;
};
#endif

// ---------------------------------------------------------------------------------------------------------
// The benchmarks.

// With --mark_timed_region, the timed loop of each benchmark is framed by the creation of a named event, a
// request that shows with its name in Wine's request trace (WINEDEBUG=+server): scripts/bench_wine_requests.py
// counts the wineserver requests between the two marks. `operations` is the work of the timed loop (round
// trips, or bytes).
void mark_timed_region(const char* what, const std::string& benchmark, std::uint64_t operations)
{
    if (!work.mark_timed_region)
    {
        return;
    }
    const std::string text =
        std::string("async_socket_bench_mark:") + what + ":" + benchmark + ":" + std::to_string(operations);
    std::wstring name(text.begin(), text.end());
    for (wchar_t& c : name)
    {
        c = c == L'\\' ? L'_' : c; // a backslash would name a namespace
    }
    if (HANDLE event = CreateEventW(nullptr, FALSE, FALSE, name.c_str()); event != nullptr)
    {
        CloseHandle(event);
    }
}

// CPU time (user + kernel) of every thread of this process so far, in microseconds (GetProcessTimes; Wine
// does not count the time its wineserver spends on the process's requests).
double process_cpu_us() noexcept
{
    FILETIME created{};
    FILETIME exited{};
    FILETIME kernel{};
    FILETIME user{};
    if (!GetProcessTimes(GetCurrentProcess(), &created, &exited, &kernel, &user))
    {
        return 0.0;
    }
    const auto ticks = [](const FILETIME& time)
    { return (static_cast<std::uint64_t>(time.dwHighDateTime) << 32) | time.dwLowDateTime; };
    return static_cast<double>(ticks(kernel) + ticks(user)) / 10.0; // 100 ns ticks
}

// Shuts the connection down on every way out, while the protocol objects it calls back still exist.
template <class Connection>
struct shutdown_at_exit
{
    Connection& connection;
    ~shutdown_at_exit()
    {
        connection.shutdown();
    }
};

template <class Connection>
void pingpong(benchmark::State& state, const std::string& name)
{
    batch_signal signal;
    Connection connection(signal);
    if (!signal.valid() || !connection.ok())
    {
        state.SkipWithError(connection.ok() ? "CreateEvent failed" : connection.error());
        return;
    }
    using transport = typename Connection::transport_type;
    pingpong_client<transport> client(connection.client(), signal);
    echo_server<transport> server(connection.server(), signal);
    shutdown_at_exit<Connection> at_exit{connection};

    connection.run([&] { server.start(); });
    signal.arm(1);
    connection.run([&] { client.start_batch(work.pingpong_batch / 4 + 1); });
    if (const char* failure = signal.wait(); failure != nullptr)
    {
        state.SkipWithError(failure);
        return;
    }

    const std::uint32_t batch = work.pingpong_batch;
    mark_timed_region("begin", name, static_cast<std::uint64_t>(state.max_iterations) * batch);
    const double cpu_before = process_cpu_us();
    for (auto _ : state)
    {
        signal.arm(1);
        connection.run([&] { client.start_batch(batch); });
        if (const char* failure = signal.wait(); failure != nullptr)
        {
            state.SkipWithError(failure);
            break;
        }
    }
    const double cpu_after = process_cpu_us();
    mark_timed_region("end", name, static_cast<std::uint64_t>(state.max_iterations) * batch);
    const auto round_trips = static_cast<std::int64_t>(state.iterations()) * batch;
    state.SetItemsProcessed(round_trips);
    state.counters["cpu_us_per_round_trip"] = (cpu_after - cpu_before) / static_cast<double>(round_trips);
}

template <class Connection>
void stream(benchmark::State& state, const std::string& name)
{
    batch_signal signal;
    Connection connection(signal);
    if (!signal.valid() || !connection.ok())
    {
        state.SkipWithError(connection.ok() ? "CreateEvent failed" : connection.error());
        return;
    }
    using transport = typename Connection::transport_type;
    stream_sender<transport> sender(connection.client(), signal);
    stream_receiver<transport> receiver(connection.server(), signal);
    if (!sender.valid() || !receiver.valid())
    {
        state.SkipWithError("out of memory");
        return;
    }
    shutdown_at_exit<Connection> at_exit{connection};

    connection.run([&] { receiver.start(); });
    const auto run_batch = [&](std::uint32_t blocks)
    {
        signal.arm(2); // the receiver has every byte, and every send has completed
        receiver.expect(static_cast<std::uint64_t>(blocks) * block_size);
        connection.run([&sender, blocks] { sender.start_batch(blocks); });
        return signal.wait();
    };
    if (const char* failure = run_batch(work.stream_batch_blocks / 4 + 1); failure != nullptr)
    {
        state.SkipWithError(failure);
        return;
    }

    const std::uint32_t blocks = work.stream_batch_blocks;
    const auto batch_bytes = static_cast<std::uint64_t>(blocks) * block_size;
    mark_timed_region("begin", name, static_cast<std::uint64_t>(state.max_iterations) * batch_bytes);
    const double cpu_before = process_cpu_us();
    for (auto _ : state)
    {
        if (const char* failure = run_batch(blocks); failure != nullptr)
        {
            state.SkipWithError(failure);
            break;
        }
    }
    const double cpu_after = process_cpu_us();
    mark_timed_region("end", name, static_cast<std::uint64_t>(state.max_iterations) * batch_bytes);
    const auto bytes = static_cast<std::int64_t>(state.iterations()) * blocks * block_size;
    state.SetBytesProcessed(bytes);
    state.counters["cpu_us_per_MiB"] = (cpu_after - cpu_before) / (static_cast<double>(bytes) / (1024.0 * 1024.0));
}

using spec_default_socket = async_socket::win32_async_socket;
using recycled_events_socket =
    async_socket::basic_async_socket<async_socket::basic_win32_threadpool<async_socket::win32_options{
                                         .events = async_socket::win32_event_mode::recycled}>,
                                     async_socket::heap_alloc, async_socket::win32_sync>;
using fast_socket = async_socket::win32_no_event_skip_port_async_socket;
using iocp_fast_socket = async_socket::win32_iocp_async_socket;
using iocp_socket =
    async_socket::basic_async_socket<async_socket::basic_win32_iocp_threadpool<async_socket::win32_options{
                                         .events = async_socket::win32_event_mode::none}>,
                                     async_socket::recycling_pool_alloc, async_socket::win32_sync>;

template <class Connection>
void add(const char* config)
{
    const std::string pingpong_name = std::string("pingpong_64B/") + config;
    const std::string stream_name = std::string("stream_64KiB/") + config;
    benchmark::RegisterBenchmark(pingpong_name.c_str(), &pingpong<Connection>, pingpong_name)
        ->Iterations(work.pingpong_iterations)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(stream_name.c_str(), &stream<Connection>, stream_name)
        ->Iterations(work.stream_iterations)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
}

void register_all()
{
    add<library_connection<spec_default_socket>>("spec_default");
    add<library_connection<recycled_events_socket>>("recycled_events");
    add<library_connection<fast_socket>>("fast");
    add<raw_connection<true, false>>("raw_event_per_io");
    add<raw_connection<false, false>>("raw");
    add<raw_connection<false, true>>("raw_skip");
#if ASYNC_SOCKET_BENCH_HAVE_ASIO
    add<asio_connection>("asio");
#endif
    add<library_connection<iocp_fast_socket>>("iocp_fast");
    add<library_connection<iocp_socket>>("iocp");
    add<library_connection<iocp_fast_socket, iocp_engine<16>>>("iocp_fast_batch");
}

} // namespace

int main(int argc, char** argv)
{
    // --quick, --pingpong_iterations=N and --stream_iterations=N are ours; the rest is Google Benchmark's.
    int kept = 1;
    for (int i = 1; i < argc; ++i)
    {
        unsigned long value = 0;
        if (std::strcmp(argv[i], "--quick") == 0)
        {
            work = workload{20, 3, 16, 2, work.mark_timed_region};
        }
        else if (std::strcmp(argv[i], "--mark_timed_region") == 0)
        {
            work.mark_timed_region = true;
        }
        else if (std::sscanf(argv[i], "--pingpong_iterations=%lu", &value) == 1 && value > 0)
        {
            work.pingpong_iterations = static_cast<std::uint32_t>(value);
        }
        else if (std::sscanf(argv[i], "--stream_iterations=%lu", &value) == 1 && value > 0)
        {
            work.stream_iterations = static_cast<std::uint32_t>(value);
        }
        else
        {
            argv[kept++] = argv[i];
        }
    }
    argc = kept;

    async_socket::testing::wsa_session wsa;
    if (!wsa.ok())
    {
        std::fprintf(stderr, "bench_loopback: WSAStartup failed: %d\n", wsa.result);
        return 1;
    }
    benchmark::AddCustomContext("pool_min_threads", std::to_string(pool_min_threads));
    benchmark::AddCustomContext("pingpong_round_trips_per_iteration", std::to_string(work.pingpong_batch));
    benchmark::AddCustomContext("stream_bytes_per_iteration",
                                std::to_string(static_cast<std::uint64_t>(work.stream_batch_blocks) * block_size));
    benchmark::AddCustomContext("stream_sends_in_flight", std::to_string(stream_depth));
#if ASYNC_SOCKET_BENCH_HAVE_ASIO
    benchmark::AddCustomContext("asio_version", std::to_string(ASIO_VERSION));
#endif
    register_all();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
    {
        return 2;
    }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
