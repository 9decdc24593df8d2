"""Provision's values that the raykit package owns, for the role's tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raykit.wheelhouse import wheelhouse_id


def ray_wheelhouse_id(lock_file: str, arch: str, install_source: str) -> str:
    """The wheelhouse's name for this lock (raykit.wheelhouse.wheelhouse_id)."""
    return wheelhouse_id(Path(lock_file), arch, install_source == "index")


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"ray_wheelhouse_id": ray_wheelhouse_id}
