#!/usr/bin/env bash
# Side-by-side benchmark: rookery vs Apache ZooKeeper 3.8 (Debian's package), both standalone
# on loopback with fsync on, driven by the same load generator (rookery-load).
#
#   benches/compare.sh                 # full run: 8 workloads x 4 session counts x 3 reps, 1M populate
#   QUICK=1 benches/compare.sh         # smoke run: 1 rep of 1 s, 50k populate (~5 min)
#   ONLY=zk QUICK=1 benches/compare.sh # ZooKeeper alone (baseline while rookery does not serve)
#
# Knobs (environment): REPS, DURATION, WARMUP (s per run), JIT_WARMUP (s of load before
# measuring), SESSIONS ("1 8 32 128"), WORKLOADS, INFLIGHT, VALUE_SIZE, POPULATE (0 skips),
# POP_SESSIONS, POP_INFLIGHT, ZK_PORT, ROOK_PORT (default: free ports), ONLY (both|zk|rookery), SKIP_BUILD=1,
# ZK_HEAP (2g), MAX_SECONDS (watchdog for the whole script), OUT (result file).
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    REPS=${REPS:-1}; DURATION=${DURATION:-1}; WARMUP=${WARMUP:-0.3}
    JIT_WARMUP=${JIT_WARMUP:-8}; POPULATE=${POPULATE:-50000}
else
    REPS=${REPS:-3}; DURATION=${DURATION:-5}; WARMUP=${WARMUP:-1}
    JIT_WARMUP=${JIT_WARMUP:-15}; POPULATE=${POPULATE:-1000000}
fi
SESSIONS=${SESSIONS:-"1 8 32 128"}
WORKLOADS=${WORKLOADS:-"create set get exists mixed children churn watch"}
INFLIGHT=${INFLIGHT:-1}
VALUE_SIZE=${VALUE_SIZE:-100}
POP_SESSIONS=${POP_SESSIONS:-8}
POP_INFLIGHT=${POP_INFLIGHT:-32}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ZK_PORT=${ZK_PORT:-$(free_port)}
ROOK_PORT=${ROOK_PORT:-$(free_port)}
ONLY=${ONLY:-both}
ZK_HEAP=${ZK_HEAP:-2g}
MAX_SECONDS=${MAX_SECONDS:-5400}
STAMP=$(date +%Y-%m-%d)
OUT=${OUT:-$HERE/results/$STAMP.md}
[ -e "$OUT" ] && [ -z "${OUT_FIXED:-}" ] && OUT=$HERE/results/$STAMP-$(date +%H%M%S).md

LOAD=$ROOT/target/release/rookery-load
ROOKERY=${ROOKERY:-$ROOT/target/release/rookery}
WORK=$(mktemp -d /tmp/rookery-compare.XXXXXX)
RAW=$WORK/raw.jsonl
: >"$RAW"
ZK_PID=""
ROOK_PID=""
WATCHDOG=""

log() { echo "[compare $(date +%H:%M:%S)] $*" >&2; }
die() { log "FATAL: $*"; exit 1; }
now() { date +%s.%N; }

use_rookery() { [ "$ONLY" != zk ]; }
use_zk() { [ "$ONLY" != rookery ]; }

# Stops a server by the pid we recorded: TERM, then KILL after 30 s.
stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 300); do
        alive "$pid" || { wait "$pid" 2>/dev/null; return 0; }
        sleep 0.1
    done
    log "pid $pid ignored TERM for 30 s: KILL"
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

