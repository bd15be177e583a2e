# The consolidation perfcopy does, written as DuckDB SQL: read the sources, map ServerName to
# ServerID, keep one row per (SnapshotUTC, ServerID) (first source in name order, then lowest
# PerfSnapshotRunID: the same rule as perfcopy), write zstd Parquet partitioned by ServerID.
# Usage: python3 duckdb_consolidate.py SOURCE_DIR MAP_CSV OUT_DIR [THREADS]
import duckdb, sys
src, mapf, out = sys.argv[1:4]
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
con = duckdb.connect()
con.execute(f"SET threads={threads}")
con.execute("SET preserve_insertion_order=false")
con.execute(f"CREATE TEMP TABLE map AS SELECT lower(ServerName) AS k, ServerID::INTEGER AS ServerID FROM read_csv('{mapf}', header=true, all_varchar=true)")
con.execute(f"""
COPY (
  SELECT s.SnapshotUTC, m.ServerID, s.ServerName, s.SqlVersion, s.CpuSignalWaitPct, s.TopWaitType, s.TopWaitMsPerSec,
         s.SessionsCount, s.RequestsCount, s.BlockingSessionCount, s.DeadlockCountRecent, s.MemoryGrantWarningCount
  FROM read_parquet('{src}/*.parquet', filename=true) s JOIN map m ON lower(s.ServerName) = m.k
  QUALIFY row_number() OVER (PARTITION BY s.SnapshotUTC, m.ServerID ORDER BY s.filename, s.PerfSnapshotRunID) = 1
) TO '{out}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (ServerID), OVERWRITE_OR_IGNORE true)
""")
print(con.execute(f"select count(*) from read_parquet('{out}/*/*.parquet')").fetchone())
