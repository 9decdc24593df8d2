"""Filters for the firewall (raykit.firewall owns its rules)."""

from __future__ import annotations

from typing import Any

from raykit import firewall


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "ray_firewall_errors": firewall.settings_errors,
            "ray_firewall_route_errors": firewall.controller_route_errors,
            "ray_firewall_ruleset": firewall.ruleset,
            "ray_firewall_sets": firewall.set_elements,
            "ray_firewall_drift": firewall.drift,
            "ray_firewall_nodes": firewall.node_addresses,
            "ray_firewall_ssh_jump": firewall.ssh_jump,
            "ray_firewall_ssh_errors": firewall.ssh_port_errors,
        }
