"""The kit's CPython build (raykit.pybuild) and the role's reads of it: the source pinned by its
digest, the build named by everything it is made from, and the archive a host unpacks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from raykit import pybuild
from tests.unit import plugins

checks = plugins.load("ray/filter_plugins/ray_checks.py")
filters = plugins.load("ray_python/filter_plugins/ray_python.py")
report = plugins.load("ray/files/raykit_report.py")
vars(report)["OWNER_UID"] = os.geteuid()

ID_ARGS = ("3.11.2", "ab" * 32, "debian-13-x86_64", "trixie", "/opt/ray/python/3.11.2", "http://m/debian", False)


def test_the_source_defaults_to_python_org() -> None:
    assert pybuild.source_url("3.11.2", "") == "https://www.python.org/ftp/python/3.11.2/Python-3.11.2.tgz"
    assert pybuild.source_url("3.11.2", "http://mirror/x.tgz") == "http://mirror/x.tgz"


def test_the_source_is_fetched_once_and_checked_against_the_lock(tmp_path: Path) -> None:
    source = tmp_path / "Python-3.11.2.tgz"
    source.write_bytes(b"cpython")
    digest = hashlib.sha256(b"cpython").hexdigest()
    kept, found = pybuild.fetch(source.as_uri(), None, tmp_path / "cache")
    assert (found, kept.read_bytes()) == (digest, b"cpython")
    source.unlink()  # the controller's copy serves from now on
    assert pybuild.fetch(source.as_uri(), digest, tmp_path / "cache") == (kept, digest)


def test_a_source_whose_digest_differs_is_refused_and_not_kept(tmp_path: Path) -> None:
    source = tmp_path / "Python-3.11.2.tgz"
    source.write_bytes(b"something else")
    with pytest.raises(pybuild.BuildError, match=r"has sha256 [0-9a-f]{64}, but the lock pins " + "ab" * 32):
        pybuild.fetch(source.as_uri(), "ab" * 32, tmp_path / "cache")
    assert list((tmp_path / "cache/src").iterdir()) == []


def test_a_source_that_cannot_be_fetched_is_named(tmp_path: Path) -> None:
    url = (tmp_path / "missing.tgz").as_uri()
    with pytest.raises(pybuild.BuildError, match=f"ray_python_source_url {url} cannot be fetched"):
        pybuild.fetch(url, None, tmp_path / "cache")


def test_the_build_is_named_by_everything_it_is_made_from() -> None:
    name = pybuild.build_id(*ID_ARGS)
    assert name.startswith("cpython-3.11.2-debian-13-x86_64-") and name == pybuild.build_id(*ID_ARGS)
    for index, other in enumerate(["3.11.3", "cd" * 32, "debian-12-x86_64", "bookworm", "/opt/x", "http://n", True]):
        args = list(ID_ARGS)
        args[index] = other
        assert pybuild.build_id(*args) != name, index  # type: ignore[arg-type]
    assert filters.ray_python_build_id(*ID_ARGS) == name


def test_a_host_the_controller_cannot_build_for_is_refused_with_the_supported_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts = tmp_path / "scripts"  # debootstrap's: Debian's releases are links to sid's script
    scripts.mkdir()
    (scripts / "sid").write_text("")
    for name, target in [("bookworm", "sid"), ("trixie", "sid"), ("noble", "gutsy")]:
        (scripts / name).symlink_to(target)
    monkeypatch.setattr(pybuild, "DEBOOTSTRAP_SCRIPTS", scripts)
    monkeypatch.setattr(pybuild.platform, "machine", lambda: "x86_64")
    assert pybuild.unsupported("Debian", "trixie", "x86_64") == ""
    assert pybuild.unsupported("Ubuntu", "noble", "x86_64") == (
        "the kit cannot build Python for Ubuntu noble on x86_64; it builds for Debian bookworm, trixie on x86_64"
    )
    assert pybuild.unsupported("Debian", "trixie", "aarch64").startswith("the kit cannot build Python for Debian")
    assert pybuild.unsupported("Debian", "forky", "x86_64").startswith("the kit cannot build Python for Debian")
    assert filters.ray_python_group("Debian", "13", "x86_64") == "debian-13-x86_64"


def test_the_archive_is_roots_and_ends_with_its_marker(tmp_path: Path) -> None:
    tree = tmp_path / "3.11.2"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin/python3.11").write_text("elf")
    (tree / "bin/python3.11").chmod(0o777)
    (tree / pybuild.MARKER).write_text("{}")
    pybuild.pack(tree, "3.11.2", tmp_path / "python.tar.gz")
    with tarfile.open(tmp_path / "python.tar.gz") as tf:
        members = tf.getmembers()
    assert members[-1].name == f"3.11.2/{pybuild.MARKER}"
    assert [m.name for m in members].count(f"3.11.2/{pybuild.MARKER}") == 1
    assert {(m.uid, m.gid, m.mode & 0o022) for m in members} == {(0, 0, 0)}


def test_the_static_library_and_optimized_bytecode_are_trimmed(tmp_path: Path) -> None:
    kept = [tmp_path / "lib/python3.11/json/__pycache__/__init__.cpython-311.pyc", tmp_path / "bin/python3.11"]
    gone = [
        tmp_path / "lib/python3.11/config-3.11-x86_64-linux-gnu/libpython3.11.a",
        tmp_path / "lib/python3.11/json/__pycache__/__init__.cpython-311.opt-1.pyc",
        tmp_path / "lib/python3.11/json/__pycache__/__init__.cpython-311.opt-2.pyc",
    ]
    for path in kept + gone:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    pybuild.trim(tmp_path)
    assert [p.exists() for p in kept + gone] == [True, True, False, False, False]


def test_a_host_installs_only_the_runtime_packages_it_lacks_then_the_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = tmp_path / "cpython-x"  # the build's folder in the controller's cache
    build.mkdir()
    debs = {"libffi8": "libffi8_3.4.8-2_amd64.deb", "libgdbm6t64": "libgdbm6t64_1.24-2_amd64.deb"}
    with tarfile.open(build / "debs.tar", "w") as tf:
        for name in debs.values():
            (tmp_path / name).write_text(name)
            tf.add(tmp_path / name, arcname=name)
    built = tmp_path / "out/3.11.2"
    (built / "lib").mkdir(parents=True)
    (built / "lib/os.py").write_text("import sys\n")
    (built / pybuild.MARKER).write_text(json.dumps({"id": "cpython-x", "packages": list(debs)}))
    pybuild.pack(built, "3.11.2", build / "python.tar.gz")
    (tmp_path / "python").mkdir(mode=0o755)
    tree = tmp_path / "python/3.11.2"
    copies = tmp_path / "cache"  # provision's copies of its files on the host
    copies.mkdir()

    def install() -> dict[str, object]:
        for name in ("python.tar.gz", "debs.tar"):
            shutil.copy(build / name, copies / name)
        found: dict[str, object] = report.install_build(
            str(copies / "python.tar.gz"), str(copies / "debs.tar"), debs, str(tree), "cpython-x"
        )
        assert not list(copies.iterdir())  # the copies are gone
        assert sorted(path.name for path in tree.parent.iterdir()) == ["3.11.2", "3.11.2.manifest.json"]
        return found

    installed = {"libffi8"}
    failing = 0
    dpkg: list[list[str]] = []
    run = report.subprocess.run

    def fake_dpkg(argv: list[str], **kwargs: object) -> object:
        if argv[0] == "dpkg":
            dpkg.append([Path(arg).read_text() for arg in argv[2:]])  # the files tar unpacked
            return report.subprocess.CompletedProcess(argv, failing)
        return run(argv, **kwargs)

    monkeypatch.setattr(report, "installed_packages", lambda: installed)
    monkeypatch.setattr(report.subprocess, "run", fake_dpkg)
    found = install()
    assert (found["installed"], found["replaced"], dpkg) == (["libgdbm6t64"], True, [[debs["libgdbm6t64"]]])
    assert report.python_tree(str(tree))["trusted"]
    # A tree whose packages went missing is kept: the packages alone come back.
    installed = set()
    found = install()
    assert (found["installed"], found["replaced"]) == (sorted(debs), False)
    # A changed tree is replaced whole.
    installed = set(debs)
    (tree / "lib/os.py").write_text("import evil\n")
    (tree / "lib/evil.py").write_text("")
    found = install()
    assert (found["installed"], found["replaced"]) == ([], True)
    assert report.python_tree(str(tree))["trusted"] and not (tree / "lib/evil.py").exists()
    # A dpkg that fails leaves the tree there as it was.
    installed = set()
    (tree / "lib/os.py").write_text("import evil\n")
    failing = 1
    with pytest.raises(SystemExit, match=r"dpkg --install .* failed .* the interpreter is as it was"):
        install()
    assert (tree / "lib/os.py").read_text() == "import evil\n"


def test_a_failed_build_is_named_by_its_last_line_or_its_exit() -> None:
    results = [
        {"rc": 0, "stderr": "", "item": {"group": "debian-12-x86_64"}},
        {"rc": 2, "stderr": "building...\nerror: the build failed\n\n", "item": {"group": "debian-12-x86_64"}},
        {"rc": -9, "stderr": "", "item": {"group": "debian-13-x86_64"}},  # killed
    ]
    assert checks.ray_command_errors(results, "building Python for {group}") == [
        "error: the build failed",
        "building Python for debian-13-x86_64 stopped (exit -9) with no message",
    ]


def test_only_builds_the_cache_lacks_are_built(tmp_path: Path) -> None:
    jobs = [{"id": f"cpython-3.11.2-debian-{n}-x86_64-abc", "cache": str(tmp_path)} for n in (12, 13)]
    done = tmp_path / jobs[0]["id"]
    done.mkdir()
    (done / "python.tar.gz").write_bytes(b"x")
    (done / "debs.json").write_text("{}")
    assert filters.ray_python_unbuilt(jobs) == jobs[1:]
    assert filters.ray_python_build(jobs[0])["archive"] == str(done / "python.tar.gz")
    assert filters.ray_python_build(jobs[1]) == filters.ray_python_build({}) == {}


def test_a_host_lacks_a_build_when_it_needs_one_and_has_another_a_changed_one_or_missing_packages() -> None:
    job = {"id": "cpython-3.11.2-debian-13-x86_64-abc"}
    same = {"id": job["id"], "trusted": True, "missing": []}
    assert filters.ray_python_job(same, True, job) == {}
    assert filters.ray_python_job(None, False, job) == {}  # the distro's Python serves it
    for found in [None, {**same, "id": "cpython-old"}, {**same, "trusted": False}, {**same, "missing": ["libffi8"]}]:
        assert filters.ray_python_job(found, True, job) == job, found


def test_the_report_names_a_changed_interpreter_tree_and_its_missing_packages(tmp_path: Path) -> None:
    tree = tmp_path / "python/3.11.2"
    (tree / "lib").mkdir(parents=True)
    (tree / "lib/os.py").write_text("import sys\n")
    marker = {"id": "cpython-x", "group": "debian-13-x86_64", "packages": ["no-such-package-here"]}
    (tree / pybuild.MARKER).write_text(json.dumps(marker))
    for path in [tree.parent, tree, *tree.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    report.write_manifest(str(tree))
    found = report.python_tree(str(tree))
    assert (found["id"], found["trusted"], found["missing"]) == ("cpython-x", True, ["no-such-package-here"])
    (tree / "lib/os.py").write_text("import sys; import evil\n")
    assert report.python_tree(str(tree))["files"] == [f"interpreter changed: {tree}/lib/os.py"]
    assert report.python_tree(str(tmp_path / "python/3.13.5")) is None


def test_deploy_removes_only_what_the_cluster_no_longer_uses(tmp_path: Path) -> None:
    def env(version: str, python: Path) -> Path:
        path = tmp_path / f"venvs/ray-2.60.0-py{version}"
        (path / "bin").mkdir(parents=True, exist_ok=True)
        (path / "bin/python").unlink(missing_ok=True)
        (path / "bin/python").symlink_to(python)
        (tmp_path / f"venvs/ray-2.60.0-py{version}.manifest.json").write_text("{}")
        return path

    def tree(version: str) -> Path:
        path = tmp_path / f"python/{version}"
        (path / "bin").mkdir(parents=True)
        (path / f"bin/python{version[:4]}").write_text("")
        (tmp_path / f"python/{version}.manifest.json").write_text("{}")
        return path / f"bin/python{version[:4]}"

    def point_current_at(path: Path, link: str = "current") -> None:
        (tmp_path / link).unlink(missing_ok=True)
        (tmp_path / link).symlink_to(path)

    links = [str(tmp_path / name) for name in ("current", "previous", "older")]

    def stale(keep: Path) -> list[str]:
        found = report.stale(str(tmp_path), [str(keep)], links)
        return sorted(str(Path(path).relative_to(tmp_path)) for path in found)

    old, new = env("3.11.2", tree("3.11.2")), env("3.13.5", tree("3.13.5"))
    point_current_at(old)  # provision staged the new pin; the cluster runs the old one until deploy
    assert stale(new) == []
    point_current_at(new)
    gone = [f"{path}{end}" for path in ("venvs/ray-2.60.0-py3.11.2", "python/3.11.2") for end in ("", ".manifest.json")]
    assert stale(new) == sorted(gone)
    # The provider switched to the distro's python: the kit's build is unused from then on.
    new = env("3.13.5", Path("/usr/bin/python3.13"))
    assert stale(new) == sorted([*gone, "python/3.13.5", "python/3.13.5.manifest.json"])
    # Kept for a rollback: the environment previous names, and the kit's build it runs on.
    point_current_at(old, "previous")
    assert stale(new) == ["python/3.13.5", "python/3.13.5.manifest.json"]
