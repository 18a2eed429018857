"""Read-only mode with kazoo's read-only client (KazooClient(read_only=True)), on a 3-member
ZooKeeper 3.8 ensemble and a 3-member rookery ensemble, both with readonlymode.enabled (and, for
ZooKeeper, the -D property and the local sessions kazoo's read-only clients need). Ensemble mode
only (ROOKERY_TESTS_ENSEMBLE=1): each target gets its own ensemble with tickTime 500.

The member kept running is cut off from the quorum by pausing the other two (SIGSTOP): it goes
read-only; a read-only kazoo client connects (CONNECTED_RO), reads what was written before, and
gets NotReadOnlyCallError for writes; a normal kazoo client cannot connect; after SIGCONT the
quorum is back, the read-only connection is closed, and the same client ends up CONNECTED
(read-write) and can write. The sequence of kazoo states is printed for comparison.

    ROOKERY_TESTS_ENSEMBLE=1 .venv/bin/python -m pytest -q -s tests/python/test_readonly.py
"""

import os
import signal
import time

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NotReadOnlyCallError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KeeperState

from conftest import ENSEMBLE, four_letter, start_ensemble, targets

pytestmark = pytest.mark.skipif(not ENSEMBLE, reason="needs ROOKERY_TESTS_ENSEMBLE=1")

RO_CFG = [
    "readonlymode.enabled=true",
    "localSessionsEnabled=true",
    "localSessionsUpgradingEnabled=true",
]


@pytest.fixture(params=targets())
def ro_ensemble(request, tmp_path_factory):
    kind = request.param
    ens = start_ensemble(kind, tmp_path_factory.mktemp(f"{kind}-readonly"), extra_cfg=RO_CFG,
                         extra_jvm=["-Dreadonlymode.enabled=true"], tick_time=500)
    yield ens
    ens.stop()


def wait_until(what, pred, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out after {timeout}s: {what}"
        time.sleep(0.1)


def mode_of(port):
    srvr = four_letter(port, "srvr") or ""
    for line in srvr.splitlines():
        if line.startswith("Mode:"):
            return line.split(":", 1)[1].strip()
    return None


def test_kazoo_read_only_client(ro_ensemble):
    ens = ro_ensemble
    keep = ens.members[0]
    others = ens.members[1:]

    writer = KazooClient(hosts=ens.hosts, timeout=15)
    writer.start(30)
    writer.create("/ro", b"before")
    writer.stop()
    writer.close()
    pinned = KazooClient(hosts=ens.member_hosts(0), timeout=15)
    pinned.start(30)
    pinned.sync("/ro")
    assert pinned.get("/ro")[0] == b"before"
    pinned.stop()
    pinned.close()

    states = []
    ro = None
    for m in others:
        os.kill(m.proc.pid, signal.SIGSTOP)
    try:
        wait_until("the remaining member goes read-only", lambda: mode_of(keep.port) == "read-only")
        assert (four_letter(keep.port, "isro") or "").strip() == "ro"

        ro = KazooClient(hosts=ens.member_hosts(0), read_only=True, timeout=10)
        ro.add_listener(lambda s: states.append(str(s)))
        ro.start(30)
        assert ro.client_state == KeeperState.CONNECTED_RO
        assert ro.get("/ro")[0] == b"before"
        assert "ro" in ro.get_children("/")
        with pytest.raises(NotReadOnlyCallError):
            ro.create("/ro-x", b"x")
        with pytest.raises(NotReadOnlyCallError):
            ro.set("/ro", b"y")

        rw = KazooClient(hosts=ens.member_hosts(0), timeout=5)
        try:
            with pytest.raises(KazooTimeoutError):
                rw.start(5)
        finally:
            rw.stop()
            rw.close()
    finally:
        for m in others:
            os.kill(m.proc.pid, signal.SIGCONT)

    try:
        # The quorum is back: the read-only connection is closed and kazoo reconnects to a
        # read-write server (its pinger polls `isro`), losing its read-only session.
        wait_until("the read-only client is read-write again",
                   lambda: ro.client_state == KeeperState.CONNECTED, timeout=90)
        wait_until("a write through the formerly read-only client",
                   lambda: _try_create(ro, "/ro-after"), timeout=30)
        assert mode_of(keep.port) in ("leader", "follower")
        print(f"\n{ens.kind}: kazoo states {states}")
    finally:
        ro.stop()
        ro.close()


def _try_create(client, path):
    try:
        client.create(path, b"rw")
        return True
    except Exception:  # noqa: BLE001 - retried until the bound
        return False
