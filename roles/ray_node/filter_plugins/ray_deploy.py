"""Deploy's values for a node: its labels flag, its plan, its name in the join check and its
environment links (raykit.plan owns them)."""

from __future__ import annotations

from typing import Any

from raykit.cluster import call
from raykit.plan import env_links, env_pins, join_members, labels_flag, link_target, node_plan


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "ray_labels_flag": labels_flag,
            "ray_node_plan": node_plan,
            "ray_join_members": join_members,
            "ray_cluster_call": call,
            "ray_env_links": env_links,
            "ray_link_target": link_target,
            "ray_env_pins": env_pins,
        }
