/// @file
/// async_socket: the three policy concepts of basic_async_socket.
///
/// basic_async_socket<Backend, AllocPolicy, SyncPolicy> keeps all the logic that is the same on every platform
/// (argument and overflow checks, state machine, pending-call count, IO context, result mapping, exactly-once
/// delivery). What it needs from the world comes from three policies, each described here by a C++20 concept:
/// the backend (the OS: how one IO is submitted, completed, cancelled), the memory, the atomics. docs/policies.md
/// shows how to write each, with a worked example of a backend.
///
/// Each concept is split into named parts so that a type that does not fit gets a static_assert naming the
/// missing part (see check_backend and friends at the end of this file).
#pragma once

#include <async_socket/socket_address.hpp>
#include <async_socket/types.h>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace async_socket
{

/// What happened to one IO, as the backend classifies the OS's answer. The core maps it (with the socket's
/// state) to the spec's results; os_code keeps the platform's own number (a Win32 error code on Windows, an
/// errno value on Linux; 0 on success) so that a caller can be told exactly what the OS said.
enum class io_outcome : std::uint8_t
{
    success,   ///< every byte of a send went out; a receive got `bytes` (0: the peer ended the stream)
    cancelled, ///< the IO was cancelled (by close, or by a cancel of that IO)
    reset,     ///< the peer reset or aborted the connection
    other,     ///< any other OS error
};

/// One completed IO as the backend hands it to the core's completion routine.
struct io_result
{
    io_outcome outcome;    ///< how the IO ended
    std::uint32_t os_code; ///< the OS's own error number (Win32 error code, errno); 0 on success
    std::size_t bytes;     ///< bytes moved; meaningful on success
};

/// The completion routine the core gives to Backend::bind. The backend calls it exactly once for every IO it
/// accepted (submit_* answered pending), on whatever thread delivers completions, with the owner given to
/// bind, the IO's io_state and its classified result. io_state may be null only when the OS itself hands the
/// backend a completion without an IO block (the core then ignores it).
using io_completion_fn = void (*)(void* owner, void* io_state, io_result result) noexcept;

/// The answer of Backend::submit_send / submit_receive.
enum class submit_status : std::uint8_t
{
    pending,           ///< accepted: the completion routine will be called once for it
    completed_at_once, ///< finished during the call with `value` bytes, successfully; no completion will come:
                       ///< the core completes it itself (only a backend with completes_at_once = true answers so)
    refused,           ///< not started; `value` is the OS's error code; no completion will come
};

/// What Backend::submit_send and submit_receive return.
struct submit_result
{
    submit_status status; ///< whether the IO was started, finished at once or refused
    std::uint32_t value;  ///< completed_at_once: bytes moved; refused: the OS's error code; pending: 0
};

namespace detail
{
/// Only named inside requires-expressions below; never defined, never called.
void probe_completion(void*, void*, io_result) noexcept;
} // namespace detail

// ---------------------------------------------------------------------------------------------------
/// The member types a Backend declares: engine_type (equality comparable), io_state (standard layout) and
/// buffer_type (default constructible). The first part of socket_backend, which this text describes whole.
///
/// Backend: the only part that talks to the OS.
///
/// One object per socket, owned by the socket (moved in at create, never moved again). It owns the whole OS
/// protocol of one IO: on Win32 StartThreadpoolIo, the event, WSASend/WSARecv, CancelThreadpoolIo on failure,
/// skip-on-success; on Linux the io_uring submission or the epoll registration, partial sends, EAGAIN.
///
/// Types:
///   engine_type   what create() takes to find the OS's machinery (EXECUTION_ENGINE_HANDLE on Win32); a
///                 value-initialised engine_type means "none" and is rejected by the core.
///   io_state      the backend's per-IO block (the OVERLAPPED and its event on Win32); standard layout. The
///                 core puts it first in every IO context, leaves it uninitialised (the backend's submit
///                 initialises it) and gets from its address back to the context.
///   buffer_type   one scatter/gather item as the OS wants it (WSABUF, iovec).
///
/// Members (all noexcept):
///   attach(engine) -> bool          at create: take what the engine gives (a pool, a ring) and a reference.
///   bind<Fn>(socket, owner) -> bool at the first open: bind the socket so that every completion calls
///                                   Fn(owner, io_state, result). A socket is bound once for life.
///   unbind()                        at destroy, after the last drain: release what bind made.
///   submit_send(io, buffers, n)    -> submit_result   start one send of the n buffers (already filled by
///   submit_receive(io, buffers, n) -> submit_result   set_buffer); buffers live in the context until completion
///   cancel_all()                    close: make every outstanding IO of the socket complete soon (cancelled).
///   drain()                         close: return once no completion of the socket is outstanding or running.
///                                   Never called from one of the socket's own callbacks.
///   static set_buffer(buffer, p, n) point one OS buffer at n bytes at p (no OS call).
/// submit_*, cancel_all and completions run concurrently (user threads and completion threads); attach, bind,
/// unbind and drain are called by one thread at a time.
///
/// Sends: a send the backend answers `success` must have taken every byte of every buffer. Where the OS may
/// take part of a buffer list (a Linux socket), the backend submits the rest itself and completes the IO once;
/// the core still checks the byte count (SRS 01_102) as a guard.
///
/// Optional trait: static constexpr bool completes_at_once = true; the backend may answer completed_at_once.
/// Optional: static const std::error_category& error_category() noexcept; the category of os_code in the
/// std::error_code a C++ handler gets (std::system_category() when absent: Win32 codes).
/// Optional: cancel_one(io_state&) noexcept, which the stop_token overloads of the socket need (per-IO
/// cancellation): if that IO is still outstanding, make it complete soon, as cancelled (Win32: CancelIoEx with its
/// OVERLAPPED; Linux: taken off its queue, or IORING_OP_ASYNC_CANCEL); if it has completed or is completing, do
/// nothing. The core calls it only while the IO's context is alive: a completion routine that comes meanwhile
/// waits for cancel_one to return before the context is freed, so cancel_one must not wait for anything the
/// backend holds while it runs a completion routine. It may run the completion routine on its own thread.
// ---------------------------------------------------------------------------------------------------
template <class T>
concept backend_types = requires
{
    typename T::engine_type;
    typename T::io_state;
    typename T::buffer_type;
}
&&std::is_standard_layout_v<typename T::io_state>&& std::equality_comparable<typename T::engine_type>&&
    std::is_default_constructible_v<typename T::buffer_type>;

/// The lifetime members of a Backend: noexcept bool attach(engine_type), bool bind<Fn>(SOCKET_HANDLE, void*),
/// unbind(), and a noexcept move constructor. The second part of socket_backend (see backend_types).
template <class T>
concept backend_lifetime = backend_types<T> && std::is_nothrow_move_constructible_v<T> &&
    requires(T& backend, typename T::engine_type engine, SOCKET_HANDLE socket, void* owner)
{
    {
        backend.attach(engine)
    }
    noexcept->std::same_as<bool>;
    {
        backend.template bind<&detail::probe_completion>(socket, owner)
    }
    noexcept->std::same_as<bool>;
    {
        backend.unbind()
    }
    noexcept;
};

/// The IO members of a Backend: noexcept submit_send and submit_receive(io_state&, buffer_type*, uint32_t) ->
/// submit_result, cancel_all(), drain() and static set_buffer(buffer_type&, void*, uint32_t). The third part of
/// socket_backend (see backend_types).
template <class T>
concept backend_io = backend_types<T> &&
    requires(T& backend, typename T::io_state& io, typename T::buffer_type* buffers, void* memory, std::uint32_t count)
{
    {
        backend.submit_send(io, buffers, count)
    }
    noexcept->std::same_as<submit_result>;
    {
        backend.submit_receive(io, buffers, count)
    }
    noexcept->std::same_as<submit_result>;
    {
        backend.cancel_all()
    }
    noexcept;
    {
        backend.drain()
    }
    noexcept;
    {
        T::set_buffer(*buffers, memory, count)
    }
    noexcept;
};

/// A Backend: a type basic_async_socket can run its IO on. It has the types of backend_types, the members of
/// backend_lifetime and of backend_io, with the meaning described at backend_types.
template <class T>
concept socket_backend = backend_lifetime<T> && backend_io<T>;

/// A backend that can cancel one IO (the optional cancel_one above).
template <class T>
concept cancellable_backend = socket_backend<T> && requires(T& backend, typename T::io_state& io)
{
    {
        backend.cancel_one(io)
    }
    noexcept;
};

/// A backend that can accept connections on a listening socket (accept_async; optional, beyond the contract).
///
///   accept_area                        standard layout, trivially destructible: the per-accept block the core puts
///                                      in the IO context after the header (the peer's address; on Win32 also the
///                                      socket AcceptEx fills); the backend initialises it in submit_accept
///   submit_accept(io, area) -> submit_result   start one accept; completes like a receive (exactly once, cancelled
///                                      by cancel_all and cancel_one); completed_at_once allowed as for IO
///   static take_accepted(area, peer) -> SOCKET_HANDLE   after a successful completion only: the accepted socket
///                                      (now the handler's), and its peer's address into `peer`
/// A completion other than success must leave no socket behind: the backend closes one it made for the accept.
template <class T>
concept accepting_backend = socket_backend<T> && std::is_standard_layout_v<typename T::accept_area> &&
    std::is_trivially_destructible_v<typename T::accept_area> &&
    requires(T& backend, typename T::io_state& io, typename T::accept_area& area, socket_address& peer)
{
    {
        backend.submit_accept(io, area)
    }
    noexcept->std::same_as<submit_result>;
    {
        T::take_accepted(area, peer)
    }
    noexcept->std::same_as<SOCKET_HANDLE>;
};

/// A backend that can connect its socket (connect_async; optional, beyond the contract).
///
///   connect_area                       standard layout, trivially destructible: the per-connect block in the IO
///                                      context (the address, which must outlive the request)
///   submit_connect(io, area, address) -> submit_result   start connecting the socket to `address` (IPv4 or IPv6);
///                                      completes exactly once like a send, success once connected
template <class T>
concept connecting_backend = socket_backend<T> && std::is_standard_layout_v<typename T::connect_area> &&
    std::is_trivially_destructible_v<typename T::connect_area> &&
    requires(T& backend, typename T::io_state& io, typename T::connect_area& area, const socket_address& address)
{
    {
        backend.submit_connect(io, area, address)
    }
    noexcept->std::same_as<submit_result>;
};

/// Whether a backend may answer completed_at_once (the optional trait above; false when absent).
template <class T>
constexpr bool completes_at_once() noexcept
{
    if constexpr (requires { T::completes_at_once; })
    {
        return T::completes_at_once;
    }
    else
    {
        return false;
    }
}

// ---------------------------------------------------------------------------------------------------
/// AllocPolicy: the memory of the socket object and of every IO context (OVERLAPPED, bookkeeping and
/// the WSABUF array in one block).
///
///   allocate(size) -> void*    nullptr on failure; aligned for std::max_align_t
///   deallocate(p, size)        size is the one given to allocate
/// Both noexcept and safe to call concurrently (IO contexts are freed on threadpool threads). The
/// socket keeps a copy, so a model must be nothrow-copyable; copies share whatever state they have.
// ---------------------------------------------------------------------------------------------------
template <class A>
concept alloc_policy = std::is_nothrow_copy_constructible_v<A> && requires(A& alloc, std::size_t size, void* p)
{
    {
        alloc.allocate(size)
    }
    noexcept->std::same_as<void*>;
    {
        alloc.deallocate(p, size)
    }
    noexcept;
};

// ---------------------------------------------------------------------------------------------------
/// SyncPolicy: the atomics and the wait/wake behind the state word and the pending-call counter.
///
/// Stateless: every member is static, so that nothing but the word itself is touched.
///   word_type                  a 32-bit word, list-initialisable from an int32_t, that the members
///                              below operate on (std::atomic<int32_t>, or volatile LONG on Win32).
///   load(w), store(w, v)       sequentially consistent
///   compare_exchange(w, desired, expected) -> previous value (InterlockedCompareExchange order)
///   increment(w), decrement(w) -> the new value; they must not touch the word after the atomic step
///   wait(w, v)                 blocks while w holds v; may return spuriously
///   wake_one(w), wake_all(w)   wake waiters of w, using only its address: the word may already be freed
///                              when a wake runs (the woken thread may have seen the new value and
///                              destroyed the socket), as with WaitOnAddress/WakeByAddress* and futexes
/// All noexcept; all safe to call concurrently.
// ---------------------------------------------------------------------------------------------------
template <class S>
concept sync_policy = requires(typename S::word_type& word, std::int32_t value)
{
    typename S::word_type;
    {
        S::load(word)
    }
    noexcept->std::same_as<std::int32_t>;
    {
        S::store(word, value)
    }
    noexcept;
    {
        S::compare_exchange(word, value, value)
    }
    noexcept->std::same_as<std::int32_t>;
    {
        S::increment(word)
    }
    noexcept->std::same_as<std::int32_t>;
    {
        S::decrement(word)
    }
    noexcept->std::same_as<std::int32_t>;
    {
        S::wait(word, value)
    }
    noexcept;
    {
        S::wake_one(word)
    }
    noexcept;
    {
        S::wake_all(word)
    }
    noexcept;
};

/// Readable diagnostics: each static_assert names the part a type is missing.
/// Fails to compile unless T models socket_backend, with a message naming the part it lacks; true otherwise.
template <class T>
constexpr bool check_backend() noexcept
{
    static_assert(backend_types<T>, "a Backend needs the member types engine_type (equality comparable), io_state "
                                    "(standard layout) and buffer_type (default constructible)");
    static_assert(backend_lifetime<T>,
                  "a Backend needs noexcept bool attach(engine_type), bool bind<Fn>(SOCKET_HANDLE, "
                  "void*), unbind(), and a noexcept move constructor");
    static_assert(backend_io<T>, "a Backend needs noexcept submit_send and submit_receive(io_state&, buffer_type*, "
                                 "uint32_t) -> submit_result, cancel_all(), drain() and static set_buffer");
    return socket_backend<T>;
}

/// Fails to compile, with a message naming what is missing, unless A models alloc_policy; true otherwise.
template <class A>
constexpr bool check_alloc_policy() noexcept
{
    static_assert(alloc_policy<A>, "AllocPolicy needs noexcept void* allocate(std::size_t), noexcept "
                                   "deallocate(void*, std::size_t) and a noexcept copy constructor");
    return alloc_policy<A>;
}

/// Fails to compile, with a message naming what is missing, unless S models sync_policy; true otherwise.
template <class S>
constexpr bool check_sync_policy() noexcept
{
    static_assert(sync_policy<S>, "SyncPolicy needs word_type and static noexcept load, store, compare_exchange, "
                                  "increment, decrement, wait, wake_one, wake_all on it");
    return sync_policy<S>;
}

} // namespace async_socket
