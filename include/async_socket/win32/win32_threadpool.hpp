// async_socket: the Win32 ThreadpoolPolicy, the only part of the library that talks to the OS.
//
// One object per socket (see threadpool_policy in policies.hpp). Each member is one Win32 call and holds
// no logic; basic_async_socket decides when to call what. The object keeps a reference to its execution
// engine from acquire_pool until it is destroyed, so the pool outlives every threadpool IO made on it.
//
// Choices:
// - The cleanup group is created (SRS 01_037) but not attached to the callback environment
//   (no SetThreadpoolCallbackCleanupGroup). The threadpool IO is released one by one, in the order
//   cancel -> WaitForThreadpoolIoCallbacks -> CloseThreadpoolIo; a member of a cleanup group must instead be
//   released by CloseThreadpoolCleanupGroupMembers and never closed by itself, which would split its
//   teardown between two owners.
// - The per-IO event is a manual-reset event (CreateEventW(NULL, TRUE, FALSE, NULL)): the OS resets the
//   OVERLAPPED's event when an IO starts and sets it when the IO ends, and the OVERLAPPED documentation
//   asks for a manual-reset event there (WSACreateEvent makes the same kind). Nothing waits on it: the
//   completion reaches the threadpool through the completion port.
// - A socket is bound to one completion port for life: a second CreateThreadpoolIo on the same SOCKET
//   fails (ERROR_INVALID_PARAMETER, 87, under Wine 8.0). basic_async_socket therefore calls create_io once
//   per object and close_io at destroy.
#pragma once

#include <winsock2.h>
#include <windows.h>

#include <async_socket/policies.hpp>
#include <async_socket/types.h>
#include <async_socket/win32/execution_engine.hpp>

#include <cstddef>
#include <cstdint>
#include <utility>

namespace async_socket
{

static_assert(sizeof(DWORD) == sizeof(std::uint32_t), "win32_threadpool needs DWORD to be 32 bits");

class win32_threadpool
{
public:
    using engine_type = EXECUTION_ENGINE_HANDLE;
    using overlapped_type = OVERLAPPED;
    using buffer_type = WSABUF;
    using event_type = HANDLE;

    win32_threadpool() noexcept = default;
    win32_threadpool(win32_threadpool&& other) noexcept
        : engine_(std::exchange(other.engine_, nullptr)), pool_(std::exchange(other.pool_, nullptr)),
          environment_(other.environment_), cleanup_group_(std::exchange(other.cleanup_group_, nullptr)),
          io_(std::exchange(other.io_, nullptr))
    {
    }
    win32_threadpool& operator=(win32_threadpool&&) = delete;
    win32_threadpool(const win32_threadpool&) = delete;
    win32_threadpool& operator=(const win32_threadpool&) = delete;

    // Drops the reference to the execution engine taken by acquire_pool.
    ~win32_threadpool()
    {
        execution_engine_dec_ref(engine_);
    }

    // execution_engine_win32_get_threadpool, and a reference to the engine (dropped by the destructor).
    // Fails when the engine has no pool.
    bool acquire_pool(EXECUTION_ENGINE_HANDLE engine) noexcept
    {
        PTP_POOL pool = execution_engine_win32_get_threadpool(engine);
        if (pool == nullptr)
        {
            return false;
        }
        execution_engine_inc_ref(engine);
        execution_engine_dec_ref(engine_);
        engine_ = engine;
        pool_ = pool;
        return true;
    }

    // InitializeThreadpoolEnvironment. Cannot fail.
    void initialize_environment() noexcept
    {
        InitializeThreadpoolEnvironment(&environment_);
    }

    // SetThreadpoolCallbackPool with the pool from acquire_pool. Cannot fail.
    void set_callback_pool() noexcept
    {
        SetThreadpoolCallbackPool(&environment_, pool_);
    }

    // CreateThreadpoolCleanupGroup. Fails when the OS has no memory for it.
    bool create_cleanup_group() noexcept
    {
        cleanup_group_ = CreateThreadpoolCleanupGroup();
        return cleanup_group_ != nullptr;
    }

    // CreateThreadpoolIo on the socket, in this environment; every completion calls
    // Completion(callback_context, overlapped, io_result, bytes) on a pool thread. Fails when the socket
    // is not an overlapped handle or was bound to a completion port before.
    template <io_completion_fn Completion>
    bool create_io(SOCKET_HANDLE socket, void* callback_context) noexcept
    {
        io_ = CreateThreadpoolIo(to_handle(socket), &on_io_complete<Completion>, callback_context, &environment_);
        return io_ != nullptr;
    }

    // StartThreadpoolIo: before every WSASend/WSARecv. Cannot fail.
    void start_io() noexcept
    {
        StartThreadpoolIo(io_);
    }

    // CancelThreadpoolIo: after a WSASend/WSARecv that failed at once. Cannot fail.
    void cancel_io() noexcept
    {
        CancelThreadpoolIo(io_);
    }

    // WaitForThreadpoolIoCallbacks. Blocks while an IO is outstanding (unless cancel_pending); must not be
    // called from one of this IO's callbacks.
    void wait_for_io_callbacks(bool cancel_pending) noexcept
    {
        WaitForThreadpoolIoCallbacks(io_, cancel_pending ? TRUE : FALSE);
    }

