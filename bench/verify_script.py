"""The yardstick for ``hwf verify``: a plain 16-thread ``urllib`` script that asks a handle proxy for each
handle's URL and compares it with the expected one (what a librarian might write in an afternoon).

``python -m bench.verify_script HANDLES.json RESOLVER_URL [--threads 16]``; prints ``checked N ok M in S s``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def check(resolver: str, handle: str, expected: str) -> bool:
    url = f"{resolver}/api/handles/{handle}?type=URL"
    try:
        with urllib.request.urlopen(url, timeout=30) as reply:
            body = json.loads(reply.read())
    except urllib.error.HTTPError:
        return False
    values = body.get("values") or []
    return any(v.get("type") == "URL" and v.get("data", {}).get("value") == expected for v in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("handles", type=Path)
    parser.add_argument("resolver")
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    expected: dict[str, str] = json.loads(args.handles.read_text())
    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        results = list(pool.map(lambda item: check(args.resolver, *item), expected.items()))
    print(f"checked {len(results)} ok {sum(results)} in {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
