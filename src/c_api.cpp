// async_socket::c_api: the C API of <async_socket/c_api.h> as functions with C linkage, for programs written in C.
//
// The definitions are the header's own (the same code C++ callers get inline); ASYNC_SOCKET_C_API_DEFINE gives them
// C linkage and makes the header declare them first, so a declaration that drifted from its definition would not
// compile.
#define ASYNC_SOCKET_C_API_DEFINE 1
#include <async_socket/c_api.h>
