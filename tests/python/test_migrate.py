"""Migration from Apache ZooKeeper 3.8 to rookery and back (`rookery import zookeeper`,
`rookery export zookeeper`, `rookery verify`).

A real ZooKeeper (Debian's 3.8 package, snapCount=40 so the data dir holds many fuzzy
snapshots and logs) is filled through kazoo: deep and wide trees, binary, empty and null data,
digest/ip/world ACLs, sequential nodes with gaps, a multi, a TTL node and a container, a quota,
live ephemerals of two open sessions, and a closed session's ephemerals. Every node (data, ACL,
children, all eleven Stat fields) is read from ZooKeeper before it stops, once with SIGTERM and
once with SIGKILL plus a torn record written after the log's last one.

Then the data dir is imported, rookery serves it, and:
  - every node and Stat field is what ZooKeeper served (and `rookery verify` agrees);
  - a client that saw ZooKeeper's last zxid is not refused;
  - the open session resumes with its id and password and still owns its ephemerals, while
    the session nobody resumes expires with its fresh timeout;
  - the next sequential create gets the number ZooKeeper would have given;
  - the TTL node and the container are still of their kinds (reaped once childless);
  - (graceful run) the rookery data dir exported back loads in ZooKeeper, which serves the
    same tree.
"""

import random
import re
import shutil
import struct
import subprocess
import threading
import time
from collections import namedtuple
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError, NodeExistsError, NotEmptyError
from kazoo.protocol.serialization import Create, int_struct, long_struct
from kazoo.security import ACL, Id, make_digest_acl

from conftest import (CLIENT_TIMEOUT, four_letter, recv_exact, rookery_binary, start_rookery,
                      start_zookeeper)

DIGEST_USER, DIGEST_PW = "migr", "secret"


class CreateContainer(Create):
    type = 19


class CreateTTL(namedtuple("CreateTTL", "path data acl flags ttl")):
    type = 21

    def serialize(self):
        b = Create(self.path, self.data, self.acl, self.flags).serialize()
        b.extend(long_struct.pack(self.ttl))
        return b

    @classmethod
    def deserialize(cls, bytes, offset):
        return Create.deserialize(bytes, offset)


def connect(hosts, timeout=30.0, client_id=None, auth=True):
    c = KazooClient(hosts=hosts, timeout=timeout, client_id=client_id)
    c.start(timeout=CLIENT_TIMEOUT)
    if auth:
        c.add_auth("digest", f"{DIGEST_USER}:{DIGEST_PW}")
    return c


def call(client, request):
    result = client.handler.async_result()
    client._call(request, result)
    return result.get(timeout=CLIENT_TIMEOUT)


