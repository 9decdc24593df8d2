"""What deploy's monitoring needs to know of a host, in one read (root's python3 -I -S -c):

    monitoring_state.py TEMP_DIR DASHBOARDS_SOURCE DASHBOARDS USER SETTINGS

prints JSON: the mount point of TEMP_DIR (of its nearest existing parent before Ray made it),
each service's unit file state, activity, and whether it runs with older settings than its
files hold (a restart a failed run never made; SETTINGS is JSON: service -> its settings
files); and whether the copy of Ray's Grafana dashboards is the same as the session's
(compared by USER, who owns them, never through a link: as root a link a job planted there
would be followed).
"""

import json
import os
import subprocess
import sys

TIMEOUT_S = 30


def mount_point(path):
    try:
        path = os.path.abspath(path)
        while not os.path.exists(path):
            path = os.path.dirname(path)
        device = os.stat(path).st_dev
        while path != "/" and os.stat(os.path.dirname(path)).st_dev == device:
            path = os.path.dirname(path)
        return path
    except OSError:
        return "/"


def systemctl(*args):
    done = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False, timeout=TIMEOUT_S)
    return done.stdout.strip()


def unit(name, settings):
    active = systemctl("is-active", name)
    started = systemctl("show", name, "--property=ActiveEnterTimestamp", "--value", "--timestamp=unix")
    since = float(started.lstrip("@") or 0) if started.lstrip("@").replace(".", "", 1).isdigit() else 0.0
    written = [os.stat(path).st_mtime for path in settings if os.path.exists(path)]
    return {
        "enabled": systemctl("is-enabled", name),
        "active": active,
        "stale": active == "active" and bool(written) and max(written) > since + 1,
    }


def same_copy(source, copy, user):
    argv = ["runuser", "-u", user, "--", "diff", "--recursive", "--brief", "--no-dereference", source, copy]
    try:
        done = subprocess.run(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def main(temp_dir, source, copy, user, settings):
    return {
        "temp_mount": mount_point(temp_dir),
        "units": {name: unit(name, files) for name, files in settings.items()},
        "dashboards_same": same_copy(source, copy, user),
    }


if __name__ == "__main__":
    temp_dir, source, copy, user, settings = sys.argv[1:6]
    print(json.dumps(main(temp_dir, source, copy, user, json.loads(settings))))
