"""Hostile input: after a valid handshake, a bounded stream of requests with every opcode
(and unknown ones) carrying random or truncated bodies. Whatever the server answers, it must
keep serving: no crash, no effect on another session's data. Runs against rookery only; the
point is our server's robustness, not a comparison."""

import random
import socket
import struct
import time

import pytest
from kazoo.client import KazooClient

from conftest import check_alive

OPCODES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
           100, 101, 102, 103, 104, 105, 106, 107, -10, -11, -1, 10, 23, 999, -99]


def handshake(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    body = struct.pack(">iqiqi", 0, 0, 10000, 0, 16) + b"\0" * 16 + b"\0"
    s.sendall(struct.pack(">i", len(body)) + body)
    (n,) = struct.unpack(">i", recv_exact(s, 4))
    recv_exact(s, n)
    return s


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def random_body(rng):
    choice = rng.random()
    if choice < 0.3:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
    if choice < 0.6:
        # plausible prefix: a path-like string, then junk or a huge length
        path = b"/fuzz/" + bytes(rng.choice(b"abc/.\0") for _ in range(rng.randrange(0, 12)))
        tail = rng.choice([b"", b"\xff\xff\xff\xff", struct.pack(">i", 0x7FFFFFFF),
                           struct.pack(">i", -5), bytes(rng.randrange(256) for _ in range(8))])
        return struct.pack(">i", len(path)) + path + tail
    # a multi header chain with random op types
    out = b""
    for _ in range(rng.randrange(0, 5)):
        out += struct.pack(">i?i", rng.choice(OPCODES), rng.random() < 0.2, -1)
        out += bytes(rng.randrange(256) for _ in range(rng.randrange(0, 16)))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_hostile_requests_do_not_hurt_the_server(rookery, seed):
    rng = random.Random(seed)
    good = KazooClient(hosts=rookery.hosts, timeout=10)
    good.start(timeout=15)
    try:
        good.ensure_path("/fuzz")
        good.create("/fuzz/keep-%d" % seed, b"precious")
        deadline = time.monotonic() + 20
        sent = 0
        conn = handshake(rookery.port)
        while sent < 1500 and time.monotonic() < deadline:
            op = rng.choice(OPCODES)
            if op in (-11,):  # closeSession ends the session: reconnect afterwards
                pass
            packet = struct.pack(">ii", rng.randrange(1, 1 << 20), op) + random_body(rng)
            try:
                conn.sendall(struct.pack(">i", len(packet)) + packet)
                conn.settimeout(0.2)
                try:
                    conn.recv(65536)
                except socket.timeout:
                    pass
            except (ConnectionError, OSError):
                conn.close()
                conn = handshake(rookery.port)
            sent += 1
        conn.close()
        check_alive(rookery)
        assert sent >= 200, f"only {sent} hostile requests sent in time"
        # the server still serves, and the other session's data is intact
        assert good.get("/fuzz/keep-%d" % seed)[0] == b"precious"
        fresh = KazooClient(hosts=rookery.hosts, timeout=10)
        fresh.start(timeout=15)
        assert fresh.exists("/fuzz/keep-%d" % seed) is not None
        fresh.stop()
    finally:
        good.stop()