def fill(zk_hosts):
    """Fills ZooKeeper; returns (live client, doomed client, closed-session paths)."""
    c = connect(zk_hosts)
    open_acl = [ACL(31, Id("world", "anyone"))]
    digest_acl = [make_digest_acl(DIGEST_USER, DIGEST_PW, all=True)]
    ip_acl = [ACL(31, Id("ip", "127.0.0.1")), ACL(1, Id("world", "anyone"))]
    read_only = [ACL(1, Id("world", "anyone")), ACL(31, Id("digest", digest_acl[0].id.id))]

    c.create("/app", b"root of app")
    deep = "/app/deep"
    for i in range(25):
        deep += f"/d{i}"
        c.create(deep, f"level {i}".encode(), makepath=True)
    c.create("/app/wide")
    for i in range(150):
        c.create(f"/app/wide/w{i:03d}", bytes([i % 256]) * (i % 7))
    c.create("/app/bin", bytes(range(256)) * 4)
    c.create("/app/empty", b"")
    c.create("/app/null", None)
    c.create("/app/set_null", b"x")
    c.set("/app/set_null", None)
    c.create("/app/digest", b"secret data", acl=digest_acl)
    c.create("/app/ip", b"ip", acl=ip_acl)
    c.create("/app/ro", b"ro", acl=read_only)
    c.set_acls("/app/ro", read_only + [ACL(2, Id("ip", "127.0.0.2"))])  # aversion 1
    for v in range(5):
        c.set("/app/bin", bytes([v]) * 10)  # version 5
    # Sequential nodes with gaps, under a parent whose cversion then differs from its
    # child count.
    c.create("/app/seq")
    made = [c.create("/app/seq/n-", b"", sequence=True) for _ in range(12)]
    for p in made[::3]:
        c.delete(p)
    # A multi.
    t = c.transaction()
    t.create("/app/multi", b"m")
    t.create("/app/multi/a", b"a")
    t.set_data("/app/wide/w000", b"changed in a multi")
    t.delete("/app/wide/w001")
    assert not any(isinstance(r, Exception) for r in t.commit())
    # TTL and container nodes, each kept alive by a child (so ZooKeeper does not reap them).
    call(c, CreateTTL("/app/ttl", b"t", open_acl, 5, 1000))  # PERSISTENT_WITH_TTL
    c.create("/app/ttl/keep", b"")
    call(c, CreateContainer("/app/container", b"c", open_acl, 4))
    c.create("/app/container/keep", b"")
    # A quota on /app/quota, as zkCli's setquota writes it.
    c.create("/app/quota")
    for i in range(3):
        c.create(f"/app/quota/q{i}", b"12345")
    c.create("/zookeeper/quota/app/quota/zookeeper_limits", b"count=10,bytes=-1", makepath=True)
    c.create("/zookeeper/quota/app/quota/zookeeper_stats", b"count=0,bytes=0")
    c.create("/app/quota/q3", b"more")  # counted incrementally
    c.delete("/app/quota/q0")

    # A session that closes: its ephemerals are gone.
    gone = connect(zk_hosts)
    gone.create("/app/gone", b"", ephemeral=True)
    gone.stop()
    gone.close()

    # The live session: its ephemerals must survive the switch.
    live = connect(zk_hosts)
    live.create("/app/live", b"")
    live.create("/app/live/e1", b"one", ephemeral=True)
    live.create("/app/live/e-", b"seq", ephemeral=True, sequence=True)
    # A session nobody resumes: it expires on rookery, with a fresh timeout.
    doomed = connect(zk_hosts, timeout=20.0)
    doomed.create("/app/doomed", b"", ephemeral=True)
    # Many small writes, so several snapshots and log files are involved.
    for i in range(60):
        c.set("/app/wide/w100", str(i).encode())
    churn(c, live, random.Random(7))
    c.stop()
    c.close()
    return live, doomed


def churn(c, other, rng):
    """Seeded random writes from two sessions, pipelined (so snapshots are taken while
    writes are applied: fuzzy), failures included (ZooKeeper logs them as error txns)."""
    c.create("/churn")
    names = [f"/churn/c{i}" for i in range(12)]
    for _ in range(12):
        pending = []
        for _ in range(25):
            who = rng.choice([c, other])
            p = rng.choice(names)
            if rng.random() < 0.4:
                p += f"/x{rng.randrange(4)}"
            r = rng.random()
            if r < 0.35:
                pending.append(who.create_async(p, rng.randbytes(rng.randrange(5)),
                                                sequence=rng.random() < 0.3,
                                                ephemeral=who is other and rng.random() < 0.2))
            elif r < 0.55:
                pending.append(who.delete_async(p))
            elif r < 0.8:
                pending.append(who.set_async(p, rng.randbytes(3)))
            elif r < 0.9:
                pending.append(who.set_acls_async(p, [ACL(31, Id("world", "anyone"))]))
            else:
                t = who.transaction()
                t.create(p + "-m", b"")
                t.set_data(rng.choice(names), b"m")
                pending.append(t.commit_async())
        for a in pending:
            try:
                a.get(timeout=CLIENT_TIMEOUT)
            except Exception:
                pass


def walk(client):
    """Every node: data, ACL list, sorted children, Stat as a dict."""
    out = {}
    stack = ["/"]
    while stack:
        p = stack.pop()
        data, st = client.get(p)
        acl, _ = client.get_acls(p)
        children = sorted(client.get_children(p))
        out[p] = {
            "data": data,
            "acl": [(a.perms, a.id.scheme, a.id.id) for a in acl],
            "children": children,
            **st._asdict(),
        }
        stack.extend(("" if p == "/" else p) + "/" + ch for ch in children)
    return out


def differences(expected, got):
    diffs = []
    for path in sorted(set(expected) | set(got)):
        if path not in got:
            diffs.append(f"{path}: missing")
        elif path not in expected:
            diffs.append(f"{path}: unexpected")
        else:
            for field in expected[path]:
                if expected[path][field] != got[path].get(field):
                    diffs.append(
                        f"{path}: {field} {expected[path][field]!r} != {got[path].get(field)!r}"
                    )
    return diffs


