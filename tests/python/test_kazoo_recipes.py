"""ZooKeeper semantics through kazoo's recipes and core API.

Every test runs against each server in ROOKERY_TESTS_TARGETS (ids "zk", "rookery").
The expected values were checked against Apache ZooKeeper 3.8.
Every wait is bounded; blocked recipe calls run in daemon threads joined with a timeout.
"""

import re
import threading
import time

import pytest
from kazoo.exceptions import (
    BadArgumentsError,
    BadVersionError,
    LockTimeout,
    NoChildrenForEphemeralsError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    RolledBackError,
    RuntimeInconsistency,
)
from kazoo.protocol.serialization import Create, Create2, SetData
from kazoo.protocol.states import EventType
from kazoo.recipe.barrier import Barrier, DoubleBarrier
from kazoo.recipe.counter import Counter
from kazoo.recipe.election import Election
from kazoo.recipe.lock import Lock, Semaphore
from kazoo.recipe.queue import LockingQueue, Queue
from kazoo.recipe.watchers import ChildrenWatch, DataWatch
from kazoo.exceptions import NoAuthError
from kazoo.security import ACL, ANYONE_ID_UNSAFE, OPEN_ACL_UNSAFE, Permissions, make_digest_acl

WAIT = 20.0  # upper bound for anything that should happen "soon"


def caught_up(client, path):
    """ZooKeeper's rule for reading another client's writes: the reader syncs first. Clients
    may sit on different ensemble members, and a member applies a commit a moment after the
    one that answered the writer (on ZooKeeper as on rookery); without the sync such a read
    may see the state just before the write."""
    client.sync(path)
    return client


