"""Load one of the role's Python files (filter plugins, the report script) by its path:
they are not in a package."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROLES = Path(__file__).resolve().parents[2] / "roles"


def load(relative: str) -> ModuleType:
    """relative: under roles/, e.g. ray/files/raykit_report.py."""
    path = ROLES / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
