"""Helpers every task module uses: the repository, output, the lab's settings and the playbooks."""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from invoke import Context, Exit, Result

from raykit import cluster, jobs
from raykit import endpoint as endpointkit
from raykit import lab as labkit

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# Every tool a task starts (ansible-playbook, ansible-lint, pytest) finds the venv's own
# tools first, as in an activated venv: ansible-lint warns and alters PATH otherwise.
if str(VENV_BIN) not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")])


def say(msg: str) -> None:
    print(f"raykit: {msg}", flush=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Errors the user can fix (lab, cluster, job): one line, exit status 2, no traceback."""
    try:
        yield
    except (labkit.LabError, cluster.ClusterError, jobs.JobsError) as exc:
        raise Exit(f"error: {exc}", code=2) from None


@contextmanager
def step(name: str) -> Iterator[None]:
    start = time.monotonic()
    say(f"{name} ...")
    yield
    say(f"{name} done in {time.monotonic() - start:.1f} s")


def lab_settings(c: Context, subnet: str | None = None, prefix: str | None = None) -> labkit.LabSettings:
    cfg = c.config.lab
    return labkit.LabSettings(
        state_dir=Path(cfg.state_dir),
        cache_dir=Path(cfg.cache_dir),
        bridge=cfg.bridge,
        subnet=subnet or cfg.subnet,
        prefix=prefix or cfg.prefix,
        admin_user=cfg.admin_user,
        suite=cfg.suite,
        mirror=cfg.mirror,
    )


def print_table(rows: list[dict[str, str]]) -> None:
    if not rows:
        return
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in rows[0]}
    print("  ".join(k.upper().ljust(w) for k, w in widths.items()))
    for row in rows:
        print("  ".join(str(row[k]).ljust(w) for k, w in widths.items()))


def playbook(c: Context, name: str, inventory: str | None, *args: str, check: bool = True, **kwargs: Any) -> Result:
    """Run one of playbooks/ from the repository root, so ansible.cfg applies."""
    cmd = [_venv_bin("ansible-playbook"), f"playbooks/{name}.yml"]
    if inventory:
        cmd += ["--inventory", inventory]
    cmd += list(args)
    with c.cd(str(ROOT)):
        result = c.run(" ".join(shlex.quote(a) for a in cmd), pty=False, warn=True, **kwargs)
    if check and result.failed:
        raise Exit(f"error: ansible-playbook playbooks/{name}.yml failed (exit {result.exited}); see above", code=1)
    return result


def cluster_state(c: Context, inventory: str | None) -> dict:
    """playbooks/status.yml's read-only facts: nodes, units, environments, dashboard, token file."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "status.json")
        playbook(c, "status", inventory, "-e", f"raykit_report_file={out}", hide="out")
        return json.loads(out.read_text())


@contextmanager
def dashboard_reached(state: dict) -> Iterator[dict]:
    """The cluster's state with a dashboard URL this controller can use: the head's own, or an
    SSH tunnel's local end while the block runs (ray_dashboard_access: tunnel); a tunnel that
    cannot open raises ClusterError."""
    with endpointkit.reach(endpointkit.Endpoint(**state["endpoint"])) as url:
        yield {**state, "dashboard_url": url}


def inventory_head(inventory: str | None) -> str:
    """The head's name, read from the inventory in this process: no playbook, no ssh."""
    os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
    from ansible import constants
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    found = InventoryManager(DataLoader(), sources=[inventory] if inventory else constants.DEFAULT_HOST_LIST)
    group = found.groups.get("ray_head")
    heads = group.get_hosts() if group else []
    if not heads:
        raise Exit(f"error: the inventory {inventory or constants.DEFAULT_HOST_LIST} has no host in ray_head", code=2)
    return str(heads[0].name)


def cluster_endpoint(inventory: str | None) -> endpointkit.Endpoint:
    """How to reach the cluster, as the last deploy or status wrote it on this controller."""
    with user_errors():
        return endpointkit.load(inventory_head(inventory))


def show(rows: list[dict[str, str]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows)


def host_vars(c: Context, host: str, inventory: str | None) -> dict:
    cmd = [_venv_bin("ansible-inventory"), "--host", host] + (["--inventory", inventory] if inventory else [])
    with c.cd(str(ROOT)):
        found = c.run(shlex.join(cmd), hide=True, warn=True)
    if found.failed:
        raise Exit(f"error: no host {host!r} in the inventory", code=2)
    return json.loads(found.stdout)


def _venv_bin(name: str) -> str:
    return str(VENV_BIN / name)


INVENTORY_HELP = "Ansible inventory (default: ansible.cfg's, the local lab)"
