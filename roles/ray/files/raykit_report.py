"""What a host has, as JSON for the ray role; read-only but for `manifest` and the installs,
standard library only.

Run by root's own interpreter, isolated (`-I -S`: no site, no user paths, no environment),
with -c, so nothing is installed for it and nothing the ray user can write runs as root:
  probe SPEC            the system python's version, venv support, and the state of everything
                        provision and deploy manage (SPEC, JSON: paths, user, unit), so unchanged
                        hosts skip those tasks
  report ENV TREE [deep] < LOCK
                        the environment's Python, Ray, packages against the lock on standard input,
                        and its files (and the kit's build at TREE, if the environment was made
                        from it) against the manifest provision wrote: every file added,
                        changed or removed, or writable by anyone but root (quick: size and time;
                        deep: every file's hash)
  manifest ENV          write ENV's manifest (every file's size, time and hash) beside it
  firewall-record TABLE RECORD
                        after deploy loaded the firewall: its chains' digest, written to RECORD
  install-build ARCHIVE DEBS_TAR DEBS TREE ID
                        install the kit's build of Python from the copies provision made: the
                        runtime packages the host lacks (DEBS, JSON: package -> file in DEBS_TAR),
                        then, unless TREE is build ID unchanged, the tree (ARCHIVE) and its manifest
  install-debs DEBS_TAR DEBS
                        install the packages the host lacks from a copy of raykit.debs's files
                        (DEBS, JSON: package -> file in DEBS_TAR)
  service UNIT FILE...  the unit's state, restarts and uptime, and whether it runs with
                        older settings than FILE... hold (a restart that never happened)
  check SPEC            for `invoke doctor`: clock, /dev/shm, the token's digest, whether the
                        ports in SPEC (JSON) answer, the unit's last journal lines, and start-up
                        code left in the ray user's home
"""

import glob
import grp
import hashlib
import importlib.util
import json
import os
import platform
import pwd
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time


def normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def probe(spec):
    wheelhouse = os.path.join(spec["prefix"], "wheelhouse")
    complete = []
    if os.path.isdir(wheelhouse):
        # A wheelhouse counts only when complete and root's alone: provision runs its uv as root.
        complete = sorted(
            d
            for d in os.listdir(wheelhouse)
            if os.path.exists(os.path.join(wheelhouse, d, ".complete"))
            and not env_files(os.path.join(wheelhouse, d))[1]
        )
    return {
        "python": platform.python_version(),
        # Debian ships ensurepip in python3-venv: without it, `python3 -m venv` fails.
        "venv": importlib.util.find_spec("ensurepip") is not None,
        "env": os.path.exists(os.path.join(spec["env"], "bin", "python")),
        "wheelhouses": complete,
        "shm_bytes": shm_bytes(),
        "free_bytes": free_bytes(spec["prefix"]),
        # Whoever may write a folder above the prefix could swap the prefix under root.
        "prefix_parents_loose": loose_parents(spec["prefix"]),
        # Ray finds GPUs by itself when ray_num_gpus is unset: the unit keeps their devices.
        "nvidia": bool(glob.glob("/dev/nvidia[0-9]*")),
        "machine_id": read_text("/etc/machine-id").strip(),
        "paths": {path: path_state(path) for path in spec["paths"]},
        "python_tree": python_tree(spec["python_tree"], spec["deep"]),
        "stale": stale(spec["prefix"], spec["keep"], spec["links"]),
        "untrusted": untrusted(
            spec["prefix"], spec["env"], spec["links"], os.path.join("/etc/systemd/system", spec["unit"]), spec["deep"]
        )
        if spec["untrusted"]
        else None,
        "user": user_state(spec["user"]),
        # Preflight refuses to make Ray's user of root or of a person's account.
        "user_uid": uid_of(spec["user"]),
        "service": service(spec["unit"], spec["drained"], spec["settings"]),
        "firewall": firewall(spec["firewall_table"], spec["firewall_record"]),
        "ssh": ssh_connection(),
    }


NFT = "/usr/sbin/nft"


