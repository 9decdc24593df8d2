"""reboot and remove refuse an incomplete command line before any playbook runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["reboot"], "run `invoke reboot --rolling`"),
        (["reboot", "--rolling", "--force"], "add --include-head"),
        (["reboot", "--rolling", "--wait", "60"], "add --include-head"),
        (["remove", "raylab-3"], "run `invoke remove raylab-3 --yes`"),
    ],
)
def test_a_command_that_would_reboot_or_remove_too_much_is_refused(args: list[str], message: str) -> None:
    cmd = [str(Path(sys.executable).parent / "invoke"), *args, "--inventory", "inventory/example.yml"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "PLAY" not in result.stdout  # no playbook ran
