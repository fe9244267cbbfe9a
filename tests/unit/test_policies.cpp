// The three policy concepts: which types model them, which do not, and conformance suites that every
// SyncPolicy and AllocPolicy in the tree must pass. A new policy is accepted when it is added to the
// type list of its suite (sync_policies_under_test, alloc_policies_under_test) and passes.
#include <async_socket/concepts.hpp>

#include "../support/doc_example.hpp"
#include "../support/fixtures.hpp"

#include <async_socket/alloc/heap_alloc.hpp>
#include <async_socket/sync/std_sync.hpp>
#ifdef _WIN32
#include <async_socket/backend/win32/win32_sync.hpp>
#endif

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

// docs/policies.md example begin
#include <async_socket/concepts.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

// An AllocPolicy that counts the bytes it has handed out and not yet taken back. The counter lives
// outside the policy: the socket keeps its own copy of the policy, and every copy points at the same
// counter, so the owner of the counter sees what the socket holds at any moment.
struct counting_alloc
{
    std::atomic<std::int64_t>* live_bytes; // shared by all copies; must outlive the socket

    void* allocate(std::size_t size) noexcept
    {
        void* p = std::malloc(size); // malloc aligns for std::max_align_t, as the concept asks
        if (p != nullptr)
        {
            live_bytes->fetch_add(static_cast<std::int64_t>(size));
        }
        return p; // nullptr on failure: the socket reports it (create returns null, IO out_of_memory)
    }

    void deallocate(void* p, std::size_t size) noexcept
    {
        if (p != nullptr)
        {
            live_bytes->fetch_sub(static_cast<std::int64_t>(size));
            std::free(p);
        }
    }
};

static_assert(async_socket::alloc_policy<counting_alloc>);
// docs/policies.md example end

using namespace test_support;
using async_socket::alloc_policy;
using async_socket::socket_backend;
using async_socket::sync_policy;
using async_socket::win32_threadpool_calls;

namespace
{

constexpr auto deadline = std::chrono::seconds(20);

// ---------------------------------------------------------------------------------------------------
// Types that miss one piece of a concept. Members are only declared: the concepts look at signatures.
// ---------------------------------------------------------------------------------------------------

struct plain_overlapped
{
    std::uintptr_t internal;
    std::uintptr_t event;
};

struct overlapped_base
{
    std::uintptr_t internal;
};

// Data members in both a base and the derived class: not standard layout.
struct not_standard_layout_overlapped : overlapped_base
{
    std::uintptr_t event;
};

struct plain_buffer
{
    std::uint32_t len;
    char* buf;
};

struct not_regular_event
{
    bool operator==(const not_regular_event&) const = delete;
};

struct plain_io_state
{
    std::uintptr_t internal;
};

// The engine and buffer types of both stubs below.
struct stub_types
{
    using engine_type = int*;
    using buffer_type = plain_buffer;
};

// A complete Backend whose pieces can be taken away one at a time.
template <bool WithCancelAll = true, bool NoexceptSubmit = true, class IoState = plain_io_state,
          bool WithBindTemplate = true, bool NothrowMove = true, class SubmitResult = async_socket::submit_result>
struct stub_backend : stub_types
{
    using io_state = IoState;

    stub_backend() noexcept = default;
    stub_backend(stub_backend&&) noexcept(NothrowMove);

    bool attach(engine_type) noexcept;
    template <async_socket::io_completion_fn Completion>
    bool bind(SOCKET_HANDLE, void*) noexcept requires WithBindTemplate;
    bool bind(SOCKET_HANDLE, void*) noexcept requires(!WithBindTemplate);
    void unbind() noexcept;
    SubmitResult submit_send(io_state&, buffer_type*, std::uint32_t) noexcept(NoexceptSubmit);
    SubmitResult submit_receive(io_state&, buffer_type*, std::uint32_t) noexcept(NoexceptSubmit);
    void cancel_all() noexcept requires WithCancelAll;
    void drain() noexcept;
    static void set_buffer(buffer_type&, void*, std::uint32_t) noexcept;
};

// A complete layer of Win32 calls (what win32_threadpool_backend runs on) whose pieces can be taken away.
template <bool WithCancelSocketIo = true, bool NoexceptStartIo = true, class Overlapped = plain_overlapped,
          class Event = std::uintptr_t, bool WithCreateIoTemplate = true, bool NothrowMove = true,
          bool SkipMode = false, bool WithSkipCall = true>
struct stub_win32_calls : stub_types
{
    using overlapped_type = Overlapped;
    using event_type = Event;
    static constexpr bool uses_io_events = true;
    static constexpr bool skip_completion_on_success = SkipMode;

    stub_win32_calls() noexcept = default;
    stub_win32_calls(stub_win32_calls&&) noexcept(NothrowMove);

