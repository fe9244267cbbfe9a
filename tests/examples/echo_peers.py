#!/usr/bin/env python3
"""Drives the example programs as separate processes against peers that misbehave, over loopback.

    echo_peers.py server [--launcher CMD] [--expect-io REGEX] PROGRAM   echo_server against hostile clients
    echo_peers.py client [--launcher CMD] [--expect-io REGEX] PROGRAM   echo_client against hostile servers

--launcher runs the program (scripts/wine-run.sh for a Windows build under Wine). --expect-io: the program's
"io: ..." line, which says what its IO runs on (io_uring, epoll and why, Windows threadpool IO), must match
REGEX (default: there is such a line). The peers are written
here, on Python's sockets alone: they know nothing of the library.

server: starts echo_server (serving until killed) and, one scenario after the other, resets right after
connect, resets with data in flight, connects and closes, half-closes after megabytes, stops reading for
seconds while megabytes are sent (and meanwhile checks that another client is served), and opens many
connections at once. After every scenario the server must still run and echo a new client byte for byte;
at the end every connection it accepted must have been closed (no leak) and it must not have crashed.

client: runs echo_client against servers that reset, close early, echo a wrong byte, never answer, send
more than was echoed, or do not listen at all; each run must end by itself, within its --timeout and a
margin, with status 1 and a message that says what went wrong, never a crash or a hang; against a
correct server it must end with status 0.

Every wait has a deadline; a watchdog ends the whole run with a clear message.
"""
import argparse
import os
import re
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time

LOOPBACK = "127.0.0.1"
WATCHDOG_SECONDS = int(os.environ.get("ASYNC_SOCKET_TEST_WATCHDOG_SECONDS", "540"))
IO_DEADLINE = 120.0  # seconds one echo may take (Wine is slow, the machine may be loaded)


class Failure(Exception):
    pass


def watchdog(seconds, on_fire):
    def fire():
        print(f"echo_peers: WATCHDOG: no end after {seconds} s; stopping", flush=True)
        on_fire()
        os._exit(3)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer


def pattern(size, seed):
    """Bytes that differ with position and seed, so that a lost, duplicated or reordered byte shows."""
    block = bytes((i * 131 + seed * 29 + (i >> 8)) & 0xFF for i in range(65536))
    whole, rest = divmod(size, len(block))
    return block * whole + block[:rest]


def reset(sock):
    """Closes with an RST instead of a FIN (SO_LINGER with a zero timeout)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# --- the server under test ----------------------------------------------------------------------------


class ServerProcess:
    def __init__(self, command):
        self.command = command
        self.process = subprocess.Popen(command + ["0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        self.lines = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.port = None

    def _read(self):
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, predicate, seconds, what):
        deadline = time.monotonic() + seconds
        with self.changed:
            while True:
                value = predicate(self.lines)
                if value:
                    return value
                if self.process.poll() is not None and not self.reader.is_alive():
                    raise Failure(f"echo_server exited with status {self.process.returncode} while waiting for {what}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure(f"echo_server: no {what} within {seconds} s")
                self.changed.wait(min(left, 0.5))

    def start(self):
        def listening(lines):
            for line in lines:
                found = re.match(r"listening on 127\.0\.0\.1:(\d+)", line)
                if found:
                    return int(found.group(1))
            return None

        self.port = self.wait_for(listening, 120, "'listening on' line")
        return self.port

    def check_running(self):
        if self.process.poll() is not None:
            raise Failure(f"echo_server is no longer running (status {self.process.returncode})")

    def counts(self):
        with self.changed:
            opened = sum(1 for line in self.lines if re.match(r"\S+: connection \d+ from ", line))
            closed = sum(1 for line in self.lines if re.match(r"\S+: connection \d+ closed after", line))
        return opened, closed

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        self.reader.join(timeout=10)

    def output(self):
        with self.changed:
            return "\n".join(self.lines)


def connect(port, timeout=IO_DEADLINE):
    sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class EchoStream:
    """One connection that sends `data`, half-closes once all of it is sent and reads the echo to the end."""

    def __init__(self, port, data):
        self.sock = connect(port)
        self.sock.setblocking(False)
        self.data = memoryview(data)
        self.sent = 0
        self.received = bytearray()
        self.eof = False
        self.write_closed = False

    def wants_write(self):
        return not self.write_closed

    def on_writable(self):
        if self.sent < len(self.data):
            try:
                self.sent += self.sock.send(self.data[self.sent:self.sent + 262144])
            except BlockingIOError:
                return
        if self.sent == len(self.data) and not self.write_closed:
            self.sock.shutdown(socket.SHUT_WR)
            self.write_closed = True

    def on_readable(self):
        try:
            chunk = self.sock.recv(262144)
        except BlockingIOError:
            return
        if not chunk:
            self.eof = True
        else:
            self.received += chunk

    def done(self):
        return self.eof

    def check(self, name):
        if self.received != self.data:
            at = next((i for i in range(min(len(self.received), len(self.data)))
                       if self.received[i] != self.data[i]), min(len(self.received), len(self.data)))
            raise Failure(f"{name}: {len(self.received)} bytes echoed of {len(self.data)}; first difference at {at}")


def run_streams(streams, name, seconds=IO_DEADLINE):
    """Drives the streams together until each has seen the server's end of stream; checks every byte."""
    selector = selectors.DefaultSelector()
    for stream in streams:
        selector.register(stream.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, stream)
    deadline = time.monotonic() + seconds
    active = len(streams)
    try:
        while active:
            left = deadline - time.monotonic()
            if left <= 0:
                unfinished = sum(1 for s in streams if not s.done())
                raise Failure(f"{name}: {unfinished} of {len(streams)} connections not echoed to the end within {seconds} s")
            for key, events in selector.select(timeout=min(left, 1.0)):
                stream = key.data
                if events & selectors.EVENT_WRITE:
                    stream.on_writable()
                if events & selectors.EVENT_READ:
                    stream.on_readable()
                if stream.done():
                    selector.unregister(stream.sock)
                    active -= 1
                elif not stream.wants_write():
                    selector.modify(stream.sock, selectors.EVENT_READ, stream)
    finally:
        selector.close()
        for stream in streams:
            stream.sock.close()
    for stream in streams:
        stream.check(name)


