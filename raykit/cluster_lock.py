"""The cluster lock: every Python package the hosts install, pinned with hashes.

One file per host architecture, `locks/cluster-ARCH.txt`, made by uv for the pinned
Python version. Its first line records the pins it was made from, so a changed pin
without a re-lock is caught before anything is installed (roles/ray/tasks/preflight.yml),
and the pinned CPython source's URL and sha256, which the kit's own build checks
(raykit.pybuild: the source is downloaded once, here, and its digest taken).

Run by `invoke lock` through playbooks/lock.yml:
    python -m raykit.cluster_lock --python 3.11.2 --ray 2.60.0 --extra default \
        --package numpy --arch x86_64 --out locks --python-source-url URL --python-cache DIR
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from raykit import pybuild

HEADER_PREFIX = "# raykit-lock: "
# Oldest glibc the wheels may need (Debian 11+, Ubuntu 20.04+, RHEL 9).
MANYLINUX = "manylinux_2_28"


class LockError(Exception):
    """A problem with the pins; shown as one line."""


@dataclass(frozen=True)
class Pins:
    python_version: str
    ray_version: str
    ray_extras: tuple[str, ...]
    extra_packages: tuple[str, ...]

    def requirements(self) -> str:
        extras = f"[{','.join(self.ray_extras)}]" if self.ray_extras else ""
        # uv is the installer on the hosts; it comes from the wheelhouse like the rest.
        return "\n".join([f"ray{extras}=={self.ray_version}", *self.extra_packages, "uv"]) + "\n"


def lock_file(out_dir: Path, arch: str) -> Path:
    return out_dir / f"cluster-{arch}.txt"


def ray_known_extras(ray_version: str, python_version: str, arch: str) -> list[str]:
    """Ray's extras: from the controller's own Ray when it is the pinned version, else from the
    pinned wheel's metadata, which pip reads from the package index without the wheel."""
    if importlib.metadata.version("ray") == ray_version:
        return sorted(importlib.metadata.metadata("ray").get_all("Provides-Extra") or [])
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps", "--ignore-installed",
            "--only-binary", ":all:", "--python-version", python_version,
            # pip does not widen a manylinux tag to the older ones the wheels carry.
            *(arg for tag in (MANYLINUX, "manylinux_2_17", "manylinux2014") for arg in ("--platform", f"{tag}_{arch}")),
            "--target", tmp, "--report", f"{tmp}/report.json",
            f"ray=={ray_version}",
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise LockError(f"pip could not find Ray {ray_version}: {result.stderr.strip()}")
        metadata = json.loads(Path(tmp, "report.json").read_text())["install"][0]["metadata"]
    return sorted(metadata.get("provides_extra") or [])


def header(pins: Pins, arch: str, known_extras: list[str], python_source: dict[str, str]) -> str:
    data = {**asdict(pins), "arch": arch, "ray_known_extras": known_extras, "python_source": python_source}
    return HEADER_PREFIX + json.dumps(data, sort_keys=True)


def read_header(path: Path) -> dict[str, Any]:
    first = path.read_text().split("\n", 1)[0]
    if not first.startswith(HEADER_PREFIX):
        raise LockError(f"{path} has no raykit header; run `invoke lock`")
    return json.loads(first[len(HEADER_PREFIX) :])


def unknown_extras(extras: list[str] | tuple[str, ...], known: list[str], ray_version: str) -> list[str]:
    """The problem with extras Ray does not have (at lock time, and in preflight against the lock)."""
    unknown = sorted(set(extras) - set(known))
    if not unknown:
        return []
    return [f"ray_extras: unknown extra {', '.join(unknown)} (Ray {ray_version} has: {', '.join(known)})"]


def compile_lock(pins: Pins, arch: str, out_dir: Path, uv: str, python_source: dict[str, str]) -> bool:
    """Resolve the pins for one architecture; returns whether the lock file changed."""
    known = ray_known_extras(pins.ray_version, pins.python_version, arch)
    for problem in unknown_extras(pins.ray_extras, known, pins.ray_version):
        raise LockError(problem)
    with tempfile.TemporaryDirectory() as tmp:
        req, out = Path(tmp, "cluster.in"), Path(tmp, "cluster.txt")
        req.write_text(pins.requirements())
        cmd = [
            uv, "pip", "compile", "--quiet", "--no-header", "--generate-hashes",
            "--python-version", pins.python_version,
            "--python-platform", f"{arch}-{MANYLINUX}",
            "--only-binary", ":all:",
            "--output-file", out.name, req.name,
        ]  # fmt: skip
        # Relative names: uv writes the input's path into the lock's comments.
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=tmp)
        if result.returncode != 0:
            raise LockError(f"uv could not resolve the pins for {arch}: {result.stderr.strip()}")
        text = header(pins, arch, known, python_source) + "\n" + out.read_text()
    path = lock_file(out_dir, arch)
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", required=True, help="pinned Python version X.Y.Z")
    parser.add_argument("--ray", required=True, help="pinned Ray version")
    parser.add_argument("--extra", action="append", default=[], help="a Ray extra (repeatable)")
    parser.add_argument("--package", action="append", default=[], help="another requirement (repeatable)")
    parser.add_argument("--arch", action="append", required=True, help="a host architecture (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="folder of the lock files")
    parser.add_argument("--uv", default=str(Path(sys.executable).parent / "uv"))
    parser.add_argument("--python-source-url", default="", help="the CPython source archive (python.org's)")
    parser.add_argument("--python-cache", type=Path, default=pybuild.CACHE, help="controller folder for the source")
    args = parser.parse_args(argv)
    pins = Pins(args.python, args.ray, tuple(args.extra), tuple(args.package))
    installed = importlib.metadata.version("ray")
    if installed != pins.ray_version:
        print(
            f"note: the controller's job client is Ray {installed}, not {pins.ray_version}: "
            f"pin ray[default]=={pins.ray_version} in requirements.in too before deploying these pins",
            file=sys.stderr,
        )
    try:
        url = pybuild.source_url(args.python, args.python_source_url)
        _, sha256 = pybuild.fetch(url, None, args.python_cache.expanduser())
        source = {"url": url, "sha256": sha256}
        for arch in sorted(set(args.arch)):
            changed = compile_lock(pins, arch, args.out, args.uv, source)
            print(f"{lock_file(args.out, arch)}: {'changed' if changed else 'unchanged'}")
    except (LockError, pybuild.BuildError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
