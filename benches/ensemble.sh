#!/usr/bin/env bash
# Ensemble benchmark: a 3-member ensemble on this machine (loopback), ZooKeeper 3.8 by default,
# or rookery with TARGET=rookery (started the same way: the same zoo.cfg with server.N lines and
# myid, `rookery --config zoo.cfg`). Load from target/release/rookery-load, its sessions spread
# round-robin over all members:
#   * throughput: create, setData, getData at SESSIONS (32) sessions, median of REPS runs;
#   * failover: time from SIGKILL of the leader to the first acknowledged write (a setData,
#     retried every few ms on every survivor, by an embedded Python wire-protocol probe),
#     median of KILLS kills; the killed member is restarted and the ensemble is whole again
#     between kills.
#
#   benches/ensemble.sh                                  # REPS=3 DURATION=5 KILLS=5
#   REPS=3 DURATION=3 KILLS=3 JIT_WARMUP=10 benches/ensemble.sh   # short run
#   TARGET=rookery benches/ensemble.sh                   # rookery ensemble
#
# Knobs: TARGET (zk|rookery), MEMBERS (3), REPS, DURATION, WARMUP, JIT_WARMUP, SESSIONS,
# WORKLOADS ("create set get"), VALUE_SIZE, KILLS, SETTLE (s of idle before each throughput run, 0), TICK (ms, 2000), ZK_HEAP (1g), SKIP_BUILD=1,
# MAX_SECONDS (watchdog, 1800), OUT, KEEP_WORK=1.
# Every process is stopped by its recorded pid on exit; loopback only.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
TARGET=${TARGET:-zk}
MEMBERS=${MEMBERS:-3}
REPS=${REPS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
JIT_WARMUP=${JIT_WARMUP:-15}
SESSIONS=${SESSIONS:-32}
WORKLOADS=${WORKLOADS:-"create set get"}
VALUE_SIZE=${VALUE_SIZE:-100}
KILLS=${KILLS:-5}
SETTLE=${SETTLE:-0}
TICK=${TICK:-2000}
ZK_HEAP=${ZK_HEAP:-1g}
MAX_SECONDS=${MAX_SECONDS:-1800}
STAMP=$(date -u +%Y-%m-%d-%H%M%S)
OUT=${OUT:-$HERE/results/ensemble-$TARGET-$STAMP.md}
LOAD=$ROOT/target/release/rookery-load
ROOKERY=${ROOKERY:-$ROOT/target/release/rookery}
WORK=$(mktemp -d /tmp/rookery-ensemble.XXXXXX)
RAW=$WORK/raw.jsonl
FO=$WORK/failover.txt
: >"$RAW"; : >"$FO"
# Ports, zoo.cfg, member start-up: shared with scripts/ensemble-fg.sh.
# shellcheck source=../scripts/lib-ensemble.sh
. "$ROOT/scripts/lib-ensemble.sh"
WATCHDOG=""

log() { echo "[ensemble $(date +%H:%M:%S)] $*" >&2; }
die() { log "FATAL: $*"; exit 1; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# alive, stop_pid: scripts/lib-ensemble.sh

cleanup() {
    local rc=$?
    for i in $(seq "$MEMBERS"); do stop_pid "${PID[$i]:-}"; done
    [ -n "$WATCHDOG" ] && kill "$WATCHDOG" 2>/dev/null
    if [ "${KEEP_WORK:-0}" = 1 ] || [ $rc -ne 0 ]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM
(
    trap 'kill "$sp" 2>/dev/null; exit 0' TERM
    sleep "$MAX_SECONDS" & sp=$!
    wait "$sp" && { echo "[ensemble] watchdog: $MAX_SECONDS s exceeded" >&2; kill -TERM $$; }
) &
WATCHDOG=$!

case "$TARGET" in zk|rookery) ;; *) die "TARGET must be zk or rookery";; esac
command -v python3 >/dev/null || die "python3 is needed"
[ "$TARGET" = zk ] && [ ! -f /usr/share/java/zookeeper.jar ] && die "install Debian's zookeeper first (see benches/README.md)"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    pkgs=(-p rookery-bench); [ "$TARGET" = rookery ] && pkgs+=(-p rookery)
    log "building (release)"
    (cd "$ROOT" && timeout 1800 cargo build --release "${pkgs[@]}" --bins) >"$WORK/build.log" 2>&1 \
        || { tail -30 "$WORK/build.log" >&2; die "cargo build failed"; }
fi
[ -x "$LOAD" ] || die "$LOAD missing"
[ "$TARGET" = rookery ] && { [ -x "$ROOKERY" ] || die "$ROOKERY missing"; }

ens_ports
SERVERS=$ENS_CONNECT

write_cfg() { ens_write_cfg "$1" "$WORK/m$1"; } # $1 = member
start_member() { ens_start_member "$1" "$WORK/m$1" "$WORK/m$1/out.log"; } # $1 = member
mode_of() { ens_mode_of "$1"; }

# Every running member is leader/follower, exactly one leader; prints its member number. 90 s.
wait_ready() {
    local t m leaders ok leader
    for t in $(seq 900); do
        leaders=0; ok=1; leader=""
        for i in $(seq "$MEMBERS"); do
            alive "${PID[$i]:-}" || die "member $i (pid ${PID[$i]:-}) exited: $(tail -5 "$WORK/m$i/out.log" | tr '\n' ' ')"
            m=$(mode_of "$i")
            case "$m" in
                leader) leaders=$((leaders + 1)); leader=$i ;;
                follower|observer) ;;
                standalone) die "member $i reports Mode: standalone: $TARGET does not serve as an ensemble (rookery: issue 7 not wired into the server yet)" ;;
                *) ok=0 ;;
            esac
        done
        [ $ok = 1 ] && [ $leaders = 1 ] && { echo "$leader"; return 0; }
        sleep 0.1
    done
    die "ensemble not ready within 90 s"
}

