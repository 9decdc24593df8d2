"""The node's launcher (roles/ray/files/ray_node.py) against the controller's Ray, which is
the cluster's version: what it trims and calls still exists, and `ray start` runs without
the trimmed subcommands."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from tests.unit import plugins

launcher = plugins.load("ray/files/ray_node.py")


def test_every_trimmed_subcommand_exists_in_this_ray() -> None:
    # A name Ray moved would be trimmed in vain (the start slower again, and this test the only sign).
    # Found by file: importing ray.serve needs the serve extra, which the controller lacks.
    spec = importlib.util.find_spec("ray")
    assert spec is not None and spec.origin is not None
    site = Path(spec.origin).parent.parent
    assert [name for name in launcher.TRIMMED if not (site / (name.replace(".", "/") + ".py")).is_file()] == []


def test_the_dependency_check_it_runs_early_exists_in_this_ray() -> None:
    from ray._private import utils

    assert callable(utils.get_dashboard_dependency_error)


def test_ray_start_runs_without_the_trimmed_subcommands() -> None:
    result = subprocess.run(
        [sys.executable, "-I", str(plugins.ROLES / "ray/files/ray_node.py"), "start", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--block" in result.stdout and "--head" in result.stdout
    assert "warning" not in result.stderr.lower(), result.stderr
