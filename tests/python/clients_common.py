"""Shared by the client scripts: the expected rows (JSON the Rust test writes from its own
generator, never from the server) and the value-by-value comparison.

JSON row: column -> int | str | null; DECIMAL columns as strings ("12.3400"), DATETIME2(3)
columns as "YYYY-MM-DD HH:MM:SS.ffffff".
"""
import datetime
import decimal
import json

DECIMALS = ("CpuSignalWaitPct", "TopWaitMsPerSec")
TIMES = ("SnapshotUTC",)
SOURCE_COLS = ["PerfSnapshotRunID", "SnapshotUTC", "ServerID", "ServerName", "SqlVersion", "CpuSignalWaitPct", "TopWaitType",
               "TopWaitMsPerSec", "SessionsCount", "RequestsCount", "BlockingSessionCount", "DeadlockCountRecent",
               "MemoryGrantWarningCount"]


def typed(e):
    """Expected JSON row -> the Python values a DB-API client returns."""
    out = dict(e)
    for c in TIMES:
        if c in e and e[c] is not None:
            out[c] = datetime.datetime.strptime(e[c], "%Y-%m-%d %H:%M:%S.%f")
    for c in DECIMALS:
        if c in e and e[c] is not None:
            out[c] = decimal.Decimal(e[c])
    return out


def load(path):
    with open(path, encoding="utf-8") as f:
        return [typed(e) for e in json.load(f)]


def norm(v):
    """A value as compared: datetimes without a zone, Decimals exact."""
    if isinstance(v, datetime.datetime) and v.tzinfo is not None:
        return v.replace(tzinfo=None)
    return v


def compare(client, got_rows, names, want, cols):
    """Every value of every row, equal in value and Python type; raises naming the cell."""
    if len(got_rows) != len(want):
        raise AssertionError(f"{client}: {len(got_rows)} rows, want {len(want)}")
    for i, (g, w) in enumerate(zip(got_rows, want)):
        g = dict(zip(names, g))
        for c in cols:
            if c not in g:
                raise AssertionError(f"{client}: column {c} missing (got {names})")
            gv, wv = norm(g[c]), w[c]
            if gv != wv or (wv is not None and type(gv) is not type(wv)):
                raise AssertionError(f"{client}: row {i} column {c}: got {gv!r} ({type(gv).__name__}) want {wv!r} ({type(wv).__name__})")


def rows_as_tuples(want, cols):
    """Expected rows as tuples in `cols` order (what a client bulk-loads)."""
    return [tuple(w[c] for c in cols) for w in want]
