// bench_loopback: the protocols (ping-pong client and echo peer, stream sender and receiver), written once over
// the transport interface of loopback_common.hpp, so that only the IO mechanism differs between configurations.
#pragma once

#include "loopback_common.hpp"

#include <atomic>
#include <cstdint>
#include <cstring>

namespace bench_loopback
{

// ---------------------------------------------------------------------------------------------------------
// Protocols, written once.

// The measured side of the ping-pong: send 64 bytes, receive the echo, repeat.
template <class Transport>
class pingpong_client
{
public:
    pingpong_client(Transport& transport, batch_signal& signal) noexcept : transport_(transport), signal_(signal) {}

    void start_batch(std::uint32_t round_trips) noexcept
    {
        remaining_ = round_trips;
        begin();
    }

private:
    void begin() noexcept
    {
        ++sequence_;
        std::memset(message_, static_cast<unsigned char>(sequence_), sizeof(message_));
        received_ = 0;
        parts_.store(2, std::memory_order_release);
        if (!transport_.send(message_, message_size, &on_sent_))
        {
            signal_.fail("ping-pong: the send could not start");
            return;
        }
        if (!transport_.receive(reply_, message_size, &on_received_))
        {
            signal_.fail("ping-pong: the receive could not start");
        }
    }

    static void sent(void* owner, bool ok, std::uint32_t) noexcept
    {
        auto* self = static_cast<pingpong_client*>(owner);
        if (!ok)
        {
            self->signal_.fail("ping-pong: a send failed");
            return;
        }
        self->part_done();
    }

    static void received(void* owner, bool ok, std::uint32_t bytes) noexcept
    {
        auto* self = static_cast<pingpong_client*>(owner);
        if (!ok || bytes == 0)
        {
            self->signal_.fail("ping-pong: a receive failed or the peer shut down");
            return;
        }
        self->received_ += bytes;
        if (self->received_ < message_size)
        {
            if (!self->transport_.receive(self->reply_ + self->received_, message_size - self->received_,
                                          &self->on_received_))
            {
                self->signal_.fail("ping-pong: the receive could not start");
            }
            return;
        }
        if (self->received_ != message_size || std::memcmp(self->reply_, self->message_, message_size) != 0)
        {
            self->signal_.fail("ping-pong: the echo differs from the message");
            return;
        }
        self->part_done();
    }

    // The send and the receive of a round trip both call this; the second one goes on.
    void part_done() noexcept
    {
        if (parts_.fetch_sub(1, std::memory_order_acq_rel) != 1)
        {
            return;
        }
        if (--remaining_ == 0)
        {
            signal_.arrive();
            return;
        }
        begin();
    }

    Transport& transport_;
    batch_signal& signal_;
    const completion on_sent_{&sent, this};
    const completion on_received_{&received, this};
    std::atomic<int> parts_{0};
    std::uint32_t remaining_ = 0;
    std::uint32_t received_ = 0;
    std::uint32_t sequence_ = 0;
    unsigned char message_[message_size]{};
    unsigned char reply_[message_size]{};
};

// The peer of the ping-pong: receive, send back what arrived, receive again.
template <class Transport>
class echo_server
{
public:
    echo_server(Transport& transport, batch_signal& signal) noexcept : transport_(transport), signal_(signal) {}

    void start() noexcept
    {
        receive_next();
    }

private:
    void receive_next() noexcept
    {
        if (!transport_.receive(buffer_, sizeof(buffer_), &on_received_))
        {
            signal_.fail("echo: the receive could not start");
        }
    }

    static void received(void* owner, bool ok, std::uint32_t bytes) noexcept
    {
        auto* self = static_cast<echo_server*>(owner);
        if (!ok || bytes == 0)
        {
            self->signal_.fail("echo: a receive failed or the peer shut down");
            return;
        }
        if (!self->transport_.send(self->buffer_, bytes, &self->on_sent_))
        {
            self->signal_.fail("echo: the send could not start");
        }
    }

    static void sent(void* owner, bool ok, std::uint32_t) noexcept
    {
        auto* self = static_cast<echo_server*>(owner);
        if (!ok)
        {
            self->signal_.fail("echo: a send failed");
            return;
        }
        self->receive_next();
    }

