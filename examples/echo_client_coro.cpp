// echo_client_coro: echo_client written with coroutines (examples/task.hpp): the connect is a co_await of
// async_connect, and each round trip is two coroutines that co_await async_receive and async_send. The command line,
// the connection, the messages and their check are echo_client's (examples/client.hpp).
//
//   echo_client_coro PORT [--host 127.0.0.1] [--messages 2000] [--size 4096] [--buffers 2] [--timeout 60]
//
// Two coroutines, not one that sends and then receives: the send of a large message completes only once its echo
// has started to flow back, so the receives must go on while the send is pending.
#include "client.hpp"
#include "task.hpp"

#include <cstdlib>

namespace
{

example::task receive_echo(client::round_trip& trip)
{
    for (;;)
    {
        const async_socket::receive_result in = co_await trip.socket().async_receive(trip.rest());
        if (!trip.received(in))
        {
            co_return;
        }
    }
}

example::task send_message(client::round_trip& trip)
{
    const async_socket::send_result out = co_await trip.socket().async_send(trip.message());
    trip.sent(out);
}

// After trip.wait() each coroutine has reported its end (or the socket was closed under it), so it is at most a
// few instructions from its final suspension; only then may its frame go.
void join(const example::task& coroutine)
{
    if (!coroutine.wait_for(60))
    {
        std::fputs("echo_client_coro: a coroutine did not end after its round trip\n", stderr);
        std::abort();
    }
}

void echo(client::round_trip& trip)
{
    example::task receiving = receive_echo(trip);
    example::task sending = send_message(trip);
    receiving.start();
    if (!trip.message().empty())
    {
        sending.start();
    }
    trip.wait();
    join(receiving);
    if (!trip.message().empty())
    {
        join(sending);
    }
}

// The connect: one co_await; the result goes to the main thread.
example::task connect_to(net::example_socket& socket, async_socket::socket_address server, client::connect_wait& wait)
{
    const async_socket::connect_result connected = co_await socket.async_connect(server);
    wait.set(connected);
}

async_socket::connect_result connect_to_server(client::connection& c, const async_socket::socket_address& server)
{
    client::connect_wait wait;
    example::task connecting = connect_to(*c.async, server, wait);
    connecting.start();
    const async_socket::connect_result connected = wait.result(c);
    join(connecting);
    return connected;
}

} // namespace

int main(int argc, char** argv)
{
    return client::run("echo_client_coro", argc, argv, echo, connect_to_server);
}
