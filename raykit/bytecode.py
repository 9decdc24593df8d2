"""The bytecode of the modules a Ray node imports, compiled once on the controller.

Python compiles each module the first time it is imported: Ray's first start on freshly
provisioned hosts compiled about 1,300 modules per node, on the start's critical path.
This compiles those once, for the wheelhouse, and provision unpacks them into each host's
environment. The pycs are checked-hash (PEP 552): Python uses one only while its source
has the same hash, so they can never stand for other code.

Which modules: for each process a Ray node starts, a fresh interpreter imports that
process's entry modules from the unpacked wheels (the runtime-env agent puts its own
aiohttp first on sys.path, so processes are not mixed), and every module they pulled in
from the wheels is kept. Modules a process imports later, on demand, compile on the node.

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
import site
import subprocess
import sys
import tarfile
import tempfile
import traceback
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
DISCOVER_TIMEOUT_S = 300


def command(python: str, *args: str) -> list[str]:
    """This script run by python, isolated: no site-packages, no environment, no pycs written."""
    return [python, "-I", "-S", "-B", __file__, *args]


def imported_files(site_dir: str, entries: list[str]) -> list[str]:
    """In this process (started with -S): import the entries from site_dir, set up as a venv's
    site-packages (.pth files included); the .py files (relative to it) now loaded from it.
    An entry that fails to import (another Ray release may have moved it) is reported and
    skipped: its modules then compile on the node, as they always did."""
    site.addsitedir(site_dir)
    for entry in entries:
        try:
            if entry.startswith("modules:"):
                module, cls = entry.removeprefix("modules:").rsplit(".", 1)
                dashboard_utils = importlib.import_module("ray.dashboard.utils")
                dashboard_utils.get_all_modules(getattr(importlib.import_module(module), cls))
            else:
                importlib.import_module(entry)
        except Exception:
            print(f"warning: skipping {entry}: {traceback.format_exc().splitlines()[-1]}", file=sys.stderr)
    prefix = site_dir.rstrip("/") + "/"
    files = {file for m in list(sys.modules.values()) if isinstance(file := getattr(m, "__file__", None), str)}
    return sorted(f.removeprefix(prefix) for f in files if f.startswith(prefix) and f.endswith(".py"))


def discover(site_dir: Path, processes: dict[str, list[str]]) -> list[str]:
    """Every module file the processes import, each process's entries in a fresh interpreter
    run in an empty folder with a bare environment (the wheels' code runs on the controller)."""

    def run(entries: list[str]) -> list[str]:
        with tempfile.TemporaryDirectory() as home:
            cmd = command(sys.executable, "--discover", str(site_dir), *entries)
            result = subprocess.run(
                cmd, capture_output=True, text=True, timeout=DISCOVER_TIMEOUT_S, check=False, cwd=home,
                env={"PATH": "/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8"},
            )  # fmt: skip
        if result.returncode != 0:
            raise SystemExit(f"error: importing {' '.join(entries)} failed: {result.stderr.strip()[-500:]}")
        for line in result.stderr.splitlines():
            if line.startswith("warning: "):
                print(line, file=sys.stderr)
        return json.loads(result.stdout.splitlines()[-1])  # the last line: imported modules may print

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return sorted({f for files in pool.map(run, processes.values()) for f in files})


def pack(site_dir: Path, files: list[str], out: Path) -> None:
    """Checked-hash pycs of files, in a tar.gz (fixed order and times) laid out like a venv."""
    venv_site = Path(f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")
    tmp_out = out.with_suffix(".tmp")
    with (
        tempfile.TemporaryDirectory() as tmp,
        open(tmp_out, "wb") as fh,
        gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w|", format=tarfile.GNU_FORMAT) as tf,
    ):
        for rel in files:
            cache = importlib.util.cache_from_source(rel)
            pyc = py_compile.compile(
                str(site_dir / rel), cfile=os.path.join(tmp, cache), dfile=rel, doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
            )  # fmt: skip
            assert pyc is not None  # doraise: a failure raises instead
            data = Path(pyc).read_bytes()
            info = tarfile.TarInfo(str(venv_site / cache))
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tf.addfile(info, io.BytesIO(data))
    tmp_out.replace(out)


def build(wheels: Path, out: Path) -> int:
    """Unpack the wheels (the installer, uv, aside), find what Ray's processes import, pack its bytecode."""
    with tempfile.TemporaryDirectory() as tmp:
        site_dir = Path(tmp)
        for wheel in sorted(wheels.glob("*.whl")):
            if not wheel.name.startswith("uv-"):
                with zipfile.ZipFile(wheel) as zf:
                    zf.extractall(site_dir)
        files = discover(site_dir, RAY_PROCESSES)
        pack(site_dir, files, out)
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
