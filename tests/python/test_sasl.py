"""SASL DIGEST-MD5 authentication, against ZooKeeper and rookery configured the same way
(conftest: authProvider.1=SASLAuthenticationProvider, a JAAS Server section with
user_bob / user_alice).

Clients: kazoo with sasl_options (pure-sasl), a raw socket speaking the protocol (to see the
exact bytes of a failure), and zkCli.sh with a JAAS Client section in CLIENT_JVMFLAGS.
"""

import os
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.protocol.serialization import int_struct, read_string
from kazoo.protocol.states import KazooState, KeeperState
from kazoo.security import ACL, Id, Permissions

from conftest import SASL_USERS, check_alive, recv_exact

TIMEOUT = 15.0
ZKCLI = "/usr/share/zookeeper/bin/zkCli.sh"


class WhoAmI:
    """whoAmI (107): kazoo has no call for it. (Not an empty namedtuple: kazoo ignores the
    reply of a falsy request object.)"""

    type = 107

    def serialize(self):
        return b""

    @classmethod
    def deserialize(cls, buf, offset):
        (n,) = int_struct.unpack_from(buf, offset)
        offset += int_struct.size
        out = []
        for _ in range(n):
            scheme, offset = read_string(buf, offset)
            user, offset = read_string(buf, offset)
            out.append((scheme, user))
        return out


def whoami(client):
    ar = client.handler.async_result()
    client._call(WhoAmI(), ar)
    return ar.get(timeout=TIMEOUT)  # in the server's order (ZooKeeper: hash-set order)


@pytest.fixture
def sasl_client(sasl_server):
    made = []

    def make(user=None, password=None, **kw):
        opts = None
        if user is not None:
            opts = {"mechanism": "DIGEST-MD5", "username": user, "password": password}
        c = KazooClient(hosts=sasl_server.hosts, timeout=TIMEOUT, sasl_options=opts, **kw)
        made.append(c)
        c.start(timeout=TIMEOUT)
        return c

    yield make
    for c in made:
        try:
            c.stop()
            c.close()
        except Exception:  # noqa: BLE001
            pass


def sasl_acl(user, perms=Permissions.ALL):
    return ACL(perms, Id("sasl", user))


def test_sasl_login_and_whoami(sasl_client):
    bob = sasl_client("bob", SASL_USERS["bob"])
    assert whoami(bob) == [("sasl", "bob"), ("ip", "127.0.0.1")]
    bob.add_auth("digest", "u:p")
    assert whoami(bob) == [("sasl", "bob"), ("ip", "127.0.0.1"), ("digest", "u")]
    anon = sasl_client()
    assert whoami(anon) == [("ip", "127.0.0.1")]


def test_sasl_acl_is_enforced(sasl_client, base):
    bob = sasl_client("bob", SASL_USERS["bob"])
    alice = sasl_client("alice", SASL_USERS["alice"])
    anon = sasl_client()
    bob.ensure_path(base)
    bob.create(f"{base}/secret", b"for bob", acl=[sasl_acl("bob", Permissions.READ | Permissions.ADMIN)])
    assert bob.get(f"{base}/secret")[0] == b"for bob"
    for other in (alice, anon):
        with pytest.raises(NoAuthError):
            other.get(f"{base}/secret")
    # A digest user of the same name is someone else.
    anon.add_auth("digest", "bob:bobsecret")
    with pytest.raises(NoAuthError):
        anon.get(f"{base}/secret")
    # READ only: bob cannot write either.
    with pytest.raises(NoAuthError):
        bob.set(f"{base}/secret", b"x")
    # The auth scheme expands to the session's sasl id.
    bob.create(f"{base}/mine", b"", acl=[ACL(Permissions.ALL, Id("auth", ""))])
    acls, _ = bob.get_acls(f"{base}/mine")
    assert [(a.perms, a.id.scheme, a.id.id) for a in acls] == [(31, "sasl", "bob")]
    with pytest.raises(NoAuthError):
        alice.get(f"{base}/mine")


def test_sasl_super_user(sasl_client, base):
    """zoo.cfg superUser=root: the SASL user root also holds super and bypasses ACLs."""
    bob = sasl_client("bob", SASL_USERS["bob"])
    bob.ensure_path(base)
    bob.create(f"{base}/b", b"bob only", acl=[sasl_acl("bob", Permissions.READ)])
    root = sasl_client("root", SASL_USERS["root"])
    assert root.get(f"{base}/b")[0] == b"bob only"
    root.set(f"{base}/b", b"changed by root")
    assert whoami(root) == [("sasl", "root"), ("super", ""), ("ip", "127.0.0.1")]
    assert ("super", "") not in whoami(bob)


