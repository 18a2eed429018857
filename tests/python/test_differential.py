"""Differential test: one seeded random operation sequence, run op by op in lockstep against
Apache ZooKeeper and a peer (rookery; or a second ZooKeeper, to check the harness itself).

Per op it compares the outcome (exception class or result: data, sorted children, created
names, Stat without zxids/times, ephemeralOwner as "which of our sessions"), then makes every
session do a read so that all watch events due have arrived, and compares the watch events
each session received so far, both as sent by the server (type, state, path) and as delivered
to kazoo watcher callbacks. At the end it compares the whole tree.

Peer: rookery if ROOKERY_TESTS_TARGETS includes it (the default), else a second ZooKeeper.
ROOKERY_DIFF_PEER=zk|rookery forces it; ROOKERY_DIFF_SEEDS / ROOKERY_DIFF_OPS change the run.
"""

import os
import random
import threading

import pytest
from kazoo.client import KazooClient
from kazoo.protocol.serialization import Create2, Watch
from kazoo.protocol.states import Callback, KazooState, ZnodeStat
from kazoo.security import (
    ACL,
    ANYONE_ID_UNSAFE,
    OPEN_ACL_UNSAFE,
    Id,
    Permissions,
    make_acl,
    make_digest_acl,
)

from conftest import check_alive, targets

SEEDS = [int(s) for s in os.environ.get("ROOKERY_DIFF_SEEDS", "101,202,303").split(",")]
N_OPS = int(os.environ.get("ROOKERY_DIFF_OPS", "400"))
N_SESSIONS = 3
OP_TIMEOUT = 10.0

# Nodes under the per-seed root. Containers only ever live at CONTAINER_PATHS, which never get
# children: the reaper (which would delete an emptied container at a time of its own) then never
# has anything to do, and both servers stay in lockstep.
PATHS = ["", "/a", "/b", "/a/x", "/a/y", "/b/x", "/a/x/z", "/c/d/e", "/e"]
SEQ_PARENTS = ["", "/a", "/b", "/a/x", "/e", "/nope"]
CONTAINER_PATHS = ["/k1", "/k2"]
SPECIAL = ["/zookeeper", "/zookeeper/quota", "/zookeeper/config"]
BAD_PATHS = ["{R}/a/", "{R}//a", "{R}/a/.", "{R}/a/..", "relative", "{R}/\u0000x", ""]
# Session k authenticates as AUTHS[k] (digest), so ACLs below grant different sessions
# different rights; "auth" means "whoever creates it" and is InvalidACL for an unauthenticated one.
AUTHS = ["alice:secret-a", "bob:secret-b", None]
ACLS = {
    "open": OPEN_ACL_UNSAFE,
    "alice": [make_digest_acl("alice", "secret-a", all=True)],
    "alice+world-read": [make_digest_acl("alice", "secret-a", all=True),
                         ACL(Permissions.READ, ANYONE_ID_UNSAFE)],
    "bob-rw+world-cd": [make_digest_acl("bob", "secret-b", read=True, write=True),
                        ACL(Permissions.CREATE | Permissions.DELETE, ANYONE_ID_UNSAFE)],
    "auth": [ACL(Permissions.ALL, Id("auth", ""))],
    "ip-local": [make_acl("ip", "127.0.0.1", all=True)],
    "ip-subnet": [make_acl("ip", "127.0.0.0/8", read=True, create=True, delete=True)],
    "ip-elsewhere": [make_acl("ip", "10.1.2.3", all=True), ACL(Permissions.READ, ANYONE_ID_UNSAFE)],
    "rwcd": [ACL(Permissions.READ | Permissions.WRITE | Permissions.CREATE | Permissions.DELETE,
                 ANYONE_ID_UNSAFE)],
    "r-cda": [ACL(Permissions.READ | Permissions.CREATE | Permissions.DELETE | Permissions.ADMIN,
                  ANYONE_ID_UNSAFE)],
    "empty": [],
}


def pytest_generate_tests(metafunc):
    if "peer" in metafunc.fixturenames:
        peer = os.environ.get("ROOKERY_DIFF_PEER") or ("rookery" if "rookery" in targets() else "zk")
        if peer not in ("zk", "rookery"):
            raise pytest.UsageError(f"ROOKERY_DIFF_PEER={peer!r}: expected zk or rookery")
        metafunc.parametrize("peer", [peer], ids=[f"zk-vs-{peer}"])


