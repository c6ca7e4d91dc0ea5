"""The floor of a verification against a given handle proxy: 16 threads of bare ``http.client``, one kept-alive
connection each, nothing else (no retries, no caps, no database). Not what anyone should run; what no client can
beat against that server, so that ``bench.verify_e2e`` can tell hwf's overhead from the server's.

``python bench/verify_floor.py HANDLES.json RESOLVER_URL [--threads 16]``; prints ``checked N ok M in S s``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("handles", type=Path)
    parser.add_argument("resolver")
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    expected: dict[str, str] = json.loads(args.handles.read_text())
    todo = iter(expected.items())
    lock = threading.Lock()
    ok = [0]
    where = urlsplit(args.resolver)

    def work() -> None:
        conn = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=30)
        while True:
            with lock:
                item = next(todo, None)
            if item is None:
                conn.close()
                return
            handle, url = item
            conn.request("GET", f"/api/handles/{handle}?type=URL&auth=true")
            body = json.loads(conn.getresponse().read())
            values = body.get("values") or []
            if any(v.get("type") == "URL" and v.get("data", {}).get("value") == url for v in values):
                with lock:
                    ok[0] += 1

    threads = [threading.Thread(target=work) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"checked {len(expected)} ok {ok[0]} in {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
