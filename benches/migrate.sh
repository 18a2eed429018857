#!/usr/bin/env bash
# Offline migration cost: populate a real Apache ZooKeeper 3.8 with N znodes (default 1M) of
# VALUE_SIZE bytes, stop it, then measure `rookery import zookeeper` (wall time, max RSS) against
# the ZooKeeper data dir's size, the time until rookery serves the result, and the export back.
#
#   cargo build --release -p rookery -p rookery-bench
#   benches/migrate.sh            # 1,000,000 znodes (a few minutes, ~1.5 GB of disk in /tmp)
#   benches/migrate.sh 100000     # quicker
#   VERIFY=1 benches/migrate.sh   # also `rookery verify` of ZooKeeper (restarted) against rookery
#
# Everything runs on loopback; the servers are stopped by PID and the work dir is removed.
set -euo pipefail

N=${1:-1000000}
VALUE_SIZE=${VALUE_SIZE:-100}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROOKERY=${ROOKERY:-$ROOT/target/release/rookery}
LOAD=${LOAD:-$ROOT/target/release/rookery-load}
ZK_HEAP=${ZK_HEAP:-2g}
ZK_CP=/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar
for b in "$ROOKERY" "$LOAD"; do
    [ -x "$b" ] || { echo "missing $b: cargo build --release -p rookery -p rookery-bench" >&2; exit 2; }
done
WORK=$(mktemp -d /tmp/rookery-migrate-bench.XXXXXX)
ZK_PID="" ROOK_PID=""
cleanup() {
    [ -n "$ZK_PID" ] && kill "$ZK_PID" 2>/dev/null || true
    [ -n "$ROOK_PID" ] && kill "$ROOK_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # $1 = port, $2 = word, $3 = expected reply substring
    for _ in $(seq 1200); do
        if echo "$2" | nc -w 1 127.0.0.1 "$1" 2>/dev/null | grep -q "$3"; then return 0; fi
        sleep 0.1
    done
    echo "server on $1 not ready" >&2
    exit 1
}
# `/usr/bin/time -v` output -> "wall_s max_rss_mib"
measure() { awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]}
                       /Maximum resident/ {r=$2/1024} END {printf "%.2f %.0f\n", s, r}' "$1"; }

ZK_PORT=$(free_port)
mkdir -p "$WORK/zk"
cat >"$WORK/zoo.cfg" <<EOF
tickTime=2000
dataDir=$WORK/zk
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
4lw.commands.whitelist=*
maxClientCnxns=0
admin.enableServer=false
EOF
printf 'log4j.rootLogger=WARN, F\nlog4j.appender.F=org.apache.log4j.FileAppender\nlog4j.appender.F.File=%s\nlog4j.appender.F.layout=org.apache.log4j.PatternLayout\n' \
    "$WORK/zk.log" >"$WORK/log4j.properties"
java -Xmx"$ZK_HEAP" -XX:+UseG1GC -Dzookeeper.admin.enableServer=false \
    -Dlog4j.configuration="file:$WORK/log4j.properties" \
    -cp "$ZK_CP" org.apache.zookeeper.server.quorum.QuorumPeerMain "$WORK/zoo.cfg" >"$WORK/zk.out" 2>&1 &
ZK_PID=$!
wait_for "$ZK_PORT" srvr "Mode: standalone"
echo "populating ZooKeeper with $N znodes of $VALUE_SIZE bytes..."
"$LOAD" --servers "127.0.0.1:$ZK_PORT" --label zk -q --workload populate --count "$N" --sessions 8 \
    --inflight 32 --value-size "$VALUE_SIZE" --prefix /populate --timeout 1800 >/dev/null
kill "$ZK_PID"; wait "$ZK_PID" 2>/dev/null || true; ZK_PID=""

zk_mib=$(du -sm "$WORK/zk" | cut -f1)
snap_mib=$(ls -S "$WORK"/zk/version-2/snapshot.* | head -1 | xargs du -m | cut -f1)
/usr/bin/time -v "$ROOKERY" import zookeeper --data-dir "$WORK/zk" --to "$WORK/rk" \
    >"$WORK/import.out" 2>"$WORK/import.time"
read -r imp_s imp_rss < <(measure "$WORK/import.time")
rk_mib=$(du -sm "$WORK/rk" | cut -f1)

ROOK_PORT=$(free_port)
start=$(date +%s.%N)
"$ROOKERY" --port "$ROOK_PORT" --address 127.0.0.1 --data-dir "$WORK/rk" --4lw-whitelist '*' \
    >"$WORK/rookery.out" 2>&1 &
ROOK_PID=$!
wait_for "$ROOK_PORT" ruok imok
serve_s=$(python3 -c "print(round($(date +%s.%N) - $start, 2))")
znodes=$(echo mntr | nc -w 2 127.0.0.1 "$ROOK_PORT" | awk '/zk_znode_count/ {print $2}')
verify_s=-
if [ -n "${VERIFY:-}" ]; then
    # ZooKeeper again on its own data dir, then `rookery verify` node by node.
    java -Xmx"$ZK_HEAP" -XX:+UseG1GC -Dzookeeper.admin.enableServer=false \
        -Dlog4j.configuration="file:$WORK/log4j.properties" \
        -cp "$ZK_CP" org.apache.zookeeper.server.quorum.QuorumPeerMain "$WORK/zoo.cfg" >>"$WORK/zk.out" 2>&1 &
    ZK_PID=$!
    wait_for "$ZK_PORT" srvr "Mode: standalone"
    start=$(date +%s.%N)
    "$ROOKERY" verify --source "127.0.0.1:$ZK_PORT" --target "127.0.0.1:$ROOK_PORT" | tail -3
    verify_s=$(python3 -c "print(round($(date +%s.%N) - $start, 2))")
    kill "$ZK_PID"; wait "$ZK_PID" 2>/dev/null || true; ZK_PID=""
fi
kill "$ROOK_PID"; wait "$ROOK_PID" 2>/dev/null || true; ROOK_PID=""

/usr/bin/time -v "$ROOKERY" export zookeeper --data-dir "$WORK/rk" --to "$WORK/zk-back" \
    >"$WORK/export.out" 2>"$WORK/export.time"
read -r exp_s exp_rss < <(measure "$WORK/export.time")

cat <<EOF
$(grep -E '^(snapshot|transactions|last zxid|digest)' "$WORK/import.out")

| znodes | ZK data dir MiB | ZK snapshot MiB | import s | import max RSS MiB | rookery data dir MiB | rookery serving after s | zk_znode_count | verify s | export s | export max RSS MiB |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| $N | $zk_mib | $snap_mib | $imp_s | $imp_rss | $rk_mib | $serve_s | $znodes | $verify_s | $exp_s | $exp_rss |
EOF