    bool acquire_pool(engine_type) noexcept;
    void initialize_environment() noexcept;
    void set_callback_pool() noexcept;
    bool create_cleanup_group() noexcept;
    template <async_socket::win32_completion_routine Completion>
    bool create_io(SOCKET_HANDLE, void*) noexcept requires WithCreateIoTemplate;
    bool create_io(SOCKET_HANDLE, void*) noexcept requires(!WithCreateIoTemplate);
    void close_io() noexcept;
    void close_cleanup_group() noexcept;
    void destroy_environment() noexcept;
    bool set_skip_completion_on_success(SOCKET_HANDLE) noexcept requires WithSkipCall;

    void start_io() noexcept(NoexceptStartIo);
    void cancel_io() noexcept;
    void wait_for_io_callbacks(bool) noexcept;
    event_type create_event() noexcept;
    void close_event(event_type) noexcept;
    async_socket::win32_error last_error() const noexcept;
    static void set_overlapped_event(overlapped_type&, event_type) noexcept;
    static void set_buffer(buffer_type&, void*, std::uint32_t) noexcept;
    async_socket::win32_error send(SOCKET_HANDLE, buffer_type*, std::uint32_t, std::uint32_t*, std::uint32_t,
                                   overlapped_type*) noexcept;
    async_socket::win32_error receive(SOCKET_HANDLE, buffer_type*, std::uint32_t, std::uint32_t*, std::uint32_t*,
                                      overlapped_type*) noexcept;
    void cancel_socket_io(SOCKET_HANDLE) noexcept requires WithCancelSocketIo;
};

struct alloc_without_noexcept_deallocate
{
    void* allocate(std::size_t) noexcept;
    void deallocate(void*, std::size_t);
};

struct alloc_without_noexcept_allocate
{
    void* allocate(std::size_t);
    void deallocate(void*, std::size_t) noexcept;
};

struct alloc_returning_char_pointer
{
    char* allocate(std::size_t) noexcept;
    void deallocate(void*, std::size_t) noexcept;
};

struct alloc_without_size_on_deallocate
{
    void* allocate(std::size_t) noexcept;
    void deallocate(void*) noexcept;
};

struct alloc_not_copyable
{
    std::unique_ptr<int> state;
    void* allocate(std::size_t) noexcept;
    void deallocate(void*, std::size_t) noexcept;
};

// A complete SyncPolicy whose pieces can be taken away one at a time.
template <bool WithWakeAll = true, bool NoexceptWait = true, bool IncrementReturnsValue = true>
struct stub_sync
{
    using word_type = std::atomic<std::int32_t>;
    static std::int32_t load(const word_type&) noexcept;
    static void store(word_type&, std::int32_t) noexcept;
    static std::int32_t compare_exchange(word_type&, std::int32_t, std::int32_t) noexcept;
    static std::int32_t increment(word_type&) noexcept requires IncrementReturnsValue;
    static void increment(word_type&) noexcept requires(!IncrementReturnsValue);
    static std::int32_t decrement(word_type&) noexcept;
    static void wait(const word_type&, std::int32_t) noexcept(NoexceptWait);
    static void wake_one(word_type&) noexcept;
    static void wake_all(word_type&) noexcept requires WithWakeAll;
};

// Everything a SyncPolicy has, but as members of an object: the socket keeps no SyncPolicy object.
struct sync_with_member_functions
{
    using word_type = std::atomic<std::int32_t>;
    std::int32_t load(const word_type&) noexcept;
    void store(word_type&, std::int32_t) noexcept;
    std::int32_t compare_exchange(word_type&, std::int32_t, std::int32_t) noexcept;
    std::int32_t increment(word_type&) noexcept;
    std::int32_t decrement(word_type&) noexcept;
    void wait(const word_type&, std::int32_t) noexcept;
    void wake_one(word_type&) noexcept;
    void wake_all(word_type&) noexcept;
};

struct sync_without_word_type
{
    static std::int32_t load(const std::atomic<std::int32_t>&) noexcept;
    static void store(std::atomic<std::int32_t>&, std::int32_t) noexcept;
};

// Runs `body` on a thread of its own and reports whether it returned within `limit`. A body that hangs is
// left running (detached); it must hold what it touches through shared pointers.
template <class Body>
bool returns_within(std::chrono::milliseconds limit, Body body)
{
    auto done = std::make_shared<std::promise<void>>();
    std::future<void> finished = done->get_future();
    std::thread runner(
        [done, body]() mutable
        {
            body();
            done->set_value();
        });
    if (finished.wait_for(limit) == std::future_status::ready)
    {
        runner.join();
        return true;
    }
    runner.detach();
    return false;
}

// Counts threads that reached a point, so that a test can wait for all of them without sleeping.
class arrivals
{
public:
    void arrive()
    {
        {
            std::lock_guard lock(mutex_);
            ++count_;
        }
        changed_.notify_all();
    }

    bool wait_for(int n, std::chrono::milliseconds limit)
    {
        std::unique_lock lock(mutex_);
        return changed_.wait_for(lock, limit, [&] { return count_ >= n; });
    }

private:
    std::mutex mutex_;
    std::condition_variable changed_;
    int count_ = 0;
};

} // namespace

// ---------------------------------------------------------------------------------------------------
// Which types model the concepts
// ---------------------------------------------------------------------------------------------------

