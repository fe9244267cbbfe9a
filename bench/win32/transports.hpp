// bench_loopback: the configurations, one transport and connection type each: the library (threadpool IO and
// completion port), hand-written threadpool IO, and Asio.
#pragma once

#include "loopback_common.hpp"

#include <async_socket/async_socket.hpp>
#include <async_socket/backend/win32/iocp.hpp>
#include <async_socket/testing/win32_loopback.hpp>

#if ASYNC_SOCKET_BENCH_HAVE_ASIO
#include <asio.hpp>
#endif

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <utility>

namespace bench_loopback
{

// What the library and hand-written connections have the same: their two ends, whether they were made, and
// that IO may be started from any thread.
template <class Transport>
class connection_ends
{
public:
    using transport_type = Transport;

    [[nodiscard]] bool ok() const noexcept
    {
        return error_ == nullptr;
    }
    [[nodiscard]] const char* error() const noexcept
    {
        return error_;
    }
    Transport& client() noexcept
    {
        return client_;
    }
    Transport& server() noexcept
    {
        return server_;
    }

    template <class F>
    void run(F&& f)
    {
        std::forward<F>(f)();
    }

protected:
    Transport client_{};
    Transport server_{};
    const char* error_ = nullptr;
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
    library_transport() noexcept = default;
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
class library_connection : public connection_ends<library_transport<Socket>>
{
    using connection_ends<library_transport<Socket>>::client_;
    using connection_ends<library_transport<Socket>>::server_;
    using connection_ends<library_transport<Socket>>::error_;

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
class raw_connection : public connection_ends<raw_transport<Events, Skip>>
{
    using connection_ends<raw_transport<Events, Skip>>::client_;
    using connection_ends<raw_transport<Events, Skip>>::server_;
    using connection_ends<raw_transport<Events, Skip>>::error_;

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

} // namespace bench_loopback