def raw_sasl(server, user, password, max_steps=3, extra_token=False):
    """Connects, then runs DIGEST-MD5 by hand. Returns a list of (xid, zxid, err, body)
    replies, and whether the server then closed the connection (recv gives EOF)."""
    import puresasl.client

    def frame(b):
        return struct.pack(">i", len(b)) + b

    def recv_frame(s):
        head = recv_exact(s, 4)
        if head is None:
            return None
        return recv_exact(s, struct.unpack(">i", head)[0])

    replies = []
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as s:
        passwd = struct.pack(">i", 16) + b"\0" * 16
        s.sendall(frame(struct.pack(">iqiq", 0, 0, 10000, 0) + passwd + b"\0"))
        assert recv_frame(s) is not None
        cli = puresasl.client.SASLClient("zk-sasl-md5", service="zookeeper", mechanism="DIGEST-MD5",
                                         username=user, password=password)
        challenge = None
        for xid in range(1, max_steps + 1):  # DIGEST-MD5 takes two round trips
            token = cli.process(challenge) or b""
            s.sendall(frame(struct.pack(">ii", xid, 102) + struct.pack(">i", len(token)) + token))
            reply = recv_frame(s)
            assert reply is not None, "connection closed before the reply"
            x, zxid, err = struct.unpack(">iqi", reply[:16])
            replies.append((x, zxid, err, reply[16:]))
            if err:
                break
            (n,) = struct.unpack(">i", reply[16:20])
            challenge = reply[20:20 + n]
            if challenge.startswith(b"rspauth="):
                cli.process(challenge)  # checks the server's rspauth
                assert cli.complete
                if extra_token:  # one more (empty) token after the exchange completed
                    s.sendall(frame(struct.pack(">ii", xid + 1, 102) + struct.pack(">i", 0)))
                    reply = recv_frame(s)
                    assert reply is not None, "connection closed before the reply"
                    replies.append(struct.unpack(">iqi", reply[:16]) + (reply[16:],))
                break
        s.settimeout(3.0)
        try:
            closed = s.recv(1) == b""
        except socket.timeout:
            closed = False
    return replies, closed


@pytest.mark.parametrize("user,password", [("bob", "wrong"), ("eve", "whatever")],
                         ids=["wrong-password", "unknown-user"])
def test_failed_sasl_answers_auth_failed_and_closes(sasl_server, user, password):
    """ZooKeeper 3.8 (ZooKeeperServer.processSasl): AuthFailed (-115), zxid 0, a
    SetSASLResponse with a null token (-1), then the connection is closed."""
    replies, closed = raw_sasl(sasl_server, user, password)
    assert len(replies) == 2, replies
    assert replies[0][:3] == (1, 0, 0)
    assert b'realm="zk-sasl-md5"' in replies[0][3]
    assert replies[1] == (2, 0, -115, b"\xff\xff\xff\xff")
    assert closed


def test_sasl_token_after_completion_fails_and_closes(sasl_server):
    """ZooKeeper 3.8: a third token (the exchange is over) gets the failure answer too."""
    replies, closed = raw_sasl(sasl_server, "bob", SASL_USERS["bob"], extra_token=True)
    assert [r[:3] for r in replies] == [(1, 0, 0), (2, 0, 0), (3, 0, -115)], replies
    assert replies[2][3] == b"\xff\xff\xff\xff"
    assert closed


def test_raw_sasl_success_keeps_the_connection(sasl_server):
    replies, closed = raw_sasl(sasl_server, "bob", SASL_USERS["bob"])
    assert [r[:3] for r in replies] == [(1, 0, 0), (2, 0, 0)]
    assert not closed


def test_kazoo_wrong_password_does_not_connect(sasl_server):
    c = KazooClient(hosts=sasl_server.hosts, timeout=3.0,
                    sasl_options={"mechanism": "DIGEST-MD5", "username": "bob", "password": "nope"})
    try:
        # kazoo reports CONNECTED on the connect response (start() returns), then the SASL
        # step fails: it logs "AUTH_FAILED closing", goes LOST and does not reconnect.
        lost = threading.Event()
        c.add_listener(lambda st: lost.set() if st == KazooState.LOST else None)
        c.start(timeout=5.0)
        assert lost.wait(10.0), c.client_state
        assert c.client_state in (KeeperState.AUTH_FAILED, KeeperState.CLOSED)
        time.sleep(1.0)
        assert not c.connected, "kazoo reconnected after AUTH_FAILED"
    finally:
        c.stop()
        c.close()
    check_alive(sasl_server)


def test_sasl_without_sasl_config_is_auth_failed_and_stays_open(server):
    """The plain servers (no JAAS file): the connection stays open on both. ZooKeeper 3.8
    has no SASL server for it and answers OK with a null token (a client then fails on its
    own); rookery answers AuthFailed instead, a clear error (a deliberate difference)."""
    replies, closed = raw_sasl(server, "bob", "bobsecret", max_steps=1)
    assert not closed
    if server.kind == "zk":
        assert replies == [(1, 0, 0, b"\xff\xff\xff\xff")]
    else:
        assert [(x, err, body) for x, _, err, body in replies] == [(1, -115, b"")]


