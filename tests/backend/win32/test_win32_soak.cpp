// Soak of async_socket::win32_async_socket on real loopback TCP sockets, several connected pairs at once
// (under Wine when cross compiling). One test case per scenario:
// - bulk: per pair, a driver streams 64 MiB of a seeded xorshift pattern to an echo built on the library
//   (pipelined receive_async -> send_async), which checks it and sends it back; the driver checks what
//   comes back. Sends gather from several buffers, receives scatter over several.
// - messages: 100,000 small framed messages echoed over the pairs, a window of them in flight per pair,
//   each checked (sequence, length, content) when it comes back.
// - reset: the peer aborts the connection (SO_LINGER {1,0}, closesocket) while our sends and receives are
//   in flight; every accepted IO completes once, with OK or ERROR; then close and destroy work.
// - reopen: both ends stream to each other while one end is closed and reopened on the same SOCKET, again
//   and again. IO cut by close completes once with BECAUSE_CLOSE; the stream into the reopened end resumes
//   exactly where it stopped; the stream out of it resumes after a marker (a send cut by close may have
//   sent part of its bytes, so the old stream may end anywhere).
// Every IO is an entry with an id in a ledger: each accepted IO must complete exactly once, a refused one
// never, and none after its socket was destroyed. Each test case prints its figures.
//
// ASYNC_SOCKET_SOAK_SCALE (default 1) multiplies every amount: 0.1 for a quick run, 10 for a long soak
// (then raise ASYNC_SOCKET_TEST_WATCHDOG_SECONDS, 120 s per test case by default, and run the executable
// directly rather than through ctest and its timeout). See docs/reliability.md.
#include <async_socket/async_socket.hpp>

#include "support/soak_harness.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace
{

using namespace soak_test;

// Small framed messages: a 12-byte header (sequence number, payload length, check word) and 1 to 200 bytes
// of payload, all derived from the sequence number and the seed.
struct message_codec
{
    static constexpr std::size_t header_size = 12;
    static constexpr std::uint32_t max_payload = 200;

    std::uint64_t seed;

    [[nodiscard]] std::uint32_t payload_length(std::uint64_t seq) const noexcept
    {
        return 1 + static_cast<std::uint32_t>(mix(seed ^ (seq * 2 + 1)) % max_payload);
    }
    [[nodiscard]] std::uint32_t check_word(std::uint64_t seq) const noexcept
    {
        return static_cast<std::uint32_t>(mix(seed + seq) >> 32);
    }
    void payload(std::uint64_t seq, std::uint8_t* out, std::uint32_t length) const noexcept
    {
        pattern_stream(mix(seed ^ (seq * 2))).fill(out, length);
    }
};

// Sends messages 0 .. total-1, each as one send gathered from its header and its payload, with at most
// `window` messages sent and not yet come back.
class message_sender final : public send_ring
{
public:
    message_sender(side& owner, std::size_t window, message_codec codec, std::uint64_t total,
                   const std::atomic<std::uint64_t>& returned)
        : send_ring(owner, window, message_codec::header_size + message_codec::max_payload), window_(window),
          codec_(codec), total_(total), returned_(returned)
    {
    }

private:
    std::size_t produce(std::uint8_t* out, std::size_t, std::uint64_t seq, ASYNC_SOCKET_BUFFER* parts,
                        std::uint32_t& count) override
    {
        if (seq >= total_ || seq >= returned_.load() + window_)
        {
            return 0;
        }
        const std::uint32_t length = codec_.payload_length(seq);
        const std::array<std::uint32_t, 3> header = {static_cast<std::uint32_t>(seq), length, codec_.check_word(seq)};
        std::memcpy(out, header.data(), message_codec::header_size);
        codec_.payload(seq, out + message_codec::header_size, length);
        parts[0] = {out, static_cast<std::uint32_t>(message_codec::header_size)};
        parts[1] = {out + message_codec::header_size, length};
        count = 2;
        return message_codec::header_size + length;
    }

    std::size_t window_;
    message_codec codec_;
    std::uint64_t total_;
    const std::atomic<std::uint64_t>& returned_;
};

// Parses the echoed messages and checks each one: the next sequence number, its length, its check word and
// its payload. Tells the sender after each receive, so that it can fill its window again.
class message_receiver final : public receive_ring
{
public:
    message_receiver(side& owner, std::size_t window, std::size_t slot_size, message_codec codec, std::uint64_t salt)
        : receive_ring(owner, window, slot_size, salt), codec_(codec)
    {
    }

    void set_sender(send_ring* sender) noexcept
    {
        sender_ = sender;
    }
    [[nodiscard]] const std::atomic<std::uint64_t>& returned() const noexcept
    {
        return returned_;
    }
    [[nodiscard]] std::uint64_t bytes() const noexcept
    {
        return bytes_.load();
    }

private:
    bool consume(std::size_t, std::uint8_t* data, std::uint32_t bytes) override
    {
        if (broken_)
        {
            return true;
        }
        pending_.insert(pending_.end(), data, data + bytes);
        std::size_t offset = 0;
        while (pending_.size() - offset >= message_codec::header_size)
        {
            std::array<std::uint32_t, 3> header{};
            std::memcpy(header.data(), pending_.data() + offset, message_codec::header_size);
            const std::uint64_t seq = returned_.load();
            if (header[0] != static_cast<std::uint32_t>(seq) || header[1] != codec_.payload_length(seq) ||
                header[2] != codec_.check_word(seq))
            {
                fail_at(seq, "header");
                return true;
            }
            if (pending_.size() - offset < message_codec::header_size + header[1])
            {
                break;
            }
            std::array<std::uint8_t, message_codec::max_payload> expected{};
            codec_.payload(seq, expected.data(), header[1]);
            if (std::memcmp(expected.data(), pending_.data() + offset + message_codec::header_size, header[1]) != 0)
            {
                fail_at(seq, "payload");
                return true;
            }
            offset += message_codec::header_size + header[1];
            bytes_ += message_codec::header_size + header[1];
            ++returned_;
        }
        pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(offset));
        return true;
    }

    void after_progress() override
    {
        if (sender_ != nullptr)
        {
            sender_->kick();
        }
    }

    void fail_at(std::uint64_t seq, const char* part)
    {
        broken_ = true;
        halt();
        owner_.world.fail(owner_.name + ": the " + part + " of echoed message " + std::to_string(seq) +
                          " is not the one sent");
    }

    message_codec codec_;
    send_ring* sender_ = nullptr;
    std::vector<std::uint8_t> pending_;
    bool broken_ = false;
    std::atomic<std::uint64_t> returned_{0};
    std::atomic<std::uint64_t> bytes_{0};
};

