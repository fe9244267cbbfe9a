// echo_server: a TCP echo server on async_socket's C++ API with lambda handlers (examples/server.hpp has the
// command line, what an accept's result means and the reaper it shares with echo_server_coro; examples/net.hpp the
// platform).
//
//   echo_server [PORT] [--connections N]
//       prints "io: ..." (what its IO runs on) and "listening on 127.0.0.1:PORT", echoes until killed
//
// Accepting is a chain too: each accept_async's handler starts the next one. Each connection is one chain of IO on
// the engine's threads: receive_async -> send_async of what arrived -> receive_async -> ..., each IO started from the
// handler of the one before. A handler captures only `this`:
// the connection lives until the chain ends and hands it to the reaper.
#include "server.hpp"

namespace
{

using async_socket::receive_result;
using async_socket::send_result;
using async_socket::status;

class echo_connection final : public server::connection
{
public:
    using connection::connection;

    void start() noexcept
    {
        receive();
    }

private:
    void receive() noexcept
    {
        const ASYNC_SOCKET_BUFFER buffer = whole();
        const status posted =
            async_->receive_async({&buffer, 1},
                                  [this](receive_result in) noexcept
                                  {
                                      if (!in)
                                      {
                                          fail("receive", in.completion, in.error);
                                      }
                                      else if (in.end_of_stream())
                                      {
                                          retire(); // the client shut down its side: the echo is complete
                                      }
                                      else
                                      {
                                          send(in.bytes);
                                      }
                                  });
        if (posted != status::ok)
        {
            fail("receive_async", posted);
        }
    }

    // Sends back exactly what arrived; the send completes once every byte has been taken.
    void send(std::uint32_t bytes) noexcept
    {
        const ASYNC_SOCKET_BUFFER buffer = first(bytes);
        const status posted = async_->send_async({&buffer, 1},
                                                 [this, bytes](send_result out) noexcept
                                                 {
                                                     if (!out)
                                                     {
                                                         fail("send", out.completion, out.error);
                                                         return;
                                                     }
                                                     bytes_echoed_ += bytes;
                                                     receive();
                                                 });
        if (posted != status::ok)
        {
            fail("send_async", posted);
        }
    }
};

// One accept pending at a time; its handler starts the next.
class accept_chain
{
public:
    explicit accept_chain(server::acceptor<echo_connection>& acceptor) noexcept : acceptor_(acceptor) {}

    void start() noexcept
    {
        const status posted = acceptor_.socket().accept_async(
            [this](async_socket::accept_result accepted) noexcept
            {
                if (acceptor_.take(accepted) == server::acceptor<echo_connection>::next::accept)
                {
                    start();
                }
            });
        if (posted != status::ok && acceptor_.refused(posted) == server::acceptor<echo_connection>::next::accept)
        {
            start();
        }
    }

private:
    server::acceptor<echo_connection>& acceptor_;
};

} // namespace

int main(int argc, char** argv)
{
    return server::serve<echo_connection, accept_chain>("echo_server", argc, argv);
}
