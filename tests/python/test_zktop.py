"""zktop (Debian package `zktop`, which polls `stat`) run under tmux against each target: the
captured screen must show the server's mode and the node count, connection count and zxid
that the server itself reports in `srvr`. Skipped when zktop or tmux is missing.

    .venv/bin/python -m pytest -q tests/python/test_zktop.py
"""

import os
import re
import shutil
import subprocess
import time

import pytest
from kazoo.client import KazooClient

from conftest import four_letter

ZKTOP = shutil.which("zktop")
TMUX = shutil.which("tmux")

pytestmark = pytest.mark.skipif(
    ZKTOP is None or TMUX is None, reason="needs zktop and tmux (Debian packages)"
)

SUMMARY = re.compile(r"Ensemble -- nodecount:(\d+) zxid:0x([0-9a-f]+) sessions:(\d+)")


def srvr_fields(port):
    text = four_letter(port, "srvr") or ""
    fields = dict(
        (k.strip(), v.strip()) for k, v in (line.split(":", 1) for line in text.splitlines() if ":" in line)
    )
    return fields


def capture(session):
    return subprocess.run(
        [TMUX, "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=True
    ).stdout


def test_zktop_shows_mode_and_counts(server):
    zk = KazooClient(hosts=server.hosts)
    zk.start()
    base = f"/zktop-{os.getpid()}-{server.kind}"
    session = f"zktop-{os.getpid()}-{server.kind}"
    hosts = ",".join(m.hosts for m in server.members)
    try:
        zk.ensure_path(base)
        for i in range(5):
            zk.create(f"{base}/n{i}", b"x")
        subprocess.run(
            [TMUX, "new-session", "-d", "-s", session, "-x", "160", "-y", "40", f"{ZKTOP} --servers {hosts}"],
            check=True,
        )
        # zktop polls every few seconds; wait for a screen that matches what srvr says now.
        deadline = time.monotonic() + 30
        screen, problem = "", "no screen yet"
        while time.monotonic() < deadline:
            time.sleep(0.5)
            screen = capture(session)
            m = SUMMARY.search(screen)
            if not m:
                problem = "no summary line"
                continue
            nodes = max(int(srvr_fields(mb.port).get("Node count", "0")) for mb in server.members)
            if int(m.group(1)) != nodes:
                problem = f"nodecount {m.group(1)} != srvr's {nodes}"
                continue
            rows_ok, conns = True, 0
            for i, member in enumerate(server.members):
                fields = srvr_fields(member.port)
                mode = fields.get("Mode", "?")[:1].upper()
                row = re.search(
                    rf"^{i}\s+127\.0\.0\.1\s+{member.port}\s+(\S)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", screen, re.M
                )
                if not row or row.group(1) != mode:
                    rows_ok = False
                    problem = f"row of member {i} ({member.port}): {row and row.groups()} vs Mode {mode}"
                    break
                conns += int(row.group(5))
            # The kazoo client's connection is on one member (ZooKeeper also lists the stat
            # connection zktop itself holds; rookery does not).
            if rows_ok and conns < 1:
                rows_ok, problem = False, "no connection in any CONNS column"
            if rows_ok:
                assert int(m.group(3)) >= 1, screen
                print(f"\n{server.kind}: zktop screen\n{screen.rstrip()}")
                return
        pytest.fail(f"{server.kind}: zktop never showed the server's values ({problem}):\n{screen}")
    finally:
        subprocess.run([TMUX, "kill-session", "-t", session], capture_output=True)
        try:
            zk.delete(base, recursive=True)
        finally:
            zk.stop()
            zk.close()
