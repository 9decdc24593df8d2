"""The role's checks (roles/ray/filter_plugins/ray_checks.py): each bad value is named with its field."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "roles/ray/filter_plugins/ray_checks.py"
spec = importlib.util.spec_from_file_location("ray_checks", PLUGIN)
checks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(checks)

KIT_USER = {"shell": "/usr/sbin/nologin", "home": "/var/lib/ray", "home_exists": True, "locked": True}


@pytest.mark.parametrize(
    "prefix", ["/", "/opt", "/usr/", "//var//lib", "/home", "relative/path", "/opt/../usr", "/srv/my ray", "/srv/r%n"]
)
def test_a_system_folder_or_relative_prefix_is_refused(prefix: str) -> None:
    assert checks.ray_prefix_errors(prefix)[0].startswith(f"ray_prefix {prefix!r}")


@pytest.mark.parametrize("prefix", ["/opt/ray", "/srv/ray", "/data/ray-cluster"])
def test_a_folder_of_its_own_is_a_good_prefix(prefix: str) -> None:
    assert checks.ray_prefix_errors(prefix) == []


@pytest.mark.parametrize(
    ("labels", "resources", "environment", "message"),
    [
        ({"team": "a,b"}, {}, {}, "ray_labels: value 'a,b' of 'team'"),
        ({"te=am": "a"}, {}, {}, "ray_labels: name 'te=am'"),
        ({"team": "a'b"}, {}, {}, "ray_labels: value"),
        ({"team": "a b"}, {}, {}, "ray_labels: value"),
        ({}, {"ssd=1": 1}, {}, "ray_resources: name 'ssd=1'"),
        ({}, {'s"sd': 1}, {}, "ray_resources: name"),
        ({}, {}, {"FOO": "a\nb"}, "ray_environment: the value of FOO"),
        ({}, {}, {"FOO": 'say "hi"'}, "ray_environment: the value of FOO"),
        ({}, {}, {"FOO BAR": "1"}, "ray_environment: 'FOO BAR' is not a variable name"),
        ({}, {}, {"RAY_AUTH_MODE": "disabled"}, "ray_environment: RAY_AUTH_MODE would change Ray's authentication"),
        ({}, {}, {"ray_auth_token_path": "/tmp/t"}, "would change Ray's authentication"),
        ({}, {}, ["RAY_x=1"], "ray_environment must map names to values"),
    ],
)
def test_values_that_would_break_the_unit_or_switch_auth_are_refused(labels, resources, environment, message) -> None:
    errors = checks.ray_value_errors(labels, resources, environment)
    assert len(errors) == 1 and message in errors[0], errors


def test_plain_labels_resources_and_ray_knobs_pass() -> None:
    environment = {"RAY_DEDUP_LOGS": 0, "RAY_gcs_rpc_server_reconnect_timeout_s": "30", "OMP_NUM_THREADS": "2"}
    assert checks.ray_value_errors({"zone": "lab-a", "gpu.type": "t4"}, {"ssd": 1}, environment) == []


@pytest.mark.parametrize(
    ("name", "found", "uid", "message"),
    [
        ("root", None, None, "ray_user 'root' is root"),
        ("toor", {**KIT_USER, "home": "/root", "shell": "/bin/bash"}, 0, "is root"),
        ("ops", None, None, "ray_user 'ops' is the SSH user"),
        ("alice", {**KIT_USER, "home": "/home/alice", "shell": "/bin/bash"}, 1001, "its home in /home/alice"),
        ("svc", {**KIT_USER, "home": "/srv/svc", "shell": "/bin/sh"}, 120, "a login shell (/bin/sh)"),
        ("www-data", {**KIT_USER, "home": "/var/www"}, 33, "of another service (home /var/www)"),
    ],
)
def test_a_person_root_or_the_ssh_user_is_refused_as_rays_user(name, found, uid, message) -> None:
    errors = checks.ray_user_errors(name, found, uid, "ops")
    assert len(errors) == 1 and message in errors[0], errors


def test_the_kits_own_user_passes_even_with_a_shell_set_by_hand() -> None:
    assert checks.ray_user_errors("ray", None, None, "ops") == []
    assert checks.ray_user_errors("ray", KIT_USER, 998, "ops") == []
    assert checks.ray_user_errors("ray", {**KIT_USER, "shell": "/bin/bash"}, 998, "ops") == []  # provision repairs it


def host(name: str, machine: str, ip: str, addresses: list[str]) -> dict:
    return {"inventory_hostname": name, "_ray_probe": {"machine_id": machine}, "_ray_node_address": ip,
            "ansible_facts": {"all_ipv4_addresses": addresses}}  # fmt: skip


def test_one_machine_under_two_names_is_refused_and_clones_pass() -> None:
    same = [host("a", "m1", "10.0.0.1", ["10.0.0.1"]), host("b", "m1", "10.0.0.1", ["10.0.0.1"])]
    errors = checks.ray_same_machines(same)
    assert any("a and b are the same machine" in e for e in errors), errors
    assert any("a and b are given the same node IP" in e for e in errors), errors
    clones = [host("a", "m1", "10.0.0.1", ["10.0.0.1"]), host("b", "m1", "10.0.0.2", ["10.0.0.2"])]
    assert checks.ray_same_machines(clones) == []


def test_an_object_store_below_rays_minimum_is_refused() -> None:
    assert "below Ray's minimum of 78643200 bytes" in checks.ray_object_store_errors(10**6, None, True)[0]
    assert "80% of this host's /dev/shm (50000000 bytes)" in checks.ray_object_store_errors(40_000_000, 50_000_000, False)[0]
    assert checks.ray_object_store_errors(None, 10**9, False) == []
    assert checks.ray_object_store_errors(10**9, 2 * 10**9, False) == []


def test_redis_packages_for_another_architecture_or_release_are_refused() -> None:
    debs = ["redis-server_5%3a7.0.15-1~deb12u1_amd64.deb", "redis-tools_5%3a7.0.15-1~deb12u1_arm64.deb"]
    errors = checks.ray_deb_errors(debs, "x86_64", "amd64", "bookworm", "bookworm")
    assert errors == ["cached Redis packages for another architecture than the head's (amd64): "
                      "redis-tools_5%3a7.0.15-1~deb12u1_arm64.deb"]  # fmt: skip
    assert "the head runs trixie on amd64" in checks.ray_deb_errors([], "x86_64", "amd64", "bookworm", "trixie")[0]
    assert checks.ray_deb_errors(debs[:1], "x86_64", "amd64", "bookworm", "bookworm") == []


def test_a_prefix_below_a_folder_others_may_write_is_refused() -> None:
    assert "/tmp above it is not root's" in checks.ray_prefix_parent_errors("/tmp/ray", ["/tmp"])[0]
    assert checks.ray_prefix_parent_errors("/opt/ray", []) == []
