"""Fixtures for rookery's Python test suite.

Servers:
  zookeeper  - Apache ZooKeeper 3.8 (Debian package), standalone, session-scoped.
  rookery    - target/debug/rookery (or $ROOKERY_BIN), session-scoped.
  server     - parametrised over $ROOKERY_TESTS_TARGETS (default "zk,rookery"),
               ids "zk" and "rookery".

Ensemble mode: ROOKERY_TESTS_ENSEMBLE=1 makes `zookeeper`, `zookeeper2` and `rookery` 3-member
ensembles on loopback instead (zoo.cfg with server.N lines and dataDir/myid, started as
QuorumPeerMain / `rookery --config zoo.cfg`; ready when every member's `srvr` says leader or
follower, with exactly one leader). Their `hosts` lists all members (clients pick one at
random); `member_hosts(i)` pins a client to member i. Tests get a longer timeout
(ROOKERY_TESTS_ENSEMBLE_TIMEOUT, 180 s). The SASL fixtures and the tests that start their own
servers stay standalone.

A missing ZooKeeper install or rookery binary is an error, never a skip.
"""

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from kazoo.client import KazooClient

REPO = Path(__file__).resolve().parents[2]
ZK_JAR = "/usr/share/java/zookeeper.jar"
# ZooKeeper's NettyServerCnxnFactory (TLS client port) needs all of Netty (Debian's libnetty-java,
# a dependency of the zookeeper package), not only the jars its manifest names.
NETTY_JARS = [f"/usr/share/java/netty-{m}.jar" for m in (
    "buffer", "codec", "common", "handler", "resolver", "transport",
    "transport-native-unix-common", "transport-native-epoll")
    if os.path.exists(f"/usr/share/java/netty-{m}.jar")]
ZK_LOG_JARS = ["/usr/share/java/slf4j-log4j12.jar", "/usr/share/java/log4j-1.2.jar"]
TARGET_FIXTURES = {"zk": "zookeeper", "rookery": "rookery"}

SERVER_START_TIMEOUT = 60.0
CLIENT_TIMEOUT = 15.0
ENSEMBLE = os.environ.get("ROOKERY_TESTS_ENSEMBLE", "") not in ("", "0")
ENSEMBLE_SIZE = 3
ENSEMBLE_START_TIMEOUT = 90.0


def targets():
    raw = os.environ.get("ROOKERY_TESTS_TARGETS", "zk,rookery")
    names = [t.strip() for t in raw.split(",") if t.strip()]
    bad = [t for t in names if t not in TARGET_FIXTURES]
    if bad or not names:
        raise pytest.UsageError(
            f"ROOKERY_TESTS_TARGETS={raw!r}: expected a comma-separated subset of "
            f"{sorted(TARGET_FIXTURES)}"
        )
    return names


def pytest_configure(config):
    targets()  # validate early


def pytest_report_header(config):
    mode = f"{ENSEMBLE_SIZE}-member ensembles" if ENSEMBLE else "standalone servers"
    return f"rookery test targets: {','.join(targets())} ({mode})"


def pytest_collection_modifyitems(config, items):
    if ENSEMBLE:  # every write goes through a leader and a quorum: slower than standalone
        t = float(os.environ.get("ROOKERY_TESTS_ENSEMBLE_TIMEOUT", "180"))
        for item in items:
            item.add_marker(pytest.mark.timeout(t))


def pytest_generate_tests(metafunc):
    if "server" in metafunc.fixturenames:
        names = targets()
        metafunc.parametrize("server", names, indirect=True, ids=names)
    elif "sasl_server" in metafunc.fixturenames:
        names = targets()
        metafunc.parametrize("sasl_server", names, indirect=True, ids=names)


def _die_with_parent():
    """preexec_fn: the server gets SIGKILL if pytest dies without tearing down."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def four_letter(port, word, timeout=2.0):
    """Send a four-letter word; return the reply (str) or None on connection failure."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(word.encode())
            chunks = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
            return b"".join(chunks).decode(errors="replace")
    except OSError:
        return None