TEST_CASE("the policies the library ships model their concepts")
{
    static_assert(sync_policy<async_socket::std_sync>);
#ifdef _WIN32
    static_assert(sync_policy<async_socket::win32_sync>);
#endif
    static_assert(alloc_policy<async_socket::heap_alloc>);
    static_assert(alloc_policy<fault_alloc>);
    static_assert(socket_backend<fake_threadpool>);
    static_assert(socket_backend<basic_fake_threadpool<plain_buffer>>);
    static_assert(win32_threadpool_calls<async_socket::testing::fake_threadpool_calls>);
    static_assert(alloc_policy<counting_alloc>);

    // The check_* helpers give the same answer for a model (and static_assert with a message otherwise).
    static_assert(async_socket::check_sync_policy<async_socket::std_sync>());
    static_assert(async_socket::check_alloc_policy<async_socket::heap_alloc>());
    static_assert(async_socket::check_backend<fake_threadpool>());

    CHECK(sync_policy<async_socket::std_sync>);
    CHECK(alloc_policy<async_socket::heap_alloc>);
    CHECK(alloc_policy<fault_alloc>);
    CHECK(socket_backend<fake_threadpool>);
}

TEST_CASE("a complete stub models socket_backend, so that each variant below differs by one piece only")
{
    static_assert(socket_backend<stub_backend<>>);
    static_assert(async_socket::check_backend<stub_backend<>>());
    CHECK(socket_backend<stub_backend<>>);
}

TEST_CASE("a backend without cancel_all is not a socket_backend")
{
    using missing = stub_backend<false>;
    static_assert(!socket_backend<missing>);
    static_assert(!async_socket::backend_io<missing>);
    static_assert(async_socket::backend_lifetime<missing>);
    CHECK_FALSE(socket_backend<missing>);
}

TEST_CASE("a backend whose submit may throw is not a socket_backend")
{
    using throwing = stub_backend<true, false>;
    static_assert(!socket_backend<throwing>);
    static_assert(!async_socket::backend_io<throwing>);
    CHECK_FALSE(socket_backend<throwing>);
}

TEST_CASE("a backend whose io_state is not standard layout is not a socket_backend")
{
    using scrambled = stub_backend<true, true, not_standard_layout_overlapped>;
    static_assert(!std::is_standard_layout_v<not_standard_layout_overlapped>);
    static_assert(!async_socket::backend_types<scrambled>);
    CHECK_FALSE(socket_backend<scrambled>);
}

TEST_CASE("a backend whose bind does not take the completion routine as a template argument is not a "
          "socket_backend")
{
    using runtime_bind = stub_backend<true, true, plain_io_state, false>;
    static_assert(!async_socket::backend_lifetime<runtime_bind>);
    CHECK_FALSE(socket_backend<runtime_bind>);
}

TEST_CASE("a backend that may throw when moved is not a socket_backend")
{
    using throwing_move = stub_backend<true, true, plain_io_state, true, false>;
    static_assert(!async_socket::backend_lifetime<throwing_move>);
    CHECK_FALSE(socket_backend<throwing_move>);
}

TEST_CASE("a backend whose submit answers a Win32 number instead of a submit_result is not a socket_backend")
{
    using numeric = stub_backend<true, true, plain_io_state, true, true, std::uint32_t>;
    static_assert(!async_socket::backend_io<numeric>);
    CHECK_FALSE(socket_backend<numeric>);
}

TEST_CASE("the Win32 calls layer: a complete stub models it, and each missing piece is noticed")
{
    static_assert(win32_threadpool_calls<stub_win32_calls<>>);
    // The Win32 backend over it is a socket_backend.
    static_assert(socket_backend<async_socket::win32_threadpool_backend<stub_win32_calls<>>>);
    CHECK(win32_threadpool_calls<stub_win32_calls<>>);
    // Without CancelIoEx.
    static_assert(!win32_threadpool_calls<stub_win32_calls<false>>);
    CHECK_FALSE(win32_threadpool_calls<stub_win32_calls<false>>);
    // StartThreadpoolIo that may throw.
    CHECK_FALSE(win32_threadpool_calls<stub_win32_calls<true, false>>);
    // An OVERLAPPED that is not standard layout.
    CHECK_FALSE(win32_threadpool_calls<stub_win32_calls<true, true, not_standard_layout_overlapped>>);
    // An event that cannot be compared.
    CHECK_FALSE(win32_threadpool_calls<stub_win32_calls<true, true, plain_overlapped, not_regular_event>>);
    // CreateThreadpoolIo without the routine as a template argument.
    CHECK_FALSE(win32_threadpool_calls<stub_win32_calls<true, true, plain_overlapped, std::uintptr_t, false>>);
    // A throwing move.
    CHECK_FALSE(win32_threadpool_calls<stub_win32_calls<true, true, plain_overlapped, std::uintptr_t, true, false>>);
    // Skip mode asks for SetFileCompletionNotificationModes; without skip mode it is not needed.
    CHECK(win32_threadpool_calls<stub_win32_calls<true, true, plain_overlapped, std::uintptr_t, true, true, true>>);
    CHECK_FALSE(win32_threadpool_calls<
                stub_win32_calls<true, true, plain_overlapped, std::uintptr_t, true, true, true, false>>);
    CHECK(win32_threadpool_calls<
          stub_win32_calls<true, true, plain_overlapped, std::uintptr_t, true, true, false, false>>);
}