def firewall(table, record):
    """Whether nft is here, the kernel's range for port 0 (where some of Ray's servers listen),
    and the kit's table as loaded: each set's elements (None: no table), and whether its chains
    are still the ones deploy recorded when it loaded them (see firewall_record)."""
    ports = read_text("/proc/sys/net/ipv4/ip_local_port_range").split()
    state = {"nft": os.path.exists(NFT), "ephemeral": [int(p) for p in ports] or [32768, 60999], "sets": None,
             "rules_as_loaded": None}  # fmt: skip
    loaded = nft_table(table) if state["nft"] else None
    if loaded is not None:
        found = [item["set"] for item in loaded if "set" in item]
        state["sets"] = {found_set["name"]: sorted(map(element, found_set.get("elem", []))) for found_set in found}
        state["rules_as_loaded"] = read_text(record).strip() == rules_digest(loaded)
    return state


def nft_table(table):
    """The table's items as nft lists them in JSON (None: no such table)."""
    done = subprocess.run([NFT, "-j", "list", "table", "inet", table], capture_output=True, text=True, check=False)
    return json.loads(done.stdout)["nftables"] if done.returncode == 0 else None


def rules_digest(items):
    """The chains and their rules, without what the kernel numbers or counts: nft's handles and
    the counters' packets and bytes (the sets are compared on their own)."""
    rules = [without_counts(item) for item in items if "chain" in item or "rule" in item]
    return hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()


def without_counts(value):
    if isinstance(value, dict):
        return {k: without_counts(v) for k, v in value.items() if k not in ("handle", "packets", "bytes")}
    if isinstance(value, list):
        return [without_counts(v) for v in value]
    return value


def firewall_record(table, record):
    """After deploy loaded the rules: the digest of the chains as the kernel has them (root's file)."""
    items = nft_table(table)
    if items is None:
        sys.exit(f"the table inet {table} is not loaded")
    fd = os.open(record + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(rules_digest(items) + "\n")
    os.replace(record + ".new", record)
    return {"changed": True}


def element(item):
    """One set element as nft's input writes it: 10.0.0.1, 10.0.0.0/24 or 10.0.0.1-10.0.0.9."""
    if isinstance(item, dict) and "prefix" in item:
        return f"{item['prefix']['addr']}/{item['prefix']['len']}"
    if isinstance(item, dict) and "range" in item:
        return "-".join(item["range"])
    return str(item)


def ssh_connection():
    """The controller's address and this host's, as the SSH connection of this run has them:
    sudo resets its children's environment, so from the nearest process above that has it."""
    pid = os.getppid()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                pairs = [item.split(b"=", 1) for item in fh.read().split(b"\0") if b"=" in item]
            value = dict(pairs).get(b"SSH_CONNECTION", b"").decode().split()
            if len(value) == 4:
                return {"client": value[0], "server": value[2], "port": int(value[3])}
            parent = re.search(r"^PPid:\s*(\d+)", read_text(f"/proc/{pid}/status"), re.MULTILINE)
            if parent is None:
                return None
            pid = int(parent.group(1))
        except (OSError, ValueError):
            return None
    return None


def read_text(path):
    """A regular file's text; "" for anything else (never opens a FIFO or a device)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return ""
        with open(path) as fh:
            return fh.read()
    except FileNotFoundError:
        return ""


def loose_parents(prefix):
    """The existing folders above prefix that are not root's or that others may write."""
    found, path = [], os.path.dirname(os.path.abspath(prefix))
    while True:
        if os.path.lexists(path):
            st = os.lstat(path)
            if st.st_uid != OWNER_UID or st.st_mode & 0o022:
                found.append(path)
        if path == "/":
            return found
        path = os.path.dirname(path)


def free_bytes(path):
    # The folder may not exist yet: its nearest existing parent is on the same disk.
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    fs = os.statvfs(path)
    return fs.f_frsize * fs.f_bavail


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
    state.update(
        owner=name_of(pwd.getpwuid, st.st_uid),
        group=name_of(grp.getgrgid, st.st_gid),
        mode=f"{stat.S_IMODE(st.st_mode):04o}",
    )
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
    return {
        "shell": entry.pw_shell,
        "home": entry.pw_dir,
        "home_exists": os.path.isdir(entry.pw_dir),
        "locked": password == "!",
    }


def uid_of(name):
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


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


def manifest_path(env):
    return env.rstrip("/") + ".manifest.json"


def file_entry(path, st, with_hash=True):
    """[kind, size, mtime_ns, mode, sha256 or link target] of one path, from its lstat."""
    if stat.S_ISLNK(st.st_mode):
        return ["link", 0, 0, 0, os.readlink(path)]
    if not stat.S_ISREG(st.st_mode):
        return ["other", st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode), ""]  # a FIFO, socket or device
    digest = ""
    if with_hash:
        sha = hashlib.sha256()
        # O_NOFOLLOW: a file swapped for a link since its lstat is not followed.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                sha.update(block)
        digest = sha.hexdigest()
    return ["file", st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode), digest]


