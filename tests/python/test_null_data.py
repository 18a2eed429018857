"""Null znode data (a buffer of length -1) versus empty data, against ZooKeeper and rookery.

ZooKeeper's DataTree keeps `byte[] data == null` as null and getData sends it back as a
length -1 buffer (dataLength 0 in the Stat); empty data (length 0) stays empty. Checked with
kazoo (whose read_buffer gives None for -1) and with the C client (zoo_get's buffer_len).
"""

import shutil
import subprocess
from pathlib import Path

import pytest

C_SOURCE = Path(__file__).resolve().parent / "c" / "null_data.c"


def test_kazoo_null_and_empty(client, base):
    client.ensure_path(base)
    client.create(f"{base}/null", None)
    client.create(f"{base}/empty", b"")
    data, st = client.get(f"{base}/null")
    assert (data, st.dataLength) == (None, 0)
    data, st = client.get(f"{base}/empty")
    assert (data, st.dataLength) == (b"", 0)

    client.set(f"{base}/empty", None)
    assert client.get(f"{base}/empty")[0] is None
    client.set(f"{base}/null", b"")
    assert client.get(f"{base}/null")[0] == b""
    client.set(f"{base}/null", b"abc")
    assert client.get(f"{base}/null")[0] == b"abc"


def test_kazoo_null_through_multi(client, base):
    # kazoo's transaction API refuses None, but its records write it as -1: add them raw.
    from kazoo.protocol.serialization import Create, SetData
    from kazoo.security import OPEN_ACL_UNSAFE

    client.ensure_path(base)
    tx = client.transaction()
    tx._add(Create(f"{base}/m", None, OPEN_ACL_UNSAFE, 0))
    tx.create(f"{base}/k", b"x")
    tx._add(SetData(f"{base}/k", None, -1))
    results = tx.commit()
    assert results[:2] == [f"{base}/m", f"{base}/k"], results
    assert results[2] == client.exists(f"{base}/k"), results
    assert client.get(f"{base}/m")[0] is None
    assert client.get(f"{base}/k")[0] is None
    # A failed multi that would have replaced null data leaves it null.
    tx = client.transaction()
    tx.set_data(f"{base}/m", b"changed")
    tx.check(f"{base}/m", 99)
    tx.commit()
    assert client.get(f"{base}/m")[0] is None


def test_rookery_null_data_survives_restarts(tmp_path_factory):
    """rookery only (ZooKeeper has its own snapshot format): null data goes through the Raft
    log (first restart: replay) and the tree snapshot (--snap-count 2: a snapshot is taken)."""
    from conftest import start_rookery, targets
    from kazoo.client import KazooClient

    if "rookery" not in targets():
        pytest.skip("ROOKERY_TESTS_TARGETS excludes rookery")

    workdir = tmp_path_factory.mktemp("rookery-null-restart")
    srv = start_rookery(workdir, ["--snap-count", "2"])
    try:
        c = KazooClient(hosts=srv.hosts, timeout=15.0)
        c.start(timeout=15.0)
        c.create("/null", None)
        c.create("/empty", b"")
        for i in range(6):  # enough entries for a snapshot with both nodes in it
            c.create(f"/pad{i}", b"p")
        c.stop()
        c.close()
        for _ in range(2):
            srv.stop()
            srv = start_rookery(workdir, ["--snap-count", "2"])
            c = KazooClient(hosts=srv.hosts, timeout=15.0)
            c.start(timeout=15.0)
            try:
                assert c.get("/null")[0] is None
                assert c.get("/empty")[0] == b""
                c.set("/null", b"")  # and the other way round for the next restart
                c.set("/empty", None)
                c.set("/null", None)
                c.set("/empty", b"")
            finally:
                c.stop()
                c.close()
        snaps = [p for p in (workdir / "data").rglob("*") if "snap" in p.name.lower()]
        assert snaps, f"no snapshot was written under {workdir / 'data'}"
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def c_null_data(tmp_path_factory):
    gcc = shutil.which("gcc")
    header = Path("/usr/include/zookeeper/zookeeper.h")
    if gcc is None or not header.exists():
        pytest.fail("gcc and libzookeeper-mt-dev are needed (tests/run-all.sh installs them)")
    out = tmp_path_factory.mktemp("cbin") / "null_data"
    subprocess.run([gcc, "-Wall", "-Werror", "-DTHREADED", "-o", str(out), str(C_SOURCE),
                    "-lzookeeper_mt"], check=True)
    return out


def test_c_client_null_and_empty(c_null_data, client, base):
    client.ensure_path(base)
    r = subprocess.run([str(c_null_data), _hosts(client), f"{base}/n"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "create-null rc=0",
        "after-create-null len=-1 dataLength=0",
        "create-empty rc=0",
        "after-create-empty len=0 dataLength=0",
        "set-bytes rc=0",
        "after-set-bytes len=2 dataLength=2",
        "set-null rc=0",
        "after-set-null len=-1 dataLength=0",
        "set-empty rc=0",
        "after-set-empty len=0 dataLength=0",
    ], r.stdout


def _hosts(client):
    return ",".join(f"{h}:{p}" for h, p in client.hosts)