TEST_CASE("an allocator whose allocate or deallocate is not noexcept is not an alloc_policy")
{
    static_assert(!alloc_policy<alloc_without_noexcept_deallocate>);
    static_assert(!alloc_policy<alloc_without_noexcept_allocate>);
    CHECK_FALSE(alloc_policy<alloc_without_noexcept_deallocate>);
    CHECK_FALSE(alloc_policy<alloc_without_noexcept_allocate>);
}

TEST_CASE("an allocator with the wrong allocate or deallocate signature is not an alloc_policy")
{
    static_assert(!alloc_policy<alloc_returning_char_pointer>);
    static_assert(!alloc_policy<alloc_without_size_on_deallocate>);
    CHECK_FALSE(alloc_policy<alloc_returning_char_pointer>);
    CHECK_FALSE(alloc_policy<alloc_without_size_on_deallocate>);
}

TEST_CASE("an allocator that cannot be copied is not an alloc_policy")
{
    static_assert(!alloc_policy<alloc_not_copyable>);
    CHECK_FALSE(alloc_policy<alloc_not_copyable>);
}

TEST_CASE("a complete stub models sync_policy, so that each variant below differs by one piece only")
{
    static_assert(sync_policy<stub_sync<>>);
    CHECK(sync_policy<stub_sync<>>);
}

TEST_CASE("a sync without wake_all is not a sync_policy")
{
    static_assert(!sync_policy<stub_sync<false>>);
    CHECK_FALSE(sync_policy<stub_sync<false>>);
}

TEST_CASE("a sync whose wait may throw is not a sync_policy")
{
    static_assert(!sync_policy<stub_sync<true, false>>);
    CHECK_FALSE(sync_policy<stub_sync<true, false>>);
}

TEST_CASE("a sync whose increment does not return the new value is not a sync_policy")
{
    static_assert(!sync_policy<stub_sync<true, true, false>>);
    CHECK_FALSE(sync_policy<stub_sync<true, true, false>>);
}

TEST_CASE("a sync whose members are not static is not a sync_policy")
{
    static_assert(!sync_policy<sync_with_member_functions>);
    CHECK_FALSE(sync_policy<sync_with_member_functions>);
}

TEST_CASE("a sync without word_type is not a sync_policy")
{
    static_assert(!sync_policy<sync_without_word_type>);
    CHECK_FALSE(sync_policy<sync_without_word_type>);
}

// ---------------------------------------------------------------------------------------------------
// SyncPolicy conformance suite
// ---------------------------------------------------------------------------------------------------

namespace
{

// Every SyncPolicy in the tree. A new one is added to this list and must pass every test case below.
#ifdef _WIN32
using sync_policies_under_test = std::tuple<async_socket::std_sync, async_socket::win32_sync>;
#else
using sync_policies_under_test = std::tuple<async_socket::std_sync>;
#endif

// One word, shared with helper threads (and kept alive by a thread that hangs).
template <class Sync>
struct shared_word
{
    typename Sync::word_type word;

    explicit shared_word(std::int32_t initial) : word{initial} {}
};

} // namespace

TYPE_TO_STRING_AS("std_sync", async_socket::std_sync);
#ifdef _WIN32
TYPE_TO_STRING_AS("win32_sync", async_socket::win32_sync);
#endif

TEST_CASE_TEMPLATE_DEFINE("SyncPolicy: load returns what store wrote, and the word starts at its initial value", Sync,
                          sync_load_store)
{
    typename Sync::word_type word{7};
    CHECK(Sync::load(word) == 7);
    Sync::store(word, -3);
    CHECK(Sync::load(word) == -3);
    Sync::store(word, INT32_MAX);
    CHECK(Sync::load(word) == INT32_MAX);
}
TEST_CASE_TEMPLATE_APPLY(sync_load_store, sync_policies_under_test);

TEST_CASE_TEMPLATE_DEFINE("SyncPolicy: compare_exchange returns the previous value and swaps only on a match", Sync,
                          sync_compare_exchange)
{
    typename Sync::word_type word{1};

    // (word, desired, expected), in the order of InterlockedCompareExchange(destination, exchange, comparand).
    CHECK(Sync::compare_exchange(word, 5, 2) == 1); // no match: unchanged
    CHECK(Sync::load(word) == 1);
    CHECK(Sync::compare_exchange(word, 5, 1) == 1); // match: swapped
    CHECK(Sync::load(word) == 5);
    CHECK(Sync::compare_exchange(word, 9, 1) == 5); // the old expected no longer matches
    CHECK(Sync::load(word) == 5);
    CHECK(Sync::compare_exchange(word, 5, 5) == 5); // swapping in the same value is a match
    CHECK(Sync::load(word) == 5);
}
TEST_CASE_TEMPLATE_APPLY(sync_compare_exchange, sync_policies_under_test);

