#!/usr/bin/env bash
# Observer benchmark (issue 8): 3 voters + 1 observer (`server.4=...:observer`, `peerType=observer`)
# on this machine (loopback), rookery (TARGET=rookery, default) or ZooKeeper 3.8 (TARGET=zk),
# started as benches/ensemble.sh starts them (scripts/lib-ensemble.sh). Load from
# target/release/rookery-load; every figure is the median of REPS runs of DURATION seconds:
#   * reads the observer adds: getData at SESSIONS sessions spread over the 3 voters, then over
#     the 3 voters and the observer;
#   * what reads on an observer cost writes: setData at WRITERS sessions on the voters alone,
#     then with READERS getData sessions on the observer at the same time, then with them on a
#     follower instead. An observer must slow writes no more than a voter does.
# All four servers and both load generators share the machine's cores, so reads cannot scale
# here the way they do on separate machines; the ratios are what this machine shows.
#
#   benches/observer.sh                       # rookery, REPS=3 DURATION=4
#   TARGET=zk benches/observer.sh             # the same against ZooKeeper 3.8
#
# Knobs: TARGET, REPS, DURATION, WARMUP, SESSIONS (32), WRITERS (16), READERS (16), TICK (2000),
# ZK_HEAP (1g), JIT_WARMUP (s, zk only, 15), SKIP_BUILD=1, MAX_SECONDS (watchdog, 1200), OUT.
# Every process is stopped by its recorded pid on exit; loopback only.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
TARGET=${TARGET:-rookery}
MEMBERS=4
REPS=${REPS:-3}
DURATION=${DURATION:-4}
WARMUP=${WARMUP:-1}
SESSIONS=${SESSIONS:-32}
WRITERS=${WRITERS:-16}
READERS=${READERS:-16}
TICK=${TICK:-2000}
ZK_HEAP=${ZK_HEAP:-1g}
JIT_WARMUP=${JIT_WARMUP:-15}
MAX_SECONDS=${MAX_SECONDS:-1200}
STAMP=$(date -u +%Y-%m-%d-%H%M%S)
OUT=${OUT:-$HERE/results/observer-$TARGET-$STAMP.md}
LOAD=$ROOT/target/release/rookery-load
ROOKERY=${ROOKERY:-$ROOT/target/release/rookery}
WORK=$(mktemp -d /tmp/rookery-observer.XXXXXX)
RAW=$WORK/raw.jsonl
: >"$RAW"
# shellcheck source=../scripts/lib-ensemble.sh
. "$ROOT/scripts/lib-ensemble.sh"
WATCHDOG=""

log() { echo "[observer $(date +%H:%M:%S)] $*" >&2; }
die() { log "FATAL: $*"; exit 1; }
# alive, stop_pid: scripts/lib-ensemble.sh
cleanup() {
    local rc=$?
    for i in $(seq "$MEMBERS"); do stop_pid "${PID[$i]:-}"; done
    [ -n "$WATCHDOG" ] && kill "$WATCHDOG" 2>/dev/null
    if [ $rc -ne 0 ]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM
(
    trap 'kill "$sp" 2>/dev/null; exit 0' TERM
    sleep "$MAX_SECONDS" & sp=$!
    wait "$sp" && { echo "[observer] watchdog: $MAX_SECONDS s exceeded" >&2; kill -TERM $$; }
) &
WATCHDOG=$!

case "$TARGET" in zk|rookery) ;; *) die "TARGET must be zk or rookery";; esac
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building (release)"
    (cd "$ROOT" && timeout 1800 cargo build --release -p rookery-bench -p rookery --bins) >"$WORK/build.log" 2>&1 \
        || { tail -30 "$WORK/build.log" >&2; die "cargo build failed"; }
fi
[ -x "$LOAD" ] || die "$LOAD missing"

ens_ports
for i in $(seq "$MEMBERS"); do
    ens_write_cfg "$i" "$WORK/m$i"
    # Member 4 is an observer, in every member's server list; it says so itself too.
    sed -i "s|^\(server\.4=127\.0\.0\.1:[0-9]*:[0-9]*\);|\1:observer;|" "$WORK/m$i/zoo.cfg"
done
echo "peerType=observer" >>"$WORK/m4/zoo.cfg"
for i in $(seq "$MEMBERS"); do ens_start_member "$i" "$WORK/m$i" "$WORK/m$i/out.log"; done

LEADER=""
for _ in $(seq 900); do
    modes=""; for i in $(seq "$MEMBERS"); do alive "${PID[$i]}" || die "member $i exited: $(tail -5 "$WORK/m$i/out.log" | tr '\n' ' ')"; modes="$modes $(ens_mode_of "$i")"; done
    read -r -a m <<<"$modes"
    if [ "${m[3]:-}" = observer ] && [ "$(printf '%s\n' "${m[@]:0:3}" | grep -c '^leader$')" = 1 ] \
        && [ "$(printf '%s\n' "${m[@]:0:3}" | grep -c '^follower$')" = 2 ]; then
        for i in 1 2 3; do [ "${m[$((i - 1))]}" = leader ] && LEADER=$i; done
        break
    fi
    sleep 0.1
