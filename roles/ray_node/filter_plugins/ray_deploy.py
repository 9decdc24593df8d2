"""Deploy's values for a node: its labels flag, its plan and its name in the join check
(raykit.plan owns them)."""

from __future__ import annotations

from typing import Any

from raykit.cluster import call
from raykit.plan import join_members, labels_flag, node_plan


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "ray_labels_flag": labels_flag,
            "ray_node_plan": node_plan,
            "ray_join_members": join_members,
            "ray_cluster_call": call,
        }
