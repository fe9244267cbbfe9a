/* The C API from C: a C11 program, compiled by a C compiler, that calls the spec's functions as a C user writes them
 * and links async_socket::c_api. Over a real loopback TCP connection (under Wine for Windows): bad input refused
 * with no callback, open, a gathered send and scattered receives that carry every byte, a receive cut by close
 * (BECAUSE_CLOSE once), reopen, the peer's end of stream, destroy. Every wait has a deadline, so a hang ends as a
 * failure. No test framework: the checks count, and the exit status is the number that failed. */
#ifndef _WIN32
#define _POSIX_C_SOURCE 200809L /* clock_gettime, pthread_condattr_setclock under -std=c11 */
#endif

#include <async_socket/c_api.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
typedef SOCKET raw_socket;
#define RAW_INVALID INVALID_SOCKET
#define close_raw closesocket
#define SHUT_WR SD_SEND
#else
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
typedef int raw_socket;
#define RAW_INVALID (-1)
#define close_raw close
#endif

/* Wine and sanitizers are slow; a deadline only ends a wait that would otherwise hang. */
#define DEADLINE_MS 60000

static int checks = 0;
static int failures = 0;

#define CHECK(condition) check((condition) != 0, #condition, __LINE__)

static int check(int ok, const char* what, int line)
{
    ++checks;
    if (!ok)
    {
        ++failures;
        printf("test_c_api: FAILED at line %d: %s\n", line, what);
        fflush(stdout);
    }
    return ok;
}

/* ---- what the callbacks saw, read by the test's thread with a deadline ------------------------------------- */

typedef struct io_record
{
#ifdef _WIN32
    CRITICAL_SECTION lock;
    CONDITION_VARIABLE changed;
#else
    pthread_mutex_t lock;
    pthread_cond_t changed;
#endif
    int calls;
    int result; /* the last ASYNC_SOCKET_*_RESULT */
    uint32_t bytes;
} io_record;

static void record_init(io_record* record)
{
#ifdef _WIN32
    InitializeCriticalSection(&record->lock);
    InitializeConditionVariable(&record->changed);
#else
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_mutex_init(&record->lock, NULL);
    pthread_cond_init(&record->changed, &attributes);
    pthread_condattr_destroy(&attributes);
#endif
    record->calls = 0;
    record->result = 0;
    record->bytes = 0;
}

static void record_destroy(io_record* record)
{
#ifdef _WIN32
    DeleteCriticalSection(&record->lock);
#else
    pthread_cond_destroy(&record->changed);
    pthread_mutex_destroy(&record->lock);
#endif
}

/* The lock and condition of a record in their two platform forms; the functions after them are written once. */
#ifdef _WIN32
typedef ULONGLONG record_deadline;
#define record_lock(record) EnterCriticalSection(&(record)->lock)
#define record_unlock(record) LeaveCriticalSection(&(record)->lock)
#define record_wake(record) WakeAllConditionVariable(&(record)->changed)
#else
typedef struct timespec record_deadline;
#define record_lock(record) pthread_mutex_lock(&(record)->lock)
#define record_unlock(record) pthread_mutex_unlock(&(record)->lock)
#define record_wake(record) pthread_cond_broadcast(&(record)->changed)
#endif

static record_deadline record_deadline_in(int milliseconds)
{
#ifdef _WIN32
    return GetTickCount64() + (ULONGLONG)milliseconds;
#else
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += milliseconds / 1000;
    return deadline;
#endif
}

/* Sleeps (the lock held) until the record changes or the deadline passes; 0 once it has passed. */
static int record_sleep(io_record* record, const record_deadline* deadline)
{
#ifdef _WIN32
    const ULONGLONG now = GetTickCount64();
    if (now >= *deadline)
    {
        return 0;
    }
    (void)SleepConditionVariableCS(&record->changed, &record->lock, (DWORD)(*deadline - now));
    return 1;
#else
    return pthread_cond_timedwait(&record->changed, &record->lock, deadline) != ETIMEDOUT;
#endif
}

static void record_call(io_record* record, int result, uint32_t bytes)
{
    record_lock(record);
    record->result = result;
    record->bytes = bytes;
    ++record->calls;
    record_wake(record);
    record_unlock(record);
}

/* Waits until the record has `calls` calls; returns the count seen (less on a timeout). */
static int record_wait(io_record* record, int calls)
{
    int seen;
    const record_deadline deadline = record_deadline_in(DEADLINE_MS);
    record_lock(record);
    while (record->calls < calls && record_sleep(record, &deadline))
    {
    }
    seen = record->calls;
    record_unlock(record);
    return seen;
}

static int record_calls(io_record* record)
{
    int calls;
    record_lock(record);
    calls = record->calls;
    record_unlock(record);
    return calls;
}

