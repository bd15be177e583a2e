"""python-tds (a client we did not write) against tds-test-server.

argv: host port password expected.json [plain | tls CAFILE | login-only CAFILE]
With tls or login-only, pytds encrypts (pyOpenSSL, TLS 1.2) and validates the server's
certificate against CAFILE and the host name "localhost" (the server's certificate names it):
tls sends ENCRYPT_ON (everything encrypted), login-only ENCRYPT_OFF (only LOGIN7).
1. Reads DBATools_P.dbo.PerfSnapshotRun and compares every value with expected.json.
2. Bulk-loads the same rows into MonitoringDB.dbo.PerfSnapshotRun with cursor.copy_to and
   typed column metadata; the Rust side then compares what the server decoded.
Prints "PYTDS-OK <rows read> <rows loaded>" on success; raises on any mismatch.
"""
import datetime
import decimal
import json
import sys

import pytds
from pytds import tds_base, tds_types

host, port, password, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
mode = sys.argv[5] if len(sys.argv) > 5 else "plain"
tls = {}
if mode in ("tls", "login-only"):
    # pytds checks the certificate's CN/DNS names, not IP addresses: connect by name.
    host = "localhost"
    tls = {"cafile": sys.argv[6], "validate_host": True, "enc_login_only": mode == "login-only"}
elif mode != "plain":
    raise SystemExit(f"unknown mode {mode}")
with open(path, encoding="utf-8") as f:
    expected = json.load(f)

COLS = ["PerfSnapshotRunID", "SnapshotUTC", "ServerID", "ServerName", "SqlVersion", "CpuSignalWaitPct", "TopWaitType",
        "TopWaitMsPerSec", "SessionsCount", "RequestsCount", "BlockingSessionCount", "DeadlockCountRecent", "MemoryGrantWarningCount"]


def typed(e):
    """Expected JSON row -> Python values as pytds returns them."""
    out = dict(e)
    out["SnapshotUTC"] = datetime.datetime.strptime(e["SnapshotUTC"], "%Y-%m-%d %H:%M:%S.%f")
    for c in ("CpuSignalWaitPct", "TopWaitMsPerSec"):
        out[c] = None if e[c] is None else decimal.Decimal(e[c])
    return out


want = [typed(e) for e in expected]
conn = pytds.connect(server=host, port=port, database="DBATools_P", user="pytds", password=password, autocommit=True, **tls)
cur = conn.cursor()
cur.execute("SELECT * FROM dbo.PerfSnapshotRun WHERE PerfSnapshotRunID > %s ORDER BY PerfSnapshotRunID", (0,))
names = [d[0] for d in cur.description]
assert names == COLS, names
got = [dict(zip(names, r)) for r in cur.fetchall()]
assert len(got) == len(want), (len(got), len(want))
for g, w in zip(got, want):
    for c in COLS:
        if g[c] != w[c] or type(g[c]) is not type(w[c]):
            raise AssertionError(f"row {w['PerfSnapshotRunID']} column {c}: got {g[c]!r} want {w[c]!r}")

cols = [
    tds_base.Column("SnapshotUTC", tds_types.DateTime2Type(precision=3), flags=0),
    tds_base.Column("ServerID", tds_types.IntType(), flags=0),
    tds_base.Column("ServerName", tds_types.NVarCharType(size=128), flags=0),
    tds_base.Column("SqlVersion", tds_types.NVarCharType(size=200), flags=0),
    tds_base.Column("CpuSignalWaitPct", tds_types.DecimalType(precision=9, scale=4)),
    tds_base.Column("TopWaitType", tds_types.NVarCharType(size=120)),
    tds_base.Column("TopWaitMsPerSec", tds_types.DecimalType(precision=18, scale=4)),
] + [tds_base.Column(c, tds_types.IntType()) for c in COLS[8:]]
rows = [tuple(w[c.column_name] if c.column_name != "ServerID" else (w["ServerID"] if w["ServerID"] is not None else -1) for c in cols) for w in want]
conn2 = pytds.connect(server=host, port=port, database="MonitoringDB", user="pytds", password=password, autocommit=True, **tls)
cur2 = conn2.cursor()
cur2.copy_to(table_or_view="PerfSnapshotRun", schema="dbo", columns=cols, data=rows)
cur2.execute("SELECT COUNT(*) FROM dbo.PerfSnapshotRun")
loaded = cur2.fetchone()[0]
print(f"PYTDS-OK {len(got)} {loaded}")