TEST_CASE_TEMPLATE_DEFINE("SyncPolicy: increment and decrement return the new value", Sync, sync_increment_decrement)
{
    typename Sync::word_type word{0};
    CHECK(Sync::increment(word) == 1);
    CHECK(Sync::increment(word) == 2);
    CHECK(Sync::decrement(word) == 1);
    CHECK(Sync::decrement(word) == 0);
    CHECK(Sync::decrement(word) == -1);
    CHECK(Sync::load(word) == -1);
}
TEST_CASE_TEMPLATE_APPLY(sync_increment_decrement, sync_policies_under_test);

TEST_CASE_TEMPLATE_DEFINE("SyncPolicy: increments from several threads each return a distinct new value", Sync,
                          sync_concurrent_increment)
{
    constexpr int threads = 4;
    constexpr int per_thread = 5000;
    auto shared = std::make_shared<shared_word<Sync>>(0);
    std::vector<std::vector<std::int32_t>> seen(threads);
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t)
    {
        workers.emplace_back(
            [&, t]
            {
                seen[t].reserve(per_thread);
                for (int i = 0; i < per_thread; ++i)
                {
                    seen[t].push_back(Sync::increment(shared->word));
                }
            });
    }
    for (auto& worker : workers)
    {
        worker.join();
    }
    std::vector<std::int32_t> all;
    for (const auto& values : seen)
    {
        all.insert(all.end(), values.begin(), values.end());
    }
    std::sort(all.begin(), all.end());
    CHECK(Sync::load(shared->word) == threads * per_thread);
    CHECK(std::adjacent_find(all.begin(), all.end()) == all.end()); // no value returned twice
    CHECK(all.front() == 1);
    CHECK(all.back() == threads * per_thread);
}
TEST_CASE_TEMPLATE_APPLY(sync_concurrent_increment, sync_policies_under_test);

TEST_CASE_TEMPLATE_DEFINE("SyncPolicy: of several threads racing to compare_exchange the same value, exactly one wins",
                          Sync, sync_concurrent_compare_exchange)
{
    constexpr int threads = 4;
    constexpr int rounds = 200;
    auto shared = std::make_shared<shared_word<Sync>>(0);
    std::atomic<int> winners{0};
    std::vector<std::thread> workers;
    for (int t = 1; t <= threads; ++t)
    {
        workers.emplace_back(
            [&, t]
            {
                for (int round = 0; round < rounds; ++round)
                {
                    // In each round every thread tries to swap its own number in where the round's base
                    // stands; only one can. The winner opens the next round.
                    const std::int32_t base = round * (threads + 1);
                    while (Sync::load(shared->word) < base)
                    {
                        std::this_thread::yield();
                    }
                    if (Sync::compare_exchange(shared->word, base + t, base) == base)
                    {
                        ++winners;
                        Sync::store(shared->word, base + threads + 1); // open the next round
                    }
                    else
                    {
                        while (Sync::load(shared->word) < base + threads + 1)
                        {
                            std::this_thread::yield();
                        }
                    }
                }
            });
    }
    for (auto& worker : workers)
    {
        worker.join();
    }
    CHECK(winners.load() == rounds);
    CHECK(Sync::load(shared->word) == rounds * (threads + 1));
}
TEST_CASE_TEMPLATE_APPLY(sync_concurrent_compare_exchange, sync_policies_under_test);

TEST_CASE_TEMPLATE_DEFINE("SyncPolicy: wait returns at once when the word no longer holds the value", Sync,
                          sync_wait_returns_on_other_value)
{
    auto shared = std::make_shared<shared_word<Sync>>(1);
    const bool returned = returns_within(std::chrono::duration_cast<std::chrono::milliseconds>(deadline),
                                         [shared] { Sync::wait(shared->word, 0); });
    CHECK_MESSAGE(returned, "wait(word, 0) blocked although the word holds 1");
}
TEST_CASE_TEMPLATE_APPLY(sync_wait_returns_on_other_value, sync_policies_under_test);

TEST_CASE_TEMPLATE_DEFINE("SyncPolicy: wait returns when another thread stores a new value and wakes one", Sync,
                          sync_wait_wake_one)
{
    auto shared = std::make_shared<shared_word<Sync>>(0);
    auto waiting = std::make_shared<arrivals>();
    auto woken = std::make_shared<std::promise<std::int32_t>>();
    std::future<std::int32_t> result = woken->get_future();
    std::thread waiter(
        [shared, waiting, woken]
        {
            waiting->arrive();
            std::int32_t seen = Sync::load(shared->word);
            while (seen == 0)
            {
                Sync::wait(shared->word, 0); // may return spuriously: check again
                seen = Sync::load(shared->word);
            }
            woken->set_value(seen);
        });
    REQUIRE(waiting->wait_for(1, deadline));

    Sync::store(shared->word, 42);
    Sync::wake_one(shared->word);

    const bool returned = result.wait_for(deadline) == std::future_status::ready;
    CHECK_MESSAGE(returned, "the waiter did not return after store + wake_one");
    if (!returned)
    {
        waiter.detach(); // it holds the word through `shared`
        return;
    }
    waiter.join();
    CHECK(result.get() == 42);
}
TEST_CASE_TEMPLATE_APPLY(sync_wait_wake_one, sync_policies_under_test);

