"""TLS on the client port (secureClientPort) from PEM files, and the x509 ACL scheme.

The same zoo.cfg keys configure Apache ZooKeeper 3.8 (Netty connection factory, PEM key and
trust stores, X509AuthenticationProvider) and rookery; the tests then run against both:
kazoo with use_ssl=True, zkCli with zookeeper.client.secure=true, an x509 ACL that one client
certificate may read and another may not, and a client without a certificate being refused.
rookery only: certificates reloaded when the files change, and clear start-up errors for a bad
or missing file. Certificates are generated at run time with Debian's openssl; no key is
committed.
"""

import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.security import ACL, Id, Permissions

from conftest import (
    CLIENT_TIMEOUT,
    NETTY_JARS,
    ZK_JAR,
    _tail,
    free_port,
    rookery_binary,
    start_rookery,
    start_zookeeper,
    targets,
)

X509_PROVIDER = "org.apache.zookeeper.server.auth.X509AuthenticationProvider"
# openssl -subj lists RDNs in encoding order; RFC 2253 (Java's X500Principal.getName(), which
# ZooKeeper's X509AuthenticationProvider uses) prints the last one first.
ALICE_DN = "CN=alice,OU=clients,O=rookery"
BOB_DN = "CN=bob,OU=clients,O=rookery"


