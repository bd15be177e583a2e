#!/usr/bin/env bash
# Crash-consistency trials, many of them: a copy of a few million generated rows is killed with
# SIGKILL at a random moment and run again; the result must equal an uninterrupted run (rows,
# no key twice, nothing lost; for MonitoringDB also the DBAToolsSyncLog last Success LastRunID).
# Targets: the Parquet stage, and MonitoringDB on the tds_test_server binary (started per trial).
#
#   scripts/crash-trials.sh [TRIALS] [ROWS]      (defaults: 20 trials per target, 3000000 rows)
#   CRASH_SEED=N scripts/crash-trials.sh          replay a run (the seed is printed)
#   CRASH_MSSQL_ROWS=N                            rows for the MonitoringDB target (default: ROWS)
#
# Prints "trials: N, mismatches: M" per target; exits non-zero when any M > 0. Release build.
# The trial logic is tests/crash.rs (CI runs it with 3 trials on tens of thousands of rows).
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=${1:-${CRASH_TRIALS:-20}}
ROWS=${2:-${CRASH_ROWS:-3000000}}
MSSQL_ROWS=${CRASH_MSSQL_ROWS:-$ROWS}
SEED=${CRASH_SEED:-$(( $(date +%s) % 1000000 ))}
echo "crash-trials: $TRIALS trials per target, $ROWS rows (MonitoringDB: $MSSQL_ROWS), seed $SEED"

cargo build --release -p tds-test-server --bin tds_test_server
# Run the test binary directly (not through `cargo test`), so the build directory is not locked
# for the length of the trials.
exe=$(cargo test --release --test crash --no-run 2>&1 | sed -n 's/.*Executable tests\/crash.rs (\(.*\))/\1/p' | tail -1)
[ -x "$exe" ] || { echo "cannot find the crash test executable"; exit 1; }
# Honour CARGO_TARGET_DIR (relative to the workspace root, as cargo reads it).
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir = /* ]] || target_dir="$PWD/$target_dir"
export TDS_TEST_SERVER_BIN="$target_dir/release/tds_test_server"
export CRASH_TRIALS=$TRIALS CRASH_SEED=$SEED

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# run NAME ROWS TEST: one test of the crash suite, then "NAME: wall time S s" (setup included).
run() {
    local t0=$SECONDS
    CRASH_ROWS=$2 "$exe" --nocapture --test-threads 1 --exact "$3" 2>&1 | tee -a "$log" || status=1
    echo "$1: wall time $((SECONDS - t0)) s" | tee -a "$log"
}
run stage "$ROWS" stage_sigkill_at_random_moments_then_rerun_equals_an_uninterrupted_run
run monitoringdb "$MSSQL_ROWS" monitoringdb_sigkill_at_random_moments_then_rerun_equals_an_uninterrupted_run
run SIGINT "$MSSQL_ROWS" monitoringdb_sigint_exits_130_quickly_keeping_whole_batches_and_a_rerun_completes

echo
echo "== summary (seed $SEED)"
grep -E "^(stage|monitoringdb): (trials: |wall time )" "$log" || { echo "no trial summary printed"; status=1; }
grep -oE "SIGINT: .*" "$log" || true  # the first one follows the test name on its line
if grep -E "^(stage|monitoringdb): trials: [0-9]+, mismatches: [1-9]" "$log" >/dev/null; then status=1; fi
exit $status
