#!/usr/bin/env python3
"""The greedy client of benches/greedy.sh: a ZooKeeper-protocol client that pipelines many
large getData requests and never reads its socket. Loopback only, bounded in time.

  greedy.py setup --port P --size BYTES            # creates /greedy-big (once)
  greedy.py run --port P --pid PID --requests N --hold S
      # pipelines N getData(/greedy-big), never reads, and for S seconds samples the server's
      # VmRSS and watches for the server closing the socket (POLLRDHUP, no read needed).
      # Prints one JSON line: sent, closed_after_s (null if still open), rss_base_kb, rss_peak_kb.
"""
import argparse
import json
import select
import socket
import struct
import time

PATH = "/greedy-big"


def frame(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


def zstr(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">i", len(b)) + b


def connect(port: int, timeout_ms: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    req = struct.pack(">iqiqi", 0, 0, timeout_ms, 0, 16) + b"\0" * 16 + b"\0"
    s.sendall(frame(req))
    read_frame(s)
    return s


def read_frame(s: socket.socket) -> bytes:
    def exact(n):
        out = b""
        while len(out) < n:
            chunk = s.recv(n - len(out))
            if not chunk:
                raise ConnectionError("server closed")
            out += chunk
        return out

    (n,) = struct.unpack(">i", exact(4))
    return exact(n)


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def setup(port: int, size: int) -> None:
    s = connect(port, 30000)
    acl = struct.pack(">i", 1) + struct.pack(">i", 31) + zstr("world") + zstr("anyone")
    body = struct.pack(">ii", 1, 1) + zstr(PATH) + struct.pack(">i", size) + b"g" * size + acl
    body += struct.pack(">i", 0)
    s.sendall(frame(body))
    reply = read_frame(s)
    _xid, _zxid, err = struct.unpack(">iqi", reply[:16])
    if err not in (0, -110):  # ok or NodeExists
        raise SystemExit(f"create {PATH} failed: {err}")
    s.close()


def run(port: int, pid: int, requests: int, hold: float) -> None:
    base = rss_kb(pid)
    s = connect(port, 30000)
    s.settimeout(2.0)
    sent = 0
    start = time.monotonic()
    payload = b"".join(
        frame(struct.pack(">ii", xid, 4) + zstr(PATH) + b"\0") for xid in range(1, requests + 1)
    )
    view = memoryview(payload)
    per = len(payload) // requests
    try:
        while view and time.monotonic() - start < hold:
            n = s.send(view[: 64 * 1024])
            view = view[n:]
    except (socket.timeout, OSError):
        pass  # the server stopped reading (or closed): that is the point
    sent = (len(payload) - len(view)) // per
    poller = select.poll()
    poller.register(s, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    peak = base
    closed = None
    while time.monotonic() - start < hold:
        peak = max(peak, rss_kb(pid))
        if closed is None and poller.poll(0):
            closed = round(time.monotonic() - start, 2)
        time.sleep(0.05)
    s.close()
    print(json.dumps({"sent": sent, "closed_after_s": closed, "rss_base_kb": base, "rss_peak_kb": peak}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["setup", "run"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, default=0)
    p.add_argument("--size", type=int, default=512 * 1024)
    p.add_argument("--requests", type=int, default=4000)
    p.add_argument("--hold", type=float, default=10.0)
    a = p.parse_args()
    if a.mode == "setup":
        setup(a.port, a.size)
    else:
        run(a.port, a.pid, a.requests, min(a.hold, 600.0))


if __name__ == "__main__":
    main()
