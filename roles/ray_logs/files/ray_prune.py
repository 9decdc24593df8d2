"""Remove Ray's session folders older than DAYS from TEMP_DIR, never the live one, and the
spilled objects of every dead session (they died with it). Run by ray-prune.timer as the ray
user, who owns them; standard library only, root's file.

    python3 -I ray_prune.py TEMP_DIR DAYS

prints what it removed, as JSON (the journal keeps it).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

SPILLED = "ray_spilled_objects_"


def last_written(session: str) -> float:
    """When Ray last wrote the session: its folder's or its logs folder's time."""
    times = [os.stat(session).st_mtime]
    logs = os.path.join(session, "logs")
    if os.path.isdir(logs) and not os.path.islink(logs):
        times.append(os.stat(logs).st_mtime)
    return max(times)


def prune(temp_dir: str, days: int, now: float | None = None) -> dict[str, list[str]]:
    """What it removed: old sessions, and spilled objects of the dead ones it kept."""
    now = time.time() if now is None else now
    latest = os.path.join(temp_dir, "session_latest")
    live = os.path.realpath(latest) if os.path.islink(latest) else None
    removed: dict[str, list[str]] = {"sessions": [], "spilled": []}
    for name in sorted(os.listdir(temp_dir)):
        path = os.path.join(temp_dir, name)
        # Links are never followed: a job could point one anywhere the ray user may write.
        if not name.startswith("session_") or os.path.islink(path) or not os.path.isdir(path):
            continue
        if os.path.realpath(path) == live:
            continue
        if now - last_written(path) > days * 86400:
            shutil.rmtree(path)
            removed["sessions"].append(name)
            continue
        for entry in sorted(os.listdir(path)):
            spilled = os.path.join(path, entry)
            if entry.startswith(SPILLED) and os.path.isdir(spilled) and not os.path.islink(spilled):
                shutil.rmtree(spilled)
                removed["spilled"].append(f"{name}/{entry}")
    return removed


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: ray_prune.py TEMP_DIR DAYS", file=sys.stderr)
        return 2
    if not os.path.isdir(argv[0]):
        print(json.dumps({"sessions": [], "spilled": [], "note": f"no {argv[0]} yet"}))
        return 0
    print(json.dumps(prune(argv[0], int(argv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