// Bulk: the client drives (sends the stream, checks the echo), the server echoes (and checks).
struct bulk_pair
{
    bulk_pair(soak_world& world, std::size_t index, std::uint64_t bytes)
        : ends(world, index, "driver", "echo"),
          sender(ends.client, 4, 256 * kib, stream_seed(1, index, 0, 0), bytes, mix(index * 8 + 1)),
          verifier(ends.client, 4, 64 * kib, stream_seed(1, index, 0, 0), mix(index * 8 + 2)),
          echo(ends.server, 8, 64 * kib, true, stream_seed(1, index, 0, 0), mix(index * 8 + 3))
    {
    }

    connected_sides ends;
    stream_sender sender;
    stream_verifier verifier;
    echo_ring echo;
    sockets_destroyed_first last{{&ends.client, &ends.server}};
};

// Messages: the client sends messages and checks them as they come back, the server echoes.
struct message_pair
{
    message_pair(soak_world& world, std::size_t index, std::uint64_t messages, std::size_t window)
        : ends(world, index, "driver", "echo"), codec{stream_seed(2, index, 0, 0)},
          receiver(ends.client, 4, 16 * kib, codec, mix(index * 8 + 4)),
          sender(ends.client, window, codec, messages, receiver.returned()),
          echo(ends.server, 4, 16 * kib, false, 0, mix(index * 8 + 5)), total(messages)
    {
        receiver.set_sender(&sender);
    }

    connected_sides ends;
    message_codec codec;
    message_receiver receiver;
    message_sender sender;
    echo_ring echo;
    std::uint64_t total;
    sockets_destroyed_first last{{&ends.client, &ends.server}};
};

