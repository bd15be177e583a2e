#!/usr/bin/env bash
# Runs each cargo-fuzz target in fuzz/ for a bounded time (default 60 s each):
#   scripts/fuzz.sh [SECONDS] [TARGET...]        targets: conn_config parquet_source
# Stable toolchain: cargo-fuzz passes -Z flags, so RUSTC_BOOTSTRAP=1 lets stable rustc accept
# them, and --sanitizer none avoids needing a nightly sanitizer runtime (panics and aborts are
# still caught by libFuzzer; memory errors in unsafe code are not, without ASan).
# Crashes land in fuzz/artifacts/<target>/; turn each into a regression test in tests/.
# perfcopy catches panics inside arrow-rs' Parquet decoder and reports them as an error naming
# the file. libfuzzer-sys' panic hook would abort on those too, so parquet_source installs a
# quiet hook of its own: a decoder panic that perfcopy catches is not a crash, while a panic
# that escapes perfcopy is (the target aborts, after printing "panic escaped perfcopy: ..."
# with the panic's message and place). Check each crash with `perfcopy copy --from ARTIFACT
# --stage DIR` and add it to tests/data and tests/fuzz_regressions.rs.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECS=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(conn_config parquet_source)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
mkdir -p corpus/parquet_source
# Seed the Parquet corpus with real sources, so mutations start from valid files.
if [ -z "$(ls -A corpus/parquet_source)" ]; then
    (cd .. && cargo run -q --bin perfcopy -- generate --out fuzz/corpus/parquet_source --servers 2 --rows 300 --seed 1 --child-tables none)
fi
status=0
for t in "${TARGETS[@]}"; do
    echo "== $t for ${SECS}s"
    cargo fuzz run --sanitizer none "$t" -- -max_total_time="$SECS" -rss_limit_mb=4096 -max_len=65536 2>&1 | tail -n 15 || status=1
done
exit $status
