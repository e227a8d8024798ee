"""DuckDB doing the same work as a Chatvault import: NDJSON -> chats + lines Parquet.

Usage: duckdb_convert.py NDJSON OUT_DIR; prints one JSON line with counts and seconds.
"""
import json, sys, time
started = time.perf_counter()
import duckdb

src, out = sys.argv[1], sys.argv[2]
q = lambda s: "'" + s.replace("'", "''") + "'"
con = duckdb.connect()
docs = f"read_ndjson({q(src)}, maximum_object_size = 67108864)"
con.execute(
    f"COPY (SELECT unnest(ChatHeader) FROM {docs}) "
    f"TO {q(out + '/chats.parquet')} (FORMAT parquet)"
)
con.execute(
    f"COPY (SELECT ChatHeader.ChatUID AS ChatUID, unnest(Lines, recursive := true) FROM {docs}) "
    f"TO {q(out + '/lines.parquet')} (FORMAT parquet)"
)
seconds = time.perf_counter() - started
chats, chat_cols = con.execute(
    f"SELECT count(*), (SELECT count(*) FROM (DESCRIBE SELECT * FROM {q(out + '/chats.parquet')})) FROM {q(out + '/chats.parquet')}"
).fetchone()
lines, line_cols = con.execute(
    f"SELECT count(*), (SELECT count(*) FROM (DESCRIBE SELECT * FROM {q(out + '/lines.parquet')})) FROM {q(out + '/lines.parquet')}"
).fetchone()
print(json.dumps({"duckdb": duckdb.__version__, "seconds_in_python": seconds,
                  "chats": chats, "chat_columns": chat_cols, "lines": lines, "line_columns": line_cols}))