def echo_check(server, name, size=65536, seed=1):
    """The server is alive and echoes a new client, every byte, then ends the stream after a half-close."""
    server.check_running()
    run_streams([EchoStream(server.port, pattern(size, seed))], f"{name}: echo check")
    server.check_running()


def scenario_reset_after_connect(server):
    for _ in range(50):
        reset(connect(server.port))


def scenario_reset_with_data_in_flight(server):
    for round_ in range(10):
        sock = connect(server.port)
        sock.setblocking(False)
        data = pattern(4 << 20, round_)
        sent = 0
        deadline = time.monotonic() + 5
        # Sends until the socket buffers are full (the server echoes into our unread receive buffer), then
        # resets with both directions loaded.
        while sent < len(data) and time.monotonic() < deadline:
            try:
                sent += sock.send(data[sent:sent + 65536])
            except BlockingIOError:
                break
        if round_ % 2 == 0:
            try:
                sock.recv(1000)
            except BlockingIOError:
                pass
        reset(sock)


def scenario_connect_and_close(server):
    for round_ in range(50):
        sock = connect(server.port)
        if round_ % 2:
            sock.shutdown(socket.SHUT_WR)
        sock.close()


def scenario_half_close(server):
    sizes = [1, 1000, 65535, 65536, 65537, 1 << 20, 3 * (1 << 20) + 7]
    run_streams([EchoStream(server.port, pattern(size, i)) for i, size in enumerate(sizes)], "half-close")


def scenario_slow_reader(server):
    size = 16 << 20
    data = pattern(size, 7)
    sock = connect(server.port)
    send_error = []

    def send_all():
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError as error:
            send_error.append(error)

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    # The reader stops reading for 4 s while the sender pushes megabytes: the server's sends back must wait,
    # and meanwhile the server must go on serving everyone else.
    pause_ends = time.monotonic() + 4
    echo_check(server, "slow reader: another client while the reader pauses", size=256 << 10, seed=8)
    while time.monotonic() < pause_ends:
        time.sleep(pause_ends - time.monotonic())
    received = bytearray()
    deadline = time.monotonic() + IO_DEADLINE
    while True:
        if time.monotonic() > deadline:
            raise Failure(f"slow reader: {len(received)} of {size} bytes echoed within {IO_DEADLINE} s")
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        received += chunk
    sender.join(timeout=IO_DEADLINE)
    sock.close()
    if send_error:
        raise Failure(f"slow reader: sending failed: {send_error[0]}")
    if received != data:
        raise Failure(f"slow reader: {len(received)} bytes echoed of {size}, or they differ")


def scenario_many_connections(server):
    count = 128
    run_streams([EchoStream(server.port, pattern(16384 + i * 97, i)) for i in range(count)], f"{count} connections")


