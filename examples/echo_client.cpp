// echo_client: a client of the echo servers on async_socket's C++ API with lambda handlers (examples/client.hpp
// has the command line, the connection, the messages and their check, shared with echo_client_coro).
//
//   echo_client PORT [--host 127.0.0.1] [--messages 2000] [--size 4096] [--buffers 2] [--timeout 60]
//
// The connect is asynchronous too (connect_async). Each round trip starts the receive of the echo and the send of the
// message together: the send of a large message completes only once its echo has started to flow back, so the receives
// must go on meanwhile. The handlers report to the round trip, which the main thread waits on.
#include "client.hpp"

namespace
{

using async_socket::receive_result;
using async_socket::send_result;
using async_socket::status;

// Receives the rest of the echo; its handler starts the next receive until the round trip says it is over.
void receive_rest(client::round_trip& trip)
{
    const status posted = trip.socket().receive_async(trip.rest(),
                                                      [&trip](receive_result in) noexcept
                                                      {
                                                          if (trip.received(in))
                                                          {
                                                              receive_rest(trip);
                                                          }
                                                      });
    if (posted != status::ok)
    {
        trip.refused("receive_async", posted);
    }
}

void echo(client::round_trip& trip)
{
    receive_rest(trip);
    if (!trip.message().empty())
    {
        const status posted =
            trip.socket().send_async(trip.message(), [&trip](send_result out) noexcept { trip.sent(out); });
        if (posted != status::ok)
        {
            trip.refused("send_async", posted);
        }
    }
    trip.wait();
}

// Connects with connect_async; the handler leaves the result for the main thread.
async_socket::connect_result connect_to_server(client::connection& c, const async_socket::socket_address& server)
{
    client::connect_wait wait;
    const status posted =
        c.async->connect_async(server, [&wait](async_socket::connect_result r) noexcept { wait.set(r); });
    if (posted != status::ok)
    {
        return {async_socket::io_completion::error, make_error_code(posted)};
    }
    return wait.result(c);
}

} // namespace

int main(int argc, char** argv)
{
    return client::run("echo_client", argc, argv, echo, connect_to_server);
}