def recv_exact(s, n):
    """n bytes from socket s, or None if it reaches EOF first."""
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _tail(path, n=60):
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(lines[-n:])


class ServerProcess:
    """A server started by us; stopped by its PID only."""

    def __init__(self, kind, port, proc, log_path, data_dir):
        self.kind = kind  # "zk" or "rookery"
        self.port = port
        self.proc = proc
        self.log_path = log_path
        self.data_dir = data_dir

    ensemble = False

    @property
    def hosts(self):
        return f"127.0.0.1:{self.port}"

    @property
    def members(self):
        return [self]

    def member_hosts(self, i):
        """The connection string of one member (here: the only one)."""
        return self.hosts

    def __repr__(self):
        return f"<{self.kind} pid={self.proc.pid} port={self.port}>"

    def wait_ready(self, predicate, what, timeout=SERVER_START_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} exited with status {self.proc.returncode} before "
                    f"becoming ready; log tail:\n{_tail(self.log_path)}"
                )
            last = four_letter(self.port, what)
            if last is not None and predicate(last):
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"{self.kind} not ready after {timeout}s (last {what!r} reply: {last!r}); "
            f"log tail:\n{_tail(self.log_path)}"
        )

    def stop(self, grace=5.0):
        if self.proc.poll() is not None:
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def start_zookeeper(workdir: Path, extra_cfg=(), extra_jvm=(), extra_classpath=()) -> ServerProcess:
    """extra_cfg: more zoo.cfg lines; extra_jvm: more JVM flags (e.g. -Djava.security...);
    extra_classpath: more jars (e.g. NETTY_JARS for the Netty connection factory)."""
    java = shutil.which("java")
    if not os.path.exists(ZK_JAR) or java is None:
        raise RuntimeError(
            f"Apache ZooKeeper not installed ({ZK_JAR} or java missing): "
            "apt-get install -y zookeeper zookeeper-bin netcat-openbsd libzookeeper-mt-dev gcc"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    port = free_port()
    cfg = workdir / "zoo.cfg"
    cfg.write_text(
        "\n".join(
            [
                "tickTime=2000",
                "initLimit=10",
                "syncLimit=5",
                f"dataDir={data}",
                f"clientPort={port}",
                "clientPortAddress=127.0.0.1",
                "4lw.commands.whitelist=*",
                "maxClientCnxns=0",
                "admin.enableServer=false",
                "extendedTypesEnabled=true",
                *extra_cfg,
                "",
            ]
        )
    )
    log4j = workdir / "log4j.properties"
    log4j.write_text(
        "log4j.rootLogger=INFO, F\n"
        "log4j.appender.F=org.apache.log4j.FileAppender\n"
        f"log4j.appender.F.File={workdir / 'zookeeper.log'}\n"
        "log4j.appender.F.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.F.layout.ConversionPattern=%d{ISO8601} %-5p [%t] %c{1} - %m%n\n"
    )
    classpath = ":".join([ZK_JAR] + [j for j in ZK_LOG_JARS if os.path.exists(j)]
                         + list(extra_classpath))
    cmd = [
        java,
        "-Xmx512m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-Dzookeeper.admin.enableServer=false",
        "-Dzookeeper.extendedTypesEnabled=true",
        "-Dznode.container.checkIntervalMs=1000",
        "-Dzookeeper.4lw.commands.whitelist=*",
        "-Dzookeeper.forceSync=no",
        f"-Dlog4j.configuration=file:{log4j}",
        *extra_jvm,
        "-cp",
        classpath,
        "org.apache.zookeeper.server.quorum.QuorumPeerMain",
        str(cfg),
    ]
    out = workdir / "stdout.log"
    with open(out, "wb") as f:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, cwd=workdir,
            preexec_fn=_die_with_parent,
        )
    srv = ServerProcess("zk", port, proc, workdir / "zookeeper.log", data)
    srv.wait_ready(lambda r: "Mode: standalone" in r, "srvr")
    return srv


