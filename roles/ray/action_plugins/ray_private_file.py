"""ray_private_file: write a file on the controller that only its owner reads (mode 0600; with
own_folder, its folder made and kept at 0700), from the play's own process. A module delegated
to localhost would start Python for each task, and the copy module twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from raykit.private import ensure_private


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("content", "dest", "own_folder"))

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        args = self._task.args
        content, dest = args.get("content"), args.get("dest")
        if not isinstance(content, str) or not isinstance(dest, str) or not dest:
            raise AnsibleActionFail("ray_private_file needs content and dest, both strings")
        path = Path(dest).expanduser()
        try:
            changed = ensure_private(
                path, content, dry_run=bool(self._task.check_mode), own_folder=bool(args.get("own_folder", False))
            )
        except OSError as exc:
            raise AnsibleActionFail(f"cannot write {path} on the controller: {exc}") from exc
        return {**result, "changed": changed, "dest": str(path)}
