"""raykit.private: the controller's files that only their owner reads, written only when they differ."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from raykit.private import ensure_private

ROOT = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_file_is_written_once_private_and_again_only_when_it_differs(tmp_path: Path) -> None:
    dest = tmp_path / "config" / "raykit" / "head.endpoint.json"
    assert ensure_private(dest, "{}\n", dry_run=True, own_folder=True)
    assert not dest.parent.exists()  # a dry run writes nothing
    assert ensure_private(dest, "{}\n", own_folder=True)
    assert (dest.read_text(), mode(dest), mode(dest.parent)) == ("{}\n", 0o600, 0o700)
    assert not ensure_private(dest, "{}\n", own_folder=True)
    assert ensure_private(dest, '{"head": "a"}\n', dry_run=True)
    assert dest.read_text() == "{}\n"
    assert ensure_private(dest, '{"head": "a"}\n')
    assert dest.read_text() == '{"head": "a"}\n'
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # no temporary file left


def test_a_file_or_its_own_folder_others_may_read_is_made_private_again(tmp_path: Path) -> None:
    dest = tmp_path / "raykit" / "state.json"
    ensure_private(dest, "x", own_folder=True)
    dest.chmod(0o644)
    assert ensure_private(dest, "x")
    assert mode(dest) == 0o600
    dest.parent.chmod(0o755)
    assert not ensure_private(dest, "x")  # a folder not the kit's is left as it is
    assert ensure_private(dest, "x", own_folder=True)
    assert mode(dest.parent) == 0o700


def test_a_link_in_the_files_place_is_replaced_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    dest = tmp_path / "raykit" / "state.json"
    dest.parent.mkdir(mode=0o700)
    dest.symlink_to(target)
    assert ensure_private(dest, "x")
    assert (target.read_text(), dest.is_symlink(), dest.read_text()) == ("keep", False, "x")


PLAY = """
- hosts: localhost
  gather_facts: false
  connection: local
  tasks:
    - name: Write it
      ray_private_file:
        content: "{{ text }}"
        dest: "{{ dest }}"
        own_folder: true
"""


def play(tmp_path: Path, dest: Path, text: str, *args: str) -> dict[str, int]:
    """ansible-playbook running the action plugin (no host, no module): localhost's recap."""
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAY)
    extra = json.dumps({"text": text, "dest": str(dest)})
    env = {**os.environ, "ANSIBLE_ACTION_PLUGINS": str(ROOT / "roles/ray/action_plugins"), "ANSIBLE_NOCOLOR": "1"}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(playbook), "-e", extra, *args],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"^localhost\s+: ok=(\d+)\s+changed=(\d+)", done.stdout, re.MULTILINE)
    assert found, done.stdout
    return {"ok": int(found[1]), "changed": int(found[2])}


def test_the_action_plugin_writes_once_and_nothing_under_check(tmp_path: Path) -> None:
    dest = tmp_path / "config" / "state.json"
    assert play(tmp_path, dest, '{"a": 1}', "--check") == {"ok": 1, "changed": 1}
    assert not dest.exists()
    assert play(tmp_path, dest, '{"a": 1}') == {"ok": 1, "changed": 1}
    assert (dest.read_text(), mode(dest), mode(dest.parent)) == ('{"a": 1}', 0o600, 0o700)
    assert play(tmp_path, dest, '{"a": 1}') == {"ok": 1, "changed": 0}
