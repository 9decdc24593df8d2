"""Values derived from a host's settings and its probe, for the roles (raykit.plan owns them)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raykit import debs, fanout
from raykit.endpoint import endpoint, endpoint_path
from raykit.plan import file_states, object_store_bytes


def ray_cached_debs(job: Mapping[str, Any]) -> dict[str, Any]:
    """A host's packages (raykit.debs: release, arch, packages, mirror, cache) as the controller's
    cache holds them ({} until fetched)."""
    args = (job["release"], job["arch"], list(job["packages"]), job["mirror"], Path(job["cache"]).expanduser())
    return dict(debs.cached(*args) or {})


def ray_debs_unfetched(jobs: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The jobs whose packages the cache lacks: only these run raykit.debs."""
    return [job for job in jobs if not ray_cached_debs(job)]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "ray_object_store_bytes": object_store_bytes,
            "ray_file_states": file_states,
            "ray_endpoint": endpoint,
            "ray_endpoint_path": lambda head: str(endpoint_path(head)),
            "ray_cached_debs": ray_cached_debs,
            "ray_debs_unfetched": ray_debs_unfetched,
            "ray_fanout_plan": fanout.plan,
            "ray_fanout_server_argv": fanout.server_argv,
            "ray_fanout_fallback": fanout.fallback_message,
        }
