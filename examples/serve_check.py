"""Check the serve_app.py demo over HTTP, from anywhere that reaches it.

    python examples/serve_check.py http://10.77.0.11:8000 [--wait SECONDS]

Exits non-zero on any mismatch. serve_app.py imports check() to test itself.
"""

import argparse
import csv
import io
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable


def _get(url: str) -> tuple[int, dict[str, str], str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode(errors="replace")


def _check_once(base_url: str, log: Callable[[str], None]) -> list[str]:
    problems: list[str] = []

    def expect(path: str, content_type: str) -> tuple[dict[str, str], str] | None:
        try:
            status, headers, body = _get(base_url.rstrip("/") + path)
        except OSError as e:
            problems.append(f"{path}: {e}")
            return None
        ctype = headers.get("content-type", "")
        log(f"GET {path} -> {status} {ctype} {len(body)} bytes: {body[:120]!r}")
        if status != 200:
            problems.append(f"{path}: status {status}")
        elif not ctype.startswith(content_type):
            problems.append(f"{path}: content type {ctype!r}, expected {content_type}")
        else:
            return headers, body
        return None

    if (got := expect("/", "text/html")) and "<h1>" not in got[1]:
        problems.append("/: no <h1> in the page")
    if got := expect("/stream", "text/plain"):
        headers, body = got
        # A streamed response has no length up front: it is sent in chunks.
        if headers.get("transfer-encoding") != "chunked":
            problems.append(f"/stream: transfer-encoding {headers.get('transfer-encoding')!r}, expected chunked")
        lines = body.splitlines()
        if len(lines) < 3 or lines != [f"chunk {i}" for i in range(len(lines))]:
            problems.append(f"/stream: unexpected body {body!r}")
    if got := expect("/download", "text/csv"):
        headers, body = got
        if not headers.get("content-disposition", "").startswith("attachment"):
            problems.append(f"/download: content-disposition {headers.get('content-disposition')!r}")
        rows = list(csv.reader(io.StringIO(body)))
        try:
            ok = rows[0] == ["n", "square"] and len(rows) > 1 and all(int(s) == int(n) ** 2 for n, s in rows[1:])
        except (IndexError, ValueError):
            ok = False
        if not ok:
            problems.append(f"/download: unexpected CSV {body[:80]!r}")
    if got := expect("/api/info", "application/json"):
        try:
            info = json.loads(got[1])
        except ValueError:
            info = {}
        if not info.get("hostname") or info.get("app") != "raykit-demo":
            problems.append(f"/api/info: unexpected {got[1][:120]!r}")
    return problems


def check(base_url: str, wait_s: float = 0, log: Callable[[str], None] = print) -> list[str]:
    """Problems with the demo at base_url (empty if all is well); retries for up to wait_s."""
    deadline = time.monotonic() + wait_s
    while True:
        problems = _check_once(base_url, log)
        if not problems or time.monotonic() >= deadline:
            return problems
        log(f"not yet: {'; '.join(problems)}")
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url", help="e.g. http://10.77.0.11:8000")
    parser.add_argument("--wait", type=float, default=0, help="keep retrying for this many seconds")
    args = parser.parse_args()
    problems = check(args.base_url, args.wait)
    for p in problems:
        print("FAIL:", p, file=sys.stderr)
    if problems:
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
