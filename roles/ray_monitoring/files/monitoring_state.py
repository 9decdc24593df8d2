"""What deploy's monitoring needs to know of a host, in one read (root's python3 -I -S -c):

    monitoring_state.py TEMP_DIR DASHBOARDS_SOURCE DASHBOARDS USER

prints JSON: the mount point of TEMP_DIR (of its nearest existing parent before Ray made it),
each monitoring service's unit file state and activity, and whether the copy of Ray's Grafana
dashboards is the same as the session's (compared by USER, who owns them: as root a link a job
planted there would be followed).
"""

import json
import os
import subprocess
import sys

SERVICES = ("prometheus-node-exporter", "prometheus")


def mount_point(path):
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    device = os.stat(path).st_dev
    while path != "/" and os.stat(os.path.dirname(path)).st_dev == device:
        path = os.path.dirname(path)
    return path


def systemctl(*args):
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False).stdout.strip()


def main(temp_dir, source, copy, user):
    same = subprocess.run(
        ["runuser", "-u", user, "--", "diff", "--recursive", "--brief", source, copy],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return {
        "temp_mount": mount_point(temp_dir),
        "units": {
            name: {"enabled": systemctl("is-enabled", name), "active": systemctl("is-active", name)}
            for name in SERVICES
        },
        "dashboards_same": same.returncode == 0,
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
