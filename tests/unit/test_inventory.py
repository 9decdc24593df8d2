"""The inventory lab.up writes is a plain Ansible inventory of real machines."""

from __future__ import annotations

from pathlib import Path

import yaml

from raykit import lab as labkit
from raykit.inventory import lab_inventory, write_inventory
from tests.unit.test_lab_plan import BOOKWORM, settings


def test_first_host_is_the_only_head_rest_are_workers(tmp_path: Path) -> None:
    hosts = labkit.plan_hosts("raylab", "10.77.0.0/24", 3, BOOKWORM)
    inv = lab_inventory(settings(tmp_path), hosts)["all"]
    assert list(inv["children"]["ray_head"]["hosts"]) == ["raylab-1"]
    assert list(inv["children"]["ray_workers"]["hosts"]) == ["raylab-2", "raylab-3"]
    assert inv["children"]["ray_workers"]["hosts"]["raylab-3"] == {
        "ansible_host": "10.77.0.13",
        "ray_node_ip": "10.77.0.13",
    }


def test_lab_connects_as_admin_with_checked_host_keys(tmp_path: Path) -> None:
    s = settings(tmp_path)
    vars_ = lab_inventory(s, labkit.plan_hosts("raylab", "10.77.0.0/24", 1, BOOKWORM))["all"]["vars"]
    assert vars_["ansible_user"] == "ops"
    assert vars_["ansible_ssh_private_key_file"] == str(s.ssh_key)
    assert f"UserKnownHostsFile={s.known_hosts}" in vars_["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=yes" in vars_["ansible_ssh_common_args"]


def test_single_host_lab_has_empty_workers_group(tmp_path: Path) -> None:
    inv = lab_inventory(settings(tmp_path), labkit.plan_hosts("raylab", "10.77.0.0/24", 1, BOOKWORM))
    assert inv["all"]["children"]["ray_workers"]["hosts"] == {}


def test_write_inventory_is_idempotent_and_valid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "inventory" / "lab.yml"
    inv = lab_inventory(settings(tmp_path), labkit.plan_hosts("raylab", "10.77.0.0/24", 2, BOOKWORM))
    assert write_inventory(path, inv) is True
    assert write_inventory(path, inv) is False
    assert yaml.safe_load(path.read_text()) == inv
    assert path.read_text().startswith("# Written by `invoke lab.up`")
