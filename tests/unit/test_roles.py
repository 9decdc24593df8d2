"""The roles' layout: the shared role refuses to run on its own (as prometheus-community's
_common does); ray_install and ray_node run it as their dependency."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_the_shared_role_refuses_to_run_on_its_own(tmp_path: Path) -> None:
    play = tmp_path / "alone.yml"
    play.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "roles": ["ray"]}]))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(play)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "the ray role is internal to raykit; run ray_install (provision) or ray_node (deploy)" in result.stdout


def test_install_and_node_depend_on_the_shared_role() -> None:
    for role in ("ray_install", "ray_node"):
        meta = yaml.safe_load((ROOT / "roles" / role / "meta" / "main.yml").read_text())
        assert meta["dependencies"] == [{"role": "ray"}], role