def rookery_binary():
    if os.environ.get("ROOKERY_BIN"):
        return Path(os.environ["ROOKERY_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    return target / "debug" / "rookery"


def start_rookery(workdir: Path, extra_args=(), env=None) -> ServerProcess:
    """extra_args: more flags; env: more environment variables (e.g. JVMFLAGS)."""
    binary = rookery_binary()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise RuntimeError(
            f"rookery binary {binary} missing: run `cargo build` (or set ROOKERY_BIN), "
            "or set ROOKERY_TESTS_TARGETS=zk to test ZooKeeper only"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    port = free_port()
    cmd = [
        str(binary),
        "--port", str(port),
        "--data-dir", str(data),
        "--address", "127.0.0.1",
        "--4lw-whitelist", "*",
        "--container-check-interval-ms", "1000",
        *extra_args,
    ]
    log = workdir / "rookery.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, cwd=workdir,
            preexec_fn=_die_with_parent, env={**os.environ, **(env or {})},
        )
    srv = ServerProcess("rookery", port, proc, log, data)
    srv.wait_ready(lambda r: r.strip() == "imok", "ruok", timeout=30.0)
    return srv


# ----------------------------------------------------------------------------- ensembles


class Ensemble:
    """ENSEMBLE_SIZE servers of one kind forming a replicated ensemble; stopped by PID."""

    ensemble = True

    def __init__(self, kind, members):
        self.kind = kind
        self.members = members

    @property
    def hosts(self):
        return ",".join(m.hosts for m in self.members)

    @property
    def port(self):  # for tests that talk to "the" server: the first member
        return self.members[0].port

    @property
    def proc(self):
        return self.members[0].proc

    @property
    def log_path(self):
        return self.members[0].log_path

    def member_hosts(self, i):
        return self.members[i % len(self.members)].hosts

    def modes(self):
        out = []
        for m in self.members:
            r = four_letter(m.port, "srvr") or ""
            mode = re.search(r"^Mode: (\S+)", r, re.M)
            out.append(mode.group(1) if mode else None)
        return out

    def __repr__(self):
        return f"<{self.kind} ensemble {self.members!r}>"

    def stop(self, grace=5.0):
        for m in self.members:
            try:
                m.stop(grace)
            except Exception:
                pass


def free_ports(n):
    """n distinct free loopback ports (all bound at once, so no duplicates)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start_ensemble(kind, workdir: Path, n=ENSEMBLE_SIZE, extra_cfg=(), extra_jvm=(),
                   tick_time=2000) -> Ensemble:
    """n members on loopback, zoo.cfg as tests/common/cluster.rs writes it. extra_cfg: more
    zoo.cfg lines; extra_jvm: more JVM flags for ZooKeeper (e.g. -Dreadonlymode.enabled=true,
    which it reads only as a system property)."""
    ports = free_ports(3 * n)
    client = ports[0::3]
    peer = ports[1::3]
    election = ports[2::3]
    servers = [f"server.{j + 1}=127.0.0.1:{peer[j]}:{election[j]};127.0.0.1:{client[j]}"
               for j in range(n)]
    if kind == "zk":
        java = shutil.which("java")
        if not os.path.exists(ZK_JAR) or java is None:
            raise RuntimeError(f"Apache ZooKeeper not installed ({ZK_JAR} or java missing)")
        classpath = ":".join([ZK_JAR] + [j for j in ZK_LOG_JARS if os.path.exists(j)])
    else:
        binary = rookery_binary()
        if not binary.is_file() or not os.access(binary, os.X_OK):
            raise RuntimeError(f"rookery binary {binary} missing: run `cargo build` (or set ROOKERY_BIN)")
    members = []
    try:
        for i in range(n):
            d = workdir / f"m{i + 1}"
            data = d / "data"
            data.mkdir(parents=True, exist_ok=True)
            (data / "myid").write_text(f"{i + 1}\n")
            cfg = d / "zoo.cfg"
            lines = [
                f"tickTime={tick_time}", "initLimit=10", "syncLimit=5", f"dataDir={data}",
                f"clientPort={client[i]}", "clientPortAddress=127.0.0.1",
                "4lw.commands.whitelist=*", "maxClientCnxns=0", "admin.enableServer=false",
                "standaloneEnabled=false",
            ]
            if kind == "zk":
                lines.append("extendedTypesEnabled=true")
            lines.extend(extra_cfg)
            cfg.write_text("\n".join(lines + servers + [""]))
            if kind == "zk":
                log = d / "zookeeper.log"
                (d / "log4j.properties").write_text(
                    "log4j.rootLogger=INFO, F\n"
                    "log4j.appender.F=org.apache.log4j.FileAppender\n"
                    f"log4j.appender.F.File={log}\n"
                    "log4j.appender.F.layout=org.apache.log4j.PatternLayout\n"
                    "log4j.appender.F.layout.ConversionPattern=%d{ISO8601} %-5p [%t] %c{1} - %m%n\n"
                )
                cmd = [
                    java, "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                    "-Dzookeeper.admin.enableServer=false",
                    "-Dzookeeper.extendedTypesEnabled=true",
                    "-Dznode.container.checkIntervalMs=1000",
                    "-Dzookeeper.4lw.commands.whitelist=*",
                    "-Dzookeeper.forceSync=no",
                    f"-Dlog4j.configuration=file:{d / 'log4j.properties'}",
                    *extra_jvm,
                    "-cp", classpath,
                    "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(cfg),
                ]
                out = d / "stdout.log"
            else:
                cmd = [str(binary), "--config", str(cfg), "--container-check-interval-ms", "1000"]
                log = out = d / "rookery.log"
            with open(out, "wb") as f:
                proc = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, cwd=d,
                    preexec_fn=_die_with_parent,
                )
            members.append(ServerProcess(kind, client[i], proc, log, data))
        ens = Ensemble(kind, members)
        deadline = time.monotonic() + ENSEMBLE_START_TIMEOUT
        modes = []
        while time.monotonic() < deadline:
            for m in members:
                if m.proc.poll() is not None:
                    raise RuntimeError(
                        f"{kind} member on port {m.port} exited with status {m.proc.returncode} "
                        f"before the ensemble was ready; log tail:\n{_tail(m.log_path)}")
            modes = ens.modes()
            if "standalone" in modes:
                raise RuntimeError(f"{kind} ensemble member reports Mode: standalone: {modes}")
            if all(x in ("leader", "follower") for x in modes) and modes.count("leader") == 1:
                return ens
            time.sleep(0.2)
        raise RuntimeError(
            f"{kind} ensemble not ready after {ENSEMBLE_START_TIMEOUT}s (modes {modes}); "
            + "".join(f"\n--- member {i + 1} log tail:\n{_tail(m.log_path, 20)}"
                      for i, m in enumerate(members)))
    except BaseException:
        for m in members:
            m.stop()
        raise


@pytest.fixture(scope="session")
def zookeeper(tmp_path_factory):
    if ENSEMBLE:
        srv = start_ensemble("zk", tmp_path_factory.mktemp("zookeeper-ensemble"))
    else:
        srv = start_zookeeper(tmp_path_factory.mktemp("zookeeper"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def zookeeper2(tmp_path_factory):
    """A second, independent ZooKeeper (differential harness self-check)."""
    if ENSEMBLE:
        srv = start_ensemble("zk", tmp_path_factory.mktemp("zookeeper2-ensemble"))
    else:
        srv = start_zookeeper(tmp_path_factory.mktemp("zookeeper2"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def rookery(tmp_path_factory):
    if ENSEMBLE:
        srv = start_ensemble("rookery", tmp_path_factory.mktemp("rookery-ensemble"))
    else:
        srv = start_rookery(tmp_path_factory.mktemp("rookery"))
    yield srv
    srv.stop()


# ----------------------------------------------------------------------------- SASL servers
# A ZooKeeper and a rookery configured the same way for SASL DIGEST-MD5: zoo.cfg
# authProvider.1=SASLAuthenticationProvider and a JAAS file whose Server section lists users.

SASL_USERS = {"bob": "bobsecret", "alice": "alicesecret", "root": "rootsecret"}
SASL_SUPER_USER = "root"  # zoo.cfg superUser= (ZooKeeper's zookeeper.superUser)
SASL_PROVIDER = "org.apache.zookeeper.server.auth.SASLAuthenticationProvider"
SASL_TARGET_FIXTURES = {"zk": "zookeeper_sasl", "rookery": "rookery_sasl"}


def write_server_jaas(path: Path) -> Path:
    users = "\n".join(f'    user_{u}="{p}"' for u, p in SASL_USERS.items())
    path.write_text(
        "Server {\n"
        "    org.apache.zookeeper.server.auth.DigestLoginModule required\n"
        f"{users};\n"
        "};\n"
    )
    return path


@pytest.fixture(scope="session")
def zookeeper_sasl(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("zookeeper-sasl")
    jaas = write_server_jaas(workdir / "jaas.conf")
    srv = start_zookeeper(workdir, [f"authProvider.1={SASL_PROVIDER}",
                                    f"superUser={SASL_SUPER_USER}"],
                          [f"-Djava.security.auth.login.config={jaas}"])
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def rookery_sasl(tmp_path_factory):
    """rookery with the same zoo.cfg key, and the JAAS file as ZooKeeper's scripts pass it:
    -Djava.security.auth.login.config in $JVMFLAGS."""
    workdir = tmp_path_factory.mktemp("rookery-sasl")
    jaas = write_server_jaas(workdir / "jaas.conf")
    cfg = workdir / "zoo.cfg"
    cfg.write_text(f"authProvider.1={SASL_PROVIDER}\nsuperUser={SASL_SUPER_USER}\n")
    srv = start_rookery(workdir, ["--config", str(cfg)],
                        env={"JVMFLAGS": f"-Xmx1g -Djava.security.auth.login.config={jaas}"})
    yield srv
    srv.stop()


@pytest.fixture
def sasl_server(request):
    """A SASL-configured server, parametrised like `server` (see pytest_generate_tests)."""
    srv = check_alive(request.getfixturevalue(SASL_TARGET_FIXTURES[request.param]))
    yield srv
    check_alive(srv)


def check_alive(srv):
    """Fail at once (with the server's log) if a session-scoped server (or any member of an
    ensemble) has died."""
    for m in srv.members:
        if m.proc.poll() is not None:
            pytest.fail(
                f"{m.kind} (pid {m.proc.pid}, port {m.port}) has exited with status "
                f"{m.proc.returncode}; log tail:\n{_tail(m.log_path)}",
                pytrace=False,
            )
    return srv


@pytest.fixture
def server(request):
    srv = check_alive(request.getfixturevalue(TARGET_FIXTURES[request.param]))
    yield srv
    check_alive(srv)


_unique = itertools.count()


@pytest.fixture
def base(request):
    """A fresh znode path prefix, unique per test (not yet created)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:80]
    return f"/t/{name}-{os.getpid()}-{next(_unique)}"


class ClientFactory:
    def __init__(self, server):
        self.server = server
        self.clients = []

    def __call__(self, timeout=CLIENT_TIMEOUT, **kw):
        c = KazooClient(hosts=self.server.hosts, timeout=timeout, **kw)
        c.start(timeout=timeout)
        self.clients.append(c)
        return c

    def close_all(self):
        for c in self.clients:
            try:
                c.stop()
                c.close()
            except Exception:
                pass


@pytest.fixture
def make_client(server):
    """Factory: make_client() -> a started KazooClient on `server`; all stopped at teardown."""
    f = ClientFactory(server)
    yield f
    f.close_all()


@pytest.fixture
def client(make_client):
    return make_client()