@pytest.fixture
def pair(request, peer, zookeeper):
    other = request.getfixturevalue("rookery" if peer == "rookery" else "zookeeper2")
    yield check_alive(zookeeper), check_alive(other)
    check_alive(zookeeper)
    check_alive(other)


class CreateContainer(Create2):
    type = 19


# ----------------------------------------------------------------------------- sessions


class Session:
    def __init__(self, side, slot):
        self.side, self.slot = side, slot
        # On an ensemble (ROOKERY_TESTS_ENSEMBLE=1) session k is pinned to member k.
        self.client = KazooClient(hosts=side.server.member_hosts(slot), timeout=15.0)
        self.client.start(timeout=15.0)
        if AUTHS[slot]:
            self.client.add_auth_async("digest", AUTHS[slot]).get(timeout=OP_TIMEOUT)
        self.raw = []  # (type, state, path) of each notification, as the server sent it
        self.delivered = []  # (type, path) as dispatched to our watcher callbacks
        self.states = []  # connection state changes after start (should stay empty)
        self.client.add_listener(self.states.append)
        conn = self.client._connection
        orig = conn._read_watch_event

        def spy(buffer, offset):
            w, _ = Watch.deserialize(buffer, offset)
            self.raw.append((w.type, w.state, w.path))
            return orig(buffer, offset)

        conn._read_watch_event = spy  # runs on kazoo's reader thread, before any later reply
        self.session_id = self.client.client_id[0]
        side.owner_labels[self.session_id] = f"s{slot}.{side.generation[slot]}"

    def watcher(self, event):
        self.delivered.append((event.type, event.path))

    def flush(self):
        """Afterwards every event the server sent before answering a read is recorded.
        On an ensemble a sync first: the member then has applied every earlier write (made
        through any member), so the next op and the events compared are deterministic."""
        if self.side.server.ensemble:
            self.client.sync_async("/").get(timeout=OP_TIMEOUT)
        self.client.exists_async("/").get(timeout=OP_TIMEOUT)
        done = threading.Event()
        # callbacks run in order on one thread: once this one ran, all watch callbacks did
        self.client.handler.dispatch_callback(Callback("marker", done.set, ()))
        if not done.wait(OP_TIMEOUT):
            raise AssertionError("kazoo callback queue stuck")

    def close(self):
        try:
            self.client.stop()
        finally:
            self.client.close()


class Side:
    def __init__(self, name, server):
        self.name, self.server = name, server
        self.owner_labels = {0: 0}
        self.generation = [0] * N_SESSIONS
        self.sessions = [Session(self, k) for k in range(N_SESSIONS)]

    def restart(self, slot):
        self.sessions[slot].close()
        self.generation[slot] += 1
        self.sessions[slot] = Session(self, slot)

    def close(self):
        for s in self.sessions:
            try:
                s.close()
            except Exception:
                pass

    # -- normalisation: everything that must be equal on both sides, nothing that may differ
    def stat(self, st):
        if st is None:
            return None
        owner = st.ephemeralOwner
        return {
            "version": st.version,
            "cversion": st.cversion,
            "aversion": st.aversion,
            "ephemeralOwner": self.owner_labels.get(owner, f"other:{owner:#x}"),
            "dataLength": st.dataLength,
            "numChildren": st.numChildren,
        }

    def value(self, v):
        if isinstance(v, ZnodeStat):
            return self.stat(v)
        if isinstance(v, BaseException):
            return ("error", type(v).__name__)
        if isinstance(v, (list, tuple)):
            return [self.value(x) for x in v]
        if isinstance(v, ACL):
            return (v.perms, v.id.scheme, v.id.id)
        return v


# ----------------------------------------------------------------------------- operations


