"""What a host has, as JSON for the ray role; read-only, standard library only.

Passed to an interpreter with -c, so nothing is installed for it:
  probe SPEC            with the system python: its version, venv support, and the state of
                        everything provision and deploy manage (SPEC, JSON: paths, user, unit),
                        so unchanged hosts skip those tasks
  report < LOCK         with the environment's python: Python, Ray, a digest of every installed
                        file, and how the packages differ from the lock on standard input
  service UNIT FILE...  the unit's state, restarts and uptime, and whether it runs with
                        older settings than FILE... hold (a restart that never happened)
  check SPEC            for `invoke doctor`: clock, /dev/shm, the token's digest, whether the
                        ports in SPEC (JSON) answer, and the unit's last journal lines
"""

import grp
import hashlib
import importlib.util
import json
import os
import platform
import pwd
import re
import socket
import stat
import subprocess
import sys
import time


def normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def probe(spec):
    wheelhouse = os.path.join(spec["prefix"], "wheelhouse")
    complete = []
    if os.path.isdir(wheelhouse):
        complete = sorted(d for d in os.listdir(wheelhouse) if os.path.exists(os.path.join(wheelhouse, d, ".complete")))
    return {
        "python": platform.python_version(),
        # Debian ships ensurepip in python3-venv: without it, `python3 -m venv` fails.
        "venv": importlib.util.find_spec("ensurepip") is not None,
        "env": os.path.exists(os.path.join(spec["env"], "bin", "python")),
        "wheelhouses": complete,
        "shm_bytes": shm_bytes(),
        "paths": {path: path_state(path) for path in spec["paths"]},
        "user": user_state(spec["user"]),
        "service": service(spec["unit"], spec["settings"]),
    }


def path_state(path):
    # What the file, template and link tasks set: type, owner, group, mode, content or target.
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {"type": "absent"}
    kind = "link" if stat.S_ISLNK(st.st_mode) else "directory" if stat.S_ISDIR(st.st_mode) else "file"
    state = {"type": kind}
    if kind == "link":
        state["target"] = os.readlink(path)
        return state
    state.update(owner=name_of(pwd.getpwuid, st.st_uid), group=name_of(grp.getgrgid, st.st_gid),
                 mode=f"{stat.S_IMODE(st.st_mode):04o}")
    if kind == "file":
        with open(path, "rb") as fh:
            state["sha1"] = hashlib.sha1(fh.read()).hexdigest()  # what Ansible's checksum is
    return state


def name_of(lookup, number):
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


def user_state(name):
    # What the user task sets: shell, home (made) and a locked password ("!"; the hash itself
    # is never reported).
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    with open("/etc/shadow") as fh:
        password = next((ln.split(":")[1] for ln in fh if ln.split(":")[0] == name), None)
    return {"shell": entry.pw_shell, "home": entry.pw_dir, "home_exists": os.path.isdir(entry.pw_dir),
            "locked": password == "!"}


def shm_bytes():
    # The object store lives in /dev/shm; Ray falls back to disk when it is too small.
    fs = os.statvfs("/dev/shm")
    return fs.f_frsize * fs.f_blocks


def locked_versions(lock_text):
    pins = {}
    for line in lock_text.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if match:
            pins[normalize(match.group(1))] = match.group(2)
    return pins


def report(lock_text):
    import importlib.metadata  # here: slow to import, and only this mode needs it

    wanted = locked_versions(lock_text)
    installed = {}
    digest = hashlib.sha256()
    for dist in sorted(importlib.metadata.distributions(), key=lambda d: normalize(d.metadata["Name"])):
        name = normalize(dist.metadata["Name"])
        installed[name] = dist.version
        # RECORD lists every installed file with its hash: equal digests, equal files.
        # uv_cache.json is uv's own bookkeeping (file times), not the package.
        record = [ln for ln in (dist.read_text("RECORD") or "").splitlines() if "/uv_cache.json," not in ln]
        digest.update(f"{name}=={dist.version}\n".encode() + "\n".join(record).encode())
    drift = []
    for name, version in sorted(wanted.items()):
        have = installed.get(name)
        if have is None:
            drift.append(f"{name} missing (lock {version})")
        elif have != version:
            drift.append(f"{name} {have} (lock {version})")
    drift += [f"{name} {installed[name]} not in the lock" for name in sorted(set(installed) - set(wanted))]
    return {
        "python": platform.python_version(),
        "ray": installed.get("ray", "missing"),
        "packages": len(installed),
        "digest": digest.hexdigest(),
        "drift": drift,
        "env": sys.prefix,
        "owner": pwd.getpwuid(os.stat(sys.prefix).st_uid).pw_name,
    }


def service(unit, files=()):
    props = ["LoadState", "ActiveState", "SubState", "UnitFileState", "MainPID", "NRestarts",
             "ActiveEnterTimestampMonotonic"]
    out = subprocess.run(["systemctl", "show", unit, "--property=" + ",".join(props)],
                         capture_output=True, text=True, check=False).stdout
    state = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    now = time.monotonic()  # systemd's monotonic clock
    since = int(state.get("ActiveEnterTimestampMonotonic") or 0) / 1e6
    active = state.get("ActiveState") == "active"
    started = time.time() - (now - since)
    changed = [f for f in files if os.path.exists(f) and os.stat(f).st_mtime > started + 1]
    return {
        "installed": state.get("LoadState") == "loaded",
        "active": state.get("ActiveState", "unknown"),
        "enabled": state.get("UnitFileState", "unknown"),
        "pid": int(state.get("MainPID") or 0),
        "restarts": int(state.get("NRestarts") or 0),
        "uptime_s": round(now - since) if active and since else 0,
        "stale": bool(active and since and changed),
    }


def check(spec):
    try:
        with open(spec["token"], "rb") as fh:
            token = hashlib.sha256(fh.read().strip()).hexdigest()
    except FileNotFoundError:
        token = None
    ports = []
    for address, port, name in spec["connect"]:
        try:
            socket.create_connection((address, port), timeout=3).close()
            error = ""
        except OSError as exc:
            error = str(exc) or type(exc).__name__
        ports.append({"address": f"{address}:{port}", "name": name, "error": error})
    journal = subprocess.run(["journalctl", "--unit", spec["unit"], "--lines=15", "--no-pager", "--output=short-precise"],
                             capture_output=True, text=True, check=False).stdout
    return {"time": time.time(), "shm_bytes": shm_bytes(), "token_sha256": token, "ports": ports, "journal": journal}


if __name__ == "__main__":
    if sys.argv[1] == "probe":
        print(json.dumps(probe(json.loads(sys.argv[2]))))
    elif sys.argv[1] == "service":
        print(json.dumps(service(sys.argv[2], sys.argv[3:])))
    elif sys.argv[1] == "check":
        print(json.dumps(check(json.loads(sys.argv[2]))))
    else:
        print(json.dumps(report(sys.stdin.read())))
