"""What provision and deploy write on a host (raykit.plan): the object store size,
the labels flag, and the plan that decides what to write and which node restarts."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from raykit import plan as kit

GIB = 1024**3
LAYOUT = {
    "/etc/ray": {"type": "directory", "owner": "root", "group": "ray", "mode": "0750"},
    "/etc/ray/ray.env": {"type": "file", "owner": "root", "group": "ray", "mode": "0640"},
    "/etc/systemd/system/ray.service": {"type": "file", "owner": "root", "group": "root", "mode": "0644"},
}
SETTINGS = ["/etc/ray/ray.env", "/etc/systemd/system/ray.service"]
CONTENTS = {"/etc/ray/ray.env": "A=1\n", "/etc/systemd/system/ray.service": "[Unit]\n"}
RUNNING = {"active": "active", "enabled": "enabled", "stale": False}


def _written(contents: dict[str, str]) -> dict[str, dict[str, str]]:
    return {
        path: {**state, **({"sha1": hashlib.sha1(contents[path].encode()).hexdigest()} if path in contents else {})}
        for path, state in LAYOUT.items()
    }


def test_the_object_store_is_rays_default_unless_it_would_not_fit_in_dev_shm() -> None:
    assert kit.object_store_bytes(None, 8 * 1024, 4 * GIB) is None
    assert kit.object_store_bytes(None, 64 * 1024, 2 * GIB) == int(2 * GIB * 0.8)
    assert kit.object_store_bytes(None, 64 * 1024, None) is None
    assert kit.object_store_bytes(10**9, 64 * 1024, 2 * GIB) == 10**9


def test_labels_become_one_flag_value() -> None:
    assert kit.labels_flag({"team": "a", "zone": "b"}) == "team=a,zone=b"


def test_a_node_as_deploy_left_it_is_converged() -> None:
    plan = kit.node_plan(CONTENTS, LAYOUT, SETTINGS, {"paths": _written(CONTENTS), "service": RUNNING}, False)
    assert plan["converged"] and not plan["files_differ"] and plan["restart_reasons"] == []
    assert plan["wanted"] == _written(CONTENTS) and plan["rendered"] == CONTENTS


def test_an_edited_unit_is_written_and_restarts_the_node() -> None:
    found = _written({**CONTENTS, "/etc/systemd/system/ray.service": "[Unit]\nedited\n"})
    plan = kit.node_plan(CONTENTS, LAYOUT, SETTINGS, {"paths": found, "service": RUNNING}, False)
    assert plan["files_differ"] and plan["restart_reasons"] == ["settings"] and not plan["converged"]


def test_a_loose_folder_is_repaired_without_a_restart() -> None:
    found = _written(CONTENTS)
    found["/etc/ray"] = {**found["/etc/ray"], "mode": "0755"}
    plan = kit.node_plan(CONTENTS, LAYOUT, SETTINGS, {"paths": found, "service": RUNNING}, False)
    assert plan["files_differ"] and plan["restart_reasons"] == [] and not plan["converged"]


def test_a_stopped_stale_or_disabled_node_is_not_converged() -> None:
    paths = _written(CONTENTS)
    stopped = kit.node_plan(
        CONTENTS, LAYOUT, SETTINGS, {"paths": paths, "service": {**RUNNING, "active": "failed"}}, False
    )
    stale = kit.node_plan(CONTENTS, LAYOUT, SETTINGS, {"paths": paths, "service": {**RUNNING, "stale": True}}, False)
    disabled = kit.node_plan(
        CONTENTS, LAYOUT, SETTINGS, {"paths": paths, "service": {**RUNNING, "enabled": "disabled"}}, False
    )
    assert stopped["restart_reasons"] == ["stopped"] and stale["restart_reasons"] == ["stale"]
    assert disabled["restart_reasons"] == [] and not disabled["converged"]


def test_a_node_never_deployed_gets_everything() -> None:
    plan = kit.node_plan(CONTENTS, LAYOUT, SETTINGS, {"paths": {}, "service": {}}, False)
    assert plan["files_differ"] and plan["restart_reasons"] == ["settings", "stopped"]


def test_the_kits_redis_keeps_the_head_from_converging() -> None:
    plan = kit.node_plan(CONTENTS, LAYOUT, SETTINGS, {"paths": _written(CONTENTS), "service": RUNNING}, True)
    assert not plan["converged"] and plan["restart_reasons"] == []


def test_each_host_is_named_for_the_join_check_as_ray_reports_its_node() -> None:
    hosts: list[dict[str, Any]] = [
        {"inventory_hostname": "h1", "_ray_node_address": "10.0.0.1", "_ray_expected_cpus": "4"},
        {"inventory_hostname": "h2", "_ray_node_address": "10.0.0.2", "_ray_expected_cpus": 1},
    ]
    assert kit.join_members(hosts) == {"h1": "10.0.0.1=4", "h2": "10.0.0.2=1"}


def test_a_switch_moves_current_previous_and_older_and_a_rollback_swaps_two() -> None:
    links = ["/opt/ray/current", "/opt/ray/previous", "/opt/ray/older"]

    def paths(*targets: str) -> dict[str, dict[str, str]]:
        return {link: {"type": "link", "target": t} for link, t in zip(links, targets, strict=False)}

    a, b, c, d = (f"/opt/ray/venvs/ray-2.{n}.0-py3.11.2" for n in (57, 58, 59, 60))
    assert kit.env_links({}, links, d) == {links[0]: d}  # a first deploy
    assert kit.env_links(paths(c, b, a), links, d) == dict(zip(links, [d, c, b], strict=True))  # a gone
    assert kit.env_links(paths(d, c, b), links, c) == dict(zip(links, [c, d, b], strict=True))  # rollback
    assert kit.env_links(paths(d, c, b), links, d) == dict(zip(links, [d, c, b], strict=True))  # no switch
    assert kit.link_target(paths(d, c), links[1]) == c and kit.link_target(paths(d), links[1]) == ""
    assert kit.env_pins(c) == {"ray_version": "2.59.0", "ray_python_version": "3.11.2"}
    with pytest.raises(ValueError, match="not an environment of the kit's"):
        kit.env_pins("/tmp")