cleanup() {
    local rc=$?
    stop_pid "$ROOK_PID"
    stop_pid "$ZK_PID"
    [ -n "$WATCHDOG" ] && kill "$WATCHDOG" 2>/dev/null
    if [ "${KEEP_WORK:-0}" = 1 ] || [ $rc -ne 0 ]; then
        log "work dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# Watchdog: the whole script is bounded in time.
(
    trap 'kill "$sp" 2>/dev/null; exit 0' TERM
    sleep "$MAX_SECONDS" & sp=$!
    wait "$sp" && { echo "[compare] watchdog: $MAX_SECONDS s exceeded" >&2; kill -TERM $$; }
) &
WATCHDOG=$!

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- prerequisites and build
if use_zk && [ ! -f /usr/share/java/zookeeper.jar ]; then
    log "installing Debian's zookeeper"
    (apt-get update && apt-get install -y zookeeper zookeeper-bin netcat-openbsd) >"$WORK/apt.log" 2>&1 \
        || die "apt-get install zookeeper failed (see $WORK/apt.log)"
fi
command -v nc >/dev/null || { apt-get install -y netcat-openbsd >/dev/null 2>&1 || die "nc missing"; }
command -v python3 >/dev/null || die "python3 is needed for the tables"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building (release)"
    pkgs=(-p rookery-bench)
    use_rookery && pkgs+=(-p rookery)
    (cd "$ROOT" && timeout 1800 cargo build --release "${pkgs[@]}" --bins) >"$WORK/build.log" 2>&1 \
        || { tail -30 "$WORK/build.log" >&2; die "cargo build failed"; }
fi
[ -x "$LOAD" ] || die "$LOAD missing"
use_rookery && { [ -x "$ROOKERY" ] || die "$ROOKERY missing"; }
for p in $ZK_PORT $ROOK_PORT; do port_free "$p" || die "port $p is in use"; done

# ---------------------------------------------------------------- servers
ZK_CP=/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar

start_zk() { # $1 = data dir
    local dir=$1
    mkdir -p "$dir"
    cat >"$WORK/zoo.cfg" <<EOF
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$dir
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
4lw.commands.whitelist=*
maxClientCnxns=0
admin.enableServer=false
EOF
    cat >"$WORK/log4j.properties" <<EOF
log4j.rootLogger=WARN, F
log4j.appender.F=org.apache.log4j.FileAppender
log4j.appender.F.File=$WORK/zk.log
log4j.appender.F.layout=org.apache.log4j.PatternLayout
log4j.appender.F.layout.ConversionPattern=%d %p %c{1}: %m%n
EOF
    java -Xmx"$ZK_HEAP" -XX:+UseG1GC -Dzookeeper.admin.enableServer=false \
        -Dlog4j.configuration="file:$WORK/log4j.properties" \
        -cp "$ZK_CP" org.apache.zookeeper.server.quorum.QuorumPeerMain "$WORK/zoo.cfg" \
        >>"$WORK/zk.out" 2>&1 &
    ZK_PID=$!
}

start_rookery() { # $1 = data dir
    mkdir -p "$1"
    "$ROOKERY" --port "$ROOK_PORT" --address 127.0.0.1 --data-dir "$1" --4lw-whitelist '*' \
        --max-client-cnxns 0 \
        >>"$WORK/rookery.out" 2>&1 &
    ROOK_PID=$!
}

wait_ready() { # $1 = name, $2 = pid, $3 = port, $4 = command, $5 = expected; 60 s at most
    local i
    for i in $(seq 600); do
        kill -0 "$2" 2>/dev/null || die "$1 exited during startup (see $WORK/$1.out)"
        if echo "$4" | nc -w 1 127.0.0.1 "$3" 2>/dev/null | grep -q "$5"; then return 0; fi
        sleep 0.1
    done
    die "$1 not ready after 60 s"
}
zk_ready() { wait_ready zk "$ZK_PID" "$ZK_PORT" srvr "Mode: standalone"; }
rook_ready() { wait_ready rookery "$ROOK_PID" "$ROOK_PORT" ruok imok; }

# True while the process exists and is not a zombie.
alive() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] && ! awk '{exit !($3 == "Z")}' "/proc/$1/stat" 2>/dev/null; }

# A server that died is a finding, not something to benchmark around: stop with its log.
check_alive() { # $1 = name
    local pid
    pid=$(pid_of "$1")
    if ! alive "$pid"; then
        log "$1 (pid $pid) is no longer running; last lines of its output:"
        tail -20 "$WORK/$1.out" >&2
        die "$1 died"
    fi
}

# Writes the peak (KiB) of the summed PSS of pid $1 and its children to $2 every 100 ms,
# until killed.
sample_pss() { # $1 = pid, $2 = output file
    local peak=0 total p kb
    while alive "$1"; do
        total=0
        for p in "$1" $(pgrep -P "$1"); do
            kb=$(awk '/^Pss:/{print $2; exit}' "/proc/$p/smaps_rollup" 2>/dev/null)
            total=$((total + ${kb:-0}))
        done
        if [ "$total" -gt "$peak" ]; then peak=$total; echo "$peak" >"$2"; fi
        sleep 0.1
    done
}

