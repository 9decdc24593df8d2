"""The kit's own checks: lint and the test suite."""

from __future__ import annotations

import shlex

from invoke import Context, task

from tasks.common import (
    ROOT,
    _venv_bin,
)


@task
def lint(c: Context) -> None:
    """ruff (lint and format), mypy, yamllint and ansible-lint (production profile) over the repository."""
    with c.cd(str(ROOT)):
        c.run(f"{_venv_bin('ruff')} check .", echo=True)
        c.run(f"{_venv_bin('ruff')} format --check .", echo=True)
        c.run(f"{_venv_bin('mypy')}", echo=True)
        c.run(f"{_venv_bin('yamllint')} --strict .", echo=True)
        c.run(f"{_venv_bin('ansible-lint')} --profile production", echo=True)


@task(
    pre=[lint],
    help={
        "k": "only tests matching this pytest -k expression",
        "unit": "unit tests only (no lab)",
        "reverse": "the test files in reverse order, not by the lab's scenario (no test depends on another's)",
    },
)
def test(c: Context, k: str | None = None, unit: bool = False, reverse: bool = False) -> None:
    """Run the whole test suite: lint, unit tests, then integration tests on the lab."""
    args = [_venv_bin("pytest"), "-p", "no:cacheprovider", "-ra", "--durations=30"]
    if k:
        args += ["-k", k]
    folders = ["tests/unit"] if unit else ["tests/unit", "tests/integration"]
    if reverse:
        args += [
            "--given-order",
            *sorted((str(p.relative_to(ROOT)) for f in folders for p in (ROOT / f).glob("test_*.py")), reverse=True),
        ]
    else:
        args += folders
    with c.cd(str(ROOT)):
        c.run(shlex.join(args), echo=True, pty=False)