done
[ -n "$LEADER" ] || die "ensemble not ready within 90 s (modes:$modes)"
FOLLOWER=$(for i in 1 2 3; do [ "$i" != "$LEADER" ] && echo "$i"; done | head -1)
addr() { for i in "$@"; do printf '127.0.0.1:%s,' "${CPORT[$i]}"; done | sed 's/,$//'; }
VOTERS=$(addr 1 2 3); ALL=$(addr 1 2 3 4); OBSERVER=$(addr 4); ONE_FOLLOWER=$(addr "$FOLLOWER")
log "$TARGET: leader $LEADER, follower $FOLLOWER used for reads, observer 4 (modes:$modes)"

run() { # $1 = tag, $2 = servers, rest = rookery-load args; prints ops/s, appends JSON to $RAW
    local tag=$1 servers=$2 line
    shift 2
    line=$("$LOAD" --servers "$servers" -q "$@" --duration "$DURATION" --warmup "$WARMUP" --label "$tag" 2>>"$WORK/load.err" | grep '^{' | tail -1)
    [ -z "$line" ] && line="{\"failed\":true,\"label\":\"$tag\"}"
    echo "$line" >>"$RAW"
    echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("ops_per_sec", 0))'
}

if [ "$TARGET" = zk ] && [ "$JIT_WARMUP" != 0 ]; then
    log "JIT warm-up ${JIT_WARMUP}s"
    "$LOAD" --servers "$ALL" -q --workload set --sessions 16 --duration "$JIT_WARMUP" --warmup 0 --cleanup >/dev/null 2>&1
fi

declare -A R
for r in $(seq "$REPS"); do
    R[reads_voters]+=" $(run reads-voters "$VOTERS" --workload get --sessions "$SESSIONS" --cleanup --seed "$r")"
    R[reads_all]+=" $(run reads-with-observer "$ALL" --workload get --sessions "$SESSIONS" --cleanup --seed "$r")"
    R[writes_alone]+=" $(run writes-alone "$VOTERS" --workload set --sessions "$WRITERS" --cleanup --seed "$r")"
    for where in observer follower; do
        target=$OBSERVER; [ $where = follower ] && target=$ONE_FOLLOWER
        run "reads-on-$where" "$target" --workload get --sessions "$READERS" --cleanup --seed "$r" >"$WORK/reads-$where" &
        rp=$!
        R[writes_$where]+=" $(run "writes-with-reads-on-$where" "$VOTERS" --workload set --sessions "$WRITERS" --cleanup --seed "$r")"
        wait "$rp"
        R[reads_on_$where]+=" $(cat "$WORK/reads-$where")"
    done
    log "rep $r: ${R[*]}"
done

median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {printf "%.0f", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}' if $2 else '-')"; }
rv=$(median "${R[reads_voters]}"); ra=$(median "${R[reads_all]}")
wa=$(median "${R[writes_alone]}"); wo=$(median "${R[writes_observer]}"); wf=$(median "${R[writes_follower]}")
ro=$(median "${R[reads_on_observer]}"); rf=$(median "${R[reads_on_follower]}")
{
    echo "# Observer benchmark, $TARGET: $(date -u '+%Y-%m-%d %H:%M') UTC"
    echo
    echo "- $TARGET $( [ "$TARGET" = rookery ] && git -C "$ROOT" rev-parse --short HEAD)"
    echo "- 3 voters + 1 observer and the load generators on one 2-core machine; REPS=$REPS DURATION=${DURATION}s"
    echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| measurement | median ops/s | runs |"
    echo "|---|---:|---|"
    echo "| getData, $SESSIONS sessions on the 3 voters | $rv | ${R[reads_voters]} |"
    echo "| getData, $SESSIONS sessions on the 3 voters + the observer | $ra | ${R[reads_all]} |"
    echo "| setData, $WRITERS sessions on the voters, nothing else | $wa | ${R[writes_alone]} |"
    echo "| setData, the same, while $READERS getData sessions read from the observer | $wo | ${R[writes_observer]} |"
    echo "| (the observer's reads meanwhile) | $ro | ${R[reads_on_observer]} |"
    echo "| setData, the same, while $READERS getData sessions read from a follower | $wf | ${R[writes_follower]} |"
    echo "| (the follower's reads meanwhile) | $rf | ${R[reads_on_follower]} |"
    echo
    echo "- reads with the observer / without: $(ratio "$ra" "$rv")"
    echo "- writes with reads on the observer / alone: $(ratio "$wo" "$wa"); with reads on a follower / alone: $(ratio "$wf" "$wa"); observer / follower: $(ratio "$wo" "$wf")"
    echo
    echo "<details><summary>raw JSON lines</summary>"
    echo
    sed 's/^/    /' "$RAW"
    echo
    echo "</details>"
} >"$OUT"
log "wrote $OUT"
cat "$OUT" | sed -n '1,20p'