def env_files(env):
    """relative path -> lstat of every file and link in env (folders are checked, not listed),
    and every path not root's or writable by others."""
    found: dict[str, os.stat_result] = {}
    loose: list[str] = []
    top = os.lstat(env)
    if top.st_uid != OWNER_UID or top.st_mode & 0o022 or not stat.S_ISDIR(top.st_mode):
        loose.append(env)
        if not stat.S_ISDIR(top.st_mode):
            return found, loose
    pending = [(env, "")]
    while pending:
        folder, prefix = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                kind = stat.S_IFMT(st.st_mode)
                if (
                    st.st_uid != OWNER_UID
                    or kind not in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK)
                    or (kind != stat.S_IFLNK and st.st_mode & 0o022)
                ):
                    loose.append(entry.path)
                if stat.S_ISDIR(st.st_mode):
                    pending.append((entry.path, prefix + entry.name + "/"))
                else:
                    found[prefix + entry.name] = st
    return found, loose


def snapshot(folder, paths):
    """Copy the files that exist, with their owners, modes and times, under folder (made anew,
    root's alone: the token is among them), each at its own path."""
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, mode=0o700)
    kept = []
    for path in paths:
        if os.path.isfile(path):
            copy = os.path.join(folder, path.lstrip("/"))
            os.makedirs(os.path.dirname(copy), mode=0o700, exist_ok=True)
            shutil.copy2(path, copy)
            st = os.stat(path)
            os.chown(copy, st.st_uid, st.st_gid)
            kept.append(path)
    return kept


def restore(folder):
    """Put every file snapshot() kept back at its path, as it was (each replaced in one rename)."""
    restored = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            copy = os.path.join(root, name)
            path = "/" + os.path.relpath(copy, folder)
            st = os.stat(copy)
            fresh = path + ".raykit-restore"
            shutil.copy2(copy, fresh)
            os.chown(fresh, st.st_uid, st.st_gid)
            os.replace(fresh, path)
            restored.append(path)
    return sorted(restored)


def write_manifest(env):
    """Provision, right after installing as root: what every file of env is, kept beside it.
    Nothing in env stays writable by others (uv makes its lock file writable by all)."""
    found, loose = env_files(env)
    for path in loose:
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
            os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o022)
            found, _ = env_files(env)
    files = {rel: file_entry(os.path.join(env, rel), st) for rel, st in sorted(found.items())}
    # A new file of root's, renamed over the old: never written through a link left there.
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(manifest_path(env)), prefix=".manifest.")
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fd, 0o644)
        json.dump({"env": env, "files": files}, fh)
    os.replace(tmp, manifest_path(env))
    return {"files": len(files)}


# Left out of the digest (not of the checks): uv's record of file times, and each RECORD,
# which lists it with its hash. Every file they list is in the digest itself.
HOST_SPECIFIC = ("/uv_cache.json", ".dist-info/RECORD")
# The environment's owner: root (tests make it their own user).
OWNER_UID = 0
LISTED = 100