TEST_CASE_TEMPLATE_DEFINE("SyncPolicy: wake_all releases every thread waiting on the word", Sync, sync_wake_all)
{
    constexpr int waiter_count = 4;
    auto shared = std::make_shared<shared_word<Sync>>(0);
    auto waiting = std::make_shared<arrivals>();
    auto released = std::make_shared<arrivals>();
    std::vector<std::thread> waiters;
    for (int i = 0; i < waiter_count; ++i)
    {
        waiters.emplace_back(
            [shared, waiting, released]
            {
                waiting->arrive();
                while (Sync::load(shared->word) == 0)
                {
                    Sync::wait(shared->word, 0);
                }
                released->arrive();
            });
    }
    REQUIRE(waiting->wait_for(waiter_count, deadline));

    Sync::store(shared->word, 1);
    Sync::wake_all(shared->word);

    const bool all_released = released->wait_for(waiter_count, deadline);
    CHECK_MESSAGE(all_released, "not every waiter returned after store + wake_all");
    for (auto& waiter : waiters)
    {
        if (all_released)
        {
            waiter.join();
        }
        else
        {
            waiter.detach();
        }
    }
}
TEST_CASE_TEMPLATE_APPLY(sync_wake_all, sync_policies_under_test);

TEST_CASE_TEMPLATE_DEFINE("SyncPolicy: a socket built on it closes cleanly while other threads send", Sync,
                          sync_drives_a_socket)
{
    using socket_type = async_socket::basic_async_socket<fake_threadpool, fault_alloc, Sync>;
    fake_os os;
    alloc_ledger ledger;
    os.set_worker_count(2);
    os.on_issue([&os](const pending_io& io) { os.complete_on_worker(io.overlapped, 0, io.total_length); });
    os.set_cancel_behavior(cancel_behavior::ignore); // every IO is completed by the hook
    open_recorder opened;
    std::atomic<int> sent{0};
    std::atomic<int> accepted{0};
    {
        auto socket = socket_type::create(&os, fake_socket(3), {}, fault_alloc{&ledger});
        REQUIRE(socket);
        REQUIRE(socket->open_async(&open_recorder::callback, &opened) == status::ok);

        char payload[16] = {};
        std::vector<std::thread> senders;
        for (int t = 0; t < 2; ++t)
        {
            senders.emplace_back(
                [&]
                {
                    ASYNC_SOCKET_BUFFER buffer{payload, sizeof(payload)};
                    const auto on_sent = [](void* context, ASYNC_SOCKET_SEND_RESULT result)
                    {
                        if (result == ASYNC_SOCKET_SEND_OK)
                        {
                            ++*static_cast<std::atomic<int>*>(context);
                        }
                    };
                    for (int i = 0; i < 2000; ++i)
                    {
                        if (socket->send_async(&buffer, 1, on_sent, &sent) != status::ok)
                        {
                            break;
                        }
                        ++accepted;
                    }
                });
        }
        const auto give_up = std::chrono::steady_clock::now() + deadline;
        while (accepted.load() < 100 && std::chrono::steady_clock::now() < give_up)
        {
            std::this_thread::yield();
        }
        CHECK_MESSAGE(accepted.load() >= 100, "the senders made no progress");
        CHECK(socket->close() == status::ok);
        for (auto& sender : senders)
        {
            sender.join();
        }
    }
    CHECK(accepted.load() > 0);
    CHECK(sent.load() == accepted.load());
    CHECK(os.violations().empty());
    CHECK(os.live_events() == 0);
    CHECK(ledger.live_blocks() == 0);
}
TEST_CASE_TEMPLATE_APPLY(sync_drives_a_socket, sync_policies_under_test);

// ---------------------------------------------------------------------------------------------------
// AllocPolicy conformance suite
// ---------------------------------------------------------------------------------------------------

