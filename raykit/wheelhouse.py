"""The controller's wheelhouse: the locked wheels, downloaded once and packed for the hosts.

Hosts have no registry access, so everything they install comes from here: one tar per
lock holding the lock itself, the uv binary the hosts install with, (unless the hosts
use an index) every locked wheel, checked against the lock's hashes by pip on download,
and the bytecode of the modules a Ray node imports (raykit.bytecode).

Run by playbooks/provision.yml on the controller:
    python -m raykit.wheelhouse --lock locks/cluster-x86_64.txt --cache ~/.cache/raykit/wheelhouse \
        --name x86_64-DIGEST
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import json
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from raykit import bytecode as node_bytecode
from raykit import pybuild
from raykit.cluster_lock import read_header

PIP_TIMEOUT_S = 600
BYTECODE_TIMEOUT_S = 600
# Bumped when what a wheelhouse holds changes (2: the node's bytecode; 3: also compiled by the
# kit's build of the pin), so hosts get the new one.
FORMAT = 3
# The controller's cache, ray_wheelhouse_cache's default: one folder per wheelhouse id.
CACHE = Path("~/.cache/raykit/wheelhouse")
# The wheelhouses it keeps per architecture, the most recently built: going back to a recent lock (a
# rollback's, the previous pin's) needs no new download and compile.
KEEP = 3


def wheelhouse_id(lock: Path, arch: str, index_only: bool) -> str:
    """The wheelhouse's name, on the controller and the hosts: content-addressed by the lock
    and FORMAT, so an unchanged one is never copied again."""
    digest = hashlib.sha256((lock.read_text().rstrip() + str(FORMAT)).encode()).hexdigest()[:16]
    return f"{arch}-{digest}{'-index' if index_only else ''}"


def requirement_blocks(lock_text: str) -> dict[str, str]:
    """name -> its requirement block: the `name==version` line and its --hash lines."""
    blocks: dict[str, list[str]] = {}
    name = None
    for line in lock_text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            name = line.split("==")[0].strip().lower()
            blocks[name] = [line]
        elif name and line.strip().startswith("--hash"):
            blocks[name].append(line)
        else:
            name = None
    return {n: "\n".join(lines) + "\n" for n, lines in blocks.items()}


def pip_platforms(arch: str, manylinux_max: int = 28) -> list[str]:
    # pip matches --platform tags exactly, so list every manylinux level the hosts accept.
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(17, manylinux_max + 1)]
    return [*tags, f"manylinux2014_{arch}"]


def download(requirements: Path, arch: str, python_version: str, dest: Path) -> None:
    major, minor, _ = python_version.split(".")
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--require-hashes", "--no-deps", "--only-binary=:all:",
        "--python-version", f"{major}.{minor}", "--implementation", "cp", "--abi", f"cp{major}{minor}",
        *[arg for tag in pip_platforms(arch) for arg in ("--platform", tag)],
        "--dest", str(dest), "--requirement", str(requirements),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    if result.returncode != 0:
        errors = [ln for ln in result.stderr.splitlines() if ln.startswith("ERROR")]
        raise SystemExit(f"error: downloading the locked wheels failed: {' | '.join(errors) or result.stderr[-500:]}")


def uv_binary(wheels: Path) -> bytes:
    (wheel,) = wheels.glob("uv-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        (member,) = [n for n in zf.namelist() if n.endswith(".data/scripts/uv")]
        return zf.read(member)


def bytecode(wheels: Path | None, arch: str, python_version: str, out: Path, python_cache: Path) -> None:
    """The node's bytecode (raykit.bytecode), compiled by a Python X.Y of the hosts' when the
    controller has one for their architecture: this one, pythonX.Y on PATH, or the kit's own
    build of the pin for the controller's release in python_cache (raykit.pybuild). Otherwise
    (or without wheels) an empty archive, and each node compiles its modules at Ray's first
    start, as Python always does."""
    major_minor = tuple(int(part) for part in python_version.split(".")[:2])
    interpreter = (
        sys.executable if sys.version_info[:2] == major_minor else shutil.which("python{}.{}".format(*major_minor))
    )
    if interpreter and not runs_as(interpreter, major_minor):
        interpreter = None  # a version manager's shim with no such Python behind it
    with tempfile.TemporaryDirectory() as tmp:
        if interpreter is None and wheels is not None and platform.machine() == arch:
            interpreter = unpacked_build(python_cache, python_version, Path(tmp))
        if wheels is None or interpreter is None or platform.machine() != arch:
            node_bytecode.pack(Path(), [], out)
            return
        cmd = node_bytecode.command(interpreter, "--wheels", str(wheels), "--out", str(out))
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=BYTECODE_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"error: compiling the node's bytecode took over {BYTECODE_TIMEOUT_S} s") from None
    if result.returncode != 0:
        raise SystemExit(
            f"error: compiling the node's bytecode with {interpreter} failed: {result.stderr.strip()[-500:]}"
        )


def unpacked_build(python_cache: Path, python_version: str, into: Path) -> str | None:
    """The interpreter of the kit's build of python_version for the controller's release, unpacked
    into `into` (a static build runs from any folder), if the cache holds one that runs here."""
    archives = pybuild.cached_archives(python_cache, python_version, pybuild.controller_group())
    if not archives:
        return None
    into.mkdir(parents=True, exist_ok=True)
    # GNU tar: Debian 12's python3.11 has no extraction filters.
    cmd = ["tar", "--extract", "--gzip", "--no-same-owner", "--file", str(archives[0]), "--directory", str(into)]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        result = None
    if result is None or result.returncode != 0:
        print(f"warning: could not unpack {archives[0]}; the nodes compile their modules", file=sys.stderr)
        return None
    major_minor = tuple(int(part) for part in python_version.split(".")[:2])
    found = [str(p) for p in into.glob("*/bin/python{}.{}".format(*major_minor)) if runs_as(str(p), major_minor)]
    return found[0] if found else None


def runs_as(interpreter: str, major_minor: tuple[int, ...]) -> bool:
    """Whether interpreter starts, as Python X.Y."""
    try:
        out = subprocess.run(
            [interpreter, "-I", "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True, text=True, timeout=30, check=False,
        ).stdout  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return tuple(int(part) for part in out.split()) == major_minor


def pack(tar: Path, lock: Path, uv: bytes, wheels: list[Path], node_pycs: Path) -> None:
    """A tar in a fixed order, with fixed times and owners."""

    def add(tf: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), mode, 0
        tf.addfile(info, io.BytesIO(data))

    top = tar.parent.name
    tmp = tar.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tf:
        add(tf, f"{top}/requirements.txt", lock.read_bytes(), 0o644)
        add(tf, f"{top}/uv", uv, 0o755)
        for wheel in sorted(wheels):
            add(tf, f"{top}/wheels/{wheel.name}", wheel.read_bytes(), 0o644)
        add(tf, f"{top}/bytecode.tar.gz", node_pycs.read_bytes(), 0o644)
        # Last, so its presence on a host means the whole tar was unpacked.
        add(tf, f"{top}/.complete", b"", 0o644)
    tmp.replace(tar)


def tar_path(cache: Path, name: str) -> Path:
    """Where the cache keeps wheelhouse name's tar."""
    return cache / name / "wheelhouse.tar"