def zxid_of(port):
    m = re.search(r"^Zxid: (0x[0-9a-f]+)", four_letter(port, "srvr") or "", re.M)
    assert m, "no Zxid in srvr"
    return int(m.group(1), 16)


def raw_connect(port, last_zxid_seen):
    """A ConnectRequest claiming to have seen `last_zxid_seen`: (timeout, session id), or
    None if the server closes the connection instead of answering."""
    import socket

    body = struct.pack("!iqiq", 0, last_zxid_seen, 10000, 0) + int_struct.pack(16) + bytes(16)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(int_struct.pack(len(body)) + body)
        head = recv_exact(s, 4)
        resp = head and recv_exact(s, int_struct.unpack(head)[0])
    if not resp:
        return None
    _, timeout, session = struct.unpack("!iiq", resp[:16])
    return timeout, session


def newest_snapshot_zxid(version2: Path):
    return max((int(p.name.split(".")[1], 16) for p in version2.glob("snapshot.*")), default=0)


def leave_a_log_tail(zk, attempts=10):
    """ZooKeeper snapshots after a random count of transactions (snapCount/2 plus a random
    share): when the last one fell on the last write, no logged transaction lies beyond
    the newest snapshot and an import has nothing to replay. A few more writes, until one
    lands after the snapshot, make the replay path certain to run."""
    version2 = zk.data_dir / "version-2"
    c = connect(zk.hosts)
    try:
        for i in range(attempts):
            c.set("/app/wide/w100", f"tail {i}".encode())
            time.sleep(0.5)  # the snapshot thread names its file as it starts
            if newest_snapshot_zxid(version2) < zxid_of(zk.port):
                return
        raise AssertionError(f"every write up to {zxid_of(zk.port):#x} was snapshotted")
    finally:
        c.stop()
        c.close()


def tear_last_log(version2: Path):
    """Writes a partial record right after the newest log's last complete one."""
    logs = sorted(version2.glob("log.*"), key=lambda p: int(p.name.split(".")[1], 16))
    path = logs[-1]
    data = bytearray(path.read_bytes())
    pos = 16
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("!i", data, pos + 8)
        if length <= 0:
            break
        pos += 12 + length + 1
    data[pos:pos + 20] = struct.pack("!qi", 0x1234, 200) + b"\x00\x00\x00\x00\x00\x00\x00\x01"
    path.write_bytes(bytes(data))
    return path