    Transport& transport_;
    batch_signal& signal_;
    const completion on_received_{&received, this};
    const completion on_sent_{&sent, this};
    unsigned char buffer_[4096]{};
};

// The sending side of the stream: `stream_depth` sends of one block in flight until the batch is sent.
template <class Transport>
class stream_sender
{
public:
    stream_sender(Transport& transport, batch_signal& signal) : transport_(transport), signal_(signal), block_(nullptr)
    {
        block_ = static_cast<unsigned char*>(std::malloc(block_size));
        if (block_ != nullptr)
        {
            std::memset(block_, 0x5a, block_size);
        }
    }
    ~stream_sender()
    {
        std::free(block_);
    }
    stream_sender(const stream_sender&) = delete;
    stream_sender& operator=(const stream_sender&) = delete;

    [[nodiscard]] bool valid() const noexcept
    {
        return block_ != nullptr;
    }

    void start_batch(std::uint32_t blocks) noexcept
    {
        to_issue_.store(static_cast<std::int64_t>(blocks), std::memory_order_release);
        to_complete_.store(blocks, std::memory_order_release);
        for (std::uint32_t i = 0; i < stream_depth && i < blocks; ++i)
        {
            issue();
        }
    }

private:
    void issue() noexcept
    {
        if (to_issue_.fetch_sub(1, std::memory_order_acq_rel) <= 0)
        {
            return;
        }
        if (!transport_.send(block_, block_size, &on_sent_))
        {
            signal_.fail("stream: the send could not start");
        }
    }

    static void sent(void* owner, bool ok, std::uint32_t) noexcept
    {
        auto* self = static_cast<stream_sender*>(owner);
        if (!ok)
        {
            self->signal_.fail("stream: a send failed");
            return;
        }
        self->issue();
        if (self->to_complete_.fetch_sub(1, std::memory_order_acq_rel) == 1)
        {
            self->signal_.arrive();
        }
    }

    Transport& transport_;
    batch_signal& signal_;
    const completion on_sent_{&sent, this};
    std::atomic<std::int64_t> to_issue_{0};
    std::atomic<std::uint32_t> to_complete_{0};
    unsigned char* block_;
};

// The receiving side of the stream: one receive of a block at a time, for as long as the connection lasts.
template <class Transport>
class stream_receiver
{
public:
    stream_receiver(Transport& transport, batch_signal& signal)
        : transport_(transport), signal_(signal), block_(nullptr)
    {
        block_ = static_cast<unsigned char*>(std::malloc(block_size));
    }
    ~stream_receiver()
    {
        std::free(block_);
    }
    stream_receiver(const stream_receiver&) = delete;
    stream_receiver& operator=(const stream_receiver&) = delete;

    [[nodiscard]] bool valid() const noexcept
    {
        return block_ != nullptr;
    }

    // Before the batch's first send: how many bytes end it.
    void expect(std::uint64_t bytes) noexcept
    {
        expected_.store(bytes, std::memory_order_release);
    }

    void start() noexcept
    {
        receive_next();
    }

private:
    void receive_next() noexcept
    {
        if (!transport_.receive(block_, block_size, &on_received_))
        {
            signal_.fail("stream: the receive could not start");
        }
    }

    static void received(void* owner, bool ok, std::uint32_t bytes) noexcept
    {
        auto* self = static_cast<stream_receiver*>(owner);
        if (!ok || bytes == 0)
        {
            self->signal_.fail("stream: a receive failed or the peer shut down");
            return;
        }
        self->received_ += bytes;
        const std::uint64_t expected = self->expected_.load(std::memory_order_acquire);
        if (self->received_ > expected)
        {
            self->signal_.fail("stream: more bytes than were sent");
            return;
        }
        const bool batch_done = self->received_ == expected;
        if (batch_done)
        {
            self->received_ = 0;
        }
        // The next receive is started before the batch is reported, so that no IO is started after the
        // benchmark thread may have begun to shut the connection down.
        self->receive_next();
        if (batch_done)
        {
            self->signal_.arrive();
        }
    }

    Transport& transport_;
    batch_signal& signal_;
    const completion on_received_{&received, this};
    std::atomic<std::uint64_t> expected_{0};
    std::uint64_t received_ = 0;
    unsigned char* block_;
};

} // namespace bench_loopback
