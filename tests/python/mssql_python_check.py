"""mssql-python (Microsoft's driver: ODBC Driver 18 for queries, its Rust core for bulkcopy)
against tds-test-server.

argv: port database mode table expected.json [order_by]; the password is in PERFCOPY_CLIENT_PW.
Encrypt=yes with TrustServerCertificate=yes (the driver's default Encrypt=yes; the test
server's certificate is self-signed).
- read: SELECT the JSON's columns ... WHERE <first order column> > ? ORDER BY order_by, run
  twice (ODBC prepares a parameterised statement: sp_prepexec, then sp_execute); every value
  compared with the JSON. Prints "MSSQL-PYTHON-READ <rows>".
- bulk: cursor.bulkcopy of the JSON's rows into table (keep_identity), prints
  "MSSQL-PYTHON-BULK <rows copied>".
"""
import json
import os
import sys

import mssql_python

import clients_common as cc

port, db, mode, table, path = sys.argv[1:6]
order_by = sys.argv[6] if len(sys.argv) > 6 else None
pw = os.environ["PERFCOPY_CLIENT_PW"].replace("}", "}}")
conn = mssql_python.connect(f"Server=127.0.0.1,{port};Database={db};UID=perf;PWD={{{pw}}};Encrypt=yes;TrustServerCertificate=yes")
with open(path, encoding="utf-8") as f:
    cols = list(json.load(f)[0].keys())
want = cc.load(path)
cur = conn.cursor()
if mode == "read":
    first = order_by.split(",")[0].strip()
    sql = f"SELECT {', '.join(cols)} FROM {table} WHERE {first} > ? ORDER BY {order_by}"
    for _ in range(2):
        cur.execute(sql, (0,))
        names = [d[0] for d in cur.description]
        cc.compare("mssql-python", [tuple(r) for r in cur.fetchall()], names, want, cols)
    print(f"MSSQL-PYTHON-READ {len(want)}")
elif mode == "bulk":
    result = cur.bulkcopy(table, cc.rows_as_tuples(want, cols), column_mappings=cols, keep_identity="PerfSnapshotRunID" in cols)
    print(f"MSSQL-PYTHON-BULK {result['rows_copied']}")
else:
    raise SystemExit(f"unknown mode {mode}")
conn.close()