// Reopen: each end streams to the other; client to server is direction 0, server to client direction 1.
struct reopen_pair
{
    reopen_pair(soak_world& world, std::size_t index)
        : ends(world, index, "client", "server"),
          client_out(ends.client, 4, 64 * kib, stream_seed(4, index, 0, 0), UINT64_MAX, mix(index * 8 + 6)),
          server_out(ends.server, 4, 64 * kib, stream_seed(4, index, 1, 0), UINT64_MAX, mix(index * 8 + 7)),
          client_in(ends.client, 4, 32 * kib, stream_seed(4, index, 1, 0), mix(index * 8 + 8)),
          server_in(ends.server, 4, 32 * kib, stream_seed(4, index, 0, 0), mix(index * 8 + 9))
    {
    }

    void start()
    {
        client_in.start();
        server_in.start();
        client_out.start();
        server_out.start();
    }

    connected_sides ends;
    stream_sender client_out;
    stream_sender server_out;
    stream_verifier client_in;
    stream_verifier server_in;
    std::uint64_t reopens = 0;
    std::uint64_t cuts_with_bytes_out = 0;    // closes after which more of the old stream arrived than OK sends held
    std::uint64_t bytes_out_of_cut_sends = 0; // those extra bytes: sent by sends that completed with BECAUSE_CLOSE
    sockets_destroyed_first last{{&ends.client, &ends.server}};
};

// Closes one end while both streams flow, starts a new epoch of its outgoing stream, reopens it on the same
// SOCKET and waits until both streams have moved on by `resume_bytes`; `cycles` times, alternating ends.
void run_reopen_cycles(soak_world& world, reopen_pair& pair, std::size_t index, std::uint64_t cycles,
                       std::uint64_t resume_bytes)
{
    std::array<std::uint64_t, 2> epochs{};
    std::uint64_t client_mark = pair.client_in.verified();
    std::uint64_t server_mark = pair.server_in.verified();
    for (std::uint64_t cycle = 0; cycle < cycles && !world.failed(); ++cycle)
    {
        // Traffic flows both ways.
        if (!wait_until(world,
                        [&]
                        {
                            return pair.client_in.verified() >= client_mark + resume_bytes &&
                                   pair.server_in.verified() >= server_mark + resume_bytes;
                        }))
        {
            fail_unless_failed(world, pair_name(index, "") + ": traffic did not flow both ways before close " +
                                          std::to_string(cycle));
            return;
        }

        const bool client_turn = cycle % 2 == 0;
        const std::size_t direction = client_turn ? 0 : 1;
        side& closed = client_turn ? pair.ends.client : pair.ends.server;
        stream_sender& out = client_turn ? pair.client_out : pair.server_out;
        stream_verifier& in = client_turn ? pair.client_in : pair.server_in;
        stream_verifier& peer_in = client_turn ? pair.server_in : pair.client_in;

        close_side(closed);

        const std::uint64_t epoch = ++epochs[direction];
        const std::uint64_t seed = stream_seed(4, index, direction, epoch);
        const std::uint64_t sent_ok = out.new_epoch(seed);
        peer_in.expect_epoch(epoch, seed);

        const status opened = closed.socket->open_async(&on_open_complete, &closed);
        if (opened != status::ok)
        {
            world.fail(closed.name + ": reopen failed with " + async_socket::to_string(opened));
            return;
        }
        closed.closing = false;
        ++pair.reopens;
        const std::uint64_t in_mark = in.verified();
        in.start();
        out.start();

        // The stream into the reopened end continues where it stopped; the stream out of it starts its new
        // epoch after the marker.
        if (!wait_until(world,
                        [&]
                        {
                            return in.verified() >= in_mark + resume_bytes && peer_in.epoch() == epoch &&
                                   peer_in.verified_in_epoch() >= resume_bytes;
                        }))
        {
            fail_unless_failed(world, closed.name + ": traffic did not resume after reopen " + std::to_string(cycle));
            return;
        }
        // Every byte of a send that completed with OK arrived before the marker; a send cut by close may have
        // sent some of its bytes too.
        const std::uint64_t arrived = peer_in.previous_epoch_bytes();
        if (arrived < sent_ok)
        {
            world.fail(closed.name + ": " + std::to_string(sent_ok - arrived) + " bytes of sends that completed with " +
                       "OK before close " + std::to_string(cycle) + " never arrived");
        }
        else if (arrived > sent_ok)
        {
            ++pair.cuts_with_bytes_out;
            pair.bytes_out_of_cut_sends += arrived - sent_ok;
        }
        client_mark = pair.client_in.verified();
        server_mark = pair.server_in.verified();
    }
}

