// echo_server_coro: echo_server written with coroutines: one coroutine (examples/task.hpp) co_awaits async_accept in
// a loop, and each connection is one coroutine that co_awaits async_receive and async_send in a loop. The command
// line, what an accept's result means and the reaper are echo_server's (examples/server.hpp).
//
//   echo_server_coro [PORT] [--connections N]
//       prints "io: ..." (what its IO runs on) and "listening on 127.0.0.1:PORT", echoes until killed
//
// The coroutine resumes on the thread that completes its IO (or goes on at once when the IO finished during
// the call), so it runs inside this socket's callbacks: it hands the connection to the reaper as its last act,
// and the reaper waits for it to reach its end before the frame goes.
#include "server.hpp"
#include "task.hpp"

namespace
{

class echo_connection final : public server::connection
{
public:
    echo_connection(const char* program, net::native_socket socket, std::uint64_t id, server::reaper& reaper)
        : connection(program, socket, id, reaper), echoing_(echo())
    {
    }
    // On the reaper's thread. Only a finished coroutine may be destroyed, and after retire() it has at most a few
    // instructions left (the base class closes the socket after this).
    ~echo_connection() override
    {
        if (started_ && !echoing_.wait_for(60))
        {
            std::fputs("echo_server_coro: a coroutine did not end after its connection was retired\n", stderr);
            std::abort();
        }
    }
    echo_connection(const echo_connection&) = delete;
    echo_connection& operator=(const echo_connection&) = delete;

    void start() noexcept
    {
        started_ = true;
        echoing_.start();
    }

private:
    example::task echo()
    {
        const ASYNC_SOCKET_BUFFER buffer = whole();
        for (;;)
        {
            const async_socket::receive_result in = co_await async_->async_receive({&buffer, 1});
            if (!in)
            {
                fail("receive", in.completion, in.error);
                co_return;
            }
            if (in.end_of_stream())
            {
                break; // the client shut down its side: the echo is complete
            }
            // Sends back exactly what arrived; the send completes once every byte has been taken.
            const ASYNC_SOCKET_BUFFER echoed = first(in.bytes);
            const async_socket::send_result out = co_await async_->async_send({&echoed, 1});
            if (!out)
            {
                fail("send", out.completion, out.error);
                co_return;
            }
            bytes_echoed_ += in.bytes;
        }
        retire();
    }

    bool started_ = false;
    example::task echoing_; // made suspended in the constructor, started by start()
};

// The accept loop, a coroutine; start() begins one (again after a pause: the one before has ended by then).
class accept_loop
{
public:
    using acceptor_type = server::acceptor<echo_connection>;
    explicit accept_loop(acceptor_type& acceptor) noexcept : acceptor_(acceptor) {}
    // Every loop has run to its end once the acceptor's run() has closed the listener.
    ~accept_loop()
    {
        for (const example::task& loop : loops_)
        {
            if (!loop.wait_for(60))
            {
                std::fputs("echo_server_coro: an accept loop did not end after the listener was closed\n", stderr);
                std::abort();
            }
        }
    }
    accept_loop(const accept_loop&) = delete;
    accept_loop& operator=(const accept_loop&) = delete;

    void start()
    {
        loops_.push_back(accept_all());
        loops_.back().start();
    }

private:
    example::task accept_all()
    {
        for (;;)
        {
            const async_socket::accept_result accepted = co_await acceptor_.socket().async_accept();
            if (acceptor_.take(accepted) != acceptor_type::next::accept)
            {
                co_return;
            }
        }
    }

    acceptor_type& acceptor_;
    std::vector<example::task> loops_; // one per start(); only the last can still run
};

} // namespace

int main(int argc, char** argv)
{
    return server::serve<echo_connection, accept_loop>("echo_server_coro", argc, argv);
}
