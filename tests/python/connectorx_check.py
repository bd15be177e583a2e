"""connectorx (Rust, its own tiberius build) reads a table from tds-test-server into Arrow.

argv: port database table expected.json order_by; the password is in PERFCOPY_CLIENT_PW.
The URL asks for TLS (encrypt=true, trust_server_certificate=true: the certificate is
self-signed). Every value compared with the JSON; prints "CONNECTORX-READ <rows>".
"""
import datetime
import json
import os
import sys
from urllib.parse import quote

import connectorx as cx

import clients_common as cc

port, db, table, path, order_by = sys.argv[1:6]
with open(path, encoding="utf-8") as f:
    cols = list(json.load(f)[0].keys())
want = cc.load(path)
pw = quote(os.environ["PERFCOPY_CLIENT_PW"], safe="")
url = f"mssql://perf:{pw}@127.0.0.1:{port}/{db}?encrypt=true&trust_server_certificate=true"
t = cx.read_sql(url, f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order_by}", return_type="arrow")
rows = t.to_pylist()


def as_client(c, v):
    if v is None:
        return None
    if isinstance(v, datetime.datetime):
        return v.replace(tzinfo=None)
    return v


names = t.column_names
got = [tuple(as_client(c, r[c]) for c in names) for r in rows]
# connectorx widens DECIMAL to decimal128(38,10): equal as Decimals, compared exactly.
cc.compare("connectorx", got, names, want, cols)
print(f"CONNECTORX-READ {len(rows)}")