SERVER_SCENARIOS = [
    ("reset right after connect (50 clients)", scenario_reset_after_connect),
    ("reset with data in flight (10 clients)", scenario_reset_with_data_in_flight),
    ("connect and close (50 clients)", scenario_connect_and_close),
    ("half-close after up to 3 MiB (7 clients at once)", scenario_half_close),
    ("a reader that stops reading for 4 s while 16 MiB are sent", scenario_slow_reader),
    ("128 connections at once", scenario_many_connections),
    ("reset right after connect, once more after the others", scenario_reset_after_connect),
]


def io_line(lines):
    """The program's "io: ..." line, or None."""
    for line in lines:
        if line.startswith("io: "):
            return line
    return None


def test_server(command, expect_io):
    """Returns (passed, failed) checks."""
    server = ServerProcess(command)
    watchdog(WATCHDOG_SECONDS, server.stop)
    failures = 0
    passed = 0
    try:
        port = server.start()
        print(f"echo_peers: echo_server listens on 127.0.0.1:{port}", flush=True)
        with server.changed:
            said = io_line(server.lines)
        if said is None or not re.search(expect_io, said):
            failures += 1
            print(f"echo_peers: FAILED: the server's io line is {said!r}, expected /{expect_io}/", flush=True)
        else:
            passed += 1
            print(f"echo_peers: ok: the server says {said!r}", flush=True)
        echo_check(server, "before the scenarios")
        for name, scenario in SERVER_SCENARIOS:
            started = time.monotonic()
            try:
                scenario(server)
                echo_check(server, name, size=1 << 20, seed=3)
                passed += 1
                print(f"echo_peers: ok: {name}: the server still echoes ({time.monotonic() - started:.1f} s)",
                      flush=True)
            except (Failure, OSError) as error:
                failures += 1
                print(f"echo_peers: FAILED: {name}: {error}", flush=True)
                server.check_running()  # no point going on with a dead server
        # No leak: every connection the server accepted is closed once its client has gone.
        server.wait_for(lambda lines: len(set(server.counts())) == 1, 120, "close of every accepted connection")
        opened, _ = server.counts()
        server.check_running()
        passed += 1
        print(f"echo_peers: ok: all {opened} accepted connections were closed; the server still runs", flush=True)
    except (Failure, OSError) as error:
        failures += 1
        opened, closed = server.counts()
        print(f"echo_peers: FAILED: {error} (connections accepted {opened}, closed {closed})", flush=True)
    finally:
        server.stop()
    output = server.output()
    if re.search(r"[Uu]nhandled exception|Assertion|Segmentation", output):
        failures += 1
        print("echo_peers: FAILED: the server's output shows a crash", flush=True)
    if failures:
        print("echo_peers: echo_server said:\n" + "\n".join("    " + line for line in output.splitlines()[-60:]))
    return passed, failures


# --- the client under test ----------------------------------------------------------------------------


class HostileServer:
    """A listener on loopback whose one connection is handled by `behaviour(sock)` on a thread."""

    def __init__(self, behaviour):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind((LOOPBACK, 0))
        self.listener.listen(8)
        self.listener.settimeout(IO_DEADLINE)
        self.port = self.listener.getsockname()[1]
        self.behaviour = behaviour
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        sock.settimeout(IO_DEADLINE)
        try:
            self.behaviour(sock)
        except OSError:
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def close(self):
        self.listener.close()
        self.thread.join(timeout=IO_DEADLINE)


def read_exactly(sock, count):
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


MESSAGES, SIZE = 20, 4096


def echo_messages(sock, count, corrupt_at=None):
    for message in range(count):
        data = bytearray(read_exactly(sock, SIZE))
        if len(data) < SIZE:
            return False
        if corrupt_at is not None and message == corrupt_at:
            data[100] ^= 0x5A
        sock.sendall(data)
    return True


def behave_correctly(sock):
    if echo_messages(sock, MESSAGES):
        read_exactly(sock, 1)  # the client's end of stream
        sock.shutdown(socket.SHUT_WR)


def behave_reset_at_once(sock):
    reset(sock)


def behave_close_after_some(sock):
    echo_messages(sock, 3)
    read_exactly(sock, SIZE // 2)
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1 << 20)  # until the client goes


def behave_reset_mid_message(sock):
    echo_messages(sock, 5)
    sock.sendall(read_exactly(sock, SIZE)[:1000])
    reset(sock)


def behave_wrong_byte(sock):
    echo_messages(sock, MESSAGES, corrupt_at=4)
    sock.recv(1 << 20)