def zkcli(server, tmp_path, user, password, *command):
    if not os.path.exists(ZKCLI) or shutil.which("java") is None:
        pytest.fail(f"{ZKCLI} or java missing: apt-get install zookeeper")
    jaas = tmp_path / f"client-{user}.jaas"
    jaas.write_text(
        "Client {\n"
        "    org.apache.zookeeper.server.auth.DigestLoginModule required\n"
        f'    username="{user}"\n'
        f'    password="{password}";\n'
        "};\n"
    )
    env = {**os.environ,
           "CLIENT_JVMFLAGS": f"-Djava.security.auth.login.config={jaas} -Xmx256m",
           "ZOO_LOG_DIR": str(tmp_path), "ZOO_LOG4J_PROP": "WARN,CONSOLE"}
    return subprocess.run([ZKCLI, "-server", server.hosts, *command], env=env,
                          capture_output=True, text=True, timeout=90)


def test_zkcli_sasl_reads_a_sasl_protected_node(sasl_server, sasl_client, base, tmp_path):
    bob = sasl_client("bob", SASL_USERS["bob"])
    bob.ensure_path(base)
    bob.create(f"{base}/z", b"zkcli-can-read", acl=[sasl_acl("bob", Permissions.READ)])
    ok = zkcli(sasl_server, tmp_path, "bob", SASL_USERS["bob"], "get", f"{base}/z")
    assert "zkcli-can-read" in ok.stdout, (ok.stdout, ok.stderr)
    assert "state:SaslAuthenticated" in ok.stdout, ok.stdout
    other = zkcli(sasl_server, tmp_path, "alice", SASL_USERS["alice"], "get", f"{base}/z")
    assert "zkcli-can-read" not in other.stdout
    assert "Insufficient permission" in other.stdout + other.stderr, (other.stdout, other.stderr)
    wrong = zkcli(sasl_server, tmp_path, "bob", "wrong-password", "get", f"{base}/z")
    assert "zkcli-can-read" not in wrong.stdout, (wrong.stdout, wrong.stderr)
    assert "state:AuthFailed" in wrong.stdout, wrong.stdout
    assert "KeeperErrorCode = AuthFailed" in wrong.stdout + wrong.stderr, (wrong.stdout, wrong.stderr)
    check_alive(sasl_server)


def test_rookery_jaas_flag(tmp_path_factory):
    """rookery's own spelling, --jaas-config, without zoo.cfg: SASL login works, but the sasl
    ACL scheme needs authProvider.N as in ZooKeeper (InvalidACL without it)."""
    from conftest import start_rookery, targets, write_server_jaas
    from kazoo.exceptions import InvalidACLError

    if "rookery" not in targets():
        pytest.skip("ROOKERY_TESTS_TARGETS excludes rookery")
    workdir = tmp_path_factory.mktemp("rookery-jaas-flag")
    jaas = write_server_jaas(workdir / "jaas.conf")
    srv = start_rookery(workdir, ["--jaas-config", str(jaas)])
    c = KazooClient(hosts=srv.hosts, timeout=TIMEOUT,
                    sasl_options={"mechanism": "DIGEST-MD5", "username": "alice",
                                  "password": SASL_USERS["alice"]})
    try:
        c.start(timeout=TIMEOUT)
        assert whoami(c) == [("sasl", "alice"), ("ip", "127.0.0.1")]
        with pytest.raises(InvalidACLError):
            c.create("/s", b"", acl=[sasl_acl("alice")])
    finally:
        c.stop()
        c.close()
        srv.stop()


def test_sasl_acl_without_the_provider_is_invalid(client, base):
    """The plain servers have no authProvider: `sasl:` ACLs are InvalidACL on both."""
    from kazoo.exceptions import InvalidACLError

    client.ensure_path(base)
    with pytest.raises(InvalidACLError):
        client.create(f"{base}/s", b"", acl=[sasl_acl("bob")])


def test_sasl_acl_with_the_provider_is_valid_unauthenticated(sasl_client, base):
    """With the provider, a session without SASL may still set a sasl ACL (and then cannot
    read the node)."""
    anon = sasl_client()
    anon.ensure_path(base)
    anon.create(f"{base}/s", b"x", acl=[sasl_acl("bob", Permissions.READ)])
    with pytest.raises(NoAuthError):
        anon.get(f"{base}/s")
    bob = sasl_client("bob", SASL_USERS["bob"])
    assert bob.get(f"{base}/s")[0] == b"x"


def test_non_empty_first_sasl_token_is_ignored(sasl_server):
    """DIGEST-MD5 has no initial response; ZooKeeper's JDK server ignores a non-empty first
    token and sends its challenge (observed with ZooKeeper 3.8 on JDK 17)."""
    with socket.create_connection(("127.0.0.1", sasl_server.port), timeout=TIMEOUT) as s:
        passwd = struct.pack(">i", 16) + b"\0" * 16
        body = struct.pack(">iqiq", 0, 0, 10000, 0) + passwd + b"\0"
        s.sendall(struct.pack(">i", len(body)) + body)
        (n,) = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))
        s.recv(n, socket.MSG_WAITALL)
        token = b'username="bob"'
        req = struct.pack(">ii", 1, 102) + struct.pack(">i", len(token)) + token
        s.sendall(struct.pack(">i", len(req)) + req)
        (n,) = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))
        reply = s.recv(n, socket.MSG_WAITALL)
    assert struct.unpack(">iqi", reply[:16]) == (1, 0, 0), reply
    assert b'realm="zk-sasl-md5",nonce="' in reply[20:], reply