def ensure(lock: Path, cache: Path, name: str, index_only: bool, python_cache: Path) -> dict[str, object]:
    meta = read_header(lock)
    arch, python_version = str(meta["arch"]), str(meta["python_version"])
    tar = tar_path(cache, name)
    cache.mkdir(parents=True, exist_ok=True)
    # Hosts of one architecture ask for the same wheelhouse at once: the first builds it.
    with open(cache / f".{name}.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        changed = not tar.exists()
        if changed:
            build(lock, tar, arch, python_version, index_only, python_cache)
    return {"tar": str(tar), "id": name, "changed": changed, "bytes": tar.stat().st_size}


def build(lock: Path, tar: Path, arch: str, python_version: str, index_only: bool, python_cache: Path) -> None:
    dest = tar.parent
    wheels = dest / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    requirements = dest / "requirements.txt"
    if index_only:
        requirements.write_text(requirement_blocks(lock.read_text())["uv"])
    else:
        shutil.copyfile(lock, requirements)
    download(requirements, arch, python_version, wheels)
    shipped = [] if index_only else list(wheels.glob("*.whl"))
    with tempfile.TemporaryDirectory() as tmp:  # kept only inside the wheelhouse tar
        node_pycs = Path(tmp) / "bytecode.tar.gz"
        bytecode(None if index_only else wheels, arch, python_version, node_pycs, python_cache)
        pack(tar, lock, uv_binary(wheels), shipped, node_pycs)
    shutil.rmtree(wheels)  # the tar holds them
    requirements.unlink()
    prune(dest.parent, arch)


def prune(cache: Path, arch: str, keep: int = KEEP) -> None:
    """Remove all but the `keep` most recently built wheelhouses of arch, and any a build left
    incomplete; never one another provision is building (its lock is held)."""
    folders = [d for d in cache.glob(f"{arch}-*") if d.is_dir()]
    built = {d: tar.stat().st_mtime for d in folders if (tar := tar_path(cache, d.name)).exists()}
    kept = sorted(built, key=built.__getitem__, reverse=True)[:keep]
    for old in folders:
        if old in kept:
            continue
        with open(cache / f".{old.name}.lock", "w") as guard:
            try:
                fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(old, ignore_errors=True)
            cache.joinpath(f".{old.name}.lock").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lock", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--name", required=True, help="folder for this lock's wheelhouse (its content id)")
    parser.add_argument("--index-only", action="store_true", help="hosts install from an index: ship uv only")
    parser.add_argument(
        "--python-cache", type=Path, default=pybuild.CACHE, help="the kit's Python builds (ray_python_build_cache)"
    )
    args = parser.parse_args(argv)
    ensure_args = (args.lock, args.cache.expanduser(), args.name, args.index_only, args.python_cache.expanduser())
    print(json.dumps(ensure(*ensure_args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
