#!/usr/bin/env bash
# Starts an ensemble on loopback by hand and keeps it in the foreground until Ctrl-C (or
# MAX_SECONDS), for poking at it with zkCli / rookery-cli / four-letter words:
#
#   scripts/ensemble-fg.sh                    # 3 ZooKeeper 3.8 members
#   TARGET=rookery scripts/ensemble-fg.sh     # 3 rookery members (target/debug/rookery; ROOKERY=...)
#   MEMBERS=5 TICK=500 scripts/ensemble-fg.sh
#
# zoo.cfg, ports and start-up come from scripts/lib-ensemble.sh (shared with benches/ensemble.sh;
# the same zoo.cfg as tests/common/cluster.rs). ZooKeeper logs to m<N>/zk.log (ZK_LOG_LEVEL,
# INFO here). Prints each member's pid, ports, config and log, then the
# connect string and `srvr` modes every 5 s. Stops every member by its pid on exit; the work dir
# is removed unless KEEP_WORK=1.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${TARGET:-zk}
MEMBERS=${MEMBERS:-3}
TICK=${TICK:-2000}
MAX_SECONDS=${MAX_SECONDS:-3600}
ROOKERY=${ROOKERY:-$ROOT/target/debug/rookery}
ZK_LOG_LEVEL=${ZK_LOG_LEVEL:-INFO}
# shellcheck source=lib-ensemble.sh
. "$ROOT/scripts/lib-ensemble.sh"
WORK=$(mktemp -d /tmp/rookery-ensemble-manual.XXXXXX)

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

ens_ports
for i in $(seq "$MEMBERS"); do
    d=$WORK/m$i
    ens_write_cfg "$i" "$d"
    ens_start_member "$i" "$d" "$d/server.log"
    echo "member $i: pid ${PID[$i]}, client ${CPORT[$i]}, peer ${PPORT[$i]}, election ${EPORT[$i]}, config $d/zoo.cfg, log $d/server.log"
done
echo "connect string: $ENS_CONNECT"
START=$(date +%s)
while [ $(( $(date +%s) - START )) -lt "$MAX_SECONDS" ]; do
    line=""
    for i in $(seq "$MEMBERS"); do
        m=$(ens_mode_of "$i")
        kill -0 "${PID[$i]}" 2>/dev/null || m=exited
        line="$line m$i=${m:-not-serving}"
    done
    echo "[$(date +%H:%M:%S)]$line"
    sleep 5
done
