// The test runner of every test executable: doctest's, plus a watchdog.
//
// A test case that runs longer than the watchdog's limit (ASYNC_SOCKET_TEST_WATCHDOG_SECONDS, 120 by
// default) is a hang: the watchdog names it on stderr and ends the process with exit code 3, so a hung
// test costs minutes of CI, not its whole budget, and says where it hung.
//
// On Windows it also catches a crash on any thread: under Wine an unhandled exception on a thread other than
// main ends the process with exit code 0, so a crash on a threadpool thread would pass as a green test.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#if defined(_WIN32)
#include <windows.h>
#endif

namespace
{

struct watchdog_state
{
    std::mutex mutex;
    std::condition_variable stop;
    bool done = false;
    std::string test_name;
    std::chrono::steady_clock::time_point test_start = std::chrono::steady_clock::now();
};

watchdog_state& watchdog() noexcept
{
    static watchdog_state state;
    return state;
}

// A doctest listener that tells the watchdog which test case is running.
struct watchdog_listener : doctest::IReporter
{
    explicit watchdog_listener(const doctest::ContextOptions&) {}

    void test_case_start(const doctest::TestCaseData& data) override
    {
        std::lock_guard lock(watchdog().mutex);
        watchdog().test_name = data.m_name;
        watchdog().test_start = std::chrono::steady_clock::now();
    }
    void test_case_reenter(const doctest::TestCaseData&) override {}
    void test_case_end(const doctest::CurrentTestCaseStats&) override
    {
        std::lock_guard lock(watchdog().mutex);
        watchdog().test_name.clear();
    }
    void report_query(const doctest::QueryData&) override {}
    void test_run_start() override {}
    void test_run_end(const doctest::TestRunStats&) override {}
    void test_case_exception(const doctest::TestCaseException&) override {}
    void subcase_start(const doctest::SubcaseSignature&) override {}
    void subcase_end() override {}
    void log_assert(const doctest::AssertData&) override {}
    void log_message(const doctest::MessageData&) override {}
    void test_case_skipped(const doctest::TestCaseData&) override {}
};

REGISTER_LISTENER("watchdog", 1, watchdog_listener);

#if defined(_WIN32)
// Names the exception and the running test case, and ends the process with exit code 4.
LONG WINAPI report_unhandled_exception(EXCEPTION_POINTERS* info)
{
    const EXCEPTION_RECORD* record = info != nullptr ? info->ExceptionRecord : nullptr;
    std::fprintf(stderr, "unhandled exception 0x%08lx at %p on thread %lu, in test case \"%s\"\n",
                 record != nullptr ? static_cast<unsigned long>(record->ExceptionCode) : 0ul,
                 record != nullptr ? record->ExceptionAddress : nullptr,
                 static_cast<unsigned long>(GetCurrentThreadId()), watchdog().test_name.c_str());
    std::fflush(stderr);
    std::_Exit(4);
}
#endif

int watchdog_seconds()
{
    const char* text = std::getenv("ASYNC_SOCKET_TEST_WATCHDOG_SECONDS");
    const int seconds = text != nullptr ? std::atoi(text) : 0;
    return seconds > 0 ? seconds : 120;
}

} // namespace

int main(int argc, char** argv)
{
#if defined(_WIN32)
    SetUnhandledExceptionFilter(&report_unhandled_exception);
#endif
    const auto limit = std::chrono::seconds(watchdog_seconds());
    std::thread guard(
        [limit]
        {
            std::unique_lock lock(watchdog().mutex);
            while (!watchdog().stop.wait_for(lock, std::chrono::milliseconds(200), [] { return watchdog().done; }))
            {
                if (!watchdog().test_name.empty() && std::chrono::steady_clock::now() - watchdog().test_start > limit)
                {
                    std::fprintf(stderr, "watchdog: test case \"%s\" still running after %lld s: it hangs; aborting\n",
                                 watchdog().test_name.c_str(), static_cast<long long>(limit.count()));
                    std::fflush(stderr);
                    std::_Exit(3);
                }
            }
        });

    doctest::Context context(argc, argv);
    const int result = context.run();

    {
        std::lock_guard lock(watchdog().mutex);
        watchdog().done = true;
    }
    watchdog().stop.notify_all();
    guard.join();
    return result;
}