load() { # rest = rookery-load args; appends the JSON line to $RAW
    local line rc
    line=$("$LOAD" --servers "$SERVERS" -q "$@" 2>"$WORK/load.err" | grep '^{' | tail -1); rc=${PIPESTATUS[0]}
    local w=? a prev=""
    for a in "$@"; do [ "$prev" = --workload ] && w=$a; prev=$a; done
    [ -z "$line" ] && line="{\"failed\":true,\"exit\":$rc,\"workload\":\"$w\"}"
    [ "$rc" -ne 0 ] && log "rookery-load $*: exit $rc: $(tail -2 "$WORK/load.err" | tr '\n' ' ')"
    echo "$line"
}

# ---------------------------------------------------------------- start
LOAD_START=$(loadavg)
for i in $(seq "$MEMBERS"); do write_cfg "$i"; start_member "$i"; done
LEADER=$(wait_ready) || exit 1
log "$TARGET ensemble up: leader member $LEADER, client ports ${CPORT[*]}; load average $LOAD_START"

if [ "$TARGET" = zk ] && [ "$JIT_WARMUP" != 0 ]; then
    log "JIT warm-up ${JIT_WARMUP}s"
    per=$(python3 -c "print(max(1, $JIT_WARMUP / 3))")
    for w in create set get; do load --workload "$w" --sessions 32 --duration "$per" --warmup 0 --cleanup >/dev/null; done
fi

# ---------------------------------------------------------------- throughput
LOAD_TP=$(loadavg)
for w in $WORKLOADS; do
    for r in $(seq "$REPS"); do
        [ "$SETTLE" != 0 ] && sleep "$SETTLE"
        line=$(load --workload "$w" --sessions "$SESSIONS" --duration "$DURATION" --warmup "$WARMUP" \
            --value-size "$VALUE_SIZE" --cleanup --seed "$r" --label "$TARGET")
        echo "$line" >>"$RAW"
        log "$w rep $r: $(echo "$line" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("ops_per_sec","FAIL"), "ops/s, p99", d.get("p99_us","-"), "us")')"
    done
done

