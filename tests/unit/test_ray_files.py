"""The role's ray_files module, run as Ansible runs it: a JSON file of arguments in, JSON out."""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

MODULE = Path(__file__).resolve().parents[2] / "roles/ray/library/ray_files.py"
OWNER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name
SECRET = "token-that-must-never-show\n"


def run(tmp_path: Path, paths: dict, contents: dict, check_mode: bool = False) -> dict:
    args = tmp_path / "args.json"
    module_args = {"paths": paths, "contents": contents, "_ansible_check_mode": check_mode}
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": module_args}))
    out = subprocess.run([sys.executable, str(MODULE), str(args)], capture_output=True, text=True, check=False)
    return json.loads(out.stdout)


def wanted(tmp_path: Path) -> tuple[dict, dict]:
    folder, token = str(tmp_path / "etc"), str(tmp_path / "etc/token")
    paths = {
        folder: {"type": "directory", "owner": OWNER, "group": GROUP, "mode": "0750"},
        token: {"type": "file", "owner": OWNER, "group": GROUP, "mode": "0440",
                "sha1": hashlib.sha1(SECRET.encode()).hexdigest()},
    }  # fmt: skip
    return paths, {token: SECRET}


def test_makes_the_folder_then_the_file_with_their_modes_and_changes_nothing_the_second_time(tmp_path: Path) -> None:
    paths, contents = wanted(tmp_path)
    first = run(tmp_path, paths, contents)
    assert first["changed"] and first["changed_paths"] == list(paths)
    folder, token = (Path(p) for p in paths)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750 and stat.S_IMODE(token.stat().st_mode) == 0o440
    assert token.read_text() == SECRET
    second = run(tmp_path, paths, contents)
    assert (second["changed"], second["changed_paths"]) == (False, [])


def test_repairs_only_what_differs_and_never_returns_the_content(tmp_path: Path) -> None:
    paths, contents = wanted(tmp_path)
    run(tmp_path, paths, contents)
    token = Path(list(paths)[1])
    token.chmod(0o644)
    result = run(tmp_path, paths, contents)
    assert result["changed_paths"] == [str(token)] and stat.S_IMODE(token.stat().st_mode) == 0o440
    assert SECRET.strip() not in json.dumps(result)


def test_check_mode_reports_without_writing(tmp_path: Path) -> None:
    paths, contents = wanted(tmp_path)
    result = run(tmp_path, paths, contents, check_mode=True)
    assert result["changed"] and not Path(next(iter(paths))).exists()


def test_refuses_content_that_is_not_what_the_paths_say(tmp_path: Path) -> None:
    paths, _ = wanted(tmp_path)
    token = list(paths)[1]
    result = run(tmp_path, paths, {token: "something else\n"})
    assert result["failed"] and "does not match its sha1" in result["msg"]
    assert not Path(token).exists()


def test_makes_missing_parent_folders_and_says_why_it_cannot_make_a_path(tmp_path: Path) -> None:
    nested = str(tmp_path / "opt/ray")
    result = run(tmp_path, {nested: {"type": "directory", "owner": OWNER, "group": GROUP, "mode": "0755"}}, {})
    assert result["changed_paths"] == [nested] and Path(nested).is_dir()
    bad = {str(tmp_path / "x"): {"type": "directory", "owner": "no-such-user-here", "group": GROUP, "mode": "0755"}}
    result = run(tmp_path, bad, {})
    assert result["failed"] and "no-such-user-here" in result["msg"]


def test_removes_an_absent_one_and_then_changes_nothing(tmp_path: Path) -> None:
    paths, contents = wanted(tmp_path)
    run(tmp_path, paths, contents)
    token = list(paths)[1]
    gone = {**paths, token: {"type": "absent"}}
    assert run(tmp_path, gone, {}, check_mode=True)["changed_paths"] == [token] and Path(token).exists()
    assert run(tmp_path, gone, {})["changed_paths"] == [token] and not Path(token).exists()
    assert run(tmp_path, gone, {})["changed"] is False
