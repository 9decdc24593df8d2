"""Values derived from a host's settings and its probe, for the roles (raykit.plan owns them)."""

from __future__ import annotations

from typing import Any

from raykit.endpoint import endpoint, endpoint_path
from raykit.plan import file_states, object_store_bytes


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "ray_object_store_bytes": object_store_bytes,
            "ray_file_states": file_states,
            "ray_endpoint": endpoint,
            "ray_endpoint_path": lambda head: str(endpoint_path(head)),
        }
