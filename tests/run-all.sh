#!/usr/bin/env bash
# rookery's test command: bash tests/run-all.sh
#   1. installs Apache ZooKeeper (the reference server), netcat, and the C client headers + gcc
#      (tests/python/test_null_data.py compiles a libzookeeper_mt program) if missing
#   2. makes .venv with tests/python/requirements.txt
#   3. cargo fmt --check; cargo clippy --all-targets -- -D warnings (lints: [workspace.lints]);
#      cargo build --workspace --all-targets; cargo test --workspace
#   4. pytest -q tests/python (against ZooKeeper and rookery; see tests/python/conftest.py)
# Environment: ROOKERY_TESTS_TARGETS=zk|rookery|zk,rookery (default both), ROOKERY_BIN.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/debug
LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/rookery-tests.XXXXXX")
START=$(date +%s)
step() { printf '\n=== %s (+%ss)\n' "$*" "$(( $(date +%s) - START ))"; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

step "system packages"
missing=()
# openssl: tests/python/test_tls.py makes its certificates at run time.
# strace: tests/dir_fsync.rs checks directory fsyncs on the real binary; libzookeeper-mt-dev
# and gcc: tests/python/test_null_data.py compiles a C client program; prometheus:
# tests/e2e_metrics.rs runs promtool on /metrics and a Prometheus server that scrapes it;
# zktop and tmux: tests/python/test_zktop.py; faketime: the fault suite's wall-clock jumps
# (tests/faults/clock.rs).
for p in zookeeper zookeeper-bin netcat-openbsd strace libzookeeper-mt-dev gcc openssl prometheus zktop tmux faketime; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >"$LOGDIR/apt.log" 2>&1 || { tail -n 30 "$LOGDIR/apt.log"; exit 1; }
fi
test -f /usr/share/java/zookeeper.jar || { echo "FAIL: /usr/share/java/zookeeper.jar missing after install"; exit 1; }

step "python venv (.venv)"
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys' 2>/dev/null; then
  rm -rf .venv
  if ! python3 -m venv .venv 2>"$LOGDIR/venv.log"; then
    # Debian's python3 needs python3-venv for ensurepip
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv >/dev/null
    rm -rf .venv && python3 -m venv .venv
  fi
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt

step "cargo fmt --check"
cargo fmt --all -- --check || { echo "FAILED: cargo fmt --check (run cargo fmt)"; exit 1; }

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings || { echo "FAILED: cargo clippy --all-targets -- -D warnings"; exit 1; }

step "cargo build --workspace --all-targets"
cargo build --workspace --all-targets || { echo "FAILED: cargo build --workspace --all-targets"; exit 1; }

failed=()
step "cargo test --workspace"
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$LOGDIR/cargo-test.log"
cargo_rc=${PIPESTATUS[0]}
set -e
[ "$cargo_rc" -eq 0 ] || failed+=("cargo test (exit $cargo_rc)")

step "storage failpoint tests, the fault suite's broken-build validation and the leader killed while joint (cargo test --features failpoints --test failpoints; --test faults broken_sync_is_caught; --test ensemble_reconfig leader_killed_between_entering_and_leaving_joint; --test ensemble_failover a_leader_whose_raft_thread_stalls_hands_its_sessions_on)"
set +e
cargo test --features failpoints --test failpoints 2>&1 | tee "$LOGDIR/failpoints.log"
fp_rc=${PIPESTATUS[0]}
# The checker must catch a rookery whose sync skips its barrier (tests/faults/README.md,
# "Validation against a broken build"; about 35 s, up to 3 tries of 20 s).
cargo test --features failpoints --test faults broken_sync_is_caught -- --exact 2>&1 | tee -a "$LOGDIR/failpoints.log"
broken_rc=${PIPESTATUS[0]}
# A leader SIGKILLed between entering and leaving a joint configuration (issue 8; ~10 s).
cargo test --features failpoints --test ensemble_reconfig leader_killed_between_entering_and_leaving_joint -- --exact 2>&1 | tee -a "$LOGDIR/failpoints.log"
joint_rc=${PIPESTATUS[0]}
# The leader's raft thread stalls for 16 s while its process serves (fault suite finding 5).
cargo test --features failpoints --test ensemble_failover a_leader_whose_raft_thread_stalls_hands_its_sessions_on -- --exact 2>&1 | tee -a "$LOGDIR/failpoints.log"
stall_rc=${PIPESTATUS[0]}
set -e
[ "$fp_rc" -eq 0 ] || failed+=("failpoint tests (exit $fp_rc)")
[ "$broken_rc" -eq 0 ] || failed+=("fault suite broken-build validation (exit $broken_rc)")
[ "$joint_rc" -eq 0 ] || failed+=("leader killed while joint (exit $joint_rc)")
[ "$stall_rc" -eq 0 ] || failed+=("leader raft thread stall (exit $stall_rc)")
# The feature build replaced target/debug/rookery; rebuild the normal one for what follows.
cargo build -p rookery --bins >/dev/null 2>&1 || failed+=("rebuild of the normal rookery binary")

step "client library and rookery-cli tests against rookery (cargo test above ran them against ZooKeeper)"
set +e
CLIENT_TEST_TARGET=rookery ROOKERY_BIN="$BIN_DIR/rookery" \
  cargo test -p rookery-client 2>&1 | tee "$LOGDIR/client-rookery.log"
client_rc=${PIPESTATUS[0]}
set -e
[ "$client_rc" -eq 0 ] || failed+=("rookery-client tests against rookery (exit $client_rc)")

step "client library tests against a 3-member rookery ensemble (sessions spread over the members)"
set +e
CLIENT_TEST_ENSEMBLE=1 CLIENT_TEST_TARGET=rookery ROOKERY_BIN="$BIN_DIR/rookery" \
  cargo test -p rookery-client 2>&1 | tee "$LOGDIR/client-rookery-ensemble.log"
client_ens_rc=${PIPESTATUS[0]}
set -e
[ "$client_ens_rc" -eq 0 ] || failed+=("rookery-client tests against a rookery ensemble (exit $client_ens_rc)")

step "benchmark tools smoke (about a second of load against rookery)"
SMOKE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/rookery-smoke.XXXXXX")
SMOKE_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN_DIR/rookery" --port "$SMOKE_PORT" --data-dir "$SMOKE_DIR/data" --4lw-whitelist '*' \
  --max-client-cnxns 0 >"$LOGDIR/smoke-server.log" 2>&1 &
SMOKE_PID=$!
for _ in $(seq 1 100); do
  [ "$(echo ruok | nc -q1 127.0.0.1 "$SMOKE_PORT" 2>/dev/null)" = imok ] && break
  sleep 0.1
done
set +e
PROFILE=debug timeout 300 bash benches/smoke.sh "$SMOKE_PORT" 2>&1 | tee "$LOGDIR/smoke.log"
smoke_rc=${PIPESTATUS[0]}
set -e
kill -TERM "$SMOKE_PID" 2>/dev/null || true
wait "$SMOKE_PID" 2>/dev/null || true
rm -rf "$SMOKE_DIR"
[ "$smoke_rc" -eq 0 ] || failed+=("benches/smoke.sh (exit $smoke_rc)")

step "pytest -q tests/python"
set +e
timeout -k 10 900 .venv/bin/python -m pytest -q tests/python 2>&1 | tee "$LOGDIR/pytest.log"
py_rc=${PIPESTATUS[0]}
set -e
case "$py_rc" in
  0) ;;
  5) failed+=("pytest collected no tests (exit 5): tests/python is empty or everything was deselected") ;;
  124|137) failed+=("pytest timed out after 900 s") ;;
  *) failed+=("pytest (exit $py_rc)") ;;
esac

step "summary"
echo "cargo test:"
grep -E '^test result:|^error(\[|:)' "$LOGDIR/cargo-test.log" | sed 's/^/  /' || echo "  (no test result lines)"
echo "failpoint tests:"
grep -E '^test result:' "$LOGDIR/failpoints.log" | sed 's/^/  /' || echo "  (no test result lines)"
echo "rookery-client against rookery:"
grep -E '^test result:' "$LOGDIR/client-rookery.log" | sed 's/^/  /' || echo "  (no test result lines)"
echo "rookery-client against a rookery ensemble:"
grep -E '^test result:' "$LOGDIR/client-rookery-ensemble.log" | sed 's/^/  /' || echo "  (no test result lines)"
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "  cargo total: %d passed, %d failed\n", p, f }' "$LOGDIR/cargo-test.log"
echo "pytest:"
tail -n 1 "$LOGDIR/pytest.log" | sed 's/^/  /'
echo "total time: $(( $(date +%s) - START ))s; logs in $LOGDIR"
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}"
  exit 1
fi
echo "ALL PASSED"
