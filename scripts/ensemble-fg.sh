#!/usr/bin/env bash
# Starts an ensemble on loopback by hand and keeps it in the foreground until Ctrl-C (or
# MAX_SECONDS), for poking at it with zkCli / rookery-cli / four-letter words:
#
#   scripts/ensemble-fg.sh                    # 3 ZooKeeper 3.8 members
#   TARGET=rookery scripts/ensemble-fg.sh     # 3 rookery members (target/debug/rookery; ROOKERY=...)
#   MEMBERS=5 TICK=500 scripts/ensemble-fg.sh
#
# Same zoo.cfg as tests/common/cluster.rs and benches/ensemble.sh: server.N=127.0.0.1:peer:election;
# 127.0.0.1:client, myid in each dataDir. Prints each member's pid, ports, config and log, then the
# connect string and `srvr` modes every 5 s. Stops every member by its pid on exit; the work dir
# is removed unless KEEP_WORK=1.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${TARGET:-zk}
MEMBERS=${MEMBERS:-3}
TICK=${TICK:-2000}
MAX_SECONDS=${MAX_SECONDS:-3600}
ROOKERY=${ROOKERY:-$ROOT/target/debug/rookery}
ZK_CP=/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar
WORK=$(mktemp -d /tmp/rookery-ensemble-manual.XXXXXX)
declare -a PID CPORT PPORT EPORT

cleanup() {
    for i in $(seq "$MEMBERS"); do
        [ -n "${PID[$i]:-}" ] && kill -TERM "${PID[$i]}" 2>/dev/null
    done
    sleep 1
    for i in $(seq "$MEMBERS"); do
        [ -n "${PID[$i]:-}" ] && kill -KILL "${PID[$i]}" 2>/dev/null && wait "${PID[$i]}" 2>/dev/null
    done
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

case "$TARGET" in
    zk) [ -f /usr/share/java/zookeeper.jar ] || { echo "Debian's zookeeper is not installed"; exit 1; } ;;
    rookery) [ -x "$ROOKERY" ] || { echo "$ROOKERY missing (cargo build, or ROOKERY=...)"; exit 1; } ;;
    *) echo "TARGET must be zk or rookery"; exit 1 ;;
esac

read -r -a PORTS <<<"$(python3 - "$MEMBERS" <<'PY'
import socket, sys
n = int(sys.argv[1]); socks = []
for _ in range(3 * n):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)"
for i in $(seq "$MEMBERS"); do
    CPORT[$i]=${PORTS[$((3 * (i - 1)))]}; PPORT[$i]=${PORTS[$((3 * (i - 1) + 1))]}; EPORT[$i]=${PORTS[$((3 * (i - 1) + 2))]}
done
for i in $(seq "$MEMBERS"); do
    d=$WORK/m$i; mkdir -p "$d/data"; echo "$i" >"$d/data/myid"
    {
        echo "tickTime=$TICK"; echo "initLimit=10"; echo "syncLimit=5"
        echo "dataDir=$d/data"; echo "clientPort=${CPORT[$i]}"; echo "clientPortAddress=127.0.0.1"
        echo "4lw.commands.whitelist=*"; echo "maxClientCnxns=0"; echo "admin.enableServer=false"
        echo "standaloneEnabled=false"
        for j in $(seq "$MEMBERS"); do echo "server.$j=127.0.0.1:${PPORT[$j]}:${EPORT[$j]};127.0.0.1:${CPORT[$j]}"; done
    } >"$d/zoo.cfg"
    if [ "$TARGET" = zk ]; then
        java -Xmx512m -XX:+UseG1GC -Dzookeeper.admin.enableServer=false -cp "$ZK_CP" \
            org.apache.zookeeper.server.quorum.QuorumPeerMain "$d/zoo.cfg" >"$d/server.log" 2>&1 &
    else
        "$ROOKERY" --config "$d/zoo.cfg" >"$d/server.log" 2>&1 &
    fi
    PID[$i]=$!
    echo "member $i: pid ${PID[$i]}, client ${CPORT[$i]}, peer ${PPORT[$i]}, election ${EPORT[$i]}, config $d/zoo.cfg, log $d/server.log"
done
CS=$(for i in $(seq "$MEMBERS"); do printf '127.0.0.1:%s,' "${CPORT[$i]}"; done); CS=${CS%,}
echo "connect string: $CS"
START=$(date +%s)
while [ $(( $(date +%s) - START )) -lt "$MAX_SECONDS" ]; do
    line=""
    for i in $(seq "$MEMBERS"); do
        m=$(echo srvr | timeout 3 nc -w 2 127.0.0.1 "${CPORT[$i]}" 2>/dev/null | awk '/^Mode:/{print $2}')
        kill -0 "${PID[$i]}" 2>/dev/null || m=exited
        line="$line m$i=${m:-not-serving}"
    done
    echo "[$(date +%H:%M:%S)]$line"
    sleep 5
done
