#!/usr/bin/env bash
# A greedy client beside a well-behaved one: rookery vs Apache ZooKeeper 3.8 (Debian's package).
#
# For each server (fresh data dir, loopback, default limits):
#   1. the well-behaved client alone: rookery-load `get`, 1 session, DURATION s  -> p99 / max;
#   2. a greedy client (benches/greedy.py) connects, pipelines GREEDY_REQS getData of a
#      BIG-byte znode and never reads; meanwhile the same `get` run is measured again, and the
#      server's VmRSS is sampled (growth = peak - value before the greedy client).
#
#   benches/greedy.sh                         # DURATION=10 GREEDY_REQS=4000 BIG=524288
#   DURATION=5 ONLY=rookery benches/greedy.sh
#
# Knobs: DURATION, GREEDY_REQS, BIG, ONLY (both|zk|rookery), ZK_HEAP (2g), SKIP_BUILD=1, OUT.
# Everything is bounded in time (greedy client: DURATION + 5 s; watchdog: MAX_SECONDS).
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
DURATION=${DURATION:-10}
GREEDY_REQS=${GREEDY_REQS:-4000}
BIG=${BIG:-524288}
ONLY=${ONLY:-both}
ZK_HEAP=${ZK_HEAP:-2g}
MAX_SECONDS=${MAX_SECONDS:-900}
OUT=${OUT:-$HERE/results/greedy-$(date +%Y-%m-%d-%H%M%S).md}
LOAD=$ROOT/target/release/rookery-load
ROOKERY=${ROOKERY:-$ROOT/target/release/rookery}
ZK_CP=/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar
WORK=$(mktemp -d /tmp/rookery-greedy.XXXXXX)
PID=""
WATCHDOG=""

log() { echo "[greedy $(date +%H:%M:%S)] $*" >&2; }
die() { log "FATAL: $*"; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

stop_server() {
    [ -n "$PID" ] || return 0
    kill -TERM "$PID" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null
    wait "$PID" 2>/dev/null
    PID=""
}
cleanup() {
    local rc=$?
    stop_server
    [ -n "$WATCHDOG" ] && kill "$WATCHDOG" 2>/dev/null
    if [ $rc -ne 0 ]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM
( sleep "$MAX_SECONDS"; echo "[greedy] watchdog: $MAX_SECONDS s exceeded" >&2; kill -TERM $$ ) &
WATCHDOG=$!

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building (release)"
    (cd "$ROOT" && timeout 1800 cargo build --release -p rookery -p rookery-bench --bins) >"$WORK/build.log" 2>&1 \
        || { tail -30 "$WORK/build.log" >&2; die "cargo build failed"; }
fi

start() { # $1 = rookery|zk, $2 = port
    local dir=$WORK/$1-data
    mkdir -p "$dir"
    if [ "$1" = zk ]; then
        printf 'tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir=%s\nclientPort=%s\nclientPortAddress=127.0.0.1\n4lw.commands.whitelist=*\nmaxClientCnxns=0\nadmin.enableServer=false\n' \
            "$dir" "$2" >"$WORK/zoo.cfg"
        printf 'log4j.rootLogger=WARN, F\nlog4j.appender.F=org.apache.log4j.FileAppender\nlog4j.appender.F.File=%s/zk.log\nlog4j.appender.F.layout=org.apache.log4j.PatternLayout\nlog4j.appender.F.layout.ConversionPattern=%%d %%p %%c{1}: %%m%%n\n' \
            "$WORK" >"$WORK/log4j.properties"
        java -Xmx"$ZK_HEAP" -XX:+UseG1GC -Dzookeeper.admin.enableServer=false \
            -Dlog4j.configuration="file:$WORK/log4j.properties" \
            -cp "$ZK_CP" org.apache.zookeeper.server.quorum.QuorumPeerMain "$WORK/zoo.cfg" >>"$WORK/zk.out" 2>&1 &
        PID=$!
        want="Mode: standalone"; word=srvr
    else
        "$ROOKERY" --port "$2" --address 127.0.0.1 --data-dir "$dir" --4lw-whitelist '*' \
            --max-client-cnxns 0 >>"$WORK/rookery.out" 2>&1 &
        PID=$!
        want=imok; word=ruok
    fi
    for _ in $(seq 600); do
        kill -0 "$PID" 2>/dev/null || die "$1 exited during startup (see $WORK/$1.out)"
        echo "$word" | nc -w 1 127.0.0.1 "$2" 2>/dev/null | grep -q "$want" && return 0
        sleep 0.1
    done
    die "$1 not ready after 60 s"
}

get_run() { # $1 = label, $2 = port -> JSON line
    "$LOAD" --servers "127.0.0.1:$2" --server-pid "$PID" --workload get --sessions 1 \
        --duration "$DURATION" --warmup 1 --label "$1" --cleanup -q | grep '^{' | tail -1
}
field() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); v=d.get(sys.argv[2]); print('-' if v is None else v)" "$1" "$2"; }

servers=()
[ "$ONLY" != zk ] && servers+=(rookery)
[ "$ONLY" != rookery ] && servers+=(zk)
rows=""
for name in "${servers[@]}"; do
    port=$(free_port)
    start "$name" "$port"
    log "$name up (pid $PID, port $port)"
    python3 "$HERE/greedy.py" setup --port "$port" --size "$BIG" || die "setup on $name failed"
    if [ "$name" = zk ]; then # JIT warm-up, not measured
        "$LOAD" --servers "127.0.0.1:$port" --server-pid "$PID" --workload get --sessions 8 \
            --duration 8 --warmup 0 --cleanup -q >/dev/null 2>&1
    fi
    quiet=$(get_run "$name-alone" "$port")
    [ -n "$quiet" ] || die "$name: get run failed"
    python3 "$HERE/greedy.py" run --port "$port" --pid "$PID" --requests "$GREEDY_REQS" \
        --hold "$(python3 -c "print($DURATION + 6)")" >"$WORK/greedy-$name.json" &
    gpid=$!
    sleep 1
    busy=$(get_run "$name-greedy" "$port")
    wait "$gpid"
    greedy=$(cat "$WORK/greedy-$name.json")
    [ -n "$busy" ] && [ -n "$greedy" ] || die "$name: greedy run failed"
    growth=$(( ($(field "$greedy" rss_peak_kb) - $(field "$greedy" rss_base_kb)) / 1024 ))
    row="| $name | $(field "$quiet" p99_us) | $(field "$quiet" max_us) | $(field "$busy" p99_us) | $(field "$busy" max_us) | $(field "$busy" ops_per_sec) | $growth | $(field "$greedy" sent) | $(field "$greedy" closed_after_s) |"
    log "$row"
    rows+="$row"$'\n'
    stop_server
done

mkdir -p "$(dirname "$OUT")"
{
    echo "# Greedy client: $GREEDY_REQS x getData of a $BIG-byte znode, never read ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo "Well-behaved client: rookery-load get, 1 session, ${DURATION}s. Latencies in µs."
    echo
    echo "| server | alone p99 | alone max | with greedy p99 | with greedy max | with greedy ops/s | RSS growth MiB | greedy requests sent | greedy closed by server after s |"
    echo "|---|---|---|---|---|---|---|---|---|"
    printf '%s' "$rows"
} | tee "$OUT"
log "written to $OUT"
