"""Apache ZooKeeper's own command-line clients, unchanged, against each server: zkCli.sh
(the Java client) and cli_mt (the C client), both from Debian's zookeeper packages."""

import os
import subprocess
import time

import pytest

ZKCLI = "/usr/share/zookeeper/bin/zkCli.sh"
CLI_MT = "/usr/lib/zookeeper/bin/cli_mt"


def zkcli(server, *args):
    out = subprocess.run([ZKCLI, "-server", server.hosts, *args], capture_output=True,
                         text=True, timeout=60)
    return out.returncode, out.stdout + out.stderr


def test_zkcli_java_client(server, base):
    assert os.path.exists(ZKCLI), f"{ZKCLI} missing: install Debian's zookeeper package"
    zkcli(server, "create", base.rsplit("/", 1)[0])  # the parent; may exist already
    rc, out = zkcli(server, "create", base, "hello")
    assert f"Created {base}" in out, out
    rc, out = zkcli(server, "create", "-s", "-e", base + "/seq-", "x")
    assert f"Created {base}/seq-0000000000" in out, out
    rc, out = zkcli(server, "get", "-s", base)
    assert "hello" in out and "dataVersion = 0" in out and "numChildren = 1" in out, out
    rc, out = zkcli(server, "set", base, "again")
    rc, out = zkcli(server, "stat", base)
    assert "dataVersion = 1" in out and "dataLength = 5" in out, out
    rc, out = zkcli(server, "ls", "/")
    assert "zookeeper" in out and base.split("/")[1] in out, out
    rc, out = zkcli(server, "delete", base + "/missing")
    assert "Node does not exist" in out, out


def test_cli_mt_c_client(server, base):
    assert os.path.exists(CLI_MT), f"{CLI_MT} missing: install Debian's zookeeper-bin package"
    # cli_mt runs commands asynchronously: pace them so each reply arrives before the next.
    proc = subprocess.Popen([CLI_MT, server.hosts], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        parent = base.rsplit("/", 1)[0]
        for line in ["", f"create {parent}", f"create {base}", f"get {base}", f"ls {parent}", "quit"]:
            time.sleep(1.0)
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Got a new session id" in out, out
    assert f"[{base}]: rc = 0" in out, out
    assert f"{base}: rc = 0" in out, out
    assert base.rsplit("/", 1)[1] in out, out
