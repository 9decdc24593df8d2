"""Filters for monitoring (raykit.monitoring owns its settings' checks and scrape targets)."""

from __future__ import annotations

from typing import Any

from raykit import monitoring


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "ray_monitoring_errors": monitoring.settings_errors,
            "ray_log_errors": monitoring.log_errors,
            "ray_monitoring_nodes": monitoring.nodes,
            "ray_monitoring_down": monitoring.service_down,
            "ray_monitoring_packages_found": monitoring.packages_found,
            "ray_monitoring_scrape_config": monitoring.scrape_config,
        }
