"""Benchmarks reset, stop and reboot hosts: they refuse any inventory but the local lab's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_cluster_refuses_a_real_inventory_before_touching_it() -> None:
    cmd = [str(Path(sys.executable).parent / "invoke"), "bench.cluster", "--inventory", "inventory/example.yml"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "runs only on the local lab" in result.stderr and "inventory/example.yml" in result.stderr
    assert "reset" not in result.stdout  # nothing ran
