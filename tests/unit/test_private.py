"""raykit.private: the controller's files that only their owner reads, written only when they differ."""

from __future__ import annotations

import stat
from pathlib import Path

from raykit.private import ensure_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_file_is_written_once_private_and_again_only_when_it_differs(tmp_path: Path) -> None:
    dest = tmp_path / "config" / "raykit" / "head.endpoint.json"
    assert ensure_private(dest, "{}\n", dry_run=True)
    assert not dest.parent.exists()  # a dry run writes nothing
    assert ensure_private(dest, "{}\n")
    assert (dest.read_text(), mode(dest), mode(dest.parent)) == ("{}\n", 0o600, 0o700)
    assert not ensure_private(dest, "{}\n")
    assert ensure_private(dest, '{"head": "a"}\n', dry_run=True)
    assert dest.read_text() == "{}\n"
    assert ensure_private(dest, '{"head": "a"}\n')
    assert dest.read_text() == '{"head": "a"}\n'
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # no temporary file left


def test_a_file_or_folder_others_may_read_is_made_private_again(tmp_path: Path) -> None:
    dest = tmp_path / "raykit" / "state.json"
    ensure_private(dest, "x")
    dest.chmod(0o644)
    assert ensure_private(dest, "x")
    assert mode(dest) == 0o600
    dest.parent.chmod(0o755)
    assert ensure_private(dest, "x")
    assert mode(dest.parent) == 0o700


def test_a_link_in_the_files_place_is_replaced_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    dest = tmp_path / "raykit" / "state.json"
    dest.parent.mkdir(mode=0o700)
    dest.symlink_to(target)
    assert ensure_private(dest, "x")
    assert (target.read_text(), dest.is_symlink(), dest.read_text()) == ("keep", False, "x")