port_of() { if [ "$1" = zk ]; then echo "$ZK_PORT"; else echo "$ROOK_PORT"; fi; }
pid_of() { if [ "$1" = zk ]; then echo "$ZK_PID"; else echo "$ROOK_PID"; fi; }

# One load run; prints its JSON line and appends it (or a failure record) to ${LOAD_RAW:-$RAW}.
load() { # $1 = server name, rest = rookery-load args
    local name=$1; shift
    local port pid line rc out workload=null sessions=null prev=""
    for a in "$@"; do
        case "$prev" in --workload) workload="\"$a\"" ;; --sessions) sessions=$a ;; esac
        prev=$a
    done
    port=$(port_of "$name"); pid=$(pid_of "$name")
    out=$(mktemp "$WORK/load.XXXXXX")
    "$LOAD" --servers "127.0.0.1:$port" --server-pid "$pid" --label "$name" -q "$@" >"$out" 2>"$out.err"
    rc=$?
    line=$(grep '^{' "$out" | tail -1)
    if [ -z "$line" ]; then
        log "$name $*: FAILED (exit $rc): $(tail -2 "$out.err" | tr '\n' ' ')"
        line="{\"workload\":$workload,\"label\":\"$name\",\"sessions\":$sessions,\"failed\":true,\"exit\":$rc}"
    elif [ "$rc" -ne 0 ]; then
        log "$name $*: FAILED (exit $rc): $(tail -2 "$out.err" | tr '\n' ' ')"
        line="${line%\}},\"failed\":true,\"exit\":$rc}"
    fi
    rm -f "$out" "$out.err"
    echo "$line" >>"${LOAD_RAW:-$RAW}"
    echo "$line"
}

servers=()
use_rookery && servers+=(rookery)
use_zk && servers+=(zk)

log "work dir $WORK; servers: ${servers[*]}; reps=$REPS duration=${DURATION}s warmup=${WARMUP}s"
use_rookery && { start_rookery "$WORK/rookery-data"; rook_ready; log "rookery up (pid $ROOK_PID)"; }
use_zk && { start_zk "$WORK/zk-data"; zk_ready; log "zookeeper up (pid $ZK_PID)"; }

# ---------------------------------------------------------------- warm-up
# ZooKeeper's JIT needs ~15 s of load; rookery gets a shorter pass over the same code paths.
warm() { # $1 = server, $2 = seconds in all
    local per
    per=$(python3 -c "print(max(0.5, $2 / 5))")
    for w in mixed create churn children watch; do
        load "$1" --workload "$w" --sessions 32 --duration "$per" --warmup 0 --cleanup --read-ratio 0.5 >/dev/null
    done
}
use_zk && { log "warming up zookeeper (${JIT_WARMUP}s)"; warm zk "$JIT_WARMUP"; }
use_rookery && { log "warming up rookery"; warm rookery "$(python3 -c "print($JIT_WARMUP / 3)")"; }
: >"$RAW" # warm-up runs are not results

# ---------------------------------------------------------------- the table
for w in $WORKLOADS; do
    for s in $SESSIONS; do
        for r in $(seq "$REPS"); do
            for name in "${servers[@]}"; do # alternating: rookery, zk, rookery, zk, ...
                check_alive "$name"
                line=$(load "$name" --workload "$w" --sessions "$s" --inflight "$INFLIGHT" \
                    --duration "$DURATION" --warmup "$WARMUP" --value-size "$VALUE_SIZE" --cleanup \
                    --seed "$r")
                log "$w s=$s rep=$r $name: $(echo "$line" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("ops_per_sec","FAIL"), "ops/s p99", d.get("p99_us","-"), "us")')"
            done
        done
    done
done