    // CloseThreadpoolIo. Cannot fail.
    void close_io() noexcept
    {
        CloseThreadpoolIo(io_);
        io_ = nullptr;
    }

    // CloseThreadpoolCleanupGroup. Cannot fail.
    void close_cleanup_group() noexcept
    {
        CloseThreadpoolCleanupGroup(cleanup_group_);
        cleanup_group_ = nullptr;
    }

    // DestroyThreadpoolEnvironment. Cannot fail.
    void destroy_environment() noexcept
    {
        DestroyThreadpoolEnvironment(&environment_);
    }

    // CreateEventW: a manual-reset, non-signalled, unnamed event. nullptr when the OS refuses.
    HANDLE create_event() noexcept
    {
        return CreateEventW(nullptr, TRUE, FALSE, nullptr);
    }

    // CloseHandle. Cannot fail on an event made by create_event.
    void close_event(HANDLE event) noexcept
    {
        (void)CloseHandle(event);
    }

    // Zeroes the OVERLAPPED and sets its hEvent. No OS call.
    static void set_overlapped_event(OVERLAPPED& overlapped, HANDLE event) noexcept
    {
        overlapped = OVERLAPPED{};
        overlapped.hEvent = event;
    }

    // Points the WSABUF at `length` bytes at `memory`. No OS call.
    static void set_buffer(WSABUF& buffer, void* memory, std::uint32_t length) noexcept
    {
        buffer.buf = static_cast<CHAR*>(memory);
        buffer.len = static_cast<ULONG>(length);
    }

    // WSASend without a completion routine. Returns io_no_error when the IO was accepted (done at once
    // or WSA_IO_PENDING; its completion comes through the pool either way), else the WSA error code.
    io_error send(SOCKET_HANDLE socket, WSABUF* buffers, std::uint32_t count, std::uint32_t* bytes_sent,
                  std::uint32_t flags, OVERLAPPED* overlapped) noexcept
    {
        DWORD sent = 0;
        const int result =
            WSASend(to_socket(socket), buffers, static_cast<DWORD>(count), bytes_sent == nullptr ? nullptr : &sent,
                    static_cast<DWORD>(flags), overlapped, nullptr);
        if (bytes_sent != nullptr)
        {
            *bytes_sent = static_cast<std::uint32_t>(sent);
        }
        return accepted_or_error(result);
    }

    // WSARecv without a completion routine; *flags is passed in and read back. Returns as send does.
    io_error receive(SOCKET_HANDLE socket, WSABUF* buffers, std::uint32_t count, std::uint32_t* bytes_received,
                     std::uint32_t* flags, OVERLAPPED* overlapped) noexcept
    {
        DWORD received = 0;
        DWORD flags_in_out = static_cast<DWORD>(*flags);
        const int result = WSARecv(to_socket(socket), buffers, static_cast<DWORD>(count),
                                   bytes_received == nullptr ? nullptr : &received, &flags_in_out, overlapped, nullptr);
        if (bytes_received != nullptr)
        {
            *bytes_received = static_cast<std::uint32_t>(received);
        }
        *flags = static_cast<std::uint32_t>(flags_in_out);
        return accepted_or_error(result);
    }

    // CancelIoEx(socket, NULL): every IO outstanding on the socket, from any thread, completes with
    // ERROR_OPERATION_ABORTED (995). Finding nothing to cancel (ERROR_NOT_FOUND) is not a failure.
    void cancel_socket_io(SOCKET_HANDLE socket) noexcept
    {
        (void)CancelIoEx(to_handle(socket), nullptr);
    }

private:
    // The PTP_WIN32_IO_CALLBACK the pool calls; hands the completion to the core's routine.
    template <io_completion_fn Completion>
    static VOID CALLBACK on_io_complete(PTP_CALLBACK_INSTANCE /*instance*/, PVOID context, PVOID overlapped,
                                        ULONG io_result, ULONG_PTR bytes_transferred, PTP_IO /*io*/) noexcept
    {
        Completion(context, overlapped, static_cast<io_error>(io_result), static_cast<std::size_t>(bytes_transferred));
    }

    static io_error accepted_or_error(int result) noexcept
    {
        if (result == 0)
        {
            return io_no_error;
        }
        const int error = WSAGetLastError();
        return error == WSA_IO_PENDING ? io_no_error : static_cast<io_error>(error);
    }

    static SOCKET to_socket(SOCKET_HANDLE socket) noexcept
    {
        return reinterpret_cast<SOCKET>(socket);
    }

    static HANDLE to_handle(SOCKET_HANDLE socket) noexcept
    {
        return static_cast<HANDLE>(socket);
    }

    EXECUTION_ENGINE_HANDLE engine_ = nullptr;
    PTP_POOL pool_ = nullptr;
    TP_CALLBACK_ENVIRON environment_{};
    PTP_CLEANUP_GROUP cleanup_group_ = nullptr;
    PTP_IO io_ = nullptr;
};

static_assert(check_threadpool_policy<win32_threadpool>());

} // namespace async_socket
