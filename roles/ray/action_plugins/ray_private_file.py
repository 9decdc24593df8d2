"""ray_private_file: write a file on the controller that only its owner reads (mode 0600, its
folder 0700), from the play's own process. A module delegated to localhost would start Python
for each task, and the copy module twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ansible.plugins.action import ActionBase

from raykit.private import ensure_private


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("content", "dest"))

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        dest = Path(str(self._task.args["dest"])).expanduser()
        changed = ensure_private(dest, str(self._task.args["content"]), dry_run=bool(self._task.check_mode))
        return {**result, "changed": changed, "dest": str(dest)}
