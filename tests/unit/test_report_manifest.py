"""The report script's manifest (roles/ray/files/raykit_report.py): every added, changed or removed
file of an environment is named; an edit that keeps size and time only by the deep check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.unit import plugins

report = plugins.load("ray/files/raykit_report.py")

# On a host the environment is root's; here it is whoever runs the tests.
vars(report)["OWNER_UID"] = os.geteuid()


@pytest.fixture
def env(tmp_path: Path) -> Path:
    root = tmp_path / "venvs" / "ray-env"
    site = root / "lib/python3.11/site-packages"
    (site / "ray").mkdir(parents=True)
    (site / "ray/__init__.py").write_text("version = 1\n")
    (site / "ray-2.60.0.dist-info").mkdir()
    (site / "ray-2.60.0.dist-info/RECORD").write_text("ray/__init__.py,sha256=x,12\n")
    (root / "bin").mkdir()
    (root / "bin/python").symlink_to("/usr/bin/python3")
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    report.write_manifest(str(root))
    return root


def test_a_fresh_environment_is_trusted_and_its_digest_ignores_host_specific_files(env: Path) -> None:
    found = report.tampering(str(env), deep=True)
    assert (found["trusted"], found["files"]) == (True, [])
    record = env / "lib/python3.11/site-packages/ray-2.60.0.dist-info/RECORD"
    record.write_text(record.read_text() + "ray-2.60.0.dist-info/uv_cache.json,sha256=y,3\n")
    report.write_manifest(str(env))
    assert report.tampering(str(env), deep=False)["digest"] == found["digest"]


def test_added_changed_and_removed_files_are_each_named(env: Path) -> None:
    site = env / "lib/python3.11/site-packages"
    (site / "planted.pth").write_text("import os\n")
    (site / "ray/__init__.py").write_text("version = 2; import os\n")
    (site / "ray-2.60.0.dist-info/RECORD").unlink()
    (env / "bin/python").unlink()
    (env / "bin/python").symlink_to("/tmp/python3")
    found = report.tampering(str(env), deep=False)
    assert not found["trusted"]
    assert sorted(found["files"]) == sorted([
        f"added: {site}/planted.pth", f"changed: {site}/ray/__init__.py",
        f"removed: {site}/ray-2.60.0.dist-info/RECORD", f"changed: {env}/bin/python",
    ])  # fmt: skip


def test_an_edit_that_keeps_size_and_time_is_found_only_by_the_deep_check(env: Path) -> None:
    module = env / "lib/python3.11/site-packages/ray/__init__.py"
    before = module.stat()
    module.write_text("version = 9\n")
    os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert report.tampering(str(env), deep=False)["trusted"]
    assert report.tampering(str(env), deep=True)["files"] == [f"changed: {module}"]


def test_a_file_others_may_write_or_no_manifest_is_untrusted(env: Path) -> None:
    module = env / "lib/python3.11/site-packages/ray/__init__.py"
    module.chmod(0o666)
    assert f"writable by others or not root's: {module}" in report.tampering(str(env), deep=False)["files"]
    module.chmod(0o644)
    fifo = env / "lib/python3.11/site-packages/ray/pipe"
    os.mkfifo(fifo)
    found = report.tampering(str(env), deep=True)  # never opens the FIFO (it would block)
    assert f"writable by others or not root's: {fifo}" in found["files"] and f"added: {fifo}" in found["files"]
    fifo.unlink()
    Path(report.manifest_path(str(env))).unlink()
    found = report.tampering(str(env), deep=False)
    assert not found["trusted"] and "no manifest" in found["files"][0]


def test_the_manifest_is_written_as_a_new_file_never_through_a_link_left_in_its_place(
    env: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    manifest = Path(report.manifest_path(str(env)))
    manifest.unlink()
    manifest.symlink_to(victim)
    report.write_manifest(str(env))
    assert victim.read_text() == "keep me\n" and not manifest.is_symlink()
    assert report.tampering(str(env), deep=True)["trusted"]


def test_uvs_lock_file_writable_by_all_is_closed_before_the_manifest(tmp_path: Path) -> None:
    env = tmp_path / "venvs" / "e"
    env.mkdir(parents=True)
    (tmp_path / "venvs").chmod(0o755)
    env.chmod(0o755)
    lock = env / ".lock"
    lock.touch()
    lock.chmod(0o666)
    report.write_manifest(str(env))
    assert lock.stat().st_mode & 0o777 == 0o644 and report.tampering(str(env), deep=False)["trusted"]


def test_provision_removes_the_other_environments_it_did_not_install_but_none_ray_runs(
    env: Path, tmp_path: Path
) -> None:
    venvs = env.parent
    venvs.chmod(0o755)
    old, running, unit_runs = (venvs / f"ray-2.5{n}.0-py3.11.2" for n in (7, 8, 9))
    for folder in (old, running, unit_runs):
        (folder / "bin").mkdir(parents=True)  # no manifest: as an earlier version left it
    links = [str(venvs.parent / name) for name in ("current", "previous", "older")]
    Path(links[0]).symlink_to(running.relative_to(venvs.parent))  # relative: made by hand
    Path(links[1]).symlink_to(old)
    Path(links[2]).symlink_to(old)
    # An interrupted rollback: the unit starts Ray from the environment previous named.
    unit = tmp_path / "ray.service"
    unit.write_text(f"[Service]\nExecStart={unit_runs}/bin/python -I /opt/ray/bin/ray-node start \\\n  --head\n")

    def found(env_path: Path | str) -> dict:
        return report.untrusted(str(venvs.parent), str(env_path), links, str(unit), False)

    problems = found("/elsewhere")["problems"]
    assert list(problems) == [str(old)] and "no manifest" in problems[str(old)]
    assert found("/elsewhere")["remove"] == [links[2], links[1], f"{old}.manifest.json", str(old)]
    (env / "planted.pth").write_text("import os\n")
    assert list(found("/elsewhere")["problems"]) == [str(old), str(env)]
    assert list(found(env)["problems"]) == [str(old)]
    # A manifest a job wrote beside an old environment is none, not a crash.
    for forged in ('{"files": ["x"]}', '{"files": {"a": 1}}', "[1]"):
        Path(f"{old}.manifest.json").write_text(forged)
        assert "no manifest" in found(env)["problems"][str(old)]


def test_a_snapshot_restores_each_file_with_its_mode_and_content(tmp_path: Path) -> None:
    settings = tmp_path / "etc/ray"
    settings.mkdir(parents=True)
    (settings / "ray.env").write_text("OLD=1\n")
    (settings / "auth_token").write_text("secret\n")
    (settings / "auth_token").chmod(0o440)
    kept = tmp_path / "kept"
    files = [str(settings / "ray.env"), str(settings / "auth_token"), str(settings / "tls-node.key")]
    assert report.snapshot(str(kept), files) == files[:2]  # a missing file is skipped
    assert (kept.stat().st_mode & 0o777) == 0o700
    (settings / "ray.env").write_text("NEW=1\n")
    (settings / "auth_token").chmod(0o644)
    # restore() writes to the absolute paths the copies sit under: here, below tmp_path.
    copies = kept / str(tmp_path).lstrip("/")
    assert report.restore(str(kept)) == sorted(files[:2])
    assert (settings / "ray.env").read_text() == "OLD=1\n"
    assert ((settings / "auth_token").stat().st_mode & 0o777) == 0o440
    assert copies.exists()  # kept for another restore


def test_the_firewall_rules_digest_ignores_handles_and_sees_a_rule_added() -> None:
    table = [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "inet", "name": "raykit", "handle": 7}},
        {"set": {"family": "inet", "table": "raykit", "name": "nodes_ip", "handle": 2, "elem": ["10.0.0.1"]}},
        {"chain": {"family": "inet", "table": "raykit", "name": "input", "handle": 1, "policy": "accept"}},
        {"rule": {"family": "inet", "table": "raykit", "chain": "input", "handle": 4, "expr": [{"accept": None}]}},
        {"rule": {"family": "inet", "table": "raykit", "chain": "input", "handle": 6,
                  "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"reject": {"type": "tcp reset"}}]}},
    ]  # fmt: skip
    renumbered = [{k: {**v, "handle": 99} if "handle" in v else v for k, v in item.items()} for item in table]
    assert report.rules_digest(renumbered) == report.rules_digest(table)
    counted = [*table[:-1], {"rule": {**table[-1]["rule"], "expr": [{"counter": {"packets": 3, "bytes": 180}},
                                                                     {"reject": {"type": "tcp reset"}}]}}]  # fmt: skip
    assert report.rules_digest(counted) == report.rules_digest(table)
    # The sets are compared with the inventory on their own.
    other_elements = [*table[:2], {"set": {**table[2]["set"], "elem": ["10.0.0.9"]}}, *table[3:]]
    assert report.rules_digest(other_elements) == report.rules_digest(table)
    added = [*table, {"rule": {"family": "inet", "table": "raykit", "chain": "input", "handle": 5, "expr": []}}]
    assert report.rules_digest(added) != report.rules_digest(table)