# ---------------------------------------------------------------- failover
# The probe: setData on /ensemble-failover-probe through every survivor, each in its own thread,
# reconnecting (a new session) after any failure; SIGKILL the leader itself so the clock starts
# at the kill; prints the ms until the first acknowledged setData. Bounded at 60 s.
probe() { # $1 = leader pid, $2 = survivor ports (comma-separated)
    python3 - "$1" "$2" <<'PY'
import os, signal, socket, struct, sys, threading, time
pid, ports = int(sys.argv[1]), [int(p) for p in sys.argv[2].split(",")]
PATH = b"/ensemble-failover-probe"

def frame(b): return struct.pack(">i", len(b)) + b
def s_(b): return struct.pack(">i", len(b)) + b
def recv_frame(s):
    def exact(n):
        out = b""
        while len(out) < n:
            c = s.recv(n - len(out))
            if not c: raise OSError("closed")
            out += c
        return out
    (n,) = struct.unpack(">i", exact(4)); return exact(n)
def session(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=1.0)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(frame(struct.pack(">iqiq", 0, 0, 10000, 0) + s_(b"\0" * 16) + b"\0"))
    r = recv_frame(s)
    if struct.unpack(">iiq", r[:16])[2] == 0: raise OSError("no session")
    return s
def call(s, xid, op, body):
    s.sendall(frame(struct.pack(">ii", xid, op) + body))
    while True:
        r = recv_frame(s)
        rx, _zxid, err = struct.unpack(">iqi", r[:16])
        if rx == xid: return err
def set_data(s, xid): return call(s, xid, 5, s_(PATH) + s_(b"x" * 10) + struct.pack(">i", -1))
def create(s, xid):
    acl = struct.pack(">i", 1) + struct.pack(">i", 31) + s_(b"world") + s_(b"anyone")
    return call(s, xid, 1, s_(PATH) + s_(b"") + acl + struct.pack(">i", 0))

# Before the kill: the node exists and a write works through every survivor. A member may
# refuse a handshake for a while after a restart (rookery's serving gate): retry for up to 20 s,
# and say so on stderr; a survivor that never accepts fails the probe (no kill).
for p in ports:
    t_pre, tries = time.monotonic(), 0
    while True:
        tries += 1
        try:
            s = session(p); err = create(s, 1)
            assert err in (0, -110), err
            assert set_data(s, 2) == 0; s.close()
            break
        except OSError as e:
            if time.monotonic() - t_pre > 20:
                print(f"PRECHECK-FAIL port {p}: {e} ({tries} tries over 20 s)", file=sys.stderr); sys.exit(2)
            time.sleep(0.05)
    if tries > 1:
        print(f"pre-check: port {p} accepted a write after {tries} tries, "
              f"{(time.monotonic() - t_pre) * 1000:.0f} ms", file=sys.stderr)

done = threading.Event(); first = []; lock = threading.Lock(); t0 = [0.0]
def worker(port):
    s, xid = None, 10
    while not done.is_set() and time.monotonic() - t0[0] < 60:
        try:
            if s is None: s = session(port)
            xid += 1; sent = time.monotonic()
            if set_data(s, xid) == 0:
                with lock:
                    if sent >= t0[0]: first.append((time.monotonic() - t0[0], port)); done.set()
            else: time.sleep(0.005)
        except OSError:
            if s: s.close()
            s = None; time.sleep(0.005)
t0[0] = time.monotonic()
os.kill(pid, signal.SIGKILL)
ts = [threading.Thread(target=worker, args=(p,), daemon=True) for p in ports]
for t in ts: t.start()
done.wait(61)
if not first: print("FAIL"); sys.exit(1)
ms, port = min(first)
print(f"{ms * 1000:.0f} {port}")
PY
}