namespace
{

// How the suite makes an instance of an AllocPolicy and reads what it still holds (nullopt when the
// policy keeps no count). Specialise it for a policy that cannot be value-initialised.
template <class Alloc>
struct alloc_under_test
{
    static Alloc make()
    {
        return Alloc{};
    }
    static std::optional<std::int64_t> live_bytes()
    {
        return std::nullopt;
    }
};

template <>
struct alloc_under_test<fault_alloc>
{
    static alloc_ledger& ledger()
    {
        static alloc_ledger instance;
        return instance;
    }
    static fault_alloc make()
    {
        return fault_alloc{&ledger()};
    }
    static std::optional<std::int64_t> live_bytes()
    {
        CHECK(ledger().misuse() == 0);
        return ledger().live_bytes();
    }
};

template <>
struct alloc_under_test<counting_alloc>
{
    static std::atomic<std::int64_t>& counter()
    {
        static std::atomic<std::int64_t> bytes{0};
        return bytes;
    }
    static counting_alloc make()
    {
        return counting_alloc{&counter()};
    }
    static std::optional<std::int64_t> live_bytes()
    {
        return counter().load();
    }
};

// Every AllocPolicy in the tree (and the example of docs/policies.md). A new one is added here.
using alloc_policies_under_test = std::tuple<async_socket::heap_alloc, fault_alloc, counting_alloc>;

bool is_max_aligned(const void* p)
{
    return reinterpret_cast<std::uintptr_t>(p) % alignof(std::max_align_t) == 0;
}

// For a policy that counts its bytes: checks that they are back to `before`, what they were when the test began.
template <class Alloc>
void check_bytes_back_to(const std::optional<std::int64_t>& before)
{
    if (before)
    {
        CHECK(*alloc_under_test<Alloc>::live_bytes() == *before);
    }
}

} // namespace

TYPE_TO_STRING_AS("heap_alloc", async_socket::heap_alloc);
TYPE_TO_STRING_AS("fault_alloc", fault_alloc);
TYPE_TO_STRING_AS("counting_alloc", counting_alloc);

TEST_CASE_TEMPLATE_DEFINE("AllocPolicy: allocate returns distinct, writable blocks aligned for max_align_t", Alloc,
                          alloc_blocks)
{
    using under_test = alloc_under_test<Alloc>;
    Alloc alloc = under_test::make();
    const std::optional<std::int64_t> before = under_test::live_bytes();

    const std::size_t sizes[] = {1, 2, 3, 7, 8, 15, 16, 17, 31, 64, 100, 1000, 4096, 65536};
    struct block
    {
        unsigned char* p;
        std::size_t size;
    };
    std::vector<block> blocks;
    for (std::size_t i = 0; i < std::size(sizes); ++i)
    {
        auto* p = static_cast<unsigned char*>(alloc.allocate(sizes[i]));
        REQUIRE(p != nullptr);
        CHECK_MESSAGE(is_max_aligned(p), "a block of ", sizes[i], " bytes is not aligned for max_align_t");
        std::memset(p, static_cast<int>(i + 1), sizes[i]); // every byte is writable
        blocks.push_back({p, sizes[i]});
    }
    // No block overlaps another: each still holds its own pattern.
    for (std::size_t i = 0; i < blocks.size(); ++i)
    {
        const bool intact = std::all_of(blocks[i].p, blocks[i].p + blocks[i].size,
                                        [i](unsigned char c) { return c == static_cast<unsigned char>(i + 1); });
        CHECK_MESSAGE(intact, "the block of ", blocks[i].size, " bytes was overwritten by another block");
    }
    if (before)
    {
        CHECK(*under_test::live_bytes() > *before);
    }
    for (const block& b : blocks)
    {
        alloc.deallocate(b.p, b.size); // with the size given to allocate
    }
    check_bytes_back_to<Alloc>(before);
}
TEST_CASE_TEMPLATE_APPLY(alloc_blocks, alloc_policies_under_test);

TEST_CASE_TEMPLATE_DEFINE("AllocPolicy: a copy shares the original's state: what one allocates the other frees", Alloc,
                          alloc_copies_share)
{
    using under_test = alloc_under_test<Alloc>;
    Alloc original = under_test::make();
    const std::optional<std::int64_t> before = under_test::live_bytes();
    Alloc copy = original; // the socket keeps a copy like this one

    void* p = copy.allocate(48);
    REQUIRE(p != nullptr);
    CHECK(is_max_aligned(p));
    original.deallocate(p, 48);
    check_bytes_back_to<Alloc>(before);
}
TEST_CASE_TEMPLATE_APPLY(alloc_copies_share, alloc_policies_under_test);

TEST_CASE_TEMPLATE_DEFINE("AllocPolicy: several threads allocate and deallocate at once without sharing a block", Alloc,
                          alloc_concurrent)
{
    using under_test = alloc_under_test<Alloc>;
    constexpr int threads = 4;
    constexpr int iterations = 3000;
    const std::optional<std::int64_t> before = under_test::live_bytes();
    std::atomic<int> corrupted{0};
    std::atomic<int> failed{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t)
    {
        workers.emplace_back(
            [&, t]
            {
                Alloc alloc = under_test::make();
                std::minstd_rand random(static_cast<unsigned>(t + 1));
                struct block
                {
                    unsigned char* p;
                    std::size_t size;
                };
                std::vector<block> held;
                const auto tag = static_cast<unsigned char>(0x40 + t);
                const auto release = [&](const block& b)
                {
                    if (!std::all_of(b.p, b.p + b.size, [tag](unsigned char c) { return c == tag; }))
                    {
                        ++corrupted;
                    }
                    alloc.deallocate(b.p, b.size);
                };
                for (int i = 0; i < iterations; ++i)
                {
                    const std::size_t size = 1 + random() % 512;
                    auto* p = static_cast<unsigned char*>(alloc.allocate(size));
                    if (p == nullptr || !is_max_aligned(p))
                    {
                        ++failed;
                        continue;
                    }
                    std::memset(p, tag, size);
                    held.push_back({p, size});
                    if (held.size() > 16)
                    {
                        const std::size_t victim = random() % held.size();
                        release(held[victim]);
                        held[victim] = held.back();
                        held.pop_back();
                    }
                }
                for (const block& b : held)
                {
                    release(b);
                }
            });
    }
    for (auto& worker : workers)
    {
        worker.join();
    }
    CHECK(corrupted.load() == 0);
    CHECK(failed.load() == 0);
    check_bytes_back_to<Alloc>(before);
}
TEST_CASE_TEMPLATE_APPLY(alloc_concurrent, alloc_policies_under_test);