def wait_until(pred, timeout=WAIT, what="condition", interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Worker(threading.Thread):
    """A daemon thread that records its exception; join() is bounded."""

    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self.fn, self.args = fn, args
        self.error = None
        self.result = None

    def run(self):
        try:
            self.result = self.fn(*self.args)
        except BaseException as e:  # noqa: BLE001 - reported by finish()
            self.error = e

    def finish(self, timeout=WAIT):
        self.join(timeout)
        assert not self.is_alive(), f"worker {self.fn.__name__} still blocked after {timeout}s"
        if self.error is not None:
            raise self.error
        return self.result


def start(fn, *args):
    w = Worker(fn, *args)
    w.start()
    return w


def call(async_result, timeout=WAIT):
    return async_result.get(timeout=timeout)


def n_children(client, path):
    try:
        return len(client.get_children(path))
    except NoNodeError:
        return 0


def create_container(client, path, data=b"", opcode=19, flags=4):
    """Send createContainer (opcode 19), which kazoo has no API for; returns (path, stat)."""
    cls = type("CreateOp", (Create if opcode == 1 else Create2,), {"type": opcode})
    ar = client.handler.async_result()
    client._call(cls(path, data, OPEN_ACL_UNSAFE, flags), ar)
    return call(ar)


# --------------------------------------------------------------------------- Lock


def test_lock_mutual_exclusion(make_client, base):
    n_clients, rounds = 4, 5
    clients = [make_client() for _ in range(n_clients)]
    state = {"inside": 0, "max_inside": 0, "entries": []}
    guard = threading.Lock()

    def contender(i, client):
        lock = Lock(client, base + "/lock", identifier=f"c{i}")
        for r in range(rounds):
            assert lock.acquire(timeout=WAIT), f"c{i} could not get the lock"
            try:
                with guard:
                    state["inside"] += 1
                    state["max_inside"] = max(state["max_inside"], state["inside"])
                    state["entries"].append(i)
                time.sleep(0.005)
                with guard:
                    state["inside"] -= 1
            finally:
                lock.release()

    workers = [start(contender, i, c) for i, c in enumerate(clients)]
    for w in workers:
        w.finish(timeout=60)
    assert state["max_inside"] == 1
    assert sorted(state["entries"]) == sorted(list(range(n_clients)) * rounds)
    # every lock node was removed on release
    assert clients[0].get_children(base + "/lock") == []


def test_lock_contention_and_session_loss(make_client, base):
    a, b = make_client(), make_client()
    lock_a = Lock(a, base + "/lock", identifier="alpha")
    lock_b = Lock(b, base + "/lock", identifier="beta")
    assert lock_a.acquire(timeout=WAIT)
    # the holder's node is an ephemeral sequential node named ...__lock__%010d
    (node,) = a.get_children(base + "/lock")
    assert re.fullmatch(r"[0-9a-f]{32}__lock__0000000000", node), node
    _, stat = a.get(base + "/lock/" + node)
    assert stat.ephemeralOwner == a.client_id[0]

    with pytest.raises(LockTimeout):
        lock_b.acquire(timeout=0.5)
    # a timed-out contender cleans up its node
    assert len(a.get_children(base + "/lock")) == 1

    w = start(lock_b.acquire, True, WAIT)
    wait_until(lambda: n_children(a, base + "/lock") == 2, what="beta's lock node")
    assert lock_a.contenders() == ["alpha", "beta"]
    time.sleep(0.2)
    assert w.is_alive(), "beta acquired the lock while alpha held it"

    # the holder's session goes away: its ephemeral lock node dies, beta gets the lock
    a.stop()
    assert w.finish() is True
    assert lock_b.is_acquired
    assert lock_b.contenders() == ["beta"]
    lock_b.release()


def test_semaphore_limits_holders(make_client, base):
    clients = [make_client() for _ in range(4)]
    sems = [Semaphore(c, base + "/sem", identifier=f"s{i}", max_leases=2) for i, c in enumerate(clients)]
    assert sems[0].acquire(timeout=WAIT)
    assert sems[1].acquire(timeout=WAIT)
    assert not sems[2].acquire(blocking=False)
    assert sorted(sems[0].lease_holders()) == ["s0", "s1"]
    w = start(sems[3].acquire, True, WAIT)
    time.sleep(0.3)
    assert w.is_alive(), "a third holder got a 2-lease semaphore"
    sems[0].release()
    assert w.finish() is True
    assert sorted(sems[1].lease_holders()) == ["s1", "s3"]
    sems[1].release()
    sems[3].release()


# ----------------------------------------------------------------------- Election


def test_election_leader_failover(make_client, base):
    clients = [make_client() for _ in range(3)]
    path = base + "/election"
    leaders = []
    active = set()
    release = {i: threading.Event() for i in range(3)}
    guard = threading.Lock()

    def lead(i):
        with guard:
            assert not active, f"e{i} elected while {active} still lead"
            active.add(i)
            leaders.append(i)
        release[i].wait(WAIT)
        with guard:
            active.discard(i)

    def contend(i):
        e = Election(clients[i], path, identifier=f"e{i}")
        try:
            e.run(lead, i)
        except Exception:
            # the leader's client was stopped under it: releasing its lock fails, that's fine
            if i != 0:
                raise

    workers = [start(contend, 0)]
    wait_until(lambda: leaders == [0], what="first leader")
    for i in (1, 2):
        workers.append(start(contend, i))
        wait_until(lambda: n_children(clients[0], path) == i + 1, what=f"{i + 1} contenders")
    assert Election(clients[0], path).contenders() == ["e0", "e1", "e2"]
    time.sleep(0.2)
    assert leaders == [0]

    # the leader's session closes: its ephemeral node goes and the next in line leads
    with guard:
        active.discard(0)
    clients[0].stop()
    release[0].set()
    workers[0].join(WAIT)
    wait_until(lambda: len(leaders) == 2, what="a new leader after the first one's session closed")
    assert leaders == [0, 1]
    assert Election(clients[1], path).contenders() == ["e1", "e2"]

    # the second leader steps down voluntarily: the last one takes over
    release[1].set()
    wait_until(lambda: len(leaders) == 3, what="third leader")
    assert leaders == [0, 1, 2]
    release[2].set()
    for w in workers[1:]:
        w.finish()
    assert clients[1].get_children(path) == []


# --------------------------------------------------------------------- Queues


def test_queue_fifo_and_priority(make_client, base):
    producer, consumer = make_client(), make_client()
    q_put = Queue(producer, base + "/q")
    q_get = Queue(consumer, base + "/q")
    items = [f"item-{i}".encode() for i in range(12)]
    for it in items:
        q_put.put(it)
    caught_up(consumer, base + "/q")
    assert len(q_get) == 12
    got = [q_get.get() for _ in range(12)]
    assert got == items
    assert q_get.get() is None

    q_put.put(b"low", priority=200)
    q_put.put(b"high", priority=1)
    q_put.put(b"mid-a", priority=50)
    q_put.put(b"mid-b", priority=50)
    assert [q_get.get() for _ in range(4)] == [b"high", b"mid-a", b"mid-b", b"low"]


def test_locking_queue(make_client, base):
    a, b = make_client(), make_client()
    qa = LockingQueue(a, base + "/lq")
    qb = LockingQueue(b, base + "/lq")
    qa.put_all([b"one", b"two", b"three"])
    qa.put(b"urgent", priority=0)
    caught_up(b, base + "/lq")
    assert len(qb) == 4

    assert qa.get(timeout=WAIT) == b"urgent"
    assert qa.holds_lock()
    # b cannot take the item a holds; it gets the next one
    assert qb.get(timeout=WAIT) == b"one"
    # a's session dies before it consumed: the item becomes available again
    a.stop()
    assert qb.consume()
    assert qb.get(timeout=WAIT) == b"urgent"
    assert qb.consume()
    assert qb.get(timeout=WAIT) == b"two"
    assert qb.consume()
    assert qb.get(timeout=WAIT) == b"three"
    assert qb.consume()
    assert qb.get(timeout=0.3) is None
    assert len(qb) == 0


# -------------------------------------------------------------------- Counter


def test_counter_concurrent_increments(make_client, base):
    n_clients, incs = 4, 25
    clients = [make_client() for _ in range(n_clients)]

    def bump(client):
        counter = Counter(client, base + "/counter")
        for _ in range(incs):
            counter += 1

    workers = [start(bump, c) for c in clients]
    for w in workers:
        w.finish(timeout=60)
    final = Counter(clients[0], base + "/counter")
    assert final.value == n_clients * incs
    # each increment is one successful versioned setData
    _, stat = clients[0].get(base + "/counter")
    assert stat.version == n_clients * incs
    c = Counter(clients[1], base + "/counter")
    c -= 7
    assert final.value == n_clients * incs - 7
    fc = Counter(clients[0], base + "/fcounter", default=0.0)
    fc += 2.5
    assert fc.value == 2.5


# ------------------------------------------------------------------- Barriers


def test_barrier(make_client, base):
    a, b = make_client(), make_client()
    path = base + "/barrier"
    bar_a, bar_b = Barrier(a, path), Barrier(b, path)
    assert bar_b.wait(timeout=0.1) is True  # no barrier node: passes at once
    bar_a.create()
    caught_up(b, path)
    assert bar_b.wait(timeout=0.3) is False
    w = start(bar_b.wait, WAIT)
    time.sleep(0.2)
    assert w.is_alive()
    assert bar_a.remove() is True
    assert w.finish() is True
    assert b.exists(path) is None


def test_double_barrier(make_client, base):
    n = 3
    clients = [make_client() for _ in range(n)]
    path = base + "/dbarrier"
    barriers = [DoubleBarrier(c, path, n, identifier=f"m{i}") for i, c in enumerate(clients)]
    entered = []
    guard = threading.Lock()

    def enter(i):
        barriers[i].enter()
        with guard:
            entered.append(i)
        return barriers[i].participating

    w0 = start(enter, 0)
    w1 = start(enter, 1)
    wait_until(lambda: n_children(clients[0], path) == 2, what="two members")
    time.sleep(0.3)
    assert entered == [], "a member passed the double barrier before all had entered"
    w2 = start(enter, 2)
    assert [w.finish() for w in (w0, w1, w2)] == [True, True, True]
    assert sorted(entered) == [0, 1, 2]
    assert clients[0].exists(path + "/ready") is not None

    left = []

    def leave(i):
        barriers[i].leave()
        with guard:
            left.append(i)

    l0 = start(leave, 0)
    l1 = start(leave, 1)
    time.sleep(0.3)
    assert left == [], "a member left the double barrier before all had left"
    l2 = start(leave, 2)
    for w in (l0, l1, l2):
        w.finish()
    assert sorted(left) == [0, 1, 2]
    assert clients[0].get_children(path) == []


# -------------------------------------------------------------------- Watches


def test_data_watch_sequence(make_client, base):
    writer, watcher = make_client(), make_client()
    path = base + "/dw"
    seen = []

    def cb(data, stat, event):
        seen.append((data, stat.version if stat else None, event.type if event else None))

    DataWatch(watcher, path, cb)
    wait_until(lambda: len(seen) == 1, what="initial DataWatch call")
    steps = [
        (lambda: writer.create(path, b"v0", makepath=True), (b"v0", 0, EventType.CREATED)),
        (lambda: writer.set(path, b"v1"), (b"v1", 1, EventType.CHANGED)),
        (lambda: writer.set(path, b"v2"), (b"v2", 2, EventType.CHANGED)),
        (lambda: writer.delete(path), (None, None, EventType.DELETED)),
        (lambda: writer.create(path, b"again"), (b"again", 0, EventType.CREATED)),
    ]
    for i, (action, expected) in enumerate(steps):
        action()
        wait_until(lambda: len(seen) == i + 2, what=f"DataWatch call after step {i}")
        assert seen[-1] == expected, seen
    assert seen[0] == (None, None, None)
    time.sleep(0.1)
    assert len(seen) == len(steps) + 1, f"unexpected extra callbacks: {seen}"


def test_children_watch_sequence(make_client, base):
    writer, watcher = make_client(), make_client()
    path = base + "/cw"
    writer.create(path, makepath=True)
    seen = []
    ChildrenWatch(watcher, path, lambda children: seen.append(sorted(children)))
    wait_until(lambda: len(seen) == 1, what="initial ChildrenWatch call")
    expected = [[]]
    for action, children in [
        (lambda: writer.create(path + "/a"), ["a"]),
        (lambda: writer.create(path + "/b"), ["a", "b"]),
        (lambda: writer.set(path + "/a", b"data"), None),  # no child event for data change
        (lambda: writer.delete(path + "/a"), ["b"]),
        (lambda: writer.create(path + "/c", ephemeral=True), ["b", "c"]),
    ]:
        action()
        if children is not None:
            expected.append(children)
        wait_until(lambda: len(seen) >= len(expected), what=f"children {children}")
        assert seen == expected
    time.sleep(0.1)
    assert seen == expected


def test_raw_watch_events_order(make_client, base):
    writer, w = make_client(), make_client()
    writer.create(base + "/x", b"0", makepath=True)
    caught_up(w, base)
    events = []
    rec = events.append
    assert w.exists(base + "/new", watch=rec) is None  # exists on a missing node arms a watch
    w.get(base + "/x", watch=rec)
    w.get_children(base, watch=rec)
    with pytest.raises(NoNodeError):
        w.get(base + "/missing", watch=rec)  # getData on a missing node arms nothing
    writer.create(base + "/missing")
    writer.set(base + "/x", b"1")
    writer.set(base + "/x", b"2")  # one-shot: no second event
    writer.create(base + "/new")
    caught_up(w, base).exists(base + "/new", watch=rec)
    writer.delete(base + "/new")
    wait_until(lambda: len(events) >= 4, what="4 watch events")
    time.sleep(0.2)
    assert [(e.type, e.path) for e in events] == [
        (EventType.CHILD, base),
        (EventType.CHANGED, base + "/x"),
        (EventType.CREATED, base + "/new"),
        (EventType.DELETED, base + "/new"),
    ]


# ------------------------------------------------------------- Transactions


def test_transaction_commits_all(client, base):
    client.create(base + "/a", b"a0", makepath=True)
    tx = client.transaction()
    tx.create(base + "/b", b"b0")
    tx.set_data(base + "/a", b"a1", version=0)
    tx.check(base + "/a", 1)
    tx.create(base + "/b/s-", b"", sequence=True)
    tx.create(base + "/e", b"", ephemeral=True)
    tx.delete(base + "/e")
    results = tx.commit()
    assert results[0] == base + "/b"
    assert results[1].version == 1 and results[1].dataLength == 2
    assert results[2:] == [True, base + "/b/s-0000000000", base + "/e", True]
    assert client.get(base + "/a")[0] == b"a1"
    assert client.get_children(base + "/b") == ["s-0000000000"]
    assert client.exists(base + "/e") is None


@pytest.mark.parametrize(
    "failing_at, build, error",
    [
        (1, lambda tx, b: (tx.create(b + "/new"), tx.set_data(b + "/a", b"x", version=5),
                           tx.delete(b + "/a"), tx.check(b + "/a", 0)), BadVersionError),
        (0, lambda tx, b: (tx.create(b + "/nope/child"), tx.create(b + "/new"),
                           tx.delete(b + "/a")), NoNodeError),
        (2, lambda tx, b: (tx.create(b + "/new"), tx.set_data(b + "/a", b"x"),
                           tx.create(b + "/a")), NodeExistsError),
        (2, lambda tx, b: (tx.create(b + "/new"), tx.create(b + "/new/c"),
                           tx.delete(b + "/new"), tx.create(b + "/z")), NotEmptyError),
        (1, lambda tx, b: (tx.create(b + "/eph", ephemeral=True), tx.create(b + "/eph/c")),
         NoChildrenForEphemeralsError),
        (3, lambda tx, b: (tx.create(b + "/new"), tx.check(b + "/a", 0), tx.delete(b + "/new"),
                           tx.check(b + "/new", 0)), NoNodeError),
    ],
    ids=["badversion", "first-op-nonode", "last-op-exists", "notempty", "ephemeral-parent",
         "check-after-delete"],
)
def test_transaction_all_or_nothing(make_client, base, failing_at, build, error):
    client, observer = make_client(), make_client()
    client.create(base + "/a", b"a0", makepath=True)
    before = sorted(client.get_children(base))
    _, stat_before = client.get(base + "/a")
    caught_up(observer, base)
    fired = []
    observer.get_children(base, watch=fired.append)
    observer.get(base + "/a", watch=fired.append)

    tx = client.transaction()
    build(tx, base)
    results = tx.commit()
    n = len(tx.operations)
    assert len(results) == n
    # ZooKeeper: ops before the failing one RolledBack (0), the failing one its error,
    # ops after it RuntimeInconsistency (-2)
    expected = [RolledBackError] * failing_at + [error] + [RuntimeInconsistency] * (n - failing_at - 1)
    assert [type(r) for r in results] == expected
    # nothing happened
    assert sorted(client.get_children(base)) == before
    data, stat_after = client.get(base + "/a")
    assert data == b"a0" and stat_after == stat_before
    observer.exists("/")  # any event due would have arrived before this reply
    time.sleep(0.05)
    assert fired == []


def test_transaction_sequence_counter_not_consumed_by_failure(client, base):
    client.create(base + "/p", makepath=True)
    tx = client.transaction()
    tx.create(base + "/p/s-", sequence=True)
    tx.check(base + "/p", 42)
    assert [type(r) for r in tx.commit()] == [RolledBackError, BadVersionError]
    assert client.create(base + "/p/s-", sequence=True) == base + "/p/s-0000000000"
    assert client.get(base + "/p")[1].cversion == 1


# ---------------------------------------------------- Ephemerals, sequentials


def test_ephemeral_nodes_die_with_session(make_client, base):
    owner, observer = make_client(), make_client()
    owner.create(base + "/keep", makepath=True)
    owner.create(base + "/eph", b"e", ephemeral=True)
    owner.create(base + "/keep/eph-", ephemeral=True, sequence=True)
    _, stat = caught_up(observer, base).get(base + "/eph")
    assert stat.ephemeralOwner == owner.client_id[0]
    assert observer.get(base + "/keep")[1].ephemeralOwner == 0
    with pytest.raises(NoChildrenForEphemeralsError):
        owner.create(base + "/eph/child")
    events = []
    observer.exists(base + "/eph", watch=events.append)
    observer.get_children(base + "/keep", watch=events.append)

    owner.stop()
    assert caught_up(observer, base).exists(base + "/eph") is None
    assert observer.get_children(base + "/keep") == []
    assert sorted(observer.get_children(base)) == ["keep"]
    wait_until(lambda: len(events) == 2, what="deleted + child events")
    assert sorted((e.type, e.path) for e in events) == sorted(
        [(EventType.DELETED, base + "/eph"), (EventType.CHILD, base + "/keep")]
    )


def test_sequential_naming(client, base):
    p = base + "/seq"
    client.create(p, makepath=True)
    names = [client.create(p + "/n-", b"", sequence=True) for _ in range(3)]
    assert names == [p + "/n-0000000000", p + "/n-0000000001", p + "/n-0000000002"]
    # ZooKeeper 3.8 keeps a per-parent count of child *creations*; the suffix is that count,
    # %010d. The cversion clients see is 2 * creations - current children (each create and
    # each delete counts once), so deletes advance the visible cversion but not the suffix.
    client.create(p + "/plain")
    client.delete(p + "/plain")
    client.delete(p + "/n-0000000000")
    assert client.get(p)[1].cversion == 6  # 4 creates, 2 deletes
    assert client.create(p + "/n-", sequence=True) == p + "/n-0000000004"
    assert client.create(p + "/e-", ephemeral=True, sequence=True) == p + "/e-0000000005"
    # an empty prefix: the name is just the 10 digits
    assert client.create(p + "/", sequence=True) == p + "/0000000006"
    # a data change on a child touches neither the suffix nor cversion
    client.set(p + "/n-0000000001", b"x")
    assert client.create(p + "/n-", sequence=True) == p + "/n-0000000007"
    children = ["n-0000000001", "n-0000000002", "n-0000000004", "e-0000000005", "0000000006",
                "n-0000000007"]
    assert sorted(client.get_children(p)) == sorted(children)
    _, stat = client.get(p)
    assert (stat.cversion, stat.numChildren) == (2 * 8 - 6, 6)
    # a failed sequential create (missing parent) does not produce a node
    with pytest.raises(NoNodeError):
        client.create(p + "/missing/n-", sequence=True)
    # a sequential create whose parent is ephemeral fails
    client.create(p + "/eph", ephemeral=True)
    with pytest.raises(NoChildrenForEphemeralsError):
        client.create(p + "/eph/n-", sequence=True)


# ---------------------------------------------------------------- Containers


def test_container_reaped_after_last_child_goes(make_client, base):
    client = make_client()
    client.create(base, makepath=True)
    path, stat = create_container(client, base + "/used")
    assert path == base + "/used"
    # ZooKeeper reports ephemeralOwner 0 for containers
    assert (stat.version, stat.ephemeralOwner, stat.numChildren) == (0, 0, 0)
    create_container(client, base + "/never-used")
    client.create(base + "/used/child")
    client.create(base + "/used/eph", ephemeral=True)
    with pytest.raises(NotEmptyError):
        client.delete(base + "/used")
    client.delete(base + "/used/child")
    time.sleep(1.5)
    assert client.exists(base + "/used") is not None, "container reaped while it still had a child"
    client.delete(base + "/used/eph")
    wait_until(lambda: client.exists(base + "/used") is None, timeout=15,
               what="the emptied container to be reaped")
    # a container that never had a child is left alone
    assert client.exists(base + "/never-used") is not None
    with pytest.raises(NodeExistsError):
        create_container(client, base + "/never-used")


def test_container_flag_semantics(make_client, base):
    """In ZooKeeper 3.8 the createContainer opcode makes a container whatever the flags say,
    and flag 4 on a plain create/create2 makes a persistent node; invalid flags are BadArguments."""
    client = make_client()
    client.create(base, makepath=True)
    create_container(client, base + "/op19-flag0", opcode=19, flags=0)
    create_container(client, base + "/op15-flag4", opcode=15, flags=4)
    create_container(client, base + "/op1-flag4", opcode=1, flags=4)
    for flags in (5, 6, 7, 8, -1):
        with pytest.raises(BadArgumentsError):
            create_container(client, base + f"/bad{flags}", opcode=15, flags=flags)
    for p in ("op19-flag0", "op15-flag4", "op1-flag4"):
        client.create(f"{base}/{p}/x")
        client.delete(f"{base}/{p}/x")
    wait_until(lambda: client.exists(base + "/op19-flag0") is None, timeout=15,
               what="the opcode-19 container to be reaped")
    assert sorted(client.get_children(base)) == ["op1-flag4", "op15-flag4"]


# ----------------------------------------------------------------------- ACLs


def _owner_and_stranger(make_client, base):
    owner, stranger = make_client(), make_client()
    owner.add_auth("digest", "owner:pw")
    owner.create(base, makepath=True)
    return owner, stranger


OWNER_ONLY = [make_digest_acl("owner", "pw", all=True)]


def test_acl_enforcement(make_client, base):
    owner, stranger = _owner_and_stranger(make_client, base)
    owner.create(base + "/secret", b"s", acl=OWNER_ONLY)
    owner.create(base + "/ro", b"r", acl=[ACL(Permissions.READ, ANYONE_ID_UNSAFE)] + OWNER_ONLY)
    caught_up(stranger, base)
    with pytest.raises(NoAuthError):
        stranger.get(base + "/secret")
    with pytest.raises(NoAuthError):
        stranger.get_children(base + "/secret")
    with pytest.raises(NoAuthError):
        stranger.set(base + "/secret", b"x")
    with pytest.raises(NoAuthError):
        stranger.create(base + "/secret/child")
    with pytest.raises(NoAuthError):
        stranger.set_acls(base + "/secret", OPEN_ACL_UNSAFE)
    assert stranger.get(base + "/ro")[0] == b"r"
    with pytest.raises(NoAuthError):
        stranger.set(base + "/ro", b"x")
    # deleting needs DELETE on the parent, not on the node
    stranger.delete(base + "/secret")
    assert caught_up(owner, base).exists(base + "/secret") is None
    # an ACL with the "auth" scheme is InvalidACL for a session with no identity
    from kazoo.exceptions import InvalidACLError
    from kazoo.security import Id
    with pytest.raises(InvalidACLError):
        stranger.create(base + "/mine", acl=[ACL(Permissions.ALL, Id("auth", ""))])
    owner.create(base + "/mine", acl=[ACL(Permissions.ALL, Id("auth", ""))])
    acls, _ = owner.get_acls(base + "/mine")
    assert [(a.perms, a.id.scheme, a.id.id) for a in acls] == [
        (31, "digest", OWNER_ONLY[0].id.id)]


def test_exists_needs_no_read_permission(make_client, base):
    owner, stranger = _owner_and_stranger(make_client, base)
    owner.create(base + "/secret", b"abc", acl=OWNER_ONLY)
    stat = caught_up(stranger, base).exists(base + "/secret")
    assert stat is not None and stat.dataLength == 3


def test_watch_events_filtered_by_read_acl(make_client, base):
    """ZooKeeper drops a notification for a session without READ on the znode
    (NIOServerCnxn.process "filtered by ACL"; the CVE-2024-23944 fix, in 3.8.4+, 3.9.2+ and
    Debian's 3.8.0-11+deb12u2). Child events are checked against the parent's ACL."""
    owner, stranger = _owner_and_stranger(make_client, base)
    owner.create(base + "/secret", b"s")
    caught_up(stranger, base)
    seen = []
    rec = seen.append
    assert stranger.get(base + "/secret", watch=rec)[0] == b"s"
    assert stranger.exists(base + "/hidden", watch=rec) is None
    assert stranger.exists(base + "/public", watch=rec) is None
    assert stranger.get_children(base, watch=rec) == ["secret"]
    owner.set_acls(base + "/secret", OWNER_ONLY)  # setACL fires no watch
    owner.set(base + "/secret", b"changed")  # stranger may no longer read it: no event
    owner.create(base + "/hidden", acl=OWNER_ONLY)  # NodeCreated filtered too
    owner.create(base + "/public")  # open parent: child event; open node: created event
    # the filtered event still used up the stranger's one-shot watch on /secret: after the ACL
    # is opened again, a further change brings no event either
    owner.set_acls(base + "/secret", OPEN_ACL_UNSAFE)
    owner.set(base + "/secret", b"again")
    stranger.exists("/")
    wait_until(lambda: len(seen) >= 2, what="the two permitted events")
    time.sleep(0.2)
    got = [(e.type, e.path[len(base):]) for e in seen]
    assert got == [(EventType.CHILD, ""), (EventType.CREATED, "/public")], f"events (under base): {got}"


def test_watch_acl_filter_inside_a_multi(make_client, base):
    """A multi that sets then deletes a node: the one-shot data watch is used up by the
    NodeDataChanged, which a session without READ on the node does not receive, so it hears
    nothing; a session that may read it gets NodeDataChanged only."""
    owner, stranger = _owner_and_stranger(make_client, base)
    owner.create(base + "/closed", b"c", acl=OWNER_ONLY)
    owner.create(base + "/open", b"o")
    caught_up(stranger, base)
    seen = []
    rec = seen.append
    assert stranger.exists(base + "/closed", watch=rec) is not None
    assert stranger.exists(base + "/open", watch=rec) is not None
    for name in ("/closed", "/open"):
        tx = owner.transaction()
        tx.set_data(base + name, b"changed")
        tx.delete(base + name)
        results = tx.commit()
        assert len(results) == 2 and not any(isinstance(r, Exception) for r in results), results
    stranger.exists("/")
    wait_until(lambda: len(seen) >= 1, what="the permitted event")
    time.sleep(0.2)
    got = [(e.type, e.path[len(base):]) for e in seen]
    assert got == [(EventType.CHANGED, "/open")], f"events (under base): {got}"


# ------------------------------------------------- Limits and connections

JUTE_MAXBUFFER = 0xFFFFF  # 1,048,575: the largest request frame the server accepts


def test_request_size_limit(make_client, base):
    client = make_client()
    client.create(base, makepath=True)
    sid = client.client_id[0]
    path = base + "/big"
    header = 8  # xid + opcode; the 4-byte frame length is not counted
    overhead = header + len(Create(path, b"", OPEN_ACL_UNSAFE, 0).serialize())
    biggest = JUTE_MAXBUFFER - overhead
    assert client.create(path, b"x" * biggest) == path
    data, stat = client.get(path)
    assert stat.dataLength == biggest and data == b"x" * biggest
    from kazoo.exceptions import ConnectionLoss
    set_overhead = header + len(SetData(path, b"", -1).serialize())
    with pytest.raises(ConnectionLoss):  # a frame one byte too long: the server drops the connection
        client.set(path, b"y" * (JUTE_MAXBUFFER + 1 - set_overhead))
    wait_until(lambda: client.connected, what="reconnect after the oversized request")
    assert client.client_id[0] == sid  # same session, nothing changed
    assert client.get(path)[1].version == 0
    with pytest.raises(ConnectionLoss):
        client.create(base + "/bi2", b"z" * (biggest + 1))
    wait_until(lambda: client.connected, what="reconnect after the oversized request")
    assert client.exists(base + "/bi2") is None


def test_session_resumes_after_connection_drop(make_client, base):
    import socket

    client, observer = make_client(), make_client()
    client.create(base + "/eph", ephemeral=True, makepath=True)
    sid = client.client_id[0]
    states = []
    client.add_listener(states.append)
    client._connection._socket.shutdown(socket.SHUT_RDWR)
    wait_until(lambda: states[-2:] == ["SUSPENDED", "CONNECTED"], what="reconnect")
    assert client.client_id[0] == sid
    assert caught_up(observer, base).exists(base + "/eph").ephemeralOwner == sid
    client.set(base + "/eph", b"still mine")
    assert caught_up(observer, base).get(base + "/eph")[0] == b"still mine"


def test_client_ahead_of_server_is_refused(make_client, base):
    """A client that has seen a zxid the server has not must not connect (no time travel)."""
    import socket

    client = make_client()
    client.create(base + "/eph", ephemeral=True, makepath=True)
    sid = client.client_id[0]
    states = []
    client.add_listener(states.append)
    real = client.last_zxid
    client.last_zxid = real + 1_000_000
    client._connection._socket.shutdown(socket.SHUT_RDWR)
    wait_until(lambda: "SUSPENDED" in states, what="the connection drop")
    time.sleep(1.5)  # several reconnect attempts
    assert states == ["SUSPENDED"], f"connected although ahead of the server: {states}"
    client.last_zxid = real
    wait_until(lambda: client.connected, what="reconnect with an honest zxid")
    assert client.client_id[0] == sid
    assert client.exists(base + "/eph") is not None
