#!/usr/bin/env bash
# Per-commit I/O of rookery's Raft log (issue 10): what one LMDB write transaction writes and
# how long its flush takes, under a write load, for one or more rookery binaries side by side
# (e.g. before and after a storage change). For each binary, interleaved over REPS: a fresh
# data dir, a standalone server, WORKLOAD at SESSIONS sessions for DURATION s, and the deltas
# over the run of
#   * /proc/<pid>/io write_bytes (bytes the process caused to be written to the disk),
#   * mntr's rookery_raft_write_txns,
#   * /metrics rookery_raft_log_commit_seconds (page writes + fdatasync of each transaction)
#     and rookery_raft_log_flush_seconds (explicit fdatasyncs), and rookery_raft_batch_entries;
# reported as 4 KiB pages per write transaction, entries per transaction, mean commit and
# flush time, and ops/s; medians over REPS.
#
#   benches/commit-io.sh                                    # target/release/rookery
#   BINS="before=/tmp/old/rookery after=target/release/rookery" benches/commit-io.sh
#   SESSIONS=1 WORKLOAD=set benches/commit-io.sh
#
# Knobs: BINS ("label=path ..."), WORKLOAD (create), SESSIONS (32), DURATION (5), REPS (3),
# VALUE_SIZE (100), SNAP_COUNT (10000000: no snapshot inside the run, so that only the log's
# writes count), SKIP_BUILD=1, MAX_SECONDS (watchdog, 900), OUT. Loopback only; every server
# is stopped by its recorded pid.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
BINS=${BINS:-"rookery=$ROOT/target/release/rookery"}
WORKLOAD=${WORKLOAD:-create}
SESSIONS=${SESSIONS:-32}
DURATION=${DURATION:-5}
REPS=${REPS:-3}
VALUE_SIZE=${VALUE_SIZE:-100}
SNAP_COUNT=${SNAP_COUNT:-10000000}
MAX_SECONDS=${MAX_SECONDS:-900}
STAMP=$(date -u +%Y-%m-%d-%H%M%S)
OUT=${OUT:-$HERE/results/commit-io-$STAMP.md}
LOAD=$ROOT/target/release/rookery-load
WORK=$(mktemp -d /tmp/rookery-commit-io.XXXXXX)
RAW=$WORK/raw.jsonl
: >"$RAW"
PID=""
WATCHDOG=""

log() { echo "[commit-io $(date +%H:%M:%S)] $*" >&2; }
die() { log "FATAL: $*"; exit 1; }
# alive, stop_pid, start_watchdog: scripts/lib-ensemble.sh
# shellcheck source=../scripts/lib-ensemble.sh
. "$ROOT/scripts/lib-ensemble.sh"
cleanup() {
    local rc=$?
    stop_pid "$PID"
    [ -n "$WATCHDOG" ] && kill "$WATCHDOG" 2>/dev/null
    if [ $rc -ne 0 ]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM
WATCHDOG=$(start_watchdog "$MAX_SECONDS")

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building (release)"
    (cd "$ROOT" && timeout 1800 cargo build --release -p rookery -p rookery-bench --bins) >"$WORK/build.log" 2>&1 \
        || { tail -30 "$WORK/build.log" >&2; die "cargo build failed"; }
fi
[ -x "$LOAD" ] || die "$LOAD missing"
command -v curl >/dev/null || die "curl is needed for /metrics"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Prints one JSON object of the counters this script takes deltas of.
counters() { # $1 = pid, $2 = client port, $3 = metrics port
    local io mntr metrics
    io=$(awk '/^write_bytes:/{print $2}' "/proc/$1/io")
    mntr=$(echo mntr | nc -w 2 127.0.0.1 "$2")
    metrics=$(curl -s --max-time 2 "http://127.0.0.1:$3/metrics")
    python3 - "$io" "$mntr" "$metrics" <<'PY'
import json, sys
io, mntr, metrics = sys.argv[1:4]
d = {"write_bytes": int(io)}
for line in mntr.splitlines():
    parts = line.split("\t")
    if len(parts) == 2 and parts[0] == "rookery_raft_write_txns":
        d[parts[0]] = int(parts[1])
for line in metrics.splitlines():
    if line.startswith("#"):
        continue
    name, _, value = line.rpartition(" ")
    for h in ("rookery_raft_log_commit_seconds", "rookery_raft_log_flush_seconds", "rookery_raft_batch_entries"):
        if name in (h + "_sum", h + "_count"):
            d[name] = float(value)
print(json.dumps(d))
PY
}

log "work dir $WORK; $WORKLOAD at $SESSIONS sessions, ${DURATION}s x $REPS reps; binaries: $BINS"
for rep in $(seq "$REPS"); do
    for spec in $BINS; do
        label=${spec%%=*}; bin=${spec#*=}
        [ -x "$bin" ] || die "$bin missing"
        port=$(free_port); mport=$(free_port)
        dir=$WORK/data-$label-$rep
        mkdir -p "$dir"
        # Older binaries have no /metrics: their row has no commit or flush times.
        metrics_args=()
        "$bin" --help | grep -q -- --metrics-port && metrics_args=(--metrics-port "$mport" --metrics-address 127.0.0.1)
        "$bin" --port "$port" --address 127.0.0.1 --data-dir "$dir" --4lw-whitelist '*' --max-client-cnxns 0 \
            --snap-count "$SNAP_COUNT" "${metrics_args[@]}" >>"$WORK/$label.out" 2>&1 &
        PID=$!
        for _ in $(seq 300); do
            echo ruok | nc -w 1 127.0.0.1 "$port" 2>/dev/null | grep -q imok && break
            alive "$PID" || die "$label exited during startup (see $WORK/$label.out)"
            sleep 0.1
        done
        # A short warm-up, so the log's first pages and the file's first growth are behind.
        "$LOAD" --servers "127.0.0.1:$port" --workload "$WORKLOAD" --sessions "$SESSIONS" --duration 1 \
            --warmup 0 --value-size "$VALUE_SIZE" -q >/dev/null 2>&1
        before=$(counters "$PID" "$port" "$mport")
        run=$("$LOAD" --servers "127.0.0.1:$port" --workload "$WORKLOAD" --sessions "$SESSIONS" \
            --duration "$DURATION" --warmup 0 --value-size "$VALUE_SIZE" --seed "$rep" -q 2>"$WORK/load.err" | grep '^{' | tail -1)
        after=$(counters "$PID" "$port" "$mport")
        stop_pid "$PID"; PID=""
        [ -n "$run" ] || die "$label: load run failed: $(tail -2 "$WORK/load.err")"
        echo "{\"label\":\"$label\",\"rep\":$rep,\"run\":$run,\"before\":$before,\"after\":$after}" >>"$RAW"
        log "$label rep $rep: $(echo "$run" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ops_per_sec"])') ops/s"
        rm -rf "$dir"
    done