TEST_CASE_TEMPLATE_DEFINE("AllocPolicy: a socket built on it completes a send and gives back every block", Alloc,
                          alloc_drives_a_socket)
{
    using under_test = alloc_under_test<Alloc>;
    using socket_type = async_socket::basic_async_socket<fake_threadpool, Alloc, async_socket::std_sync>;
    const std::optional<std::int64_t> before = under_test::live_bytes();
    fake_os os;
    send_recorder sent;
    {
        auto socket = socket_type::create(&os, fake_socket(5), {}, under_test::make());
        REQUIRE(socket);
        open_recorder opened;
        REQUIRE(socket->open_async(&open_recorder::callback, &opened) == status::ok);
        char payload[100] = {};
        ASYNC_SOCKET_BUFFER buffers[3] = {{payload, 10}, {payload + 10, 20}, {payload + 30, 70}};
        REQUIRE(socket->send_async(buffers, 3, &send_recorder::callback, &sent) == status::ok);
        REQUIRE(os.complete_oldest(async_socket::win32_no_error, 100));
    }
    CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_OK});
    CHECK(os.violations().empty());
    check_bytes_back_to<Alloc>(before);
}
TEST_CASE_TEMPLATE_APPLY(alloc_drives_a_socket, alloc_policies_under_test);

// ---------------------------------------------------------------------------------------------------
// The worked example of docs/policies.md
// ---------------------------------------------------------------------------------------------------

TEST_CASE("counting_alloc (docs/policies.md) counts the socket, then its IO context until the send completes")
{
    using counted_socket = async_socket::basic_async_socket<fake_threadpool, counting_alloc, async_socket::std_sync>;
    std::atomic<std::int64_t> live_bytes{0};
    fake_os os;
    send_recorder sent;
    {
        auto socket = counted_socket::create(&os, fake_socket(1), {}, counting_alloc{&live_bytes});
        REQUIRE(socket);
        CHECK(live_bytes.load() == static_cast<std::int64_t>(sizeof(counted_socket)));

        open_recorder opened;
        REQUIRE(socket->open_async(&open_recorder::callback, &opened) == status::ok);
        CHECK(live_bytes.load() == static_cast<std::int64_t>(sizeof(counted_socket)));

        char payload[64] = {};
        ASYNC_SOCKET_BUFFER buffers[2] = {{payload, 32}, {payload + 32, 32}};
        REQUIRE(socket->send_async(buffers, 2, &send_recorder::callback, &sent) == status::ok);
        const std::int64_t while_sending = live_bytes.load();
        // The IO context holds the OVERLAPPED, the bookkeeping and both WSABUFs.
        CHECK(while_sending >=
              static_cast<std::int64_t>(sizeof(counted_socket) + sizeof(fake_overlapped) + 2 * sizeof(fake_wsabuf)));

        REQUIRE(os.complete_oldest(async_socket::win32_no_error, 64));
        CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_OK});
        CHECK(live_bytes.load() == static_cast<std::int64_t>(sizeof(counted_socket)));
    }
    CHECK(live_bytes.load() == 0);
    CHECK(os.violations().empty());
}

TEST_CASE("the counting_alloc of docs/policies.md is the code compiled and tested here, word for word")
{
    const std::string this_file = __FILE__;
    const std::string root = this_file.substr(0, this_file.rfind("tests/unit/"));
    const std::string source = read_all(this_file);
    const std::string doc = read_all(root + "docs/policies.md");
    REQUIRE_MESSAGE(!source.empty(), "cannot read ", this_file);
    REQUIRE_MESSAGE(!doc.empty(), "cannot read ", root, "docs/policies.md");

    const std::string in_test = between(source, "// docs/policies.md example begin", "// docs/policies.md example end");
    // In the document the example is the code block that follows this marker.
    const std::size_t marker = doc.find("<!-- example: counting_alloc -->");
    REQUIRE_MESSAGE(marker != std::string::npos, "docs/policies.md lost its example marker");
    const std::string in_doc = between(doc.substr(marker), "```cpp", "```");
    REQUIRE(!in_test.empty());
    CHECK(in_doc == in_test);
}
