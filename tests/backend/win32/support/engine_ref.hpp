// Test support for the Win32 integration tests: an execution engine held for the length of a test.
//
// Header-only; only the async_socket C API.
#pragma once

#include <async_socket/c_api.h>

namespace win32_test
{

// An execution engine (default parameters unless given), released at the end of the test.
struct engine_ref
{
    EXECUTION_ENGINE_HANDLE engine;
    explicit engine_ref(const EXECUTION_ENGINE_PARAMETERS* parameters = nullptr)
        : engine(execution_engine_create(parameters))
    {
    }
    ~engine_ref()
    {
        execution_engine_dec_ref(engine);
    }
    engine_ref(const engine_ref&) = delete;
    engine_ref& operator=(const engine_ref&) = delete;

    [[nodiscard]] EXECUTION_ENGINE_HANDLE get() const noexcept
    {
        return engine;
    }
};

} // namespace win32_test
