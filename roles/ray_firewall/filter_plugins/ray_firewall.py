"""Filters for the firewall (raykit.firewall owns its rules, raykit.debs its packages)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raykit import debs, firewall


def ray_firewall_cached_debs(job: Mapping[str, Any]) -> dict[str, Any]:
    """The host's nftables packages as the controller's cache holds them ({} until fetched)."""
    args = (job["release"], job["arch"], list(job["packages"]), job["mirror"], Path(job["cache"]).expanduser())
    return dict(debs.cached(*args) or {})


def ray_firewall_unfetched(jobs: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The jobs whose packages the cache lacks: only these run raykit.debs."""
    return [job for job in jobs if not ray_firewall_cached_debs(job)]


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
            "ray_firewall_cached_debs": ray_firewall_cached_debs,
            "ray_firewall_unfetched": ray_firewall_unfetched,
        }