// Reads exactly `size` bytes from a blocking SOCKET and checks them against `expected`.
bool receive_blocking(SOCKET socket, std::size_t size, pattern_stream& expected, std::string& why)
{
    std::vector<std::uint8_t> buffer(64 * kib);
    std::size_t done = 0;
    while (done < size)
    {
        const int got = recv(socket, reinterpret_cast<char*>(buffer.data()),
                             static_cast<int>(std::min(buffer.size(), size - done)), 0);
        if (got <= 0)
        {
            why = "recv returned " + std::to_string(got) + ", error " + std::to_string(WSAGetLastError());
            return false;
        }
        if (expected.compare(buffer.data(), static_cast<std::size_t>(got)) != static_cast<std::size_t>(got))
        {
            why = "the bytes the peer received differ from the pattern";
            return false;
        }
        done += static_cast<std::size_t>(got);
    }
    return true;
}

// Writes `size` bytes of `source` to a blocking SOCKET.
bool send_blocking(SOCKET socket, std::size_t size, pattern_stream& source, std::string& why)
{
    std::vector<std::uint8_t> buffer(64 * kib);
    std::size_t done = 0;
    while (done < size)
    {
        const std::size_t part = std::min(buffer.size(), size - done);
        source.fill(buffer.data(), part);
        std::size_t written = 0;
        while (written < part)
        {
            const int put = send(socket, reinterpret_cast<const char*>(buffer.data() + written),
                                 static_cast<int>(part - written), 0);
            if (put <= 0)
            {
                why = "send returned " + std::to_string(put) + ", error " + std::to_string(WSAGetLastError());
                return false;
            }
            written += static_cast<std::size_t>(put);
        }
        done += part;
    }
    return true;
}

// Our end of a reset round: the library's socket streams to the peer and checks the peer's stream.
struct reset_end
{
    static constexpr std::uint64_t send_window = 4;
    static constexpr std::uint64_t receive_window = 4;

    // The IO issued after the reset; its completions are only counted (by the ledger and the side).
    struct late_io : io_user
    {
        std::array<std::uint8_t, 64> send_bytes{};
        std::array<std::uint8_t, 64> receive_bytes{};
    };

    reset_end(soak_world& world, std::string name, std::uint64_t up_seed, std::uint64_t down_seed, std::uint64_t salt)
        : ours(world, std::move(name)), sender(ours, send_window, 64 * kib, up_seed, UINT64_MAX, salt),
          verifier(ours, receive_window, 16 * kib, down_seed, mix(salt))
    {
    }

    side ours;
    stream_sender sender;
    stream_verifier verifier;
    late_io late;
    sockets_destroyed_first last{{&ours, nullptr}};
};

struct reset_figures
{
    std::uint64_t late_sends_accepted = 0;
    std::uint64_t late_receives_accepted = 0;
};