def gen_op(rng, R, seq_made):
    """One random operation, as a plain tuple; independent of any server."""

    def path(extra_pool=()):
        pool = PATHS + CONTAINER_PATHS + list(extra_pool)
        r = rng.random()
        if seq_made and r < 0.25:
            return rng.choice(seq_made)
        return R + rng.choice(pool)

    def version():
        return rng.choice([-1, -1, -1, 0, 0, 1, 2, rng.randint(0, 6)])

    def data():
        return rng.choice([b"", b"x", b"hello", bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))])

    def data_or_null():
        # None is sent as a -1 buffer and must read back as None (kazoo's create/set pass it
        # through; its transaction API refuses it, so multi ops keep data()).
        return None if rng.random() < 0.15 else data()

    s = rng.randrange(N_SESSIONS)
    kind = rng.choices(
        ["create", "create_seq", "container", "delete", "set", "get", "exists", "children",
         "multi", "sync", "get_acls", "set_acls", "close", "special", "bad_path", "arm"],
        weights=[14, 8, 3, 10, 12, 8, 8, 10, 11, 2, 2, 3, 1, 2, 2, 6],
    )[0]
    if kind == "create":
        p = R + rng.choice(PATHS + CONTAINER_PATHS)
        # the root R always gets an open ACL, so the run cannot lock itself out of everything
        acl = "open" if p == R or rng.random() < 0.7 else rng.choice(sorted(ACLS))
        return ("create", s, p, data_or_null(), rng.random() < 0.3, rng.random() < 0.3,
                rng.random() < 0.5, acl)  # ephemeral, makepath, include_data, acl
    if kind == "create_seq":
        p = R + rng.choice(SEQ_PARENTS) + "/" + rng.choice(["s-", "q-", ""])
        return ("create_seq", s, p, data(), rng.random() < 0.4, rng.random() < 0.2,
                rng.random() < 0.5)
    if kind == "container":
        return ("container", s, R + rng.choice(CONTAINER_PATHS), data())
    if kind == "delete":
        return ("delete", s, path(), version())
    if kind == "set":
        return ("set", s, path(), data_or_null(), version())
    if kind in ("get", "exists"):
        return (kind, s, path(["/nope"]), rng.random() < 0.7)
    if kind == "children":
        return ("children", s, path(["/nope"]), rng.random() < 0.7, rng.random() < 0.5)
    if kind == "multi":
        sub = []
        for _ in range(rng.choice([0, 1, 2, 2, 3, 3, 4, 5])):
            t = rng.choice(["create", "create", "delete", "set", "set", "check"])
            if t == "create":
                if rng.random() < 0.5:
                    p = R + rng.choice(SEQ_PARENTS[:-1]) + "/m-"
                    sub.append(("create", p, data(), rng.random() < 0.3, True))
                else:
                    sub.append(("create", R + rng.choice(PATHS), data(), rng.random() < 0.3, False))
            elif t == "delete":
                sub.append(("delete", path(), version()))
            elif t == "set":
                sub.append(("set", path(), data(), rng.choice([-1, -1, -1, 0, 1])))
            else:
                sub.append(("check", path(), rng.choice([-1, -1, 0, 1])))
        return ("multi", s, tuple(sub))
    if kind == "sync":
        return ("sync", s, path(["/nope"]))
    if kind == "get_acls":
        return ("get_acls", s, path(["/nope"]))
    if kind == "set_acls":
        # never on the root R, so the run cannot lock itself out of everything
        return ("set_acls", s, R + rng.choice(PATHS[1:]), rng.choice(sorted(ACLS)), version())
    if kind == "close":
        return ("close", s)
    if kind == "arm":  # exists + getChildren watches on a few nodes at once
        return ("arm", s, tuple(sorted({R + rng.choice(PATHS + CONTAINER_PATHS) for _ in range(3)})))
    if kind == "special":
        if rng.random() < 0.2:  # the root itself (its stat depends on other tests: not read)
            return rng.choice([("delete", s, "/", -1), ("delete", s, "/", 0),
                               ("create", s, "/", b"", False, False, False, "open")])
        p = rng.choice(SPECIAL)
        return rng.choice([("get", s, p, False), ("exists", s, p, False),
                           ("children", s, p, False, True), ("delete", s, p, -1),
                           ("get_acls", s, p)] + ([("set", s, p, b"x", -1)] if p.endswith("config") else []))
    if kind == "bad_path":
        p = rng.choice(BAD_PATHS).format(R=R)
        choices = [("create", s, p, b"", False, False, False, "open"), ("delete", s, p, -1)]
        if p != "":  # get/set of "" answer the root's Stat, which depends on other tests
            choices += [("get", s, p, False), ("set", s, p, b"", -1)]
        return rng.choice(choices)
    raise AssertionError(kind)


