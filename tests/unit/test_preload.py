"""callback_plugins/raykit_preload.py: the roles' filters, and the raykit modules behind them,
are loaded in ansible-playbook's own process, which every task's worker is forked from."""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PLAY_START = """
import importlib.util, json, sys
from ansible.plugins.loader import filter_loader, init_plugin_loader
init_plugin_loader()
for folder in sys.argv[2:]:
    filter_loader.add_directory(folder)  # as loading a play's roles does
before = sorted(m for m in sys.modules if m.startswith("raykit."))
spec = importlib.util.spec_from_file_location("raykit_preload", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.CallbackModule().v2_playbook_on_play_start(None)
print(json.dumps({"before": before, "after": sorted(m for m in sys.modules if m.startswith("raykit."))}))
"""


def test_ansible_cfg_enables_the_preload() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "ansible.cfg")
    assert cfg["defaults"]["callback_plugins"] == "callback_plugins"
    assert "raykit_preload" in cfg["defaults"]["callbacks_enabled"].split(",")


def test_a_play_start_loads_every_roles_filters_and_their_raykit_modules() -> None:
    folders = sorted(str(p) for p in ROOT.glob("roles/*/filter_plugins"))
    assert len(folders) >= 5
    done = subprocess.run(
        [sys.executable, "-c", PLAY_START, str(ROOT / "callback_plugins/raykit_preload.py"), *folders],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert loaded["before"] == []
    # Among them the modules the filters of deploy's every task import.
    assert {"raykit.fanout", "raykit.monitoring", "raykit.cluster_lock", "raykit.firewall"} <= set(loaded["after"])