def tampering(env, deep):
    """Every file of env added, changed or removed since provision wrote its manifest, every
    path not root's or writable by others, and the digest of what the manifest holds."""
    try:
        manifest = json.loads(read_text(manifest_path(env)))["files"]
        # Anything else in its place (a file a job could write beside an old environment) is none.
        if not all(isinstance(entry, list) and len(entry) == 5 for entry in manifest.values()):
            raise ValueError(manifest_path(env))
    except (ValueError, KeyError, TypeError, AttributeError):
        return {
            "trusted": False,
            "files": [f"no manifest {manifest_path(env)}: not installed by this kit as root"],
            "digest": "",
        }
    found, loose = env_files(env)
    # The manifest and the folder holding it and the environment must be root's alone too.
    for path in (manifest_path(env), os.path.dirname(env.rstrip("/"))):
        st = os.lstat(path)
        if st.st_uid != OWNER_UID or st.st_mode & 0o022 or stat.S_ISLNK(st.st_mode):
            loose.append(path)
    problems = [f"writable by others or not root's: {path}" for path in loose]
    for rel in sorted(set(found) | set(manifest)):
        path = os.path.join(env, rel)
        if rel not in manifest:
            problems.append(f"added: {path}")
        elif rel not in found:
            problems.append(f"removed: {path}")
        else:
            want = manifest[rel]
            have = file_entry(path, found[rel], with_hash=deep and want[0] == "file")
            if want[0] != have[0]:
                problems.append(f"changed: {path}")
                continue
            # kind, mode and content: the content by its hash (deep), or by its size and time.
            same = [0, 3, 4] if deep or want[0] == "link" else [0, 1, 2, 3]
            if [have[i] for i in same] != [want[i] for i in same]:
                problems.append(f"changed: {path}")
    digest = hashlib.sha256()
    for rel, entry in sorted(manifest.items()):
        if not rel.endswith(HOST_SPECIFIC):
            digest.update(f"{rel}\0{entry[0]}\0{entry[4]}\n".encode())
    shown = problems[:LISTED] + ([f"... and {len(problems) - LISTED} more"] if len(problems) > LISTED else [])
    return {"trusted": not problems, "files": shown, "digest": digest.hexdigest()}


def python_tree(tree, deep=False):
    """The kit's build of Python at tree: which build (its marker), and its files against the
    manifest provision wrote (None when no build is there)."""
    try:
        marker = json.loads(read_text(os.path.join(tree, MARKER))) if tree else None
    except ValueError:
        return None
    if not isinstance(marker, dict):
        return None
    files = tampering(tree, deep)
    return {
        "id": marker.get("id", ""),
        "group": marker.get("group", ""),
        "trusted": files["trusted"],
        "files": [f"interpreter {line}" for line in files["files"]],
        "missing": sorted(set(marker.get("packages", [])) - installed_packages()),
    }


def stale(prefix, keep, links=()):
    """The environments and interpreters (and their manifests) nothing uses: kept are keep's
    environments, those deploy's links name (the cluster's and the two before it, for a
    rollback), and the kit's builds they were made from (where their python is)."""
    envs = {*keep, *(os.path.realpath(link) for link in links if os.path.islink(link))}
    pythons = [os.path.realpath(os.path.join(env, "bin", "python")) for env in envs]
    trees = glob.glob(os.path.join(glob.escape(prefix), "python", "*"))
    kept = envs | {tree for tree in trees if any(python.startswith(tree + os.sep) for python in pythons)}
    kept |= {manifest_path(path) for path in kept}
    found = []
    for folder in ("venvs", "python"):
        path = os.path.join(prefix, folder)
        if os.path.isdir(path) and not os.path.islink(path):
            found += [os.path.join(path, name) for name in sorted(os.listdir(path))]
    return [path for path in found if path not in kept]


def untrusted(prefix, env, links, unit_file, deep):
    """The environments besides env (the report's) and those the cluster runs (current's, and
    the unit's, which differs after an interrupted rollback) that are not as provision installed
    them, as an earlier version that let Ray's user write them left them: each with its first
    problem, and what provision removes for them (deploy's links naming them, their manifests,
    themselves)."""
    venvs = os.path.join(prefix, "venvs")
    problems: dict[str, str] = {}
    remove: list[str] = []
    if os.path.isdir(venvs) and not os.path.islink(venvs):
        named = {
            link: os.path.normpath(os.path.join(os.path.dirname(link), os.readlink(link)))
            for link in links
            if os.path.islink(link)
        }
        running = {env, named.get(links[0]), unit_env(unit_file)}
        for name in sorted(os.listdir(venvs)):
            path = os.path.join(venvs, name)
            if path in running or path.endswith(".manifest.json"):
                continue
            folder = os.path.isdir(path) and not os.path.islink(path)
            found = tampering(path, deep)["files"] if folder else [f"not a folder: {path}"]
            if found:
                problems[path] = found[0]
                remove += sorted(link for link, target in named.items() if target == path)
                remove += [manifest_path(path), path]
    return {"problems": problems, "remove": remove}


def unit_env(unit_file):
    """The environment the unit deploy wrote starts Ray from ("" without one)."""
    for line in read_text(unit_file).splitlines():
        if line.startswith("ExecStart="):
            return line[len("ExecStart=") :].split()[0].removesuffix("/bin/python")
    return ""