// `rounds` times: a new connection; our end (the library) streams both ways with the peer (a raw blocking
// SOCKET on this thread), which takes `peer_reads` bytes, sends `peer_writes` bytes, and once those have
// arrived and our sends and receives are in flight, aborts the connection.
void run_reset_rounds(soak_world& world, EXECUTION_ENGINE_HANDLE engine, std::size_t index, std::uint64_t rounds,
                      std::size_t peer_reads, std::size_t peer_writes, reset_figures& figures,
                      std::mutex& figures_mutex)
{
    for (std::uint64_t round = 0; round < rounds && !world.failed(); ++round)
    {
        win32_test::socket_pair sockets = win32_test::make_loopback_pair(); // outlives `end` below
        const std::string name = pair_name(index, "round ") + std::to_string(round);
        if (!sockets.valid())
        {
            world.fail(name + ": no loopback connection");
            return;
        }
        const std::uint64_t up_seed = stream_seed(3, index, 0, round);
        const std::uint64_t down_seed = stream_seed(3, index, 1, round);
        // Small buffers, so that our sends soon wait for the peer and are still pending when it resets. Not
        // below the loopback MSS (64 KiB): a smaller window stalls TCP on its persist timer.
        const int small_buffer = 128 * kib;
        setsockopt(sockets.client, SOL_SOCKET, SO_SNDBUF, reinterpret_cast<const char*>(&small_buffer),
                   sizeof(small_buffer));
        setsockopt(sockets.server, SOL_SOCKET, SO_RCVBUF, reinterpret_cast<const char*>(&small_buffer),
                   sizeof(small_buffer));
        reset_end end(world, name, up_seed, down_seed, mix(index * 1000 + round));
        if (!open_side(end.ours, engine, sockets.client))
        {
            return;
        }
        end.verifier.start();
        end.sender.start();

        pattern_stream up(up_seed);
        pattern_stream down(down_seed);
        std::string why;
        if (!receive_blocking(sockets.server, peer_reads, up, why) ||
            !send_blocking(sockets.server, peer_writes, down, why))
        {
            world.fail(name + ": the peer: " + why);
            return;
        }
        // Both windows full: all the peer's bytes arrived and every receive after them is posted, and every
        // send slot is busy. Then the chains stop, so that no IO is issued at the moment of the reset: under
        // Wine 8.0 a WSARecv issued concurrently with the arrival of the reset may stay pending until cancelled
        // (seen with raw threadpool IO as well; docs/reliability.md).
        if (!wait_until(world,
                        [&]
                        {
                            return end.verifier.verified() >= peer_writes &&
                                   end.ours.in_flight(io_kind::receive) == reset_end::receive_window &&
                                   end.ours.in_flight(io_kind::send) == reset_end::send_window;
                        }))
        {
            fail_unless_failed(world, name + ": the peer's bytes did not arrive, or the windows did not fill");
            return;
        }
        end.verifier.stop();
        end.sender.stop();

        const std::uint64_t ops_before_reset = ops_so_far(world);
        end.ours.reset_expected = true;
        const linger abort_on_close{1, 0};
        if (setsockopt(sockets.server, SOL_SOCKET, SO_LINGER, reinterpret_cast<const char*>(&abort_on_close),
                       sizeof(abort_on_close)) != 0)
        {
            world.fail(name + ": setsockopt(SO_LINGER) failed");
            return;
        }
        sockets.close_server();

        // Every IO in flight completes: the receives with ERROR, the sends with OK (if their bytes were taken
        // before the reset) or ERROR.
        const auto all_completed = [&]
        { return end.ours.in_flight(io_kind::send) == 0 && end.ours.in_flight(io_kind::receive) == 0; };
        if (!wait_until(world, all_completed))
        {
            fail_unless_failed(
                world,
                name + ": IO still outstanding after the peer's reset; its IO from the reset " + "on (result/bytes):" +
                    describe_ops(world, end.ours, ops_before_reset - std::min<std::uint64_t>(ops_before_reset, 8)));
            return;
        }
        if (end.verifier.verified() != peer_writes)
        {
            world.fail(name + ": received " + std::to_string(end.verifier.verified()) + " bytes, the peer sent " +
                       std::to_string(peer_writes));
        }

        // IO issued once the reset has been reported: refused (os_error), or accepted and completed once with
        // ERROR (or, under Wine, a receive with end of stream).
        end.ours.reset_reported = true;
        ASYNC_SOCKET_BUFFER late_send{end.late.send_bytes.data(),
                                      static_cast<std::uint32_t>(end.late.send_bytes.size())};
        ASYNC_SOCKET_BUFFER late_receive{end.late.receive_bytes.data(),
                                         static_cast<std::uint32_t>(end.late.receive_bytes.size())};
        const bool late_send_accepted = post_send(end.ours, end.late, 0, &late_send, 1) == status::ok;
        const bool late_receive_accepted = post_receive(end.ours, end.late, 0, &late_receive, 1) == status::ok;
        if (!wait_until(world, all_completed))
        {
            fail_unless_failed(world, name + ": IO issued after the reset did not complete:" +
                                          describe_ops(world, end.ours, ops_before_reset));
            return;
        }
        {
            std::lock_guard lock(figures_mutex);
            figures.late_sends_accepted += late_send_accepted ? 1 : 0;
            figures.late_receives_accepted += late_receive_accepted ? 1 : 0;
        }
        close_side(end.ours);
        destroy_side(end.ours);
    }
}

} // namespace

