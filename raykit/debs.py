"""Debian packages for hosts that reach no registry, fetched on the controller for the hosts'
own release and architecture (not the controller's), without root and without touching the
controller's apt: a private apt tree per release, as devscripts' chdist does.

    python -m raykit.debs --release trixie --arch x86_64 --mirror URL --cache DIR nftables

prints {"debs_tar": PATH, "debs": {package: file}}, the format raykit.pybuild's runtime
packages use, so the hosts install them the same way (raykit_report.py install-debs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

# Ansible's architecture names to Debian's.
DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
CACHE = Path("~/.cache/raykit/apt")
TIMEOUT_S = 300


class FetchError(Exception):
    """A problem the user can fix; shown as one line."""


def apt_options(tree: Path, arch: str) -> list[str]:
    """apt's settings for the private tree: its own sources, lists and an empty dpkg status, so
    every package counts as missing and the controller's own state is never read or written."""
    settings = {
        "Dir::State": tree,
        "Dir::State::Lists": tree / "lists",
        "Dir::State::status": tree / "status",
        "Dir::Cache": tree,
        "Dir::Cache::archives": tree / "archives",
        "Dir::Etc::SourceList": tree / "sources.list",
        "Dir::Etc::SourceParts": tree / "sources.list.d",
        "Dir::Etc::Preferences": tree / "preferences",
        "Dir::Etc::PreferencesParts": tree / "preferences.d",
        "APT::Architecture": arch,
        "APT::Architectures": arch,
    }
    return [arg for key, value in settings.items() for arg in ("-o", f"{key}={value}")]


def closure(depends_output: str) -> list[str]:
    """The package names `apt-cache depends --recurse --important` lists (virtual ones, in <>,
    and the indented relations left out)."""
    return sorted({line for line in depends_output.splitlines() if line and not line.startswith((" ", "<"))})


def run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchError(f"{what}: {exc}") from exc
    if done.returncode != 0:
        lines = done.stderr.splitlines()
        last = ([line for line in lines if line.startswith("E:")] or lines or [""])[-1]
        raise FetchError(f"{what} failed: {last}")
    return done.stdout


def folder(release: str, arch: str, packages: list[str], mirror: str, cache: Path) -> Path:
    """Where the cache keeps this set (its name says what it holds)."""
    deb_arch = DEBIAN_ARCH.get(arch)
    if deb_arch is None:
        raise FetchError(f"no Debian architecture for {arch} (known: {', '.join(DEBIAN_ARCH)})")
    key = hashlib.sha256(json.dumps([release, deb_arch, mirror, sorted(packages)]).encode()).hexdigest()[:12]
    return cache / f"{release}-{deb_arch}-{key}"


def cached(release: str, arch: str, packages: list[str], mirror: str, cache: Path) -> dict[str, object] | None:
    """The set as the cache holds it (None until it is complete: its folder is renamed in last)."""
    dest = folder(release, arch, packages, mirror, cache)
    return describe(dest) if (dest / "debs.json").exists() else None


def fetch(release: str, arch: str, packages: list[str], mirror: str, cache: Path) -> dict[str, object]:
    """The packages and everything they need, for release and arch, downloaded once into cache
    (a complete set is reused)."""
    found = cached(release, arch, packages, mirror, cache)
    if found:
        return found
    dest = folder(release, arch, packages, mirror, cache)
    deb_arch = DEBIAN_ARCH[arch]
    tree = dest.with_name(f".{dest.name}.tree")
    shutil.rmtree(tree, ignore_errors=True)
    for sub in ("lists/partial", "archives/partial", "sources.list.d", "preferences.d", "debs"):
        (tree / sub).mkdir(parents=True)
    (tree / "status").write_text("")
    (tree / "sources.list").write_text(f"deb [signed-by={KEYRING}] {mirror} {release} main\n")
    opts = apt_options(tree, deb_arch)
    run(["apt-get", *opts, "--quiet", "update"], f"reading {mirror} {release}")
    # The whole closure (a few MB): each host installs only what it lacks.
    names = closure(run(["apt-cache", *opts, "depends", "--recurse", "--important", *packages], "resolving"))
    run(["apt-get", *opts, "--quiet", "download", *names], f"downloading {' '.join(names)}", cwd=tree / "debs")
    debs = sorted((tree / "debs").glob("*.deb"))
    staging = dest.with_name(f".{dest.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    # apt-get download names each file NAME_VERSION_ARCH.deb.
    (staging / "debs.json").write_text(json.dumps({deb.name.split("_", 1)[0]: deb.name for deb in debs}))
    with tarfile.open(staging / "debs.tar", "w") as tf:
        for deb in debs:
            tf.add(deb, arcname=deb.name)
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    shutil.rmtree(tree, ignore_errors=True)
    return describe(dest)


def describe(dest: Path) -> dict[str, object]:
    return {"debs_tar": str(dest / "debs.tar"), "debs": json.loads((dest / "debs.json").read_text())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--release", required=True, help="the hosts' Debian release (codename)")
    parser.add_argument("--arch", required=True, help="the hosts' architecture, as Ansible names it")
    parser.add_argument("--mirror", default="http://deb.debian.org/debian")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("packages", nargs="+")
    args = parser.parse_args(argv)
    try:
        result = fetch(args.release, args.arch, args.packages, args.mirror, args.cache.expanduser())
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
