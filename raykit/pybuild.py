"""The kit's own CPython, built on the controller for hosts whose distro lacks the pinned one.

One build per (version, distribution release, architecture): it is compiled in a build root
of that release (debootstrap, cached), so it links against the libraries the hosts' own
release ships, and never on a host: no compiler, build dependency or build folder reaches
one. What a host gets is the installed tree as one archive (unpacked at PREFIX) and the
release's packages of the runtime libraries it links, for the role to install where missing.

The cache key is the version, the group (debian-13-x86_64) and a digest of the recipe below,
so a changed recipe builds again and an unchanged one never does.

Run on the controller, as root (debootstrap and systemd-nspawn need it), by roles/ray_python:
    python -m raykit.pybuild --version 3.11.2 --source-url URL --sha256 HEX --release trixie \
        --group debian-13-x86_64 --prefix /opt/ray/python/3.11.2 --mirror URL --cache DIR
`invoke lock` pins the source with fetch() (raykit.cluster_lock).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import inspect
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

# Bumped when what a build archive holds changes.
FORMAT = 1
DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")
# The headers CPython's optional modules build against (no Tk: Ray needs no GUI).
BUILD_PACKAGES = (
    "pkg-config",
    "libbz2-dev",
    "libffi-dev",
    "libgdbm-dev",
    "libgdbm-compat-dev",
    "liblzma-dev",
    "libncurses-dev",
    "libreadline-dev",
    "libsqlite3-dev",
    "libssl-dev",
    "uuid-dev",
    "zlib1g-dev",
)
CONFIGURE = ("--with-ensurepip=no", "--disable-test-modules")
OPTIMIZE = ("--enable-optimizations", "--with-lto")
# Marks an installed tree as this kit's build: what it is, for `invoke versions` and the probe.
MARKER = "raykit-build.json"
VERSION_RE = re.compile(r"^3\.\d+\.\d+$")
# The controller's cache of sources, build roots and builds (ray_python_build_cache's default).
CACHE = Path("~/.cache/raykit/python")
BUILD_TIMEOUT_S = 3 * 3600
FETCH_TIMEOUT_S = 120


class BuildError(Exception):
    """A problem the user can fix; shown as one line."""


def group(distribution: str, major: str, arch: str) -> str:
    return f"{distribution.lower()}-{major}-{arch}"


def controller_group() -> str:
    """The controller's own group, as group() names a host's ("" if it has no os-release)."""
    try:
        release = platform.freedesktop_os_release()
    except OSError:
        return ""
    return group(release.get("ID", ""), release.get("VERSION_ID", "").split(".")[0], platform.machine())


def cached_archives(cache: Path, version: str, grp: str) -> list[Path]:
    """The cache's complete builds of version for grp, whatever their recipe."""
    return sorted(cache.glob(f"cpython-{version}-{grp}-*/python.tar.gz"))


def debian_releases() -> list[str]:
    """The Debian releases the controller's debootstrap can make (their scripts are sid's)."""
    return sorted(p.name for p in DEBOOTSTRAP_SCRIPTS.glob("*") if p.resolve().name == "sid" and p.name != "sid")


def buildable_groups() -> str:
    """What this controller can build for, for error messages."""
    releases = ", ".join(debian_releases()) or "none: install debootstrap"
    return f"Debian {releases} on {platform.machine()}"


def unsupported(distribution: str, release: str, arch: str) -> str:
    """Why this controller cannot build for a host ("" when it can)."""
    if distribution != "Debian" or release not in debian_releases() or arch != platform.machine():
        return f"the kit cannot build Python for {distribution} {release} on {arch}; it builds for {buildable_groups()}"
    return ""


def configure_flags(optimize: bool) -> list[str]:
    return [*CONFIGURE, *(OPTIMIZE if optimize else ())]


def build_script(prefix: str, configure: list[str]) -> str:
    """What runs in the build root (sh), in the source folder."""
    return "\n".join(
        [
            "set -eu",
            f"./configure --prefix={prefix} {' '.join(configure)}",
            'make -j"$(nproc)"',
            "make install DESTDIR=/build/out",
        ]
    )


def recipe(
    version: str, sha256: str, release: str, arch: str, prefix: str, mirror: str, optimize: bool
) -> dict[str, object]:
    return {
        "format": FORMAT,
        "version": version,
        "source": sha256,
        "release": release,
        "arch": arch,
        "prefix": prefix,
        "mirror": mirror,
        "packages": BUILD_PACKAGES,
        "script": build_script(prefix, configure_flags(optimize)),
        "trim": inspect.getsource(trim),
        "runtime": RUNTIME_SCRIPT,
    }


def build_id(version: str, sha256: str, grp: str, release: str, prefix: str, mirror: str, optimize: bool) -> str:
    """The build's name, on the controller and the hosts (the probe compares it)."""
    arch = grp.rsplit("-", 1)[-1]
    data = json.dumps(recipe(version, sha256, release, arch, prefix, mirror, optimize), sort_keys=True)
    return f"cpython-{version}-{grp}-{hashlib.sha256(data.encode()).hexdigest()[:12]}"