TEST_CASE("soak: streams of 64 MiB each way per pair through an echo built on the library arrive byte for byte")
{
    soak_run run;
    soak_world& world = run.world;
    const std::uint64_t bytes = scaled(64.0 * mib, 64 * kib);
    auto pairs = run.open_pairs<bulk_pair>([&](std::size_t i) { return std::make_unique<bulk_pair>(world, i, bytes); });

    const auto start = std::chrono::steady_clock::now();
    for (auto& pair : pairs)
    {
        pair->echo.start();
        pair->verifier.start();
        pair->sender.start();
    }
    const bool finished = wait_until(world,
                                     [&]
                                     {
                                         return std::all_of(pairs.begin(), pairs.end(),
                                                            [&](const auto& pair) {
                                                                return pair->verifier.verified() >= bytes &&
                                                                       pair->echo.echoed() >= bytes &&
                                                                       pair->sender.bytes_sent() >= bytes;
                                                            });
                                     });
    const double seconds = seconds_since(start);
    CHECK(finished);

    // The receives still posted (the driver's window, the echo's) are cut by close.
    const ledger_figures ledger = run.close_pairs(pairs,
                                                  [&](bulk_pair& pair)
                                                  {
                                                      CHECK(pair.sender.bytes_sent() == bytes);
                                                      CHECK(pair.echo.verified() == bytes);
                                                      CHECK(pair.echo.echoed() == bytes);
                                                      CHECK(pair.verifier.verified() == bytes);
                                                  });

    const std::uint64_t each_way = bytes * pair_count;
    MESSAGE("bulk (scale " << soak_scale() << "): " << pair_count << " pairs, " << mib_of(each_way)
                           << " MiB each way checked byte for byte (driver->echo and echo->driver) in " << seconds
                           << " s: " << mib_of(2 * each_way) / seconds << " MiB/s both ways together; "
                           << io_figures(world, ledger));
    run.check_end(ledger);
}

TEST_CASE("soak: 100,000 small messages echoed over several pairs come back complete and in order")
{
    soak_run run;
    soak_world& world = run.world;
    const std::uint64_t total = scaled(100000.0, pair_count);
    constexpr std::size_t window = 32; // messages in flight per pair
    auto pairs = run.open_pairs<message_pair>(
        [&](std::size_t i)
        {
            const std::uint64_t share = total / pair_count + (i < total % pair_count ? 1 : 0);
            return std::make_unique<message_pair>(world, i, share, window);
        });

    const auto start = std::chrono::steady_clock::now();
    for (auto& pair : pairs)
    {
        pair->echo.start();
        pair->receiver.start();
        pair->sender.start();
    }
    const auto returned = [&]
    {
        std::uint64_t sum = 0;
        for (const auto& pair : pairs)
        {
            sum += pair->receiver.returned().load();
        }
        return sum;
    };
    const bool finished = wait_until(world, [&] { return returned() >= total; });
    const double seconds = seconds_since(start);
    CHECK(finished);

    std::uint64_t bytes = 0;
    const ledger_figures ledger = run.close_pairs(pairs,
                                                  [&](message_pair& pair)
                                                  {
                                                      CHECK(pair.receiver.returned().load() == pair.total);
                                                      CHECK(pair.echo.echoed() == pair.receiver.bytes());
                                                      bytes += pair.receiver.bytes();
                                                  });

    MESSAGE("messages (scale " << soak_scale() << "): " << returned() << " messages of 13 to 212 bytes ("
                               << mib_of(bytes) << " MiB) echoed and checked over " << pair_count << " pairs, "
                               << window << " in flight per pair, in " << seconds
                               << " s: " << static_cast<double>(returned()) / seconds << " messages/s; "
                               << io_figures(world, ledger));
    CHECK(returned() == total);
    run.check_end(ledger);
}