def installed_packages():
    """The names of the packages dpkg has installed."""
    names = set()
    for stanza in read_text("/var/lib/dpkg/status").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
        if fields.get("Status", "").endswith(" installed"):  # held ones too
            names.add(fields.get("Package"))
    return names


# raykit.pybuild's marker in each build's tree.
MARKER = "raykit-build.json"


def install_debs(debs_tar, debs, work, unchanged=""):
    """dpkg installs the packages of debs (package -> its file in debs_tar) that the host lacks
    (none it has is installed again), unpacked in work; their names. unchanged: what a failure
    left as it was, for its message."""
    missing = sorted(set(debs) - installed_packages())
    files = [debs[name] for name in missing]
    if files:
        steps = [
            ["tar", "--extract", "--file", debs_tar, "--directory", work, *files],
            ["dpkg", "--install", *(os.path.join(work, name) for name in files)],
        ]
        for argv in steps:
            # Their output goes to stderr: stdout is this script's JSON.
            done = subprocess.run(argv, stdout=sys.stderr, check=False)
            if done.returncode != 0:
                sys.exit(f"{' '.join(argv[:4])} ... failed (exit {done.returncode}){unchanged}")
    return missing


def install_packages(debs_tar, debs):
    """install-debs: the packages the host lacks from the copy provision or deploy made, which is
    removed, installed or not."""
    work = tempfile.mkdtemp(dir=os.path.dirname(debs_tar), prefix=".raykit-debs.")
    try:
        return {"installed": install_debs(debs_tar, debs, work)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        os.unlink(debs_tar)


def install_build(archive, debs_tar, debs, tree, build_id):
    """From the copies of raykit.pybuild's files: the runtime packages the host lacks
    (install_debs). Unless the tree there is this very build, unchanged, the archive is unpacked
    beside it and renamed over it only once whole, so a failure leaves the host's interpreter as
    it was; then its manifest. The copies are removed, installed or not."""
    parent = os.path.dirname(tree)
    found = python_tree(tree)
    replace = not (found and found["id"] == build_id and found["trusted"])
    work = tempfile.mkdtemp(dir=parent, prefix=".raykit-python-new.")
    debs_dir = tempfile.mkdtemp(dir=os.path.dirname(debs_tar), prefix=".raykit-python-debs.")
    try:
        missing = install_debs(debs_tar, debs, debs_dir, "; the interpreter is as it was")
        if replace:
            argv = ["tar", "--extract", "--gzip", "--file", archive, "--directory", work]
            done = subprocess.run(argv, stdout=sys.stderr, check=False)
            if done.returncode != 0:
                sys.exit(f"{' '.join(argv[:4])} ... failed (exit {done.returncode}); the interpreter is as it was")
            if os.path.lexists(tree):
                os.rename(tree, os.path.join(work, ".replaced"))
            os.rename(os.path.join(work, os.path.basename(tree)), tree)
        return {"installed": missing, "replaced": replace, **(write_manifest(tree) if replace else {})}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(debs_dir, ignore_errors=True)
        for path in (archive, debs_tar):
            if os.path.lexists(path):
                os.unlink(path)


def report(env, tree, lock_text, deep=False):
    """The environment as read from its files (its own interpreter never runs here); None
    when there is nothing at its path."""
    if not os.path.lexists(env):
        return None
    cfg = dict(ln.split("=", 1) for ln in read_text(os.path.join(env, "pyvenv.cfg")).splitlines() if "=" in ln)
    cfg = {k.strip(): v.strip() for k, v in cfg.items()}
    site = os.path.join(env, "lib", "python" + ".".join(cfg.get("version", "0.0").split(".")[:2]), "site-packages")
    wanted = locked_versions(lock_text)
    # Installers name each package's folder NAME-VERSION.dist-info (the wheel spec).
    installed = {}
    for folder in os.listdir(site) if os.path.isdir(site) and not os.path.islink(site) else []:
        if folder.endswith(".dist-info"):
            name, _, version = folder[: -len(".dist-info")].rpartition("-")
            installed[normalize(name)] = version
    drift = []
    for name, version in sorted(wanted.items()):
        have = installed.get(name)
        if have is None:
            drift.append(f"{name} missing (lock {version})")
        elif have != version:
            drift.append(f"{name} {have} (lock {version})")
    drift += [f"{name} {installed[name]} not in the lock" for name in sorted(set(installed) - set(wanted))]
    # The system's python, or the kit's build of this version beside the environments.
    base = os.path.realpath(os.path.join(env, "bin", "python"))
    built = python_tree(tree, deep) if base.startswith(os.path.realpath(tree) + os.sep) else None
    if built is None and base != os.path.realpath(sys.executable):
        drift.append(f"its python is {base}, neither {sys.executable} nor the kit's build in {tree}")
    files = tampering(env, deep)
    return {
        "python": cfg.get("version", "missing"),
        "provider": "built: " + built["group"] if built else "system",
        "interpreter": base,
        "interpreter_files": built["files"] if built else [],
        "ray": installed.get("ray", "missing"),
        "packages": len(installed),
        "digest": files["digest"],
        "drift": drift,
        "files": files["files"],
        "trusted": files["trusted"],
        "exists": True,
        "env": env,
        # Another environment than this one, where deploy's current link names it: the one the
        # nodes run (a rollback's, or the one before a provision not deployed yet); "" if none.
        "runs": runs_elsewhere(env),
    }


def runs_elsewhere(env):
    current = os.path.join(os.path.dirname(os.path.dirname(env)), "current")
    if not os.path.islink(current) or os.path.realpath(current) == os.path.realpath(env):
        return ""
    return os.path.realpath(current)


def service(unit, marker, files=()):
    props = [
        "LoadState",
        "ActiveState",
        "SubState",
        "UnitFileState",
        "MainPID",
        "NRestarts",
        "ActiveEnterTimestampMonotonic",
    ]
    out = subprocess.run(
        ["systemctl", "show", unit, "--property=" + ",".join(props)], capture_output=True, text=True, check=False
    ).stdout
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
        # `invoke drain` took the node out: deploy, start and restart leave it stopped.
        "drained": os.path.exists(marker),
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
    journal = subprocess.run(
        [
            "journalctl",
            "--namespace=+ray",
            "--unit",
            spec["unit"],
            "--lines=15",
            "--no-pager",
            "--output=short-precise",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {
        "time": time.time(),
        "shm_bytes": shm_bytes(),
        "token_sha256": token,
        "ports": ports,
        "journal": journal,
        "start_up_hooks": start_up_hooks(spec["home"]),
    }


# What a Python started as the ray user in its home would run at start-up: .pth files and
# site/usercustomize in its user site, and in the home itself (a script's folder).
HOOKS = (
    ".local/lib/python*/site-packages/*.pth",
    ".local/lib/python*/site-packages/sitecustomize.py",
    ".local/lib/python*/site-packages/usercustomize.py",
    "*.pth",
    "sitecustomize.py",
    "usercustomize.py",
)


def start_up_hooks(home):
    return sorted(path for pattern in HOOKS for path in glob.glob(os.path.join(glob.escape(home), pattern)))


if __name__ == "__main__":
    if sys.argv[1] == "probe":
        print(json.dumps(probe(json.loads(sys.argv[2]))))
    elif sys.argv[1] == "service":
        print(json.dumps(service(sys.argv[2], sys.argv[3], sys.argv[4:])))
    elif sys.argv[1] == "check":
        print(json.dumps(check(json.loads(sys.argv[2]))))
    elif sys.argv[1] == "manifest":
        print(json.dumps(write_manifest(sys.argv[2])))
    elif sys.argv[1] == "firewall-record":
        print(json.dumps(firewall_record(sys.argv[2], sys.argv[3])))
    elif sys.argv[1] == "install-debs":
        print(json.dumps(install_packages(sys.argv[2], json.loads(sys.argv[3]))))
    elif sys.argv[1] == "install-build":
        print(json.dumps(install_build(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5], sys.argv[6])))
    elif sys.argv[1] == "snapshot":
        print(json.dumps(snapshot(sys.argv[2], sys.argv[3:])))
    elif sys.argv[1] == "restore":
        print(json.dumps(restore(sys.argv[2])))
    elif sys.argv[1] == "stale":
        print(json.dumps(stale(sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]))))
    elif sys.argv[1] == "report":
        print(json.dumps(report(sys.argv[2], sys.argv[3], sys.stdin.read(), deep=sys.argv[4:] == ["deep"])))
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
