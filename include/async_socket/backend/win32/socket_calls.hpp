/// @file
/// async_socket, Win32 backend: the calls every Win32 ThreadpoolPolicy makes for one socket, whatever delivers
/// its completions (threadpool IO in threadpool.hpp, a plain completion port in iocp.hpp): the IO's event
/// (per IO, none, or recycled), skip-completion-on-success mode, WSASend/WSARecv and CancelIoEx. The options
/// (win32_event_mode, win32_options) are described in threadpool.hpp's header comment.
#pragma once

#include <async_socket/detail/config.hpp>

#include <winsock2.h>
#include <ws2tcpip.h>
#include <mswsock.h>
#include <windows.h>

#include <async_socket/concepts.hpp>
#include <async_socket/socket_address.hpp>
#include <async_socket/backend/win32/threadpool_backend.hpp>
#include <async_socket/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace async_socket
{

static_assert(sizeof(DWORD) == sizeof(std::uint32_t), "win32_threadpool needs DWORD to be 32 bits");
static_assert(sizeof(SOCKADDR_STORAGE) + 16 == win32_accept_address_length, "AcceptEx's address length");
static_assert(sizeof(SOCKADDR_STORAGE) == socket_address::max_size, "a socket_address holds any SOCKADDR_STORAGE");

/// How a Win32 ThreadpoolPolicy gives each IO's OVERLAPPED an event (see threadpool.hpp's header comment).
enum class win32_event_mode
{
    per_io,   ///< CreateEvent before each IO, CloseHandle after it: the spec's behaviour
    none,     ///< no event: hEvent is NULL
    recycled, ///< an event per IO, reused from a few kept by the socket's policy
};

/// The options of basic_win32_threadpool. The defaults are the spec's behaviour.
struct win32_options
{
    win32_event_mode events = win32_event_mode::per_io; ///< the event each IO's OVERLAPPED carries
    bool skip_completion_on_success = false;            ///< FILE_SKIP_COMPLETION_PORT_ON_SUCCESS on the socket
};

namespace detail
{
/// The events a recycled-events policy keeps for its next IOs: up to `capacity`, each slot an atomic HANDLE
/// (null when empty). take() and give_back() run concurrently from user threads and pool threads and never
/// block: a slot is claimed by an exchange and filled by a compare-exchange, so each event is owned by one
/// slot or one IO at a time.
///
/// No ResetEvent is needed before an event is used again. Nothing waits on it (the completion reaches the
/// pool through the completion port, or the core completes the IO at once in skip mode), and the OS itself
/// resets the OVERLAPPED's event when an IO starts and sets it when the IO ends: an event given back
/// signalled is reset by the next WSASend/WSARecv that uses it.
class win32_event_cache
{
public:
    /// Enough for a send and a receive in flight, with room to spare; each kept event is a kernel handle.
    static constexpr std::size_t capacity = 4;

    win32_event_cache() noexcept = default;
    /// Only made before the socket uses it (create moves the policy in); takes over the other's events.
    win32_event_cache(win32_event_cache&& other) noexcept
    {
        for (std::size_t i = 0; i < capacity; ++i)
        {
            slots_[i].store(other.slots_[i].exchange(nullptr, std::memory_order_acq_rel), std::memory_order_release);
        }
    }
    win32_event_cache& operator=(win32_event_cache&&) = delete;
    win32_event_cache(const win32_event_cache&) = delete;
    win32_event_cache& operator=(const win32_event_cache&) = delete;

    /// CloseHandle on every kept event. Every IO has completed by then: the socket closes before it is freed.
    ~win32_event_cache()
    {
        for (std::atomic<HANDLE>& slot : slots_)
        {
            if (HANDLE event = slot.exchange(nullptr, std::memory_order_acquire); event != nullptr)
            {
                (void)CloseHandle(event);
            }
        }
    }

    /// A kept event, or nullptr when none is left. No OS call.
    HANDLE take() noexcept
    {
        for (std::atomic<HANDLE>& slot : slots_)
        {
            if (slot.load(std::memory_order_relaxed) != nullptr)
            {
                if (HANDLE event = slot.exchange(nullptr, std::memory_order_acquire); event != nullptr)
                {
                    return event;
                }
            }
        }
        return nullptr;
    }

    /// Keeps `event` for a later IO; false (the caller closes it) when every slot is full. No OS call.
    bool give_back(HANDLE event) noexcept
    {
        for (std::atomic<HANDLE>& slot : slots_)
        {
            HANDLE empty = nullptr;
            if (slot.load(std::memory_order_relaxed) == nullptr &&
                slot.compare_exchange_strong(empty, event, std::memory_order_release, std::memory_order_relaxed))
            {
                return true;
            }
        }
        return false;
    }

private:
    std::atomic<HANDLE> slots_[capacity]{};
};

/// What a policy that does not recycle events keeps instead: nothing.
struct win32_no_event_cache
{
};
/// The socket's own calls, the same for every Win32 ThreadpoolPolicy (threadpool IO here, a plain completion port
/// in backend/win32/iocp.hpp): the IO's event, skip mode, WSASend/WSARecv and CancelIoEx. The policies derive from it
/// and add how completions are delivered.
template <win32_options Options>
class win32_socket_calls
{
public:
    using overlapped_type = OVERLAPPED;
    using buffer_type = WSABUF;
    using event_type = HANDLE;

    static constexpr win32_options options = Options;

    /// false with events = none: the backend then never calls create_event/close_event and hEvent stays NULL.
    static constexpr bool uses_io_events = Options.events != win32_event_mode::none;

    /// true: the backend calls set_skip_completion_on_success at the first open and accepts
    /// win32_completed_at_once from send and receive.
    static constexpr bool skip_completion_on_success = Options.skip_completion_on_success;

    win32_socket_calls() noexcept = default;
    win32_socket_calls(win32_socket_calls&& other) noexcept
        : accept_ex_(other.accept_ex_), get_accept_ex_sockaddrs_(other.get_accept_ex_sockaddrs_),
          connect_ex_(other.connect_ex_), events_(std::move(other.events_))
    {
    }
    win32_socket_calls& operator=(win32_socket_calls&&) = delete;
    win32_socket_calls(const win32_socket_calls&) = delete;
    win32_socket_calls& operator=(const win32_socket_calls&) = delete;
    ~win32_socket_calls() = default; ///< with events = recycled, closes the kept events

    /// CreateEventW: a manual-reset, non-signalled, unnamed event. nullptr when the OS refuses.
    /// events = recycled: a kept event when there is one (no OS call), else a new one.
    /// events = none: never called by the core (present because the concept asks for it).
    HANDLE create_event() noexcept
    {
        if constexpr (Options.events == win32_event_mode::recycled)
        {
            if (HANDLE kept = events_.take(); kept != nullptr)
            {
                return kept;
            }
        }
        return CreateEventW(nullptr, TRUE, FALSE, nullptr);
    }

    /// GetLastError: why create_event failed.
    win32_error last_error() const noexcept
    {
        return static_cast<win32_error>(GetLastError());
    }

    /// CloseHandle. Cannot fail on an event made by create_event.
    /// events = recycled: keeps the event for a later IO (no OS call) unless enough are kept already.
    void close_event(HANDLE event) noexcept
    {
        if constexpr (Options.events == win32_event_mode::recycled)
        {
            if (events_.give_back(event))
            {
                return;
            }
        }
        (void)CloseHandle(event);
    }

    /// SetFileCompletionNotificationModes(socket, FILE_SKIP_COMPLETION_PORT_ON_SUCCESS |
    /// FILE_SKIP_SET_EVENT_ON_HANDLE), after checking that the socket's provider makes IFS handles. Only with
    /// skip_completion_on_success; the core calls it once, at the first open. Fails (and the open with it) when
    /// the OS refuses, or when the socket comes from a non-IFS layered service provider: such a provider may
    /// still post a completion for an IO that succeeded at once (the SetFileCompletionNotificationModes
    /// documentation), which would complete that IO twice.
    ///
    /// FILE_SKIP_SET_EVENT_ON_HANDLE: the OS no longer signals the socket handle itself when an IO ends. Only a
    /// wait on the handle (GetOverlappedResult with a NULL hEvent) needs that signal; nothing waits on it here,
    /// since completions come through the port or at once. The OVERLAPPED's own event (events = per_io or
    /// recycled) is still set.
    bool set_skip_completion_on_success(SOCKET_HANDLE socket) noexcept requires(Options.skip_completion_on_success)
    {
        WSAPROTOCOL_INFOW provider{};
        int length = sizeof(provider);
        if (getsockopt(to_socket(socket), SOL_SOCKET, SO_PROTOCOL_INFOW, reinterpret_cast<char*>(&provider), &length) !=
                0 ||
            (provider.dwServiceFlags1 & XP1_IFS_HANDLES) == 0)
        {
            return false;
        }
        return SetFileCompletionNotificationModes(to_handle(socket), FILE_SKIP_COMPLETION_PORT_ON_SUCCESS |
                                                                         FILE_SKIP_SET_EVENT_ON_HANDLE) != FALSE;
    }

    /// Zeroes the OVERLAPPED and sets its hEvent. No OS call.
    static void set_overlapped_event(OVERLAPPED& overlapped, HANDLE event) noexcept
    {
        overlapped = OVERLAPPED{};
        overlapped.hEvent = event;
    }

    /// Points the WSABUF at `length` bytes at `memory`. No OS call.
    static void set_buffer(WSABUF& buffer, void* memory, std::uint32_t length) noexcept
    {
        buffer.buf = static_cast<CHAR*>(memory);
        buffer.len = static_cast<ULONG>(length);
    }

    /// WSASend without a completion routine. Returns win32_no_error when the IO was accepted and its completion
    /// will come through the completion port (WSA_IO_PENDING, or done at once without skip mode), else the WSA error
    /// code. With skip_completion_on_success, an IO done at once returns win32_completed_at_once with its
    /// byte count in *bytes_sent (never null then): no completion will come for it.
    win32_error send(SOCKET_HANDLE socket, WSABUF* buffers, std::uint32_t count, std::uint32_t* bytes_sent,
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

    /// WSARecv without a completion routine; *flags is passed in and read back. Returns as send does.
    win32_error receive(SOCKET_HANDLE socket, WSABUF* buffers, std::uint32_t count, std::uint32_t* bytes_received,
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

    /// CancelIoEx(socket, NULL): every IO outstanding on the socket, from any thread, completes with
    /// ERROR_OPERATION_ABORTED (995). Finding nothing to cancel (ERROR_NOT_FOUND) is not a failure.
    void cancel_socket_io(SOCKET_HANDLE socket) noexcept
    {
        (void)CancelIoEx(to_handle(socket), nullptr);
    }

    /// CancelIoEx(socket, overlapped): that one IO completes with ERROR_OPERATION_ABORTED if still outstanding;
    /// ERROR_NOT_FOUND (it has completed) is not a failure. Never runs the completion on this thread.
    void cancel_overlapped_io(SOCKET_HANDLE socket, OVERLAPPED* overlapped) noexcept
    {
        (void)CancelIoEx(to_handle(socket), overlapped);
    }

    /// WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER) for AcceptEx, GetAcceptExSockaddrs and ConnectEx of the socket's
    /// provider, kept for the socket's later calls. The WSA error of the first that fails.
    win32_error load_extensions(SOCKET_HANDLE socket) noexcept
    {
        GUID accept_id = WSAID_ACCEPTEX;
        GUID sockaddrs_id = WSAID_GETACCEPTEXSOCKADDRS;
        GUID connect_id = WSAID_CONNECTEX;
        if (const win32_error error = extension(socket, accept_id, &accept_ex_, sizeof accept_ex_);
            error != win32_no_error)
        {
            return error;
        }
        if (const win32_error error =
                extension(socket, sockaddrs_id, &get_accept_ex_sockaddrs_, sizeof get_accept_ex_sockaddrs_);
            error != win32_no_error)
        {
            return error;
        }
        return extension(socket, connect_id, &connect_ex_, sizeof connect_ex_);
    }

    /// getsockname. WSAEINVAL when the socket is not bound.
    win32_error local_address(SOCKET_HANDLE socket, socket_address& address) noexcept
    {
        int length = static_cast<int>(socket_address::max_size);
        if (getsockname(to_socket(socket), address.data(), &length) != 0)
        {
            return static_cast<win32_error>(WSAGetLastError());
        }
        (void)address.resize(static_cast<std::uint32_t>(length));
        return win32_no_error;
    }

    /// bind to the wildcard address of `family` (AF_INET: INADDR_ANY, AF_INET6: in6addr_any), port 0.
    win32_error bind_wildcard(SOCKET_HANDLE socket, std::uint16_t family) noexcept
    {
        SOCKADDR_STORAGE any{};
        any.ss_family = static_cast<ADDRESS_FAMILY>(family);
        const int length =
            family == AF_INET6 ? static_cast<int>(sizeof(sockaddr_in6)) : static_cast<int>(sizeof(sockaddr_in));
        if (bind(to_socket(socket), reinterpret_cast<const sockaddr*>(&any), length) != 0)
        {
            return static_cast<win32_error>(WSAGetLastError());
        }
        return win32_no_error;
    }

    /// WSASocketW(family, SOCK_STREAM, IPPROTO_TCP, NULL, 0, WSA_FLAG_OVERLAPPED): the socket an AcceptEx fills.
    win32_error open_socket(std::uint16_t family, SOCKET_HANDLE* made) noexcept
    {
        const SOCKET s = WSASocketW(family, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, WSA_FLAG_OVERLAPPED);
        if (s == INVALID_SOCKET)
        {
            *made = nullptr;
            return static_cast<win32_error>(WSAGetLastError());
        }
        *made = reinterpret_cast<SOCKET_HANDLE>(s);
        return win32_no_error;
    }

    /// closesocket.
    void close_socket(SOCKET_HANDLE socket) noexcept
    {
        (void)closesocket(to_socket(socket));
    }

    /// AcceptEx(listener, accepted, output, 0, address length, address length, ...): no data is received with the
    /// connection. Returns as send does.
    win32_error accept(SOCKET_HANDLE listener, SOCKET_HANDLE accepted, void* output, std::uint32_t* bytes_received,
                       OVERLAPPED* overlapped) noexcept
    {
        DWORD received = 0;
        const BOOL done = accept_ex_(to_socket(listener), to_socket(accepted), output, 0, win32_accept_address_length,
                                     win32_accept_address_length, &received, overlapped);
        if (bytes_received != nullptr)
        {
            *bytes_received = static_cast<std::uint32_t>(received);
        }
        return accepted_or_error(done ? 0 : SOCKET_ERROR);
    }

    /// GetAcceptExSockaddrs: the remote address in a completed AcceptEx's output.
    void accepted_peer(void* output, socket_address& peer) noexcept
    {
        sockaddr* local = nullptr;
        sockaddr* remote = nullptr;
        INT local_length = 0;
        INT remote_length = 0;
        get_accept_ex_sockaddrs_(output, 0, win32_accept_address_length, win32_accept_address_length, &local,
                                 &local_length, &remote, &remote_length);
        peer = socket_address(remote, static_cast<std::uint32_t>(remote_length));
    }

    /// setsockopt(accepted, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, &listener): getpeername, shutdown and the rest
    /// then work on the accepted socket.
    win32_error update_accept_context(SOCKET_HANDLE accepted, SOCKET_HANDLE listener) noexcept
    {
        const SOCKET from = to_socket(listener);
        if (setsockopt(to_socket(accepted), SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, reinterpret_cast<const char*>(&from),
                       sizeof from) != 0)
        {
            return static_cast<win32_error>(WSAGetLastError());
        }
        return win32_no_error;
    }

    /// ConnectEx(socket, address, no data). The socket must be bound. Returns as send does.
    win32_error connect(SOCKET_HANDLE socket, const socket_address& address, std::uint32_t* bytes_sent,
                        OVERLAPPED* overlapped) noexcept
    {
        DWORD sent = 0;
        const BOOL done = connect_ex_(to_socket(socket), address.data(), static_cast<int>(address.size()), nullptr, 0,
                                      &sent, overlapped);
        if (bytes_sent != nullptr)
        {
            *bytes_sent = static_cast<std::uint32_t>(sent);
        }
        return accepted_or_error(done ? 0 : SOCKET_ERROR);
    }

    /// setsockopt(socket, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, NULL, 0), after a successful ConnectEx.
    win32_error update_connect_context(SOCKET_HANDLE socket) noexcept
    {
        if (setsockopt(to_socket(socket), SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, nullptr, 0) != 0)
        {
            return static_cast<win32_error>(WSAGetLastError());
        }
        return win32_no_error;
    }

protected:
    /// 0 from WSASend/WSARecv: done at once. In skip mode no completion is queued for it.
    static win32_error accepted_or_error(int result) noexcept
    {
        if (result == 0)
        {
            return Options.skip_completion_on_success ? win32_completed_at_once : win32_no_error;
        }
        const int error = WSAGetLastError();
        return error == WSA_IO_PENDING ? win32_no_error : static_cast<win32_error>(error);
    }

    static SOCKET to_socket(SOCKET_HANDLE socket) noexcept
    {
        return reinterpret_cast<SOCKET>(socket);
    }

    static HANDLE to_handle(SOCKET_HANDLE socket) noexcept
    {
        return static_cast<HANDLE>(socket);
    }

private:
    static win32_error extension(SOCKET_HANDLE socket, GUID& id, void* function, DWORD size) noexcept
    {
        DWORD returned = 0;
        if (WSAIoctl(to_socket(socket), SIO_GET_EXTENSION_FUNCTION_POINTER, &id, sizeof id, function, size, &returned,
                     nullptr, nullptr) != 0)
        {
            return static_cast<win32_error>(WSAGetLastError());
        }
        return win32_no_error;
    }

    LPFN_ACCEPTEX accept_ex_ = nullptr;
    LPFN_GETACCEPTEXSOCKADDRS get_accept_ex_sockaddrs_ = nullptr;
    LPFN_CONNECTEX connect_ex_ = nullptr;
    ASYNC_SOCKET_NO_UNIQUE_ADDRESS std::conditional_t<Options.events == win32_event_mode::recycled,
                                                      detail::win32_event_cache, detail::win32_no_event_cache>
        events_;
};

} // namespace detail

} // namespace async_socket