TEST_CASE("soak: a peer's reset in mid-stream completes every accepted IO exactly once with OK or ERROR")
{
    soak_run run;
    soak_world& world = run.world;
    const std::uint64_t rounds = scaled(32.0, 1);

    const auto start = std::chrono::steady_clock::now();
    reset_figures figures;
    std::mutex figures_mutex;
    std::vector<std::thread> peers;
    for (std::size_t i = 0; i < pair_count; ++i)
    {
        peers.emplace_back(
            [&, i]
            { run_reset_rounds(world, run.engine.engine, i, rounds, 512 * kib, 256 * kib, figures, figures_mutex); });
    }
    for (auto& peer : peers)
    {
        peer.join();
    }
    const double seconds = seconds_since(start);
    const ledger_figures ledger = check_ledger(world);

    MESSAGE("reset (scale " << soak_scale() << "): " << pair_count * rounds << " connections reset by the peer ("
                            << pair_count << " at once) in " << seconds << " s; IO accepted " << ledger.accepted
                            << ", callbacks " << world.callbacks.load() << ": sends OK " << world.sends.ok.load()
                            << ", sends ERROR " << world.sends.errors.load() << ", receives OK "
                            << world.receives.ok.load() << ", receives ERROR " << world.receives.errors.load()
                            << ", end of stream " << world.end_of_stream.load() << ", BECAUSE_CLOSE "
                            << world.sends.because_close.load() + world.receives.because_close.load()
                            << "; IO issued after the reset: sends accepted " << figures.late_sends_accepted
                            << " (the others refused with os_error), receives accepted "
                            << figures.late_receives_accepted << "; calls refused after the reset (os_error) "
                            << world.refused_after_reset.load());
    CHECK(world.sends.because_close.load() + world.receives.because_close.load() == 0);
    // The receives in flight at the reset had no data to wait for: each completed with ERROR.
    CHECK(world.receives.errors.load() >= reset_end::receive_window * pair_count * rounds);
    run.check_end(ledger);
}

TEST_CASE("soak: close and reopen while traffic flows cut IO with BECAUSE_CLOSE once and traffic resumes intact")
{
    soak_run run;
    soak_world& world = run.world;
    const std::uint64_t cycles = scaled(16.0, 2);
    constexpr std::uint64_t resume_bytes = 512 * kib;
    auto pairs = run.open_pairs<reopen_pair>([&](std::size_t i) { return std::make_unique<reopen_pair>(world, i); });

    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> closers;
    for (std::size_t i = 0; i < pair_count; ++i)
    {
        pairs[i]->start();
        closers.emplace_back([&, i] { run_reopen_cycles(world, *pairs[i], i, cycles, resume_bytes); });
    }
    for (auto& closer : closers)
    {
        closer.join();
    }
    const double seconds = seconds_since(start);

    std::uint64_t reopens = 0;
    std::uint64_t bytes = 0;
    std::uint64_t cuts_with_bytes_out = 0;
    std::uint64_t bytes_out_of_cut_sends = 0;
    const ledger_figures ledger = run.close_pairs(
        pairs,
        [&](reopen_pair& pair)
        {
            reopens += pair.reopens;
            cuts_with_bytes_out += pair.cuts_with_bytes_out;
            bytes_out_of_cut_sends += pair.bytes_out_of_cut_sends;
            bytes += pair.client_in.verified() + pair.server_in.verified();
            CHECK(pair.ends.client.opens.load() + pair.ends.server.opens.load() == 2 + static_cast<int>(pair.reopens));
        });

    MESSAGE(
        "reopen (scale " << soak_scale() << "): " << reopens << " closes and reopens on the same SOCKETs while "
                         << pair_count << " pairs streamed both ways; " << mib_of(bytes)
                         << " MiB checked byte for byte across them in " << seconds << " s (" << mib_of(bytes) / seconds
                         << " MiB/s); IO accepted " << ledger.accepted << ", refused " << ledger.refused
                         << " (invalid_state while closing: " << world.refused_while_closing.load() << "), callbacks "
                         << world.callbacks.load() << ": sends BECAUSE_CLOSE " << world.sends.because_close.load()
                         << ", receives BECAUSE_CLOSE " << world.receives.because_close.load() << ", errors "
                         << world.sends.errors.load() + world.receives.errors.load() << "; closes after which a send "
                         << "cut by close had put bytes on the wire: " << cuts_with_bytes_out << " ("
                         << bytes_out_of_cut_sends << " bytes)");
    CHECK(reopens == cycles * pair_count);
    CHECK(world.sends.because_close.load() + world.receives.because_close.load() > 0); // close did cut IO
    run.check_end(ledger);
}
