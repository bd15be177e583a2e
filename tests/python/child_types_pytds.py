"""python-tds (a client we did not write) reads child tables with every DBATools child type.

argv: port database table [table ...]; the password is in PERFCOPY_CLIENT_PW.
Reads dbo.PerfSnapshotRun (PerfSnapshotRunID -> SnapshotUTC) and each table with SELECT *, and
prints one JSON object: table -> list of rows, each row [SnapshotUTC of its run, values after
PerfSnapshotRunID...] in canonical form, for the Rust test to compare with the rows it built:
NULL null, BIT true/false, integers and floats as JSON numbers, DECIMAL as the reduced fraction
"numerator/denominator" (pytds divides, so 4.9380 comes back as Decimal('4.938'): the value, not
its scale, is what it keeps), BINARY/VARBINARY "0x" + uppercase hex, DATETIME/DATETIME2 "YYYY-MM-DDTHH:MM:SS.ffffff"
(as pytds returns them: microseconds), UNIQUEIDENTIFIER as SQL Server shows it (uppercase), text (NVARCHAR, VARCHAR in its collation's code page,
XML) as it is. A SQL_VARIANT comes back as pytds decodes its base type.
"""
import datetime
import decimal
import json
import os
import sys
import uuid

import pytds

port, database, tables = int(sys.argv[1]), sys.argv[2], sys.argv[3:]


def canon(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, decimal.Decimal):
        n, d = v.as_integer_ratio()
        return f"{n}/{d}"
    if isinstance(v, (bytes, bytearray)):
        return "0x" + bytes(v).hex().upper()
    if isinstance(v, datetime.datetime):
        return v.strftime("%Y-%m-%dT%H:%M:%S.%f")
    if isinstance(v, uuid.UUID):
        return str(v).upper()
    raise TypeError(f"{type(v).__name__} value {v!r}")


conn = pytds.connect(server="127.0.0.1", port=port, database=database, user="pytds", password=os.environ["PERFCOPY_CLIENT_PW"], autocommit=True)
cur = conn.cursor()
cur.execute("SELECT PerfSnapshotRunID, SnapshotUTC FROM dbo.PerfSnapshotRun")
runs = {i: canon(t) for i, t in cur.fetchall()}
out = {}
for table in tables:
    cur.execute(f"SELECT * FROM dbo.{table}")
    names = [d[0] for d in cur.description]
    assert names[0] == f"{table}ID" and names[1] == "PerfSnapshotRunID", names
    out[table] = [[runs[r[1]]] + [canon(v) for v in r[2:]] for r in cur.fetchall()]
print(json.dumps(out))