def run_rookery(*args):
    r = subprocess.run([str(rookery_binary()), *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"rookery {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def live_copy_checks(tmp_path, zk, expected):
    """`rookery import zookeeper --from --server`: once, then following changes."""
    auth = f"digest:{DIGEST_USER}:{DIGEST_PW}"
    rk = start_rookery(tmp_path / "rk-live")
    try:
        out = run_rookery("import", "zookeeper", "--from", zk.hosts, "--server", rk.hosts,
                          "--once", "--auth", auth)
        assert "ephemerals skipped" in out, out
        r = subprocess.run([str(rookery_binary()), "verify", "--source", zk.hosts, "--target",
                            rk.hosts, "--auth", auth, "--ignore-stat", "--skip", "/zookeeper"],
                           capture_output=True, text=True, timeout=120)
        allowed, parents = allowed_live_differences(expected)
        lines = [l for l in r.stdout.splitlines() if not l.startswith("compared ")]
        unexplained = [l for l in lines if l not in allowed
                       and not any(l.startswith(f"{q}: {f}: ") for q in parents
                                   for f in ("children", "numChildren"))]
        assert lines and not unexplained, r.stdout
        live_copy_under_writer(tmp_path, zk, auth)
        # Following: changes made on ZooKeeper arrive on rookery until SIGINT.
        follow = subprocess.Popen([str(rookery_binary()), "import", "zookeeper", "--from",
                                   zk.hosts, "--server", rk.hosts, "--auth", auth],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            src = connect(zk.hosts)
            dst = connect(rk.hosts)
            deepest = "/app/deep" + "".join(f"/d{i}" for i in range(25))
            wait_until("the follower's first pass", lambda: dst.exists(deepest) is not None)
            src.create("/app/followed", b"new")
            src.set("/app/wide/w002", b"changed live")
            src.delete("/app/wide/w003")
            wait_until("the changes on rookery", lambda: dst.exists("/app/followed") is not None
                       and dst.get("/app/wide/w002")[0] == b"changed live"
                       and dst.exists("/app/wide/w003") is None)
            src.stop(); src.close(); dst.stop(); dst.close()
        finally:
            follow.send_signal(2)
            stdout, stderr = follow.communicate(timeout=30)
        assert follow.returncode == 0, stdout + stderr
        assert re.search(r"then applied [1-9]\d* changes", stdout), stdout
    finally:
        rk.stop()


def allowed_live_differences(tree):
    """What a client-protocol copy cannot carry, and nothing else, as `rookery verify` words
    it: ephemerals (skipped, and so missing from their parents' children), null data (copied
    as empty)."""
    ephemerals = {p for p, n in tree.items() if n["ephemeralOwner"]}
    parents = {p.rsplit("/", 1)[0] or "/" for p in ephemerals}
    allowed = {f"{p}: exists: source present != target missing" for p in ephemerals}
    allowed |= {f'{p}: data: source null != target ""'
                for p, n in tree.items() if n["data"] is None}
    return allowed, parents


def concurrent_writer(hosts, stop, done_ops, seed):
    """Seeded random writes on ZooKeeper until `stop` is set (bounded: 5000 ops, 120 s):
    creates (nested, sequential, and re-creates of deleted paths), setData, deletes of
    leaves and of whole small subtrees, multis, and setData on nodes of the filled tree.
    Counts acknowledged writes in done_ops[0]."""
    rng = random.Random(seed)
    c = connect(hosts)
    base = "/live-churn"
    c.ensure_path(base)
    names = [f"{base}/n{i}" for i in range(20)]
    deadline = time.monotonic() + 120
    try:
        for _ in range(5000):
            if stop.is_set() or time.monotonic() > deadline:
                break
            p = rng.choice(names)
            r = rng.random()
            try:
                if r < 0.3:
                    c.create(p + ("/s-" if rng.random() < 0.4 else f"/x{rng.randrange(3)}"),
                             rng.randbytes(rng.randrange(8)), sequence=rng.random() < 0.4,
                             makepath=True)
                elif r < 0.45:
                    c.create(p, rng.randbytes(4))
                elif r < 0.65:
                    c.set(p, rng.randbytes(rng.randrange(1, 10)))
                elif r < 0.8:
                    kids = c.get_children(p)
                    if kids:
                        c.delete(f"{p}/{rng.choice(kids)}")
                    else:
                        c.delete(p)
                elif r < 0.88:
                    c.delete(p, recursive=True)
                elif r < 0.95:
                    c.set(f"/app/wide/w{rng.randrange(10, 100):03d}", rng.randbytes(6))
                else:
                    t = c.transaction()
                    t.create(f"{p}-m{rng.randrange(5)}", b"multi")
                    t.set_data(base, rng.randbytes(2))
                    if not all(not isinstance(x, Exception) for x in t.commit()):
                        continue
                done_ops[0] += 1
            except (NoNodeError, NodeExistsError, NotEmptyError):
                pass
    finally:
        c.stop()
        c.close()


def live_copy_under_writer(tmp_path, zk, auth):
    """The live copy, with a writer changing ZooKeeper before, during and after its first
    pass, converges to the source: `rookery verify` finds only what the protocol cannot
    carry."""
    rk = start_rookery(tmp_path / "rk-live-writer")
    stop, done_ops = threading.Event(), [0]
    writer = threading.Thread(target=concurrent_writer, args=(zk.hosts, stop, done_ops, 11))
    writer.start()
    follow = None
    try:
        wait_until("the writer's first writes", lambda: done_ops[0] >= 50)
        # Output to files, not pipes: nobody drains a pipe while the copy runs.
        out_path, err_path = tmp_path / "follow.out", tmp_path / "follow.err"
        with open(out_path, "w") as out, open(err_path, "w") as err:
            follow = subprocess.Popen([str(rookery_binary()), "import", "zookeeper", "--from",
                                       zk.hosts, "--server", rk.hosts, "--auth", auth],
                                      stdout=out, stderr=err, text=True)
        dst = connect(rk.hosts)
        # The deep chain is among the last nodes of the breadth-first pass.
        deepest = "/app/deep" + "".join(f"/d{i}" for i in range(25))
        wait_until("the follower's first pass", lambda: dst.exists(deepest) is not None)
        during_first_pass = done_ops[0]
        # The writer goes on while the copy follows.
        wait_until("writes while following", lambda: done_ops[0] >= during_first_pass + 300,
                   timeout=60)
        stop.set()
        writer.join(timeout=60)
        assert not writer.is_alive()
        # Events arrive in zxid order: once the marker is on rookery, so is everything before.
        src = connect(zk.hosts)
        src.create("/live-marker", b"last")
        wait_until("the marker on rookery", lambda: dst.exists("/live-marker") is not None)
        final = walk(src)
        src.stop(); src.close(); dst.stop(); dst.close()
    finally:
        stop.set()
        writer.join(timeout=60)
        if follow is not None:
            follow.send_signal(2)
            follow.wait(timeout=30)
            stdout, stderr = out_path.read_text(), err_path.read_text()
            print(f"live copy follower stderr (tail): {stderr[-2000:]}")
    try:
        assert follow.returncode == 0, stdout + stderr
        applied = int(re.search(r"then applied (\d+) changes", stdout).group(1))
        assert applied >= 300, stdout
        r = subprocess.run([str(rookery_binary()), "verify", "--source", zk.hosts, "--target",
                            rk.hosts, "--auth", auth, "--ignore-stat", "--skip", "/zookeeper"],
                           capture_output=True, text=True, timeout=120)
        allowed, parents = allowed_live_differences(final)
        compared = int(re.search(r"compared (\d+) znodes", r.stdout).group(1))
        assert compared >= len(final) - len([p for p in final if p.startswith("/zookeeper")])
        lines = [l for l in r.stdout.splitlines() if not l.startswith("compared ")]
        unexplained = [l for l in lines if l not in allowed
                       and not any(l.startswith(f"{q}: {f}: ") for q in parents
                                   for f in ("children", "numChildren"))]
        assert not unexplained, r.stdout
        print(f"live copy under a writer: {during_first_pass} writes before the first pass "
              f"ended, {done_ops[0]} in all, {applied} changes applied while following, "
              f"{compared} znodes verified, {len(lines)} expected differences")
    finally:
        rk.stop()


def wait_until(what, predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("stop", ["graceful", "sigkill"])
def test_import_from_zookeeper(tmp_path, stop):
    zk = start_zookeeper(tmp_path / "zk", extra_cfg=["snapCount=40"])
    servers = [zk]
    try:
        live, doomed = fill(zk.hosts)
        live_id, live_pw = live.client_id
        doomed_id = doomed.client_id[0]
        leave_a_log_tail(zk)
        reader = connect(zk.hosts)
        expected = walk(reader)
        reader.stop()
        reader.close()
        last_zxid = zxid_of(zk.port)
        assert expected["/app/live/e1"]["ephemeralOwner"] == live_id
        assert expected["/app/doomed"]["ephemeralOwner"] == doomed_id
        assert "/app/gone" not in expected

        if stop == "graceful":
            zk.stop()
        else:
            zk.proc.kill()
            zk.proc.wait(timeout=10)
        version2 = zk.data_dir / "version-2"
        assert len(list(version2.glob("snapshot.*"))) > 1, "expected several snapshots"
        if stop == "sigkill":
            tear_last_log(version2)
            # ZooKeeper itself restarted on (a copy of) the torn data dir is the reference too.
            shutil.copytree(zk.data_dir, tmp_path / "zk-restart" / "data")

        rk_dir = tmp_path / "rk"
        report = run_rookery("import", "zookeeper", "--data-dir", str(zk.data_dir),
                             "--to", str(rk_dir / "data"))
        print(report)
        replayed = int(re.search(r"transactions replayed: (\d+)", report).group(1))
        assert replayed > 0, report
        # ZooKeeper's own tree digest (logged with each txn) agrees with the imported tree.
        assert "digest: matches ZooKeeper's" in report, report
        if stop == "sigkill":
            assert "partial last record dropped" in report, report
        # A second import over the result is refused.
        again = subprocess.run([str(rookery_binary()), "import", "zookeeper", "--data-dir",
                                str(zk.data_dir), "--to", str(rk_dir / "data")],
                               capture_output=True, text=True, timeout=60)
        assert again.returncode != 0 and "not empty" in again.stderr

        rk = start_rookery(rk_dir)
        servers.append(rk)
        reader = connect(rk.hosts)
        got = walk(reader)
        reader.stop()
        reader.close()
        assert differences(expected, got) == []
        if stop == "sigkill":
            zk_again = start_zookeeper(tmp_path / "zk-restart")
            servers.append(zk_again)
            reader = connect(zk_again.hosts)
            restarted = walk(reader)
            reader.stop()
            reader.close()
            zk_again.stop()
            assert differences(restarted, got) == []
        # A client that saw ZooKeeper's last zxid is served.
        answer = raw_connect(rk.port, last_zxid)
        assert answer is not None and answer[0] > 0, f"refused a client at zxid {last_zxid:#x}"

        if stop == "graceful":
            # Export back: ZooKeeper loads it and serves the same tree.
            rk.stop()
            zk2_dir = tmp_path / "zk2"
            out = run_rookery("export", "zookeeper", "--data-dir", str(rk_dir / "data"),
                              "--to", str(zk2_dir / "data"))
            print(out)
            zk2 = start_zookeeper(zk2_dir)
            servers.append(zk2)
            rk = start_rookery(rk_dir)
            servers.append(rk)
            # rookery verify: ZooKeeper on the exported snapshot vs rookery on the import.
            out = run_rookery("verify", "--source", zk2.hosts, "--target", rk.hosts,
                              "--auth", f"digest:{DIGEST_USER}:{DIGEST_PW}")
            assert re.search(r"compared (\d+) znodes: 0 differences", out), out
            assert int(re.search(r"compared (\d+)", out).group(1)) == len(expected)
            reader = connect(zk2.hosts)
            back = walk(reader)
            reader.stop()
            reader.close()
            assert differences(expected, back) == []
            # The next sequential name on ZooKeeper continues from the same counter.
            seq = expected["/app/seq"]
            n_zk = (seq["cversion"] + seq["numChildren"]) // 2
            c = connect(zk2.hosts)
            assert c.create("/app/seq/n-", b"", sequence=True) == f"/app/seq/n-{n_zk:010d}"
            # ... which verify now reports, naming the path and the fields.
            r = subprocess.run([str(rookery_binary()), "verify", "--source", zk2.hosts,
                                "--target", rk.hosts, "--auth",
                                f"digest:{DIGEST_USER}:{DIGEST_PW}"],
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 1, r.stdout + r.stderr
            assert f"/app/seq/n-{n_zk:010d}: exists: source present != target missing" in r.stdout
            assert re.search(r"^/app/seq: numChildren: ", r.stdout, re.M), r.stdout
            c.stop()
            c.close()
            live_copy_checks(tmp_path, zk2, expected)
            zk2.stop()

        # The open session resumes with its id and password and still owns its ephemerals.
        resumed = connect(rk.hosts, client_id=(live_id, live_pw), auth=False)
        try:
            assert resumed.client_id[0] == live_id
            assert sorted(resumed.get_children("/app/live")) == expected["/app/live"]["children"]
            assert resumed.exists("/app/live/e1").ephemeralOwner == live_id
            # The next sequential create gets ZooKeeper's next number.
            seq = expected["/app/seq"]
            n = (seq["cversion"] + seq["numChildren"]) // 2
            assert resumed.create("/app/seq/n-", b"", sequence=True) == f"/app/seq/n-{n:010d}"
            # TTL and container nodes kept their kinds: once childless, the reaper takes them.
            resumed.delete("/app/ttl/keep")
            resumed.delete("/app/container/keep")
            wait_until("the TTL node's reaping", lambda: resumed.exists("/app/ttl") is None)
            wait_until("the container's reaping", lambda: resumed.exists("/app/container") is None)
            assert resumed.exists("/app/quota") is not None
            # The session nobody resumed expires with its fresh timeout; its ephemeral goes.
            wait_until("the doomed session's expiry", lambda: resumed.exists("/app/doomed") is None)
            assert resumed.exists("/app/live/e1") is not None
        finally:
            resumed.stop()
            resumed.close()
        live.stop()
        live.close()
        doomed.stop()
        doomed.close()
    finally:
        for s in servers:
            s.stop()
