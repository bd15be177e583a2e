#!/usr/bin/env bash
# perfcopy vs DuckDB on the same consolidation, same machine, same run, both with 2 threads.
# Prints wall time and peak RSS of each and the two ratios (speed, memory).
# Usage: scripts/bench-vs-duckdb.sh [ROWS] [WORKDIR]     (default 20000000 rows, /tmp/perfcopy-bench)
set -euo pipefail
rows=${1:-20000000}
work=${2:-/tmp/perfcopy-bench}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
bin="$root/target/release/perfcopy"
python3 -c "import duckdb" 2>/dev/null || python3 -m pip install --quiet duckdb pyarrow
mkdir -p "$work"
src="$work/src-$rows"
if [ ! -d "$src" ]; then
  "$bin" generate --out "$src" --rows "$rows" --servers 8 --overlap 0.05 --seed 42 --child-tables none
fi
# The server map: every ServerName in the sources, IDs in name order (not timed).
python3 - "$src" "$work/map.csv" <<'PY'
import sys, glob, pyarrow.parquet as pq
names = set()
for f in glob.glob(sys.argv[1] + "/*.parquet"):
    names.update(pq.read_table(f, columns=["ServerName"]).column(0).unique().to_pylist())
with open(sys.argv[2], "w", newline="") as out:
    import csv
    w = csv.writer(out); w.writerow(["ServerName", "ServerID"])
    for i, n in enumerate(sorted(names), 1): w.writerow([n, i])
PY
measure() { # prints "seconds kilobytes"
  /usr/bin/time -f '%e %M' -o "$work/time.txt" "$@" > "$work/out.txt" 2>&1 || { cat "$work/out.txt"; exit 1; }
  cat "$work/time.txt"
}
rm -rf "$work/stage" "$work/duck"
read -r p_s p_kb < <(measure "$bin" copy --from "$src" --stage "$work/stage" --server-map "$work/map.csv" --readers 2 --writers 2 --progress off)
read -r d_s d_kb < <(measure python3 "$root/scripts/duckdb_consolidate.py" "$src" "$work/map.csv" "$work/duck" 2)
p_rows=$(python3 -c "import pyarrow.dataset as ds; print(ds.dataset('$work/stage/PerfSnapshotRun', partitioning='hive').count_rows())")
d_rows=$(python3 -c "import duckdb; print(duckdb.sql(\"select count(*) from read_parquet('$work/duck/*/*.parquet')\").fetchall()[0][0])")
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $rows source rows"
printf '%-10s %10s %12s %12s\n' tool seconds peak_MiB rows_out
printf '%-10s %10s %12d %12s\n' perfcopy "$p_s" $((p_kb / 1024)) "$p_rows"
printf '%-10s %10s %12d %12s\n' duckdb "$d_s" $((d_kb / 1024)) "$d_rows"
python3 -c "print(f'speed ratio (duckdb time / perfcopy time): {$d_s/$p_s:.2f}x   memory ratio (perfcopy peak / duckdb peak): 1/{$d_kb/$p_kb:.1f}')"
[ "$p_rows" = "$d_rows" ] || { echo "row counts differ!"; exit 1; }
