# Cross-compiles for 64-bit Windows with clang over mingw-w64: the mingw-w64 headers and import libraries, and
# the C++ runtime (libstdc++, libgcc, winpthreads) of Debian's mingw-w64 gcc, posix-thread variant, as the
# gcc toolchain (cmake/toolchain-mingw-w64.cmake) uses them. The .exe files run under Wine (ctest, add_test)
# through scripts/wine-run.sh.
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)

set(_triple x86_64-w64-mingw32)
set(CMAKE_C_COMPILER clang)
set(CMAKE_CXX_COMPILER clang++)
set(CMAKE_C_COMPILER_TARGET ${_triple})
set(CMAKE_CXX_COMPILER_TARGET ${_triple})
set(CMAKE_RC_COMPILER ${_triple}-windres)
# The mingw-w64 headers and libraries; --sysroot also keeps the host's /usr/include out of the search.
set(CMAKE_SYSROOT /usr/${_triple})

# clang 14 does not find gcc's folder on its own (it cannot read the version "12-posix"), so take it from the
# posix gcc itself: its libstdc++ headers have the posix-thread configuration std::thread needs.
execute_process(COMMAND ${_triple}-g++-posix -print-libgcc-file-name OUTPUT_VARIABLE _libgcc
                OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _status)
if(NOT _status EQUAL 0 OR NOT EXISTS "${_libgcc}")
  message(FATAL_ERROR "clang-mingw: ${_triple}-g++-posix not found (Debian: g++-mingw-w64-x86-64-posix); "
                      "clang uses its libstdc++")
endif()
get_filename_component(_gcc_dir "${_libgcc}" DIRECTORY)
set(_cxx_include ${_gcc_dir}/include/c++)
# -pthread as the posix gcc implies it: libstdc++ and libgcc_eh call winpthreads (-lpthread at the link).
set(CMAKE_C_FLAGS_INIT "-pthread")
# -stdlib++-isystem replaces clang's own guesses of the C++ library folders (and, unlike -nostdinc++, is silent
# on link lines).
set(CMAKE_CXX_FLAGS_INIT "-pthread -stdlib++-isystem ${_cxx_include} -stdlib++-isystem ${_cxx_include}/${_triple} \
-stdlib++-isystem ${_cxx_include}/backward")
# libstdc++.a, libgcc.a and libgcc_eh.a live beside libgcc; clang's driver names them.
foreach(_kind EXE SHARED MODULE)
  set(CMAKE_${_kind}_LINKER_FLAGS_INIT "-pthread -L${_gcc_dir}")
endforeach()

set(CMAKE_FIND_ROOT_PATH /usr/${_triple})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

set(CMAKE_CROSSCOMPILING_EMULATOR ${CMAKE_CURRENT_LIST_DIR}/../scripts/wine-run.sh)
