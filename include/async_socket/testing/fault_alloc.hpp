/// @file
/// async_socket testing: an AllocPolicy that counts every block and fails allocations on demand.
///
/// The ledger is owned by the test and shared by every copy of the policy:
///   alloc_ledger ledger;
///   ledger.fail_nth(2);                 // the second allocation from now returns nullptr
///   ... socket::create(&os, s, {}, fault_alloc{&ledger}) ...
///   CHECK(ledger.live_blocks() == 0);   // nothing leaked
/// or, for a soak, now and then:
///   ledger.fail_at_rate(0.02, seed);    // about 2 allocations in 100 fail, the same ones for the same seed
/// Each block carries a header with its size, so a deallocate with the wrong size, a double free or a
/// pointer that did not come from allocate is counted in misuse().
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

namespace async_socket::testing
{

/// splitmix64 (Steele, Lea, Flood): a cheap, well-mixed function of a 64-bit counter. The n-th value of a seeded
/// stream is splitmix64(seed + n * 0x9E3779B97F4A7C15), so that any thread can draw the n-th value alone from an
/// atomic counter, with no shared generator state; the fault injectors of testing/ draw their decisions so.
[[nodiscard]] constexpr std::uint64_t splitmix64(std::uint64_t x) noexcept
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/// The threshold below which a splitmix64 draw means "fail" for a probability `rate`: 0 for rate <= 0 (never),
/// UINT64_MAX for rate >= 1 (always: see fault_drawn), rate * 2^64 in between.
[[nodiscard]] constexpr std::uint64_t fault_threshold(double rate) noexcept
{
    if (!(rate > 0.0))
    {
        return 0;
    }
    if (rate >= 1.0)
    {
        return UINT64_MAX;
    }
    return static_cast<std::uint64_t>(rate * 18446744073709551616.0);
}

/// Whether the draw `r` (a splitmix64 value) falls under `threshold` (from fault_threshold); UINT64_MAX always does.
[[nodiscard]] constexpr bool fault_drawn(std::uint64_t r, std::uint64_t threshold) noexcept
{
    return threshold == UINT64_MAX || r < threshold;
}

/// What every fault_alloc sharing it counts (blocks, bytes, attempts, failures, misuse) and the failures it is told
/// to make. Owned by the test; thread-safe.
class alloc_ledger
{
public:
    /// The n-th allocation from now (1 = the next one) fails; 0 cancels a planned failure.
    void fail_nth(std::uint64_t n) noexcept
    {
        fail_at_.store(n == 0 ? 0 : allocations_.load() + n);
    }

    /// Every allocation fails while set.
    void fail_all(bool on) noexcept
    {
        fail_all_.store(on);
    }

    /// From now on each allocation fails with probability `rate` (0: never, which ends the mode; 1: always),
    /// decided by splitmix64 of `seed` and the allocation's number (allocations()), so the same seed fails the
    /// same allocations of a run whatever thread makes them. Thread-safe; adds to fail_nth and fail_all.
    void fail_at_rate(double rate, std::uint64_t seed = 1) noexcept
    {
        rate_seed_.store(seed);
        rate_threshold_.store(fault_threshold(rate));
    }

    /// Blocks allocated and not yet freed.
    [[nodiscard]] std::int64_t live_blocks() const noexcept
    {
        return live_blocks_.load();
    }
    /// Bytes (as requested) allocated and not yet freed.
    [[nodiscard]] std::int64_t live_bytes() const noexcept
    {
        return live_bytes_.load();
    }
    /// Allocation attempts so far, failed ones included.
    [[nodiscard]] std::uint64_t allocations() const noexcept
    {
        return allocations_.load();
    }
    /// Allocations that returned nullptr because the ledger said so (fail_nth, fail_all, fail_at_rate).
    [[nodiscard]] std::uint64_t failed_allocations() const noexcept
    {
        return failed_.load();
    }
    /// Deallocations with the wrong size, of a block freed already, or of a pointer allocate did not give.
    [[nodiscard]] std::uint64_t misuse() const noexcept
    {
        return misuse_.load();
    }

private:
    friend class fault_alloc;

    std::atomic<std::uint64_t> allocations_{0};
    std::atomic<std::uint64_t> fail_at_{0};
    std::atomic<bool> fail_all_{false};
    std::atomic<std::uint64_t> rate_threshold_{0};
    std::atomic<std::uint64_t> rate_seed_{1};
    std::atomic<std::uint64_t> failed_{0};
    std::atomic<std::int64_t> live_blocks_{0};
    std::atomic<std::int64_t> live_bytes_{0};
    std::atomic<std::uint64_t> misuse_{0};
};

/// The AllocPolicy of the tests: std::malloc'd blocks with a checked header, counted in (and failed by) an
/// alloc_ledger.
class fault_alloc
{
public:
    /// Without a ledger it neither counts nor fails: a plain checked heap.
    fault_alloc() noexcept = default;
    /// Counts in ledger and fails when it says so.
    explicit fault_alloc(alloc_ledger* ledger) noexcept : ledger_(ledger) {}

    /// size bytes aligned for std::max_align_t; nullptr when the ledger plans a failure or malloc fails.
    void* allocate(std::size_t size) noexcept
    {
        if (ledger_ != nullptr)
        {
            const std::uint64_t n = ledger_->allocations_.fetch_add(1) + 1;
            const std::uint64_t threshold = ledger_->rate_threshold_.load();
            if (ledger_->fail_all_.load() || n == ledger_->fail_at_.load() ||
                (threshold != 0 &&
                 fault_drawn(splitmix64(ledger_->rate_seed_.load() + n * 0x9E3779B97F4A7C15ull), threshold)))
            {
                ledger_->failed_.fetch_add(1);
                return nullptr;
            }
        }
        auto* block = static_cast<header*>(std::malloc(sizeof(header) + size));
        if (block == nullptr)
        {
            return nullptr;
        }
        block->size = size;
        block->magic = live_magic;
        if (ledger_ != nullptr)
        {
            ledger_->live_blocks_.fetch_add(1);
            ledger_->live_bytes_.fetch_add(static_cast<std::int64_t>(size));
        }
        return block + 1;
    }

    /// Frees a block from allocate. A wrong size, a double free or a foreign pointer is counted as misuse and the
    /// block is leaked rather than freed. nullptr: does nothing.
    void deallocate(void* p, std::size_t size) noexcept
    {
        if (p == nullptr)
        {
            return;
        }
        auto* block = static_cast<header*>(p) - 1;
        if (block->magic != live_magic || block->size != size)
        {
            if (ledger_ != nullptr)
            {
                ledger_->misuse_.fetch_add(1);
            }
            return; // leak rather than corrupt the heap
        }
        block->magic = freed_magic;
        if (ledger_ != nullptr)
        {
            ledger_->live_blocks_.fetch_sub(1);
            ledger_->live_bytes_.fetch_sub(static_cast<std::int64_t>(size));
        }
        std::free(block);
    }

private:
    static constexpr std::uint64_t live_magic = 0xA11C0C0DEull;
    static constexpr std::uint64_t freed_magic = 0xDEADF4EEull;

    struct alignas(std::max_align_t) header
    {
        std::size_t size;
        std::uint64_t magic;
    };

    alloc_ledger* ledger_ = nullptr;
};

} // namespace async_socket::testing
