"""What provision and deploy write on a host and the values its node is started with, each
computed here once (the roles' filter plugins call these; the templates only print them)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from raykit.cluster import member

# Ray's default object store is 30% of memory; kept inside /dev/shm (at 80% of it), or Ray
# falls back to disk.
RAY_DEFAULT_STORE_SHARE = 0.3


def object_store_bytes(wanted: int | None, memtotal_mb: int, shm_bytes: int | None) -> int | None:
    """The node's --object-store-memory: ray_object_store_memory when set; otherwise None
    (Ray's default) unless that would not fit in /dev/shm (as the probe found it)."""
    if wanted is not None:
        return wanted
    if shm_bytes is None or memtotal_mb * 1048576 * RAY_DEFAULT_STORE_SHARE <= shm_bytes * 0.9:
        return None
    return int(shm_bytes * 0.8)


def labels_flag(labels: Mapping[str, str]) -> str:
    """ray_labels as `ray start --labels` takes them: name=value,name=value."""
    return ",".join(f"{name}={value}" for name, value in labels.items())


def file_states(layout: Mapping[str, Mapping[str, str]], contents: Mapping[str, str]) -> dict[str, Any]:
    """The paths as the probe reports them once written: the layout (type, owner, group,
    mode) plus each file's sha1, from its content."""
    return {
        path: {**state, **({"sha1": hashlib.sha1(contents[path].encode()).hexdigest()} if path in contents else {})}
        for path, state in layout.items()
    }


def node_plan(
    contents: Mapping[str, str],
    layout: Mapping[str, Mapping[str, str]],
    settings_files: list[str],
    probe: Mapping[str, Any],
    redis_managed: bool,
) -> dict[str, Any]:
    """What deploy does on a node, from its rendered files (path -> content) and preflight's
    probe: the files as the probe would report them once written (layout plus each content's
    sha1), whether any differs, why the node restarts (its settings files differ, it is not
    running, or it runs older settings than its files), and whether nothing is left to do."""
    wanted = file_states(layout, contents)
    found = probe.get("paths") or {}
    service = probe.get("service") or {}
    reasons = [
        reason
        for reason, why in (
            ("settings", any(found.get(path) != wanted[path] for path in settings_files)),
            ("stopped", service.get("active") != "active"),
            ("stale", bool(service.get("stale"))),
        )
        if why
    ]
    files_differ = any(found.get(path) != state for path, state in wanted.items())
    return {
        "rendered": dict(contents),
        "wanted": wanted,
        "files_differ": files_differ,
        "restart_reasons": reasons,
        "converged": not files_differ and not reasons and service.get("enabled") == "enabled" and not redis_managed,
    }


def join_members(hosts: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Each host (its hostvars) as the join check names its node: host -> "IP=CPUS"."""
    return {host["inventory_hostname"]: member(host["_ray_node_address"], host["_ray_expected_cpus"]) for host in hosts}


ENV_NAME = re.compile(r"ray-(?P<ray>[^/-]+)-py(?P<python>[^/-]+)$")


def env_links(paths: Mapping[str, Mapping[str, str]], links: Sequence[str], env: str) -> dict[str, str]:
    """Each of deploy's links (current, previous, older) to its target once the cluster runs env:
    env, then the environments the links named before, newest first, each once (a rollback
    swaps current and previous, and older stays)."""
    named = [paths.get(link, {}) for link in links]
    targets = dict.fromkeys([env, *(state["target"] for state in named if state.get("type") == "link")])
    return dict(zip(links, targets, strict=False))


def link_target(paths: Mapping[str, Mapping[str, str]], link: str) -> str:
    """Where a link the probe read points ('' when it is not a link)."""
    state = paths.get(link, {})
    return state["target"] if state.get("type") == "link" else ""


def env_pins(env: str) -> dict[str, str]:
    """Ray's and Python's versions from an environment's folder (ray-X.Y.Z-pyA.B.C)."""
    found = ENV_NAME.search(env)
    if not found:
        raise ValueError(f"not an environment of the kit's: {env}")
    return {"ray_version": found["ray"], "ray_python_version": found["python"]}