# ---------------------------------------------------------------- populate, RSS, restart
POP_RAW=$WORK/populate.jsonl
: >"$POP_RAW"
export LOAD_RAW=$WORK/populate-runs.jsonl
if [ "$POPULATE" -gt 0 ]; then
    for name in "${servers[@]}"; do
        log "$name: fresh data dir, populating $POPULATE znodes of $VALUE_SIZE bytes"
        if [ "$name" = zk ]; then
            stop_pid "$ZK_PID"; rm -rf "$WORK/zk-data"; start_zk "$WORK/zk-data"; zk_ready
        else
            stop_pid "$ROOK_PID"; rm -rf "$WORK/rookery-data"; start_rookery "$WORK/rookery-data"; rook_ready
        fi
        check_alive "$name"
        # Memory peak of the server and any child it forks (rookery's snapshot writer): the
        # summed PSS, sampled every 100 ms, counts pages shared copy-on-write with a child once.
        peak_file=$WORK/$name-pss-peak
        log_from=$(($(wc -l <"$WORK/$name.out" 2>/dev/null || echo 0) + 1))
        sample_pss "$(pid_of "$name")" "$peak_file" & sampler=$!
        pop=$(load "$name" --workload populate --count "$POPULATE" --sessions "$POP_SESSIONS" \
            --inflight "$POP_INFLIGHT" --value-size "$VALUE_SIZE" --prefix /populate --timeout 1800)
        kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
        pss_peak=$(cat "$peak_file" 2>/dev/null || echo null)
        pauses=null
        if [ "$name" = rookery ]; then # every raft-thread pause for a snapshot, from the log
            pauses=$(tail -n "+$log_from" "$WORK/rookery.out" | grep -a 'raft thread paused for a snapshot' \
                | sed -n 's/.*pause_us=\([0-9]*\).*/\1/p' | paste -sd, -)
            pauses="[${pauses}]"
        fi
        last=$(echo "$pop" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("last_path",""))')
        if [ -z "$last" ]; then
            log "$name: populate failed; no restart measurement"
            echo "{\"label\":\"$name\",\"populate\":$pop,\"probe\":{},\"restart_s\":null,\"disk_kb\":0,\"rss_after_restart_kb\":null,\"pss_peak_kb\":${pss_peak:-null},\"snapshot_pauses_us\":$pauses}" >>"$POP_RAW"
            continue
        fi
        datadir=$WORK/$([ "$name" = zk ] && echo zk-data || echo rookery-data)
        disk_kb=$(du -sk "$datadir" | cut -f1)
        # Restart: TERM, wait for exit, start again, time until getData of the last node works.
        log "$name: restart with $POPULATE znodes"
        stop_pid "$(pid_of "$name")"
        t0=$(now)
        if [ "$name" = zk ]; then start_zk "$datadir"; else start_rookery "$datadir"; fi
        probe=$(load "$name" --workload probe --path "$last" --timeout 600)
        t1=$(now)
        restart_s=$(python3 -c "print(round($t1 - $t0, 2))")
        rss_after=$(awk '/VmRSS/{print $2}' "/proc/$(pid_of "$name")/status" 2>/dev/null || echo null)
        echo "{\"label\":\"$name\",\"populate\":$pop,\"probe\":$probe,\"restart_s\":$restart_s,\"disk_kb\":$disk_kb,\"rss_after_restart_kb\":${rss_after:-null},\"pss_peak_kb\":${pss_peak:-null},\"snapshot_pauses_us\":$pauses}" >>"$POP_RAW"
        log "$name: restart took ${restart_s}s"
    done
fi

