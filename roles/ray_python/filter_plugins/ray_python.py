"""Filters for the interpreter's install (raykit.pybuild owns the build's names and rules)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raykit import pybuild
from raykit.cluster_lock import read_header


def ray_python_group(distribution: str, major: str, arch: str) -> str:
    return pybuild.group(distribution, str(major), arch)


def ray_python_build_id(
    version: str, sha256: str, group: str, release: str, tree: str, mirror: str, optimize: bool
) -> str:
    return pybuild.build_id(version, sha256, group, release, tree, mirror, bool(optimize))


def ray_python_unsupported(distribution: str, release: str, arch: str) -> str:
    return pybuild.unsupported(distribution, release, arch)


def ray_lock_python_source(lock_file: str) -> dict[str, str]:
    """The source URL and sha256 `invoke lock` recorded (preflight has checked the lock)."""
    source: dict[str, str] = read_header(Path(lock_file)).get("python_source", {})
    return source


def ray_python_job(found: Mapping[str, Any] | None, built: bool, job: dict[str, Any]) -> dict[str, Any]:
    """The build this host needs and lacks ({} if none): it needs the kit's build (its provider)
    and the probe found another build, a tree changed since provision, or runtime packages missing."""
    found = found or {}
    if not built or (found.get("id") == job["id"] and found.get("trusted") and not found.get("missing")):
        return {}
    return job


def ray_python_build(job: Mapping[str, Any]) -> dict[str, Any]:
    """The host's build as the controller's cache holds it ({} until it is built)."""
    if not job:
        return {}
    return pybuild.cached(Path(job["cache"]).expanduser(), job["id"]) or {}


def ray_python_unbuilt(jobs: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The jobs whose build the cache lacks: only these run raykit.pybuild."""
    return [job for job in jobs if not ray_python_build(job)]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "ray_python_group": ray_python_group,
            "ray_python_build_id": ray_python_build_id,
            "ray_python_unsupported": ray_python_unsupported,
            "ray_lock_python_source": ray_lock_python_source,
            "ray_python_build": ray_python_build,
            "ray_python_unbuilt": ray_python_unbuilt,
            "ray_python_job": ray_python_job,
        }