def behave_never_answer(sock):
    read_exactly(sock, SIZE)
    sock.recv(1 << 20)  # holds the connection open, silent, until the client gives up and closes


def behave_extra_bytes(sock):
    if echo_messages(sock, MESSAGES):
        read_exactly(sock, 1)
        sock.sendall(b"not asked for")
        sock.shutdown(socket.SHUT_WR)


CLIENT_TIMEOUT = 5
CLIENT_SCENARIOS = [
    # name, behaviour (None: nobody listens), expected status, expected words in its output
    ("a correct server", behave_correctly, 0, r"every byte matched"),
    # The reset may reach the client while its connect is still being answered (Wine reports 10054 then).
    ("reset right after accept", behave_reset_at_once, 1, r"FAILED|failed|ERROR|cannot connect"),
    ("close in the middle of a message", behave_close_after_some, 1, r"closed the connection"),
    ("reset with part of an echo sent", behave_reset_mid_message, 1, r"FAILED"),
    ("an echo with a wrong byte", behave_wrong_byte, 1, r"echoed byte 100 is"),
    ("a server that never answers", behave_never_answer, 1, r"no whole echo within"),
    ("bytes that were not asked for after the end", behave_extra_bytes, 1, r"more bytes"),
    ("nobody listening", None, 1, r"cannot connect"),
]


def test_client(command, expect_io):
    """Returns (passed, failed) runs."""
    failures = 0
    passed = 0
    for name, behaviour, expected, words in CLIENT_SCENARIOS:
        if behaviour is None:
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.bind((LOOPBACK, 0))
            port = probe.getsockname()[1]
            probe.close()  # a port that was free a moment ago: nobody listens there
            server = None
        else:
            server = HostileServer(behaviour)
            port = server.port
        args = command + [str(port), "--messages", str(MESSAGES), "--size", str(SIZE), "--buffers", "3",
                          "--timeout", str(CLIENT_TIMEOUT)]
        started = time.monotonic()
        limit = CLIENT_TIMEOUT * 3 + 90  # its own timeout, plus Wine's start and a loaded machine
        try:
            run = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 timeout=limit)
            output = run.stdout.decode("utf-8", "replace").replace("\r", "")
            status = run.returncode
        except subprocess.TimeoutExpired as expired:
            output = (expired.stdout or b"").decode("utf-8", "replace")
            status = None
        finally:
            if server is not None:
                server.close()
        took = time.monotonic() - started
        problems = []
        if status is None:
            problems.append(f"did not end within {limit} s")
        elif status != expected:
            problems.append(f"status {status}, expected {expected}")
        if not re.search(words, output):
            problems.append(f"its output does not say /{words}/")
        if re.search(r"[Uu]nhandled exception|Assertion|Segmentation", output):
            problems.append("its output shows a crash")
        said = io_line(output.splitlines())
        if said is None or not re.search(expect_io, said):
            problems.append(f"its io line is {said!r}, expected /{expect_io}/")
        if problems:
            failures += 1
            print(f"echo_peers: FAILED: echo_client against {name}: {'; '.join(problems)}; it said:", flush=True)
            print("\n".join("    " + line for line in output.splitlines()[-20:]), flush=True)
        else:
            passed += 1
            last = output.strip().splitlines()[-1] if output.strip() else ""
            print(f"echo_peers: ok: echo_client against {name}: status {status} in {took:.1f} s ({last.strip()})",
                  flush=True)
    return passed, failures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=["server", "client"], help="which example is under test")
    parser.add_argument("program", help="an echo server (echo_server, echo_server_coro) or client (echo_client, echo_client_coro)")
    parser.add_argument("--launcher", default="", help="runs the program, e.g. scripts/wine-run.sh")
    parser.add_argument("--expect-io", default=r"^io: \S", help="what the program's \"io: ...\" line must match")
    args = parser.parse_args()
    # A missing program would otherwise show only as a wait for its first line that ends at the watchdog.
    for path in ([args.launcher] if args.launcher else []) + [args.program]:
        if not os.path.isfile(path):
            print(f"echo_peers: FAILED: no such program: {path}", flush=True)
            return 2
    command = ([args.launcher] if args.launcher else []) + [args.program]
    if args.role == "server":
        passed, failures = test_server(command, args.expect_io)
    else:
        watchdog(WATCHDOG_SECONDS, lambda: None)
        passed, failures = test_client(command, args.expect_io)
    print(f"echo_peers: {passed} passed, {failures} failed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