done

mkdir -p "$(dirname "$OUT")"
{
    echo "# rookery per-commit I/O: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- $WORKLOAD, $SESSIONS sessions, ${DURATION}s per run, $REPS reps interleaved, VALUE_SIZE=$VALUE_SIZE, fresh data dir per run, snapCount $SNAP_COUNT"
    echo "- machine: $(nproc) cores, $(df -T "$WORK" | awk 'NR==2{print $2}') under $WORK; binaries: $BINS"
    echo
    python3 - "$RAW" <<'PY'
import json, statistics, sys
rows = {}
order = []
for line in open(sys.argv[1]):
    d = json.loads(line)
    b, a = d["before"], d["after"]
    delta = lambda k: a.get(k, 0) - b.get(k, 0)
    txns = delta("rookery_raft_write_txns")
    if txns <= 0:
        continue
    cc, fc = delta("rookery_raft_log_commit_seconds_count"), delta("rookery_raft_log_flush_seconds_count")
    ops = d["run"]["ops"]
    r = {
        "ops_per_sec": d["run"]["ops_per_sec"],
        "p99_ms": d["run"]["p99_us"] / 1000,
        "pages_per_txn": delta("write_bytes") / 4096 / txns,
        "kib_per_op": delta("write_bytes") / 1024 / max(ops, 1),
        "entries_per_txn": delta("rookery_raft_batch_entries_sum") / max(delta("rookery_raft_batch_entries_count"), 1),
        "commit_ms": 1000 * delta("rookery_raft_log_commit_seconds_sum") / cc if cc else None,
        "flush_ms": 1000 * delta("rookery_raft_log_flush_seconds_sum") / fc if fc else None,
        "syncs_per_txn": fc / txns,
        "txns_per_op": txns / max(ops, 1),
    }
    if d["label"] not in rows:
        order.append(d["label"])
    rows.setdefault(d["label"], []).append(r)
def med(rs, k):
    vals = [r[k] for r in rs if r[k] is not None]
    return statistics.median(vals) if vals else None
f = lambda v, fmt: "-" if v is None else format(v, fmt)
print("| binary | ops/s | p99 ms | 4 KiB pages written per write txn | KiB written per op | entries per txn | write txns per op | mean commit ms (pages + fdatasync) | explicit flushes per txn | mean flush ms |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for label in order:
    rs = rows[label]
    print(f"| {label} | {f(med(rs, 'ops_per_sec'), ',.0f')} | {f(med(rs, 'p99_ms'), '.2f')} | {f(med(rs, 'pages_per_txn'), '.2f')} | {f(med(rs, 'kib_per_op'), '.2f')} | {f(med(rs, 'entries_per_txn'), '.1f')} | {f(med(rs, 'txns_per_op'), '.3f')} | {f(med(rs, 'commit_ms'), '.3f')} | {f(med(rs, 'syncs_per_txn'), '.2f')} | {f(med(rs, 'flush_ms'), '.3f')} |")
print()
print(f"Medians over the reps ({', '.join(f'{k}: {len(v)}' for k, v in rows.items())}). Pages = write_bytes / 4096 /")
print("write txns: data pages, the meta page and the file's growth, whatever the process wrote.")
PY
    echo
    echo "<details><summary>raw JSON lines</summary>"
    echo
    sed 's/^/    /' "$RAW"
    echo
    echo "</details>"
} >"$OUT"
cat "$OUT"
log "results written to $OUT"
