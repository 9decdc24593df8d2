"""Ansible inventories the kit writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from raykit.lab import Host, LabSettings, connection_vars

HEADER = "# Written by `invoke lab.up` for this machine's lab; edits are overwritten.\n"


def lab_inventory(settings: LabSettings, hosts: tuple[Host, ...]) -> dict[str, Any]:
    """The lab as an inventory of real machines: first host is the head, the rest are workers."""
    head, *workers = hosts

    def entry(host: Host) -> dict[str, str]:
        return {"ansible_host": host.address, "ray_node_ip": host.address}

    return {
        "all": {
            "vars": connection_vars(settings),
            "children": {
                "ray_head": {"hosts": {head.name: entry(head)}},
                "ray_workers": {"hosts": {w.name: entry(w) for w in workers}},
            },
        }
    }


def write_inventory(path: Path, inventory: dict[str, object]) -> bool:
    """Write the inventory; returns whether the file changed."""
    text = HEADER + "---\n" + yaml.safe_dump(inventory, sort_keys=False, default_flow_style=False)
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True