def execute(side, op):
    """Run op on one side; returns the normalised outcome."""
    kind, s = op[0], op[1]
    sess = side.sessions[s]
    c = sess.client
    w = sess.watcher

    def get(ar):
        return ar.get(timeout=OP_TIMEOUT)

    try:
        if kind in ("create", "create_seq"):
            _, _, p, d, eph, makepath, include_data = op[:7]
            acl = ACLS[op[7]] if len(op) > 7 else None
            r = get(c.create_async(p, d, acl=acl, ephemeral=eph, sequence=kind == "create_seq",
                                   makepath=makepath, include_data=include_data))
        elif kind == "container":
            _, _, p, d = op
            ar = c.handler.async_result()
            c._call(CreateContainer(p, d, OPEN_ACL_UNSAFE, 4), ar)
            r = get(ar)
        elif kind == "delete":
            r = get(c.delete_async(op[2], version=op[3]))
        elif kind == "set":
            r = get(c.set_async(op[2], op[3], version=op[4]))
        elif kind == "get":
            r = get(c.get_async(op[2], watch=w if op[3] else None))
        elif kind == "exists":
            r = get(c.exists_async(op[2], watch=w if op[3] else None))
        elif kind == "children":
            _, _, p, watch, include_data = op
            r = get(c.get_children_async(p, watch=w if watch else None, include_data=include_data))
            if include_data:
                r = (sorted(r[0]), r[1])
            else:
                r = sorted(r)
        elif kind == "multi":
            tx = c.transaction()
            for sub in op[2]:
                if sub[0] == "create":
                    tx.create(sub[1], sub[2], ephemeral=sub[3], sequence=sub[4])
                elif sub[0] == "delete":
                    tx.delete(sub[1], version=sub[2])
                elif sub[0] == "set":
                    tx.set_data(sub[1], sub[2], version=sub[3])
                else:
                    tx.check(sub[1], sub[2])
            r = get(tx.commit_async())
        elif kind == "sync":
            r = get(c.sync_async(op[2]))
        elif kind == "get_acls":
            r = get(c.get_acls_async(op[2]))
        elif kind == "set_acls":
            r = get(c.set_acls_async(op[2], ACLS[op[3]], version=op[4]))
        elif kind == "arm":
            r = []
            for p in op[2]:
                try:
                    r.append(get(c.exists_async(p, watch=w)))
                except Exception as e:  # noqa: BLE001
                    r.append(e)
                try:
                    r.append(sorted(get(c.get_children_async(p, watch=w))))
                except Exception as e:  # noqa: BLE001
                    r.append(e)
        elif kind == "close":
            side.restart(s)
            r = None
        else:
            raise AssertionError(kind)
    except Exception as e:  # noqa: BLE001 - the exception class is the outcome
        return ("error", type(e).__name__)
    return ("ok", side.value(r))


def created_names(op, outcome):
    """Sequential names an op created (so later ops can address them)."""
    if outcome[0] != "ok":
        return []
    if op[0] == "create_seq":
        v = outcome[1]
        return [v[0] if isinstance(v, list) else v]
    if op[0] == "multi":
        return [r for sub, r in zip(op[2], outcome[1]) if sub[0] == "create" and sub[4] and isinstance(r, str)]
    return []


def dump_tree(side, root):
    """Every node under root: path -> (data, stat, sorted children)."""
    c = side.sessions[0].client
    out = {}
    todo = [root]
    while todo and len(out) < 10000:
        p = todo.pop()
        try:
            data, st = c.get_async(p).get(timeout=OP_TIMEOUT)
            kids = sorted(c.get_children_async(p).get(timeout=OP_TIMEOUT))
        except Exception as e:  # noqa: BLE001
            out[p] = ("error", type(e).__name__)
            continue
        out[p] = (data, side.stat(st), kids)
        todo.extend(f"{p}/{k}" for k in kids)
    return out


# ----------------------------------------------------------------------------- the test


