"""raykit.bytecode: which modules a process imports, and their checked-hash pycs."""

from __future__ import annotations

import importlib.util
import platform
import sys
import tarfile
from pathlib import Path

import pytest

from raykit import bytecode, wheelhouse


def fake_site(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg/__init__.py").write_text("from pkg import used\n")
    (root / "pkg/used.py").write_text("VALUE = 1\n")
    (root / "pkg/unused.py").write_text("VALUE = 2\n")
    (root / "other.py").write_text("import pkg\n")
    return root


def test_discover_lists_what_each_process_imports_from_the_site(tmp_path: Path) -> None:
    site = fake_site(tmp_path / "site")
    found = bytecode.discover(site, {"one": ["pkg"], "two": ["other"]})
    assert found == ["other.py", "pkg/__init__.py", "pkg/used.py"]


def test_pack_lays_checked_hash_pycs_out_like_the_environment(tmp_path: Path) -> None:
    site = fake_site(tmp_path / "site")
    out = tmp_path / "bytecode.tar.gz"
    bytecode.pack(site, ["pkg/__init__.py", "pkg/used.py"], out)
    with tarfile.open(out) as tf:
        members = {m.name: file.read() for m in tf.getmembers() if (file := tf.extractfile(m))}
    tag = importlib.util.cache_from_source("used.py").split(".")[1]  # e.g. cpython-311
    packed = f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"
    assert set(members) == {f"{packed}/pkg/__pycache__/{m}.{tag}.pyc" for m in ("__init__", "used")}
    used = members[f"{packed}/pkg/__pycache__/used.{tag}.pyc"]
    assert used[4:8] == (3).to_bytes(4, "little")  # PEP 552: hash-based, checked
    assert used[8:16] == importlib.util.source_hash(b"VALUE = 1\n")


def test_an_entry_that_fails_to_import_only_loses_its_own_modules(tmp_path: Path) -> None:
    site = fake_site(tmp_path / "site")
    (site / "broken.py").write_text("import pkg.used\nraise RuntimeError('moved in another release')\n")
    assert bytecode.discover(site, {"one": ["broken", "other"]}) == ["other.py", "pkg/__init__.py", "pkg/used.py"]


@pytest.mark.parametrize(
    ("wheels", "arch", "python_version"),
    [(None, platform.machine(), "3.11.2"), ("wheels", "riscv128", "3.11.2"), ("wheels", platform.machine(), "1.0.0")],
    ids=["index-only", "another-architecture", "no-such-python"],
)
def test_without_wheels_or_the_hosts_python_the_wheelhouse_gets_an_empty_bytecode_archive(
    tmp_path: Path, wheels: str | None, arch: str, python_version: str
) -> None:
    out = tmp_path / "bytecode.tar.gz"
    wheelhouse.bytecode(tmp_path / wheels if wheels else None, arch, python_version, out, tmp_path / "no-builds")
    with tarfile.open(out) as tf:
        assert tf.getmembers() == []


def test_the_kits_build_for_the_controllers_release_compiles_a_pin_the_controller_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for the build's archive, laid out as raykit.pybuild packs its tree.
    tree = tmp_path / "tree/3.99.1/bin"
    tree.mkdir(parents=True)
    (tree / "python3.99").write_text("#!/bin/sh\n")
    cache = tmp_path / "python"
    grp = "debian-12-" + platform.machine()
    (cache / f"cpython-3.99.1-{grp}-abc").mkdir(parents=True)
    with tarfile.open(cache / f"cpython-3.99.1-{grp}-abc/python.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "tree/3.99.1", arcname="3.99.1")
    monkeypatch.setattr(wheelhouse.pybuild, "controller_group", lambda: grp)
    seen: list[str] = []

    def runs_as(interpreter: str, major_minor: tuple[int, ...]) -> bool:
        seen.append(interpreter)
        return True

    monkeypatch.setattr(wheelhouse, "runs_as", runs_as)
    monkeypatch.setattr(wheelhouse.shutil, "which", lambda name: None)
    assert wheelhouse.unpacked_build(cache, "3.99.1", tmp_path / "into") == str(tmp_path / "into/3.99.1/bin/python3.99")
    assert wheelhouse.unpacked_build(cache, "3.99.2", tmp_path / "other") is None  # another micro: no build
    monkeypatch.setattr(wheelhouse.pybuild, "controller_group", lambda: "debian-13-" + platform.machine())
    assert wheelhouse.unpacked_build(cache, "3.99.1", tmp_path / "third") is None  # another release's build
    assert seen == [str(tmp_path / "into/3.99.1/bin/python3.99")]
