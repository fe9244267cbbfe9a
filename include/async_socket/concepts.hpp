// async_socket: the three policy concepts of basic_async_socket.
//
// basic_async_socket<ThreadpoolPolicy, AllocPolicy, SyncPolicy> keeps all the logic (argument checks,
// state machine, overflow checks, result mapping). What it needs from the world comes from three
// policies, each described here by a C++20 concept. docs/policies.md shows how to write one.
//
// Each concept is split into named parts so that a type that does not fit gets a static_assert naming
// the missing part (see check_threadpool_policy and friends at the end of this file).
#pragma once

#include <async_socket/types.h>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace async_socket
{

// A Win32 error code as the OS reports it for an IO: 0 (NO_ERROR) is success, 995
// (ERROR_OPERATION_ABORTED) a cancelled IO, 64 (ERROR_NETNAME_DELETED) a reset, and so on. The fake
// policies use the same numbers, so the result mapping in the core is the same code in both.
using io_error = std::uint32_t;
inline constexpr io_error io_no_error = 0;
inline constexpr io_error io_error_operation_aborted = 995;

// The completion routine the core gives to ThreadpoolPolicy::create_io. A policy calls it once for
// every IO it accepted (send/receive returned io_no_error): with the callback context given to
// create_io, the OVERLAPPED of that IO, the IO's Win32 result and the bytes transferred.
using io_completion_fn = void (*)(void* callback_context, void* overlapped, io_error io_result,
                                  std::size_t bytes_transferred) noexcept;

namespace detail
{
// Only named inside requires-expressions below; never defined, never called.
void probe_completion(void*, void*, io_error, std::size_t) noexcept;
} // namespace detail

// ---------------------------------------------------------------------------------------------------
// ThreadpoolPolicy: the only part that talks to the OS.
//
// One object per socket, owned by the socket (moved in at create). It holds that socket's OS state
// (pool, callback environment, cleanup group, threadpool IO). Each member is one OS call and keeps no
// logic: the core decides when to call what. Members the core calls concurrently (start_io, cancel_io,
// create_event, close_event, send, receive, from user threads and from completions) must be safe to
// call concurrently; the rest are called by one thread at a time.
//
// Types:
//   engine_type     what create() takes to find the pool (EXECUTION_ENGINE_HANDLE on Win32); a
//                   value-initialised engine_type means "none" and is rejected by the core.
//   overlapped_type the OS's per-IO block (OVERLAPPED); standard layout. The core puts it first in
//                   every IO context and gets from its address back to the context.
//   buffer_type     one scatter/gather item as the OS wants it (WSABUF).
//   event_type      an event handle; a value-initialised event_type means "no event".
//
// Members (the Win32 call each stands for):
//   acquire_pool(engine) -> bool     execution_engine_win32_get_threadpool
//   initialize_environment()         InitializeThreadpoolEnvironment
//   set_callback_pool()              SetThreadpoolCallbackPool (the pool from acquire_pool)
//   create_cleanup_group() -> bool   CreateThreadpoolCleanupGroup
//   create_io<Fn>(socket, ctx) -> bool  CreateThreadpoolIo; the policy calls Fn(ctx, ...) per completion
//   start_io() / cancel_io()         StartThreadpoolIo / CancelThreadpoolIo
//   wait_for_io_callbacks(cancel)    WaitForThreadpoolIoCallbacks
//   close_io()                       CloseThreadpoolIo
//   close_cleanup_group()            CloseThreadpoolCleanupGroup
//   destroy_environment()            DestroyThreadpoolEnvironment
//   create_event() -> event_type     CreateEvent (value-initialised on failure)
//   close_event(event)               CloseHandle
//   set_overlapped_event(ov, event)  zero the OVERLAPPED and set its hEvent (static, no OS call)
//   set_buffer(buf, p, len)          fill one WSABUF (static, no OS call)
//   send(s, bufs, n, bytes, flags, ov) -> io_error     WSASend, no completion routine
//   receive(s, bufs, n, bytes, &flags, ov) -> io_error WSARecv, no completion routine
//                                    Both return io_no_error when the IO was accepted and its
//                                    completion will be delivered (WSA_IO_PENDING is not an error),
//                                    else the error code; then no completion is delivered.
//   cancel_socket_io(s)              CancelIoEx(s, NULL): every outstanding IO completes, aborted.
// Every member is noexcept.
// ---------------------------------------------------------------------------------------------------
template <class T>
concept threadpool_policy_types = requires
{
    typename T::engine_type;
    typename T::overlapped_type;
    typename T::buffer_type;
    typename T::event_type;
}
&&std::is_standard_layout_v<typename T::overlapped_type>&& std::regular<typename T::event_type>&&
    std::equality_comparable_with<typename T::engine_type, typename T::engine_type>;

template <class T>
concept threadpool_policy_environment = threadpool_policy_types<T> && std::is_nothrow_move_constructible_v<T> &&
    requires(T& tp, typename T::engine_type engine, SOCKET_HANDLE socket, void* context)
{
    {
        tp.acquire_pool(engine)
    }
    noexcept->std::same_as<bool>;
    {
        tp.initialize_environment()
    }
    noexcept;
    {
        tp.set_callback_pool()
    }
    noexcept;
    {
        tp.create_cleanup_group()
    }
    noexcept->std::same_as<bool>;
    {
        tp.template create_io<&detail::probe_completion>(socket, context)
    }
    noexcept->std::same_as<bool>;
    {
        tp.close_io()
    }
    noexcept;
    {
        tp.close_cleanup_group()
    }
    noexcept;
    {
        tp.destroy_environment()
    }
    noexcept;
};

template <class T>
concept threadpool_policy_io = threadpool_policy_types<T> &&
    requires(T& tp, bool cancel_pending, typename T::event_type event, typename T::overlapped_type& overlapped,
             typename T::buffer_type* buffers, void* memory, std::uint32_t count, std::uint32_t* bytes,
             std::uint32_t flags, std::uint32_t* flags_in_out, SOCKET_HANDLE socket)
{
    {
        tp.start_io()
    }
    noexcept;
    {
        tp.cancel_io()
    }
    noexcept;
    {
        tp.wait_for_io_callbacks(cancel_pending)
    }
    noexcept;
    {
        tp.create_event()
    }
    noexcept->std::same_as<typename T::event_type>;
    {
        tp.close_event(event)
    }
    noexcept;
    {
        T::set_overlapped_event(overlapped, event)
    }
    noexcept;
    {
        T::set_buffer(*buffers, memory, count)
    }
    noexcept;
    {
        tp.send(socket, buffers, count, bytes, flags, &overlapped)
    }
    noexcept->std::same_as<io_error>;
    {
        tp.receive(socket, buffers, count, bytes, flags_in_out, &overlapped)
    }
    noexcept->std::same_as<io_error>;
    {
        tp.cancel_socket_io(socket)
    }
    noexcept;
};

// Optional ThreadpoolPolicy traits. A policy that says nothing gets the spec's behaviour.
//
//   static constexpr bool uses_io_events = false;
//       No event per IO: create_event/close_event are never called and the OVERLAPPED's hEvent stays
//       NULL. Threadpool IO completes through the completion port and does not need the event.
//   static constexpr bool skip_completion_on_success = true;
//       The socket is put in FILE_SKIP_COMPLETION_PORT_ON_SUCCESS mode at the first open
//       (set_skip_completion_on_success(socket) -> bool, SetFileCompletionNotificationModes). send and
//       receive are then handed a byte-count pointer and may return io_completed_at_once: the IO
//       finished at once, its byte count is in *bytes and no completion will be delivered for it. The
//       core then cancels its StartThreadpoolIo and completes the IO itself.
inline constexpr io_error io_completed_at_once = 0xFFFFFFFFu; // never a Win32 error code

template <class T>
constexpr bool uses_io_events() noexcept
{
    if constexpr (requires { T::uses_io_events; })
    {
        return T::uses_io_events;
    }
    else
    {
        return true;
    }
}

template <class T>
constexpr bool skips_completion_on_success() noexcept
{
    if constexpr (requires { T::skip_completion_on_success; })
    {
        return T::skip_completion_on_success;
    }
    else
    {
        return false;
    }
}

template <class T>
concept threadpool_policy_skip_mode = !skips_completion_on_success<T>() || requires(T & tp, SOCKET_HANDLE socket)
{
    {
        tp.set_skip_completion_on_success(socket)
    }
    noexcept->std::same_as<bool>;
};

template <class T>
concept threadpool_policy =
    threadpool_policy_environment<T> && threadpool_policy_io<T> && threadpool_policy_skip_mode<T>;

// ---------------------------------------------------------------------------------------------------
// AllocPolicy: the memory of the socket object and of every IO context (OVERLAPPED, bookkeeping and
// the WSABUF array in one block).
//
//   allocate(size) -> void*    nullptr on failure; aligned for std::max_align_t
//   deallocate(p, size)        size is the one given to allocate
// Both noexcept and safe to call concurrently (IO contexts are freed on threadpool threads). The
// socket keeps a copy, so a model must be nothrow-copyable; copies share whatever state they have.
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
// SyncPolicy: the atomics and the wait/wake behind the state word and the pending-call counter.
//
// Stateless: every member is static, so that nothing but the word itself is touched.
//   word_type                  a 32-bit word, list-initialisable from an int32_t, that the members
//                              below operate on (std::atomic<int32_t>, or volatile LONG on Win32).
//   load(w), store(w, v)       sequentially consistent
//   compare_exchange(w, desired, expected) -> previous value (InterlockedCompareExchange order)
//   increment(w), decrement(w) -> the new value; they must not touch the word after the atomic step
//   wait(w, v)                 blocks while w holds v; may return spuriously
//   wake_one(w), wake_all(w)   wake waiters of w, using only its address: the word may already be freed
//                              when a wake runs (the woken thread may have seen the new value and
//                              destroyed the socket), as with WaitOnAddress/WakeByAddress* and futexes
// All noexcept; all safe to call concurrently.
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

// Readable diagnostics: each static_assert names the part a type is missing.
template <class T>
constexpr bool check_threadpool_policy() noexcept
{
    static_assert(threadpool_policy_types<T>,
                  "ThreadpoolPolicy needs the member types engine_type, overlapped_type (standard layout), "
                  "buffer_type and event_type (regular)");
    static_assert(threadpool_policy_environment<T>,
                  "ThreadpoolPolicy needs noexcept acquire_pool, initialize_environment, set_callback_pool, "
                  "create_cleanup_group, create_io<Fn>, close_io, close_cleanup_group, destroy_environment, "
                  "and a noexcept move constructor");
    static_assert(threadpool_policy_skip_mode<T>, "a ThreadpoolPolicy with skip_completion_on_success needs noexcept "
                                                  "bool set_skip_completion_on_success(SOCKET_HANDLE)");
    static_assert(threadpool_policy_io<T>,
                  "ThreadpoolPolicy needs noexcept start_io, cancel_io, wait_for_io_callbacks, create_event, "
                  "close_event, static set_overlapped_event and set_buffer, send, receive, cancel_socket_io");
    return threadpool_policy<T>;
}

template <class A>
constexpr bool check_alloc_policy() noexcept
{
    static_assert(alloc_policy<A>, "AllocPolicy needs noexcept void* allocate(std::size_t), noexcept "
                                   "deallocate(void*, std::size_t) and a noexcept copy constructor");
    return alloc_policy<A>;
}

template <class S>
constexpr bool check_sync_policy() noexcept
{
    static_assert(sync_policy<S>, "SyncPolicy needs word_type and static noexcept load, store, compare_exchange, "
                                  "increment, decrement, wait, wake_one, wake_all on it");
    return sync_policy<S>;
}

} // namespace async_socket
