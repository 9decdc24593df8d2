"""The bytecode of the modules a Ray node imports, compiled once on the controller.

Python compiles each module the first time it is imported: Ray's first start on freshly
provisioned hosts compiled about 1,300 modules per node, on the start's critical path.
This compiles exactly those once, for the wheelhouse, and provision unpacks them into
each host's environment. The pycs are checked-hash (PEP 552): Python uses one only while
its source has the same hash, so they can never stand for other code.

Which modules: each Ray process's entry modules are imported, one process per entry as
Ray runs them (the runtime-env agent puts its own copies of aiohttp first on sys.path),
and every module they pulled in from the wheels is kept.

Standard library only: wheelhouse.py runs it with the hosts' Python X.Y, isolated:
    python3.11 -I -S -B raykit/bytecode.py --wheels DIR --out bytecode.tar.gz
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import importlib
import importlib.util
import io
import json
import os
import py_compile
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from pathlib import Path

# The entry modules of each process a Ray node starts (ray/_private/services.py). A
# "modules:" entry imports every dashboard module of that kind, as the dashboard does.
RAY_PROCESSES: dict[str, list[str]] = {
    "ray start": ["ray.scripts.scripts"],
    "dashboard": [
        "ray.dashboard.dashboard",
        "modules:ray.dashboard.utils.DashboardHeadModule",
        "modules:ray.dashboard.subprocesses.module.SubprocessModule",
    ],
    "dashboard agent": ["ray.dashboard.agent", "modules:ray.dashboard.utils.DashboardAgentModule"],
    "runtime env agent": ["ray._private.runtime_env.agent.main"],
    "monitor": ["ray.autoscaler._private.monitor"],
    "log monitor": ["ray._private.log_monitor"],
    "client server": ["ray.util.client.server.server"],
    "worker": ["ray._private.workers.default_worker", "ray._private.workers.setup_worker"],
}


def imported_files(site: str, entries: list[str]) -> list[str]:
    """In this process (started with -S): import the entries from site, set up as a venv's
    site-packages (.pth files included); the .py files (relative to site) now loaded from it."""
    import site as site_module

    site_module.addsitedir(site)
    for entry in entries:
        if entry.startswith("modules:"):
            module, cls = entry.removeprefix("modules:").rsplit(".", 1)
            dashboard_utils = importlib.import_module("ray.dashboard.utils")
            dashboard_utils.get_all_modules(getattr(importlib.import_module(module), cls))
        else:
            importlib.import_module(entry)
    prefix = site.rstrip("/") + "/"
    files = {m.__file__ for m in list(sys.modules.values()) if isinstance(getattr(m, "__file__", None), str)}
    return sorted(f.removeprefix(prefix) for f in files if f.startswith(prefix) and f.endswith(".py"))


def discover(site: Path, processes: dict[str, list[str]]) -> list[str]:
    """Every module file the processes import, each process imported in a fresh interpreter."""

    def run(entries: list[str]) -> list[str]:
        cmd = [sys.executable, "-I", "-S", "-B", __file__, "--discover", str(site), *entries]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        if result.returncode != 0:
            raise SystemExit(f"error: importing {entries} failed: {result.stderr.strip().splitlines()[-1:]}")
        return json.loads(result.stdout.splitlines()[-1])  # last: imported modules may print

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return sorted({f for files in pool.map(run, processes.values()) for f in files})


def pack(site: Path, files: list[str], out: Path) -> None:
    """Checked-hash pycs of files, in a tar.gz (fixed order and times) laid out like the environment."""
    venv_site = Path(sysconfig.get_path("purelib", scheme="venv", vars={"base": "."}))  # lib/pythonX.Y/site-packages
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for rel in files:
            cache = importlib.util.cache_from_source(rel)
            pyc = py_compile.compile(
                str(site / rel), cfile=os.path.join(tmp, cache), dfile=rel, doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
            )  # fmt: skip
            data = Path(pyc).read_bytes()
            info = tarfile.TarInfo(str(venv_site / cache))
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tf.addfile(info, io.BytesIO(data))
    tmp_out = out.with_suffix(".tmp")
    with open(tmp_out, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
        gz.write(buffer.getvalue())
    tmp_out.replace(out)


def build(wheels: Path, out: Path) -> int:
    """Unpack the wheels (the installer, uv, aside), find what Ray's processes import, pack its bytecode."""
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        for wheel in sorted(wheels.glob("*.whl")):
            if not wheel.name.startswith("uv-"):
                with zipfile.ZipFile(wheel) as zf:
                    zf.extractall(site)
        files = discover(site, RAY_PROCESSES)
        pack(site, files, out)
    return len(files)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--discover"]:
        print(json.dumps(imported_files(argv[1], argv[2:])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheels", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    print(json.dumps({"modules": build(args.wheels, args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