/* The three callbacks of the spec, as a C user writes them. */
static void on_open_complete(void* context, ASYNC_SOCKET_OPEN_RESULT open_result)
{
    record_call((io_record*)context, (int)open_result, 0);
}

static void on_send_complete(void* context, ASYNC_SOCKET_SEND_RESULT send_result)
{
    record_call((io_record*)context, (int)send_result, 0);
}

static void on_receive_complete(void* context, ASYNC_SOCKET_RECEIVE_RESULT receive_result, uint32_t bytes_received)
{
    record_call((io_record*)context, (int)receive_result, bytes_received);
}

/* ---- a loopback TCP connection ----------------------------------------------------------------------------- */

typedef struct raw_pair
{
    raw_socket client;
    raw_socket server;
} raw_pair;

static int make_pair(raw_pair* pair)
{
    struct sockaddr_in address;
    socklen_t length = sizeof(address);
    raw_socket listener = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    pair->client = RAW_INVALID;
    pair->server = RAW_INVALID;
    if (listener == RAW_INVALID)
    {
        return 0;
    }
    memset(&address, 0, sizeof(address));
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    if (bind(listener, (struct sockaddr*)&address, sizeof(address)) != 0 || listen(listener, 1) != 0 ||
        getsockname(listener, (struct sockaddr*)&address, &length) != 0)
    {
        close_raw(listener);
        return 0;
    }
    pair->client = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (pair->client != RAW_INVALID && connect(pair->client, (struct sockaddr*)&address, sizeof(address)) == 0)
    {
        pair->server = accept(listener, NULL, NULL);
    }
    close_raw(listener);
    return pair->client != RAW_INVALID && pair->server != RAW_INVALID;
}

static SOCKET_HANDLE handle_of(raw_socket socket_value)
{
#ifdef _WIN32
    return (SOCKET_HANDLE)(uintptr_t)socket_value;
#else
    return async_socket_handle_from_fd(socket_value);
#endif
}

/* ---- the checks ---------------------------------------------------------------------------------------------- */

static void check_bad_input(EXECUTION_ENGINE_HANDLE engine, SOCKET_HANDLE some_socket)
{
    io_record record;
    char byte = 'x';
    ASYNC_SOCKET_BUFFER buffer;
    EXECUTION_ENGINE_PARAMETERS reversed;
    buffer.buffer = &byte;
    buffer.length = 1;
    reversed.min_thread_count = 4;
    reversed.max_thread_count = 2;
    record_init(&record);

    CHECK(execution_engine_create(&reversed) == NULL);
    execution_engine_inc_ref(NULL);
    execution_engine_dec_ref(NULL);
    CHECK(async_socket_create(NULL, some_socket) == NULL);
    CHECK(async_socket_create(engine, NULL) == NULL);
    async_socket_destroy(NULL);
    async_socket_close(NULL);
    CHECK(async_socket_open_async(NULL, on_open_complete, &record) != 0);
    CHECK(async_socket_send_async(NULL, &buffer, 1, on_send_complete, &record) != 0);
    CHECK(async_socket_receive_async(NULL, &buffer, 1, on_receive_complete, &record) != 0);
    CHECK(record_calls(&record) == 0);
    record_destroy(&record);
}

static void check_open(ASYNC_SOCKET_HANDLE socket_handle)
{
    io_record opened;
    record_init(&opened);
    CHECK(async_socket_open_async(socket_handle, NULL, &opened) != 0); /* no callback: refused */
    CHECK(async_socket_open_async(socket_handle, on_open_complete, &opened) == 0);
    CHECK(record_wait(&opened, 1) == 1);
    CHECK(opened.result == ASYNC_SOCKET_OPEN_OK);
    CHECK(async_socket_open_async(socket_handle, on_open_complete, &opened) != 0); /* already open */
    CHECK(record_calls(&opened) == 1);
    record_destroy(&opened);
}

/* Sends `text` from `from` in two gathered buffers and receives it on `to` in scattered ones until every byte is
 * there; checks the bytes. */