# ---------------------------------------------------------------- report
mkdir -p "$(dirname "$OUT")"
{
    echo "# rookery vs Apache ZooKeeper 3.8: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- rookery commit: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet HEAD -- src protocol 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "- ZooKeeper: $(dpkg-query -W -f='${Version}' zookeeper 2>/dev/null), $(java -version 2>&1 | head -1), -Xmx$ZK_HEAP, G1, fsync on"
    echo "- machine: $(nproc) cores, $(lscpu | awk -F: '/Model name/{gsub(/^ +/,"",$2); print $2; exit}'), $(free -g | awk '/Mem:/{print $2}') GiB RAM; load generator on the same cores"
    echo "- settings: QUICK=$QUICK REPS=$REPS DURATION=${DURATION}s WARMUP=${WARMUP}s JIT_WARMUP=${JIT_WARMUP}s INFLIGHT=$INFLIGHT VALUE_SIZE=$VALUE_SIZE, medians of REPS runs, runs alternate between servers"
    echo
    python3 - "$RAW" "$POP_RAW" "$POPULATE" <<'PY'
import json, statistics, sys
raw, pop_raw, populate = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = {}
order = []
for line in open(raw):
    line = line.strip()
    if not line:
        continue
    d = json.loads(line)
    key = (d.get("workload"), d.get("sessions"))
    if key not in runs:
        runs[key] = {}
        order.append(key)
    runs[key].setdefault(d.get("label"), []).append(d)

def med(ds, field):
    vals = [d[field] for d in ds if not d.get("failed") and field in d]
    return statistics.median(vals) if vals else None

def fmt_ops(v):
    return "FAIL" if v is None else f"{v:,.0f}"

def fmt_ms(v):
    return "FAIL" if v is None else f"{v / 1000:.2f}"

print("## Throughput and p99 latency (medians)")
print()
print("| workload | sessions | rookery ops/s | zk ops/s | ratio | rookery p99 ms | zk p99 ms |")
print("|---|---:|---:|---:|---:|---:|---:|")
for key in order:
    r = runs[key].get("rookery", [])
    z = runs[key].get("zk", [])
    ro, zo = med(r, "ops_per_sec"), med(z, "ops_per_sec")
    rp, zp = med(r, "p99_us"), med(z, "p99_us")
    ratio = f"{ro / zo:.2f}" if ro and zo else "-"
    cell = lambda ds, v, f: ("-" if not ds else f(v))
    print(f"| {key[0]} | {key[1]} | {cell(r, ro, fmt_ops)} | {cell(z, zo, fmt_ops)} | {ratio} | {cell(r, rp, fmt_ms)} | {cell(z, zp, fmt_ms)} |")
print()
print("ratio = rookery ops/s / zk ops/s (above 1: rookery faster). watch: ops = rounds (setData until the")
print("last of N notifications arrived), p99 = that round latency.")
print()
pops = [json.loads(l) for l in open(pop_raw) if l.strip()]
if pops:
    print(f"## Populate {populate:,} znodes, memory and restart")
    print()
    print("| server | populate s | creates/s | p99 / p999 / max ms | RSS after populate MiB | peak RSS (VmHWM) MiB | peak PSS with children MiB | data dir MiB | restart s (TERM to first getData) | RSS after restart MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    mib = lambda kb: "-" if kb in (None, "null") else f"{int(kb) / 1024:,.0f}"
    ms = lambda us: "-" if us is None else f"{us / 1000:.1f}"
    for p in pops:
        d = p["populate"]
        lat = f"{ms(d.get('p99_us'))} / {ms(d.get('p999_us'))} / {ms(d.get('max_us'))}"
        print(f"| {p['label']} | {d.get('elapsed_s', 'FAIL')} | {d.get('ops_per_sec', 0):,.0f} | {lat} | {mib(d.get('server_rss_kb'))} | {mib(d.get('server_hwm_kb'))} | {mib(p.get('pss_peak_kb'))} | {p['disk_kb'] / 1024:,.0f} | {p['restart_s']} | {mib(p.get('rss_after_restart_kb'))} |")
    print()
    print("ZooKeeper restarts with a cold JVM; its populate also pays JIT warm-up. Peak PSS sums the")
    print("server's and its children's proportional set size, sampled every 100 ms: rookery's forked")
    print("snapshot writer shares the tree copy-on-write, so only the pages copied meanwhile count twice.")
    print()
    for p in pops:
        pauses = p.get("snapshot_pauses_us")
        if pauses:
            print(f"{p['label']}: {len(pauses)} snapshots during the populate; raft-thread pause per snapshot "
                  f"max {max(pauses) / 1000:.1f} ms, median {statistics.median(pauses) / 1000:.1f} ms.")
            print()
failed = [l for l in open(raw) if '"failed":true' in l]
if failed:
    print(f"## Failed runs: {len(failed)}")
    print()
    for l in failed[:20]:
        print("    " + l.strip()[:300])
    print()
PY
    echo "<details><summary>raw JSON lines</summary>"
    echo
    sed 's/^/    /' "$RAW" "$POP_RAW"
    echo
    echo "</details>"
} >"$OUT"
cat "$OUT"
log "results written to $OUT"
nfailed=$(cat "$RAW" "$POP_RAW" | grep -c '"failed":true')
if [ "$nfailed" -gt 0 ]; then
    log "$nfailed runs failed"
    exit 1
fi