# --- the source -------------------------------------------------------------------


def source_url(version: str, url: str) -> str:
    """ray_python_source_url, or python.org's archive of the version when it is empty."""
    return url or f"https://www.python.org/ftp/python/{version}/Python-{version}.tgz"


def fetch(url: str, sha256: str | None, cache: Path) -> tuple[Path, str]:
    """The source archive, downloaded once; checked against sha256 when one is given."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", url.rstrip("/").rsplit("/", 1)[-1])
    folder = cache / "src"
    folder.mkdir(parents=True, exist_ok=True)
    if sha256:
        kept = folder / f"{sha256}-{name}"
        if kept.exists():
            return kept, sha256
    # Each download its own file: a lock and a provision may fetch at once.
    fd, name_part = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    part = Path(name_part)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        part.unlink(missing_ok=True)
        raise BuildError(f"ray_python_source_url {url} cannot be fetched: {exc}") from None
    found = digest.hexdigest()
    if sha256 and found != sha256:
        part.unlink()
        raise BuildError(
            f"ray_python_source_url {url} has sha256 {found}, but the lock pins {sha256}; "
            "if the new archive is trusted, run `invoke lock` (nothing was changed)"
        )
    kept = folder / f"{found}-{name}"
    part.replace(kept)
    return kept, found


# --- the build root ----------------------------------------------------------------


def build_root(release: str, mirror: str, cache: Path, log: Path) -> Path:
    """A minimal system of the release with a compiler and CPython's build dependencies;
    made once, kept while its recipe holds."""
    key = hashlib.sha256(json.dumps([release, mirror, BUILD_PACKAGES]).encode()).hexdigest()[:12]
    root = cache / "roots" / f"{release}-{key}"
    if (root / ".raykit-root").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    building = root.with_name(root.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    cmd = ["debootstrap", "--variant=buildd", f"--include={','.join(BUILD_PACKAGES)}", release, str(building), mirror]
    run_logged(cmd, log, f"making the {release} build root (debootstrap)")
    (building / ".raykit-root").write_text(release + "\n")
    building.rename(root)
    for old in root.parent.glob(f"{release}-*"):
        if old != root:
            shutil.rmtree(old, ignore_errors=True)
    return root


def run_logged(cmd: list[str], log: Path, what: str, **kwargs: object) -> None:
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        try:
            rc = subprocess.run(
                cmd, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S, check=False, **kwargs
            ).returncode  # type: ignore[call-overload]
        except (OSError, subprocess.TimeoutExpired) as exc:
            rc, tail = -1, str(exc)
        else:
            tail = ""
    if rc != 0:
        tail = tail or " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        raise BuildError(f"{what} failed (exit {rc}); its log is kept at {log}: {tail}")


def nspawn(root: Path, work: Path, script: str, network: bool = False) -> list[str]:
    return [
        # No systemd need run on the controller: nothing registers the container.
        "systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--timezone=off", "--link-journal=no",
        f"--directory={root}", f"--bind={work}:/build", "--chdir=/build",
        "--setenv=LC_ALL=C.UTF-8", "--setenv=TMPDIR=/build/tmp",
        *(["--resolv-conf=copy-host"] if network else ["--private-network", "--resolv-conf=off"]),
        "/bin/sh", "-c", script,
    ]  # fmt: skip


# --- the build ----------------------------------------------------------------------


def trim(tree: Path) -> None:
    """What a Ray host never uses: the static libpython (extensions link to nothing) and the
    -O/-OO bytecode (Ray never runs with -O); the plain bytecode stays, as the tree is root's."""
    for path in tree.glob("lib/python3.*/config-3.*/libpython3.*.a"):
        path.unlink()
    for path in tree.rglob("*.opt-[12].pyc"):
        path.unlink()


RUNTIME_SCRIPT = r"""
set -eu
tree=/build/out{prefix}
libs=$(find "$tree" -type f \( -name '*.so*' -o -path "$tree/bin/python3.*" \) -exec ldd {{}} \; 2>/dev/null \
  | awk '$2 == "=>" && $3 ~ /^\// {{print $3}}' | sort -u)
pkgs=$(for lib in $libs; do dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "$lib"; done \
  | cut -d: -f1 | sort -u)
# What those need, as installed here (an alternative not taken is not installed).
closure=$(apt-cache depends --recurse --important $pkgs | grep -v '^ ' | grep -v '^<' | sort -u \
  | while read -r p; do dpkg-query -W -f='${{db:Status-Abbrev}} ${{Package}}\n' "$p" 2>/dev/null; done \
  | awk '$1 ~ /^.i/ {{print $2}}')
echo "$closure" > /build/runtime.txt
apt-get update -q
mkdir -p /build/debs && cd /build/debs && apt-get download -q $closure
"""