def openssl(*args, cwd):
    openssl_bin = shutil.which("openssl")
    assert openssl_bin, "openssl missing: apt-get install -y openssl"
    subprocess.run([openssl_bin, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_cert(d: Path, name, subject, ca, server=False):
    """A key and a CA-signed certificate; returns (cert, key, pem with both)."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", subject, cwd=d)
    ext = d / f"{name}.ext"
    if server:
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                       "extendedKeyUsage=serverAuth,clientAuth\n")
    else:
        ext.write_text("extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-sha256", "-extfile", ext.name, "-out",
            f"{name}.crt", cwd=d)
    pem = d / f"{name}.pem"
    pem.write_text((d / f"{name}.key").read_text() + (d / f"{name}.crt").read_text())
    return d / f"{name}.crt", d / f"{name}.key", pem


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-days", "2", "-subj", "/O=rookery/CN=rookery test CA", cwd=d)
    c = {"dir": d, "ca": d / "ca.crt"}
    c["server"] = make_cert(d, "server", "/O=rookery/CN=localhost", "ca", server=True)
    c["server2"] = make_cert(d, "server2", "/O=rookery/CN=reloaded", "ca", server=True)
    c["alice"] = make_cert(d, "alice", "/O=rookery/OU=clients/CN=alice", "ca")
    c["bob"] = make_cert(d, "bob", "/O=rookery/OU=clients/CN=bob", "ca")
    return c


def tls_cfg(certs, secure_port, key_store=None, client_auth="need"):
    return [
        f"secureClientPort={secure_port}",
        f"ssl.keyStore.location={key_store or certs['server'][2]}",
        "ssl.keyStore.type=PEM",
        f"ssl.trustStore.location={certs['ca']}",
        "ssl.trustStore.type=PEM",
        f"ssl.clientAuth={client_auth}",
        f"authProvider.x509={X509_PROVIDER}",
    ]


class TlsServer:
    def __init__(self, srv, secure_port, workdir):
        self.srv, self.secure_port, self.workdir = srv, secure_port, workdir
        self.kind = srv.kind

    @property
    def hosts(self):
        return f"127.0.0.1:{self.secure_port}"


def start_tls(kind, workdir: Path, certs, key_store=None, client_auth="need"):
    secure_port = free_port()
    lines = tls_cfg(certs, secure_port, key_store, client_auth)
    if kind == "zk":
        srv = start_zookeeper(
            workdir, ["serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
                      *lines], extra_classpath=NETTY_JARS)
    else:
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = workdir / "zoo.cfg"
        cfg.write_text("\n".join(lines) + "\n")
        srv = start_rookery(workdir, ["--config", str(cfg)])
    wait_port(secure_port, srv)
    return TlsServer(srv, secure_port, workdir)


def wait_port(port, srv, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{srv.kind} secure port {port} not open; log:\n{_tail(srv.log_path)}")


@pytest.fixture(scope="module", params=targets())
def tls_server(request, tmp_path_factory, certs):
    s = start_tls(request.param, tmp_path_factory.mktemp(f"tls-{request.param}"), certs)
    yield s
    s.srv.stop()


def kazoo_tls(server, who, certs, **kw):
    cert, key, _ = certs[who] if who else (None, None, None)
    return KazooClient(hosts=server.hosts, use_ssl=True, verify_certs=True,
                       ca=str(certs["ca"]), certfile=str(cert) if cert else None,
                       keyfile=str(key) if key else None, timeout=CLIENT_TIMEOUT, **kw)


def started(client, timeout=CLIENT_TIMEOUT):
    client.start(timeout=timeout)
    return client


def test_kazoo_over_tls(tls_server, certs):
    zk = started(kazoo_tls(tls_server, "alice", certs))
    try:
        path = f"/tls-kazoo-{os.getpid()}"
        zk.create(path, b"over tls")
        assert zk.get(path)[0] == b"over tls"
        zk.set(path, b"again")
        assert zk.get(path)[0] == b"again"
        zk.delete(path)
    finally:
        zk.stop()
        zk.close()


def test_x509_acl(tls_server, certs):
    alice = started(kazoo_tls(tls_server, "alice", certs))
    bob = started(kazoo_tls(tls_server, "bob", certs))
    try:
        path = f"/tls-acl-{os.getpid()}"
        only_alice = [ACL(Permissions.ALL, Id("x509", ALICE_DN))]
        alice.create(path, b"secret", acl=only_alice)
        assert alice.get(path)[0] == b"secret"
        with pytest.raises(NoAuthError):
            bob.get(path)
        # The `auth` scheme expands to the certificate's id.
        alice.create(path + "-auth", b"", acl=[ACL(Permissions.ALL, Id("auth", ""))])
        acl, _ = alice.get_acls(path + "-auth")
        assert [(a.id.scheme, a.id.id) for a in acl] == [("x509", ALICE_DN)]
        with pytest.raises(NoAuthError):
            bob.set(path + "-auth", b"x")
        alice.delete(path + "-auth")
        alice.delete(path)
    finally:
        for c in (alice, bob):
            c.stop()
            c.close()


def test_client_without_certificate_is_refused(tls_server, certs):
    # ssl.clientAuth=need: no session without a trusted certificate.
    zk = kazoo_tls(tls_server, None, certs, connection_retry={"max_tries": 1})
    try:
        with pytest.raises(KazooTimeoutError):
            zk.start(timeout=5)
    finally:
        zk.stop()
        zk.close()


def zkcli_tls(server, certs, who, *args, stdin=None):
    """zkCli (ZooKeeperMain, as zkCli.sh runs it) over TLS. zkCli.sh's classpath has only
    zookeeper.jar, and the Netty client socket TLS needs also wants all of Netty, so this
    runs the same class with Netty's jars added."""
    assert os.path.exists(ZK_JAR), f"{ZK_JAR} missing: install Debian's zookeeper package"
    cmd = [
        shutil.which("java") or "java",
        "-Dzookeeper.clientCnxnSocket=org.apache.zookeeper.ClientCnxnSocketNetty",
        "-Dzookeeper.client.secure=true",
        f"-Dzookeeper.ssl.keyStore.location={certs[who][2]}",
        "-Dzookeeper.ssl.keyStore.type=PEM",
        f"-Dzookeeper.ssl.trustStore.location={certs['ca']}",
        "-Dzookeeper.ssl.trustStore.type=PEM",
        "-cp", ":".join([ZK_JAR, *NETTY_JARS]),
        "org.apache.zookeeper.ZooKeeperMain",
        "-server", server.hosts, *args,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=90, input=stdin)
    return out.stdout + out.stderr


def test_zkcli_over_tls(tls_server, certs):
    path = f"/tls-zkcli-{os.getpid()}"
    out = zkcli_tls(tls_server, certs, "bob", stdin=f"create {path} hi\nget {path}\nwhoami\n"
                    f"delete {path}\nquit\n")
    assert f"Created {path}" in out, out
    assert "\nhi\n" in out, out
    assert f"x509: {BOB_DN}" in out, out


@pytest.fixture(scope="module", params=targets())
def tls_want_server(request, tmp_path_factory, certs):
    s = start_tls(request.param, tmp_path_factory.mktemp(f"tls-want-{request.param}"), certs,
                  client_auth="want")
    yield s
    s.srv.stop()


def test_client_auth_want(tls_want_server, certs):
    """ssl.clientAuth=want: a client without a certificate connects, unauthenticated beyond
    its address; one with a certificate is x509-authenticated."""
    path = f"/tls-want-{os.getpid()}"
    anonymous = started(kazoo_tls(tls_want_server, None, certs))
    alice = started(kazoo_tls(tls_want_server, "alice", certs))
    try:
        alice.create(path, b"mine", acl=[ACL(Permissions.ALL, Id("x509", ALICE_DN))])
        with pytest.raises(NoAuthError):
            anonymous.get(path)
        assert alice.get(path)[0] == b"mine"
        alice.delete(path)
    finally:
        for c in (anonymous, alice):
            c.stop()
            c.close()
    out = zkcli_tls(tls_want_server, certs, "bob", stdin="whoami\nquit\n")
    assert f"x509: {BOB_DN}" in out, out


# ----------------------------------------------------------------------------- rookery only


def peer_certificate(port, certs):
    context = ssl.create_default_context(cafile=str(certs["ca"]))
    context.load_cert_chain(str(certs["alice"][0]), str(certs["alice"][1]))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as s:
            return s.getpeercert()


def subject_cn(cert):
    return dict(x[0] for x in cert["subject"])["commonName"]


@pytest.mark.skipif("rookery" not in targets(), reason="rookery-only behaviour")
def test_certificates_reload_without_restart(tmp_path, certs):
    key_store = tmp_path / "server.pem"
    shutil.copy(certs["server"][2], key_store)
    s = start_tls("rookery", tmp_path / "srv", certs, key_store=key_store)
    zk = None
    try:
        assert subject_cn(peer_certificate(s.secure_port, certs)) == "localhost"
        zk = started(kazoo_tls(s, "alice", certs))
        zk.create("/before-reload", b"1")
        # Replace the file (write + rename, as cert tooling does).
        tmp = tmp_path / "server.pem.new"
        shutil.copy(certs["server2"][2], tmp)
        os.replace(tmp, key_store)
        deadline = time.monotonic() + 20
        cn = None
        while time.monotonic() < deadline:
            cn = subject_cn(peer_certificate(s.secure_port, certs))
            if cn == "reloaded":
                break
            time.sleep(0.3)
        assert cn == "reloaded", f"new connections still get {cn!r}; log:\n{_tail(s.srv.log_path)}"
        # The connection made before the reload keeps working.
        assert zk.get("/before-reload")[0] == b"1"
        # A broken replacement is refused and the reloaded certificate stays.
        key_store.write_text("not a pem file\n")
        time.sleep(2.5)
        assert subject_cn(peer_certificate(s.secure_port, certs)) == "reloaded"
        assert s.srv.proc.poll() is None
        assert "cannot be loaded" in s.srv.log_path.read_text(errors="replace")
    finally:
        if zk:
            zk.stop()
            zk.close()
        s.srv.stop()


@pytest.mark.skipif("rookery" not in targets(), reason="rookery-only behaviour")
@pytest.mark.parametrize("problem", ["missing", "garbage", "no-truststore", "jks"])
def test_bad_tls_files_are_clear_startup_errors(tmp_path, certs, problem):
    lines = tls_cfg(certs, free_port())
    expect = None
    if problem == "missing":
        lines[1] = "ssl.keyStore.location=/nonexistent/rookery-server.pem"
        expect = "/nonexistent/rookery-server.pem"
    elif problem == "garbage":
        bad = tmp_path / "garbage.pem"
        bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
        lines[1] = f"ssl.keyStore.location={bad}"
        expect = str(bad)
    elif problem == "no-truststore":
        lines = [l for l in lines if not l.startswith("ssl.trustStore")]
        expect = "ssl.trustStore.location"
    else:
        lines[2] = "ssl.keyStore.type=JKS"
        expect = "PEM"
    cfg = tmp_path / "zoo.cfg"
    cfg.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        [str(rookery_binary()), "--config", str(cfg), "--data-dir", str(tmp_path / "data"),
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=30)
    assert out.returncode != 0, out
    assert expect in out.stderr + out.stdout, out.stderr + out.stdout