LOAD_FO=$(loadavg)
for k in $(seq "$KILLS"); do
    LEADER=$(wait_ready) || exit 1
    sleep 2
    survivors=$(for i in $(seq "$MEMBERS"); do [ "$i" != "$LEADER" ] && printf '%s,' "${CPORT[$i]}"; done); survivors=${survivors%,}
    res=$(probe "${PID[$LEADER]}" "$survivors" 2>"$WORK/probe-$k.err") || res="FAIL"
    [ -s "$WORK/probe-$k.err" ] && log "probe $k: $(tr '\n' ' ' <"$WORK/probe-$k.err" | cut -c1-300)"
    # The probe exits before its kill if a pre-check fails: never wait on a live leader.
    alive "${PID[$LEADER]}" && { log "kill $k: probe did not kill the leader; SIGKILL it now"; kill -KILL "${PID[$LEADER]}"; }
    wait "${PID[$LEADER]}" 2>/dev/null
    echo "$k $LEADER $res" >>"$FO"
    log "kill $k: leader member $LEADER SIGKILLed; first acknowledged write after ${res%% *} ms"
    start_member "$LEADER"
    NEW=$(wait_ready) || exit 1
    log "member $LEADER restarted; leader now member $NEW"
done
LOAD_END=$(loadavg)

# ---------------------------------------------------------------- report
mkdir -p "$(dirname "$OUT")"
{
    echo "# $MEMBERS-member $TARGET ensemble on one machine: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    if [ "$TARGET" = zk ]; then
        echo "- ZooKeeper $(dpkg-query -W -f='${Version}' zookeeper 2>/dev/null), $(java -version 2>&1 | head -1), -Xmx$ZK_HEAP per member, G1, fsync on"
    else
        echo "- rookery $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)"
    fi
    echo "- machine: $(nproc) cores, $(lscpu | awk -F: '/Model name/{gsub(/^ +/,"",$2); print $2; exit}'); all $MEMBERS members and the load generator share them"
    echo "- settings: tickTime=$TICK, REPS=$REPS DURATION=${DURATION}s WARMUP=${WARMUP}s JIT_WARMUP=${JIT_WARMUP}s SESSIONS=$SESSIONS (spread round-robin over the members, each syncs first) VALUE_SIZE=$VALUE_SIZE KILLS=$KILLS SETTLE=${SETTLE}s"
    echo "- load average (1/5/15 min): start $LOAD_START; before throughput $LOAD_TP; before failover $LOAD_FO; end $LOAD_END"
    echo
    python3 - "$RAW" "$FO" <<'PY'
import json, statistics, sys
runs = {}
for l in open(sys.argv[1]):
    if l.strip():
        d = json.loads(l); runs.setdefault(d.get("workload", "?"), []).append(d)
print("| workload | sessions | median ops/s | median p99 ms | runs ops/s |")
print("|---|---:|---:|---:|---|")
for w, ds in runs.items():
    ok = [d for d in ds if not d.get("failed") and "ops_per_sec" in d]
    ops = statistics.median([d["ops_per_sec"] for d in ok]) if ok else None
    p99 = statistics.median([d["p99_us"] for d in ok]) / 1000 if ok else None
    s = ok[0]["sessions"] if ok else "-"
    print(f"| {w} | {s} | {'FAIL' if ops is None else f'{ops:,.0f}'} | {'-' if p99 is None else f'{p99:.2f}'} | "
          + ", ".join("FAIL" if d.get("failed") else f"{d['ops_per_sec']:,.0f}" for d in ds) + " |")
print()
fo = [l.split() for l in open(sys.argv[2]) if l.strip()]
ms = [int(f[2]) for f in fo if len(f) >= 3 and f[2] != "FAIL"]
print("Failover: SIGKILL of the leader to the first acknowledged setData (sent after the kill, retried on every survivor):")
print()
print("| kill | killed member (leader) | ms |")
print("|---:|---:|---:|")
for f in fo:
    print(f"| {f[0]} | {f[1]} | {f[2] if len(f) > 2 else 'FAIL'} |")
print()
print(f"**median failover: {statistics.median(ms):.0f} ms** over {len(ms)} kills" if ms else "**failover: FAIL**")
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
grep -q '"failed":true' "$RAW" && exit 1
grep -q FAIL "$FO" && exit 1
exit 0