def build(
    version: str,
    source: Path,
    sha256: str,
    release: str,
    grp: str,
    prefix: str,
    mirror: str,
    optimize: bool,
    cache: Path,
) -> dict[str, object]:
    bid = build_id(version, sha256, grp, release, prefix, mirror, optimize)
    dest = cache / bid
    logs = cache / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{bid}.log"
    with open(cache / f".{bid}.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        found = cached(cache, bid)
        if found:
            return found
        start = time.monotonic()
        log.write_text(f"building {bid}\n")
        # One build at a time in a release's build root: systemd-nspawn locks the tree it runs.
        with open(cache / f".root-{release}.lock", "w") as root_guard:
            fcntl.flock(root_guard, fcntl.LOCK_EX)
            root = build_root(release, mirror, cache, log)
            work = cache / "work" / bid
            # The work folder (the source and the objects) goes, built or not; the log stays.
            try:
                shutil.rmtree(work, ignore_errors=True)
                (work / "src").mkdir(parents=True)
                (work / "tmp").mkdir()
                run_logged(
                    [
                        "tar",
                        "--extract",
                        "--no-same-owner",
                        "--strip-components=1",
                        f"--file={source}",
                        f"--directory={work / 'src'}",
                    ],
                    log,
                    "unpacking the source",
                )
                script = "cd /build/src\n" + build_script(prefix, configure_flags(optimize))
                run_logged(nspawn(root, work, script), log, f"building Python {version} for {grp}")
                tree = work / "out" / prefix.lstrip("/")
                trim(tree)
                # The runtime libraries' packages come from the release's own mirror: network here.
                run_logged(
                    nspawn(root, work, RUNTIME_SCRIPT.format(prefix=prefix), network=True),
                    log,
                    "finding its runtime libraries",
                )
                staging = cache / f".{bid}.staging"
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(parents=True)
                debs = sorted((work / "debs").glob("*.deb"))
                # Each runtime package's file (apt-get download names them NAME_VERSION_ARCH.deb).
                (staging / "debs.json").write_text(json.dumps({deb.name.split("_", 1)[0]: deb.name for deb in debs}))
                # One transfer per host for its missing packages: the role unpacks and installs those.
                with tarfile.open(staging / "debs.tar", "w") as tf:
                    for deb in debs:
                        tf.add(deb, arcname=deb.name)
                packages = (work / "runtime.txt").read_text().split()
                marker = {"id": bid, "group": grp, "version": version, "packages": packages}
                (tree / MARKER).write_text(json.dumps(marker, sort_keys=True) + "\n")
                pack(tree, Path(prefix).name, staging / "python.tar.gz")
                shutil.rmtree(dest, ignore_errors=True)
                staging.rename(dest)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        seconds = time.monotonic() - start
        (dest / "seconds").write_text(f"{seconds:.0f}\n")
        return describe(dest, bid, changed=True, seconds=seconds)


def pack(tree: Path, top: str, out: Path) -> None:
    """The tree under TOP/, root's, its marker last: present on a host only when all was unpacked."""

    def owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode &= ~0o022
        return info

    marker = f"{top}/{MARKER}"
    with tarfile.open(out, "w:gz", compresslevel=6) as tf:
        tf.add(tree, arcname=top, filter=lambda info: None if info.name == marker else owned_by_root(info))
        tf.add(tree / MARKER, arcname=marker, filter=owned_by_root)


def cached(cache: Path, bid: str) -> dict[str, object] | None:
    """The build as the cache holds it (None until it is complete: its folder is renamed in last)."""
    dest = cache / bid
    return describe(dest, bid, changed=False, seconds=0.0) if (dest / "python.tar.gz").exists() else None


def describe(dest: Path, bid: str, changed: bool, seconds: float) -> dict[str, object]:
    return {
        "id": bid,
        "archive": str(dest / "python.tar.gz"),
        "bytes": (dest / "python.tar.gz").stat().st_size,
        "debs_tar": str(dest / "debs.tar"),
        "debs": json.loads((dest / "debs.json").read_text()),
        "changed": changed,
        "seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--version", required=True)
    parser.add_argument("--source-url", required=True)
    parser.add_argument("--sha256", required=True, help="the lock's digest of the source")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--release", required=True, help="the hosts' Debian release (its debootstrap suite)")
    parser.add_argument("--group", required=True, help="distribution-major-arch of the hosts")
    parser.add_argument("--prefix", required=True, help="where the tree is installed on the hosts")
    parser.add_argument("--mirror", default="http://deb.debian.org/debian")
    parser.add_argument("--optimize", action="store_true", help="PGO and LTO (much slower to build)")
    args = parser.parse_args(argv)
    cache = args.cache.expanduser()
    try:
        if not VERSION_RE.match(args.version):
            raise BuildError(f"ray_python_version {args.version!r} is not a CPython 3.X.Y version")
        source, sha256 = fetch(args.source_url, args.sha256, cache)
        if os.geteuid() != 0:
            raise BuildError("building Python needs root on the controller (debootstrap, systemd-nspawn)")
        result = build(
            args.version, source, sha256, args.release, args.group, args.prefix, args.mirror, args.optimize, cache
        )
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
