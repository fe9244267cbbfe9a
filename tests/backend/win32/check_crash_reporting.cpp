// Checks the test runner itself: a crash on a thread that is not main must fail the test executable.
//
// Under Wine an unhandled exception on such a thread ends the process with exit code 0, which ctest would take
// for a pass; test_main.cpp installs an unhandled-exception filter that names the exception and exits with 4.
// This executable crashes on a CreateThread thread on purpose; ctest expects the filter's message (see
// CMakeLists.txt), so the test passes only if the filter caught the crash.
#include <doctest/doctest.h>

#include <windows.h>

namespace
{

DWORD WINAPI crash(void*)
{
    volatile int* nowhere = nullptr;
    *nowhere = 42; // an access violation, 0xc0000005
    return 0;
}

} // namespace

TEST_CASE("a crash on a thread that is not main ends the test run with the crash reported")
{
    HANDLE thread = CreateThread(nullptr, 0, &crash, nullptr, 0, nullptr);
    REQUIRE(thread != nullptr);
    // Not reached when the filter works: it exits the process while this waits.
    CHECK(WaitForSingleObject(thread, 60000) == WAIT_OBJECT_0);
    CloseHandle(thread);
    FAIL("the crash on the thread was not reported");
}
