"""Start this host's Ray node: Ray's own `ray start` (what the environment's bin/ray runs),
with two changes that shorten every start.

The unit runs it as `ENV/bin/python -I PREFIX/bin/ray-node start FLAGS... --block`. The file
is root's and -I keeps the working directory, the user's site and PYTHON* variables off
the path, so nothing the ray user can write runs here but the environment root installed.

The changes, both checked against the pinned Ray by tests/unit/test_ray_node_launcher.py:
- Ray's CLI imports the serve, job and state subcommands before it runs any command. Their
  modules are set to None in sys.modules: the imports fail, and the CLI goes on without
  those subcommands, which `ray start` does not need.
- Ray checks that the dashboard's dependencies import (aiohttp, grpc and more) before the
  GCS starts; that check runs here in a thread, alongside the GCS's start, and Ray's own
  call then finds the modules imported.
A Ray that lacks the check's function starts as plain `ray start`, with a warning.
"""

from __future__ import annotations

import sys
import threading

# Subcommands of Ray's CLI that `ray start` does not use.
TRIMMED = ("ray.serve.scripts", "ray.dashboard.modules.job.cli", "ray.util.state.state_cli")


def main(argv: list[str]) -> int:
    # None in sys.modules makes an import of that name fail (the import system's own rule).
    sys.modules.update(dict.fromkeys(TRIMMED))  # type: ignore[arg-type]
    from ray.scripts.scripts import main as ray_cli

    try:
        from ray._private.utils import get_dashboard_dependency_error
    except ImportError:
        print("ray-node: this Ray has no get_dashboard_dependency_error; starting without it", file=sys.stderr)
    else:
        threading.Thread(target=get_dashboard_dependency_error, daemon=True).start()
    sys.argv = ["ray", *argv]
    return ray_cli()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
