"""Upgrades with a short stop and a way back (README, "Upgrades and rollback"): Ray 2.59.0 and
2.60.0 on the lab, judged by what each node's unit runs (its main process, over ssh) and by Ray
itself (a job's tasks on every node report ray.__version__)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from raykit import cluster as raycluster
from tests.helpers import (
    HEAD,
    PINS,
    LabHost,
    all_ips,
    invoke,
    on_every_host,
    ray_state,
    what_the_nodes_say,
    write_inventory_variant,
)

pytestmark = pytest.mark.lab

OLD, NEW = "2.59.0", PINS["ray_version"]
PY = PINS["ray_python_version"]
ENVS = {version: f"/opt/ray/venvs/ray-{version}-py{PY}" for version in (OLD, NEW)}


@pytest.fixture(scope="module")
def old_locks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the lock of the pins with Ray OLD goes (made once for the module, by old_pins)."""
    return tmp_path_factory.mktemp("old_locks")


@pytest.fixture
def old_pins(deployed: dict[str, LabHost], old_locks: Path, tmp_path: Path) -> Path:
    """The lab's inventory as it is now, pinning Ray OLD, with its own lock."""
    (tmp_path / "old").mkdir()  # apart from the variants the tests write in tmp_path
    inventory = write_inventory_variant(tmp_path / "old", on_every_host(ray_version=OLD, ray_lock_dir=str(old_locks)))
    if not any(old_locks.iterdir()):
        invoke("lock", "--inventory", str(inventory), "--out", str(old_locks), timeout=900)
    return inventory


def node_envs(hosts: dict[str, LabHost]) -> dict[str, str]:
    """The environment each node's running unit started from (its main process's interpreter)."""
    probe = "tr '\\0' ' ' < /proc/$(systemctl show --property=MainPID --value ray)/cmdline"
    return {name: h.ssh(probe).stdout.split()[0].removesuffix("/bin/python") for name, h in hosts.items()}


def node_files(hosts: dict[str, LabHost]) -> dict[str, str]:
    """Each node's environment file and unit, as they are on the host."""
    return {
        name: h.ssh("sudo cat /etc/ray/ray.env /etc/systemd/system/ray.service").stdout for name, h in hosts.items()
    }


def links(host: LabHost) -> list[str]:
    return host.ssh("readlink /opt/ray/current /opt/ray/previous /opt/ray/older", check=False).stdout.split()


def ray_versions(tmp_path: Path, inventory: Path | None = None) -> list[str]:
    """What a job's driver and its tasks on every node say Ray is."""
    return what_the_nodes_say(tmp_path, "__import__('ray').__version__", inventory)


def stop_began(hosts: dict[str, LabHost]) -> float:
    """When the first node's unit left the active state last (CLOCK_MONOTONIC, which the lab's
    containers share with the controller)."""
    prop = "systemctl show --property=ActiveExitTimestampMonotonic --value ray"
    return min(int(h.ssh(prop).stdout.strip()) for h in hosts.values()) / 1e6


def switch_and_check(hosts: dict[str, LabHost], tmp_path: Path, command: str, to: str, kept: str) -> None:
    """Run deploy or rollback; every node then runs `to`, current and previous name `to` and `kept`."""
    invoke(command, timeout=900)
    print(f"{command}: stop to every node alive <= {time.monotonic() - stop_began(hosts):.1f} s")
    raycluster.wait_for_cluster(ray_state(hosts), all_ips(hosts), timeout=60)
    assert node_envs(hosts) == dict.fromkeys(hosts, ENVS[to])
    assert {name: tuple(links(h)[:2]) for name, h in hosts.items()} == dict.fromkeys(hosts, (ENVS[to], ENVS[kept]))
    assert ray_versions(tmp_path) == [to]


@pytest.fixture
def on_old(deployed: dict[str, LabHost], old_pins: Path) -> dict[str, LabHost]:
    """The lab's cluster running Ray OLD (a rollback to it, as the test before leaves, counts)."""
    if node_envs(deployed) != dict.fromkeys(deployed, ENVS[OLD]):
        invoke("provision", "--inventory", str(old_pins), timeout=1800)
        invoke("deploy", "--inventory", str(old_pins), timeout=900)
    assert node_envs(deployed) == dict.fromkeys(deployed, ENVS[OLD])
    return deployed


def test_an_upgrade_switches_every_node_and_rollback_brings_the_old_one_back(
    on_old: dict[str, LabHost], old_pins: Path, tmp_path: Path
) -> None:
    hosts = on_old
    assert ray_versions(tmp_path, old_pins) == [OLD]
    # The pins name NEW again: provision stages it beside the running cluster, which keeps OLD.
    invoke("provision", timeout=1800)
    assert node_envs(hosts) == dict.fromkeys(hosts, ENVS[OLD])
    assert {name: links(h)[0] for name, h in hosts.items()} == dict.fromkeys(hosts, ENVS[OLD])
    rows = {row["host"]: row for row in json.loads(invoke("versions", "--json", check=False).stdout)}
    assert all(f"runs ray-{OLD}-py{PY}" in rows[name]["status"] for name in hosts), rows
    # deploy switches: every node runs NEW, and keeps OLD for a rollback.
    switch_and_check(hosts, tmp_path, "deploy", NEW, OLD)
    invoke("versions")  # exit 0: every host runs the pins
    # rollback: OLD again on every node, NEW kept for going forward.
    switch_and_check(hosts, tmp_path, "rollback", OLD, NEW)
    rolled_back = invoke("versions", check=False)
    assert rolled_back.returncode == 1 and f"runs ray-{OLD}-py{PY}, not the pins' environment" in rolled_back.stdout


def test_a_new_head_that_exits_sends_every_node_back_on_its_own(
    on_old: dict[str, LabHost], old_pins: Path, tmp_path: Path
) -> None:
    hosts, state = on_old, ray_state(on_old)
    before = node_files(hosts)

    def new_pins_and_a_head_ray_cannot_start(inv: dict) -> None:
        inv["children"]["ray_head"]["hosts"][HEAD]["ray_environment"] = {
            "RAY_raylet_liveness_self_check_interval_ms": "5 s"
        }
        inv["vars"]["ray_join_timeout"] = 30
        inv["vars"]["ray_start_timeout_sec"] = 30  # the head's start gives up sooner

    failing = write_inventory_variant(tmp_path, new_pins_and_a_head_ray_cannot_start)
    invoke("provision", timeout=1800)
    result = invoke("deploy", "--inventory", str(failing), check=False, timeout=900)
    said = " ".join(result.stdout.split())  # Ansible folds long messages
    assert result.returncode != 0 and all(
        phrase in said
        for phrase in (
            f"The nodes did not form a cluster on ray-{NEW}-py{PY}",
            f"every node went back to its settings and unit from before this run, on ray-{OLD}-py{PY}",
            f"--- {HEAD}: journalctl -u ray",
        )
    ), result.stdout[-4000:]
    raycluster.wait_for_cluster(state, all_ips(hosts), timeout=60)
    assert node_envs(hosts) == dict.fromkeys(hosts, ENVS[OLD])
    assert node_files(hosts) == before
    assert {name: links(h)[0] for name, h in hosts.items()} == dict.fromkeys(hosts, ENVS[OLD])
    assert ray_versions(tmp_path, old_pins) == [OLD]
    # Back on the pins for the tests after this one; the old environment stays as previous.
    invoke("deploy", timeout=900)
    raycluster.wait_for_cluster(state, all_ips(hosts), timeout=60)
    assert node_envs(hosts) == dict.fromkeys(hosts, ENVS[NEW])