static void check_transfer(ASYNC_SOCKET_HANDLE from, ASYNC_SOCKET_HANDLE to, const char* text)
{
    const uint32_t size = (uint32_t)strlen(text);
    const uint32_t first = size / 3;
    char received[64];
    uint32_t filled = 0;
    int rounds = 0;
    io_record sent;
    ASYNC_SOCKET_BUFFER out[2];
    memset(received, 0, sizeof(received));
    out[0].buffer = (void*)text;
    out[0].length = first;
    out[1].buffer = (void*)(text + first);
    out[1].length = size - first;
    record_init(&sent);

    CHECK(async_socket_send_async(from, out, 0, on_send_complete, &sent) != 0); /* no buffers: refused */
    CHECK(async_socket_send_async(from, out, 2, NULL, &sent) != 0);             /* no callback: refused */
    CHECK(async_socket_send_async(from, out, 2, on_send_complete, &sent) == 0);
    /* The array may be reused at once; only the bytes must stay. */
    memset(out, 0, sizeof(out));

    while (filled < size && rounds < 64)
    {
        io_record got;
        ASYNC_SOCKET_BUFFER in[2];
        const uint32_t room = size - filled;
        record_init(&got);
        in[0].buffer = received + filled;
        in[0].length = room > 1 ? room / 2 : 1;
        in[1].buffer = received + filled + in[0].length;
        in[1].length = room - in[0].length;
        if (!CHECK(async_socket_receive_async(to, in, in[1].length > 0 ? 2 : 1, on_receive_complete, &got) == 0) ||
            !CHECK(record_wait(&got, 1) == 1) || !CHECK(got.result == ASYNC_SOCKET_RECEIVE_OK) ||
            !CHECK(got.bytes > 0 && got.bytes <= room))
        {
            record_destroy(&got);
            break;
        }
        filled += got.bytes;
        ++rounds;
        record_destroy(&got);
    }
    CHECK(filled == size);
    CHECK(memcmp(received, text, size) == 0);
    CHECK(record_wait(&sent, 1) == 1);
    CHECK(sent.result == ASYNC_SOCKET_SEND_OK);
    record_destroy(&sent);
}

/* Points `in` at the `size` bytes of `room` and readies `got` for the callback of one receive into it. */
static void ready_receive(ASYNC_SOCKET_BUFFER* in, char* room, uint32_t size, io_record* got)
{
    in->buffer = room;
    in->length = size;
    record_init(got);
}

/* A receive pending on `socket_handle` completes with BECAUSE_CLOSE, once, when the socket is closed. */
static void check_close_cuts_receive(ASYNC_SOCKET_HANDLE socket_handle)
{
    char room[16];
    ASYNC_SOCKET_BUFFER in;
    io_record got;
    ready_receive(&in, room, sizeof(room), &got);
    CHECK(async_socket_receive_async(socket_handle, &in, 1, on_receive_complete, &got) == 0);
    async_socket_close(socket_handle);
    CHECK(record_calls(&got) == 1); /* close returns after the callback ran */
    CHECK(got.result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);
    CHECK(async_socket_receive_async(socket_handle, &in, 1, on_receive_complete, &got) != 0); /* closed */
    CHECK(record_calls(&got) == 1);
    record_destroy(&got);
}

/* After the peer shuts its side down, a receive completes with OK and 0 bytes. */
static void check_end_of_stream(ASYNC_SOCKET_HANDLE socket_handle, raw_socket peer)
{
    char room[16];
    ASYNC_SOCKET_BUFFER in;
    io_record got;
    ready_receive(&in, room, sizeof(room), &got);
    CHECK(shutdown(peer, SHUT_WR) == 0);
    CHECK(async_socket_receive_async(socket_handle, &in, 1, on_receive_complete, &got) == 0);
    CHECK(record_wait(&got, 1) == 1);
    CHECK(got.result == ASYNC_SOCKET_RECEIVE_OK);
    CHECK(got.bytes == 0);
    record_destroy(&got);
}

int main(void)
{
    raw_pair pair;
    EXECUTION_ENGINE_HANDLE engine;
    ASYNC_SOCKET_HANDLE client;
    ASYNC_SOCKET_HANDLE server;
#ifdef _WIN32
    WSADATA wsa;
    if (!CHECK(WSAStartup(MAKEWORD(2, 2), &wsa) == 0))
    {
        return 1;
    }
#endif
    engine = execution_engine_create(NULL);
    if (!CHECK(engine != NULL) || !CHECK(make_pair(&pair)))
    {
        return 1;
    }
    check_bad_input(engine, handle_of(pair.client));

    client = async_socket_create(engine, handle_of(pair.client));
    server = async_socket_create(engine, handle_of(pair.server));
    if (CHECK(client != NULL) && CHECK(server != NULL))
    {
        check_open(client);
        check_open(server);
        check_transfer(client, server, "hello from a C program");
        check_transfer(server, client, "and an answer, back the other way");

        check_close_cuts_receive(server);
        check_open(server); /* reopen after close */
        check_transfer(client, server, "after the reopen");

        check_end_of_stream(server, pair.client);
    }
    async_socket_destroy(client);
    async_socket_destroy(server);
    execution_engine_dec_ref(engine);
    close_raw(pair.client);
    close_raw(pair.server);
#ifdef _WIN32
    WSACleanup();
#endif
    printf("test_c_api: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