@pytest.mark.parametrize("seed", SEEDS)
def test_differential(pair, peer, seed):
    rng = random.Random(seed)
    R = f"/diff-{seed}"
    sides = []
    try:
        sides = [Side("zk", pair[0]), Side(peer, pair[1])]
        history = []
        seq_made = []
        seen = [[(0, 0)] * N_SESSIONS for _ in sides]  # events compared so far, per side and slot

        def fail(i, op, what, a, b):
            recent = "\n".join(f"  #{j}: {o!r} -> {r!r}" for j, o, r in history[-8:])
            pytest.fail(
                f"seed={seed} op #{i} {op!r}: {what} differ\n"
                f"  zookeeper:    {a!r}\n  peer ({peer}): {b!r}\nprevious ops:\n{recent}",
                pytrace=False,
            )

        # A null-data node from the start, so that every seed reads null back at least once.
        ops = [("create", 0, R, b"root", False, False, False, "open"),
               ("create", 0, R + "/e", None, False, False, False, "open"),
               ("get", 1, R + "/e", False)]
        for i in range(N_OPS + len(ops)):
            op = ops[i] if i < len(ops) else gen_op(rng, R, seq_made)
            outcomes = [execute(side, op) for side in sides]
            if outcomes[0] != outcomes[1]:
                fail(i, op, "outcomes", outcomes[0], outcomes[1])
            history.append((i, op, outcomes[0]))
            for name in created_names(op, outcomes[0]):
                if name not in seq_made:
                    seq_made.append(name)
            del seq_made[:-40]

            for side in sides:
                for sess in side.sessions:
                    try:
                        sess.flush()
                    except Exception as e:  # noqa: BLE001
                        fail(i, op, f"flush read of session {sess.slot} on {side.name}", "ok", repr(e))
            for k in range(N_SESSIONS):
                a, b = sides[0].sessions[k], sides[1].sessions[k]
                if op[0] == "close" and k == op[1]:
                    # fresh sessions replaced the closed ones (whose last events nobody reads)
                    seen[0][k] = seen[1][k] = (0, 0)
                for attr in ("raw", "delivered"):
                    ia, ib = seen[0][k][attr == "delivered"], seen[1][k][attr == "delivered"]
                    new_a, new_b = getattr(a, attr)[ia:], getattr(b, attr)[ib:]
                    if op[0] == "close":
                        # a closing session's ephemerals go in one transaction whose internal
                        # order ZooKeeper does not define (a HashSet): compare as multisets
                        new_a, new_b = sorted(new_a), sorted(new_b)
                    if new_a != new_b:
                        fail(i, op, f"watch events ({attr}) of session {k}", new_a, new_b)
                for j, sess in enumerate((a, b)):
                    seen[j][k] = (len(sess.raw), len(sess.delivered))
                    if sess.states or sess.client.state != KazooState.CONNECTED:
                        fail(i, op, f"connection of session {k} on {sess.side.name}",
                             "CONNECTED, no state changes", (sess.client.state, sess.states))

        trees = [dump_tree(side, R) for side in sides]
        if trees[0] != trees[1]:
            diff = {p: (trees[0].get(p), trees[1].get(p)) for p in sorted(set(trees[0]) | set(trees[1]))
                    if trees[0].get(p) != trees[1].get(p)}
            pytest.fail(f"seed={seed}: final trees differ under {R}: {diff!r}", pytrace=False)
        # sanity: the run exercised what it should (guards against a generator that degenerated)
        kinds = {op[0] for _, op, _ in history}
        errors = {r[1] for _, _, r in history if r[0] == "error"}
        assert {"create", "create_seq", "delete", "set", "multi", "children"} <= kinds, kinds
        null_reads = [i for i, op, r in history if op[0] == "get" and r[0] == "ok" and r[1][0] is None]
        null_reads += [p for p, v in trees[0].items() if isinstance(v, tuple) and v[0] is None]
        assert null_reads, "no null data was ever read back"
        assert {"NodeExistsError", "NoNodeError", "BadVersionError", "NoAuthError"} <= errors, errors
        assert sum(len(s.raw) for s in sides[0].sessions) > 0, "no watch event was ever delivered"
    finally:
        for side in sides:
            side.close()
