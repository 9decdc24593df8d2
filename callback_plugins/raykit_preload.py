"""Load every filter and test plugin once, in ansible-playbook's own process, as each play
starts. Each task runs in a fork of that process: without this, every task's fork imports
the roles' plugins (and the raykit modules behind them) anew."""

from __future__ import annotations

from typing import Any

from ansible.plugins.callback import CallbackBase
from ansible.plugins.loader import filter_loader, test_loader

DOCUMENTATION = """
name: raykit_preload
type: aggregate
short_description: load the filter and test plugins before the tasks' forks
description:
  - Loads every filter and test plugin in the controller's process at each play's start, so
    the process every task forks has them.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "raykit_preload"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_play_start(self, play: Any) -> None:
        for loader in (filter_loader, test_loader):
            for _ in loader.all():
                pass
