#!/usr/bin/env bash
# CI smoke for the benchmark tools: builds rookery-load and runs it for about a second against a
# running server (rookery or ZooKeeper). Exits non-zero if the build or any run fails, if a run
# reports errors, or if it completes no operations.
#
#   benches/smoke.sh PORT            # or HOST:PORT; or SMOKE_SERVER=host:port benches/smoke.sh
#   PROFILE=debug benches/smoke.sh 2181   # build/run the debug binary instead of release
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
TARGET=${1:-${SMOKE_SERVER:-}}
if [ -z "$TARGET" ]; then
    echo "usage: $0 PORT|HOST:PORT" >&2
    exit 2
fi
case "$TARGET" in *:*) SERVER=$TARGET ;; *) SERVER=127.0.0.1:$TARGET ;; esac
PROFILE=${PROFILE:-release}

if [ "$PROFILE" = release ]; then
    (cd "$ROOT" && timeout 1200 cargo build --release -p rookery-bench --bin rookery-load)
else
    (cd "$ROOT" && timeout 1200 cargo build -p rookery-bench --bin rookery-load)
fi
LOAD=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/rookery-load
[ -x "$LOAD" ] || { echo "smoke: $LOAD missing" >&2; exit 1; }

run() { # rookery-load args; the JSON line must show ops > 0 and no errors
    local out
    if ! out=$(timeout 60 "$LOAD" --servers "$SERVER" -q --cleanup --warmup 0.1 "$@"); then
        echo "smoke: FAILED: rookery-load $*" >&2
        echo "$out" >&2
        return 1
    fi
    echo "$out" | grep '^{' | tail -1
    echo "$out" | grep '^{' | tail -1 | grep -q '"errors":0,' || { echo "smoke: errors reported" >&2; return 1; }
}

run --workload mixed --sessions 4 --inflight 4 --duration 0.6
run --workload watch --sessions 4 --duration 0.3
echo "smoke: rookery-load OK against $SERVER"
