"""Remove Ray's session folders older than DAYS from TEMP_DIR, never the live one, and the
spilled objects of every dead session (they died with it). Run by ray-prune.timer as the ray
user, who owns them; standard library only, root's file.

    python3 -I ray_prune.py TEMP_DIR DAYS

prints what it removed, and what it could not, as JSON (the journal keeps it).
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
    times = [os.lstat(session).st_mtime]
    logs = os.path.join(session, "logs")
    if os.path.isdir(logs) and not os.path.islink(logs):
        times.append(os.lstat(logs).st_mtime)
    return max(times)


def live_session(temp_dir: str) -> str | None:
    """The session session_latest names now (read again for each folder: a node may start meanwhile)."""
    latest = os.path.join(temp_dir, "session_latest")
    return os.path.realpath(latest) if os.path.islink(latest) else None


def prune(temp_dir: str, days: int, now: float | None = None) -> dict[str, list[str]]:
    """What it removed (old sessions, spilled objects of the dead ones it kept), and what it could not."""
    now = time.time() if now is None else now
    removed: dict[str, list[str]] = {"sessions": [], "spilled": [], "errors": []}
    for name in sorted(os.listdir(temp_dir)):
        path = os.path.join(temp_dir, name)
        # Links are never followed: a job could point one anywhere the ray user may write.
        if not name.startswith("session_") or os.path.islink(path) or not os.path.isdir(path):
            continue
        try:
            written = last_written(path)
            if os.path.realpath(path) == live_session(temp_dir) or written > now:
                continue  # the live session, or one written since this run began
            if now - written > days * 86400:
                shutil.rmtree(path)
                removed["sessions"].append(name)
                continue
            for entry in sorted(os.listdir(path)):
                spilled = os.path.join(path, entry)
                if entry.startswith(SPILLED) and os.path.isdir(spilled) and not os.path.islink(spilled):
                    shutil.rmtree(spilled)
                    removed["spilled"].append(f"{name}/{entry}")
        except OSError as exc:  # one folder's trouble (removed meanwhile, not ray's) stops no other
            removed["errors"].append(f"{name}: {exc}")
    return removed


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: ray_prune.py TEMP_DIR DAYS", file=sys.stderr)
        return 2
    if not os.path.isdir(argv[0]):
        print(json.dumps({"sessions": [], "spilled": [], "errors": [], "note": f"no {argv[0]} yet"}))
        return 0
    removed = prune(argv[0], int(argv[1]))
    print(json.dumps(removed))
    return 1 if removed["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
