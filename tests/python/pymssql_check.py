"""pymssql (FreeTDS db-lib, bundled in its wheel) against tds-test-server.

argv: port database mode table expected.json [order_by]; the password is in PERFCOPY_CLIENT_PW.
encryption='require' (TLS for the whole connection; FreeTDS does not validate the server's
certificate unless told to).
- read: SELECT the JSON's columns ... WHERE <first order column> > %s ORDER BY order_by; every
  value compared with the JSON. Prints "PYMSSQL-READ <rows>".
- bulk: conn.bulk_copy of the JSON's rows (column_ids by position in the table; an identity
  column among them makes pymssql keep its values). Prints "PYMSSQL-BULK <rows>".
"""
import json
import os
import sys

import pymssql

import clients_common as cc

port, db, mode, table, path = sys.argv[1:6]
order_by = sys.argv[6] if len(sys.argv) > 6 else None
conn = pymssql.connect(server="127.0.0.1", port=port, user="perf", password=os.environ["PERFCOPY_CLIENT_PW"], database=db,
                       autocommit=True, encryption="require", use_datetime2=True)
with open(path, encoding="utf-8") as f:
    cols = list(json.load(f)[0].keys())
want = cc.load(path)
cur = conn.cursor()
if mode == "read":
    first = order_by.split(",")[0].strip()
    cur.execute(f"SELECT {', '.join(cols)} FROM {table} WHERE {first} > %s ORDER BY {order_by}", (0,))
    names = [d[0] for d in cur.description]
    cc.compare("pymssql", cur.fetchall(), names, want, cols)
    print(f"PYMSSQL-READ {len(want)}")
elif mode == "bulk":
    # Positions of the JSON's columns in the table (1-based), from the table's own order.
    cur.execute("SELECT name, column_id FROM sys.columns WHERE object_id = OBJECT_ID(%s)", (table,))
    ids = {n: i for n, i in cur.fetchall()}
    conn.bulk_copy(table, cc.rows_as_tuples(want, cols), column_ids=[ids[c] for c in cols])
    print(f"PYMSSQL-BULK {len(want)}")
else:
    raise SystemExit(f"unknown mode {mode}")
conn.close()
