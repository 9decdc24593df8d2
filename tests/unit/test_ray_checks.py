"""The role's checks (roles/ray/filter_plugins/ray_checks.py): each bad value is named with its field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.unit import plugins

checks = plugins.load("ray/filter_plugins/ray_checks.py")
DEFAULTS = yaml.safe_load((plugins.ROLES / "ray/defaults/main.yml").read_text())

KIT_USER = {"shell": "/usr/sbin/nologin", "home": "/var/lib/ray", "home_exists": True, "locked": True}


@pytest.mark.parametrize(
    "prefix",
    [
        *["/", "/opt", "/usr/", "//var//lib", "/home", "relative/path", "/opt/../usr", "/srv/my ray", "/srv/r%n"],
        *["/opt/ray/", "/opt//ray", "/opt/./ray"],  # not plain: hosts' paths are compared as strings
    ],
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
    assert (
        "80% of this host's /dev/shm (50000000 bytes)"
        in checks.ray_object_store_errors(40_000_000, 50_000_000, False)[0]
    )
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


GOOD_SETTINGS = {
    "os_family": "Debian", "is_head": True, "ipv4s": ["10.0.0.1"], "ray_python_version": "3.11.2",
    "ray_num_cpus": None, "ray_num_gpus": 0, "ray_resources": {"ssd": 1}, "ray_labels": {"team": "a"},
    "ray_environment": {}, "ray_prefix": "/opt/ray", "ray_temp_dir": "/var/lib/ray/tmp", "ray_node_ip": "",
    "ray_install_source": "wheelhouse",
    "ray_index_url": "", "ray_gcs_ft": "none", "ray_redis_address": "", "ray_redis_password_file": "/nonexistent",
    "ray_dashboard_access": "direct", "ray_dashboard_host": "", "monitoring": True, "is_monitor": True,
    **{name: value for name, value in DEFAULTS.items() if name.endswith("_port")},  # the pinned ports
}  # fmt: skip


def test_good_settings_pass() -> None:
    assert checks.ray_settings_errors(GOOD_SETTINGS) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"os_family": "RedHat"}, "OS family RedHat is not supported yet"),
        ({"ray_python_version": "3.11"}, "ray_python_version '3.11' is not X.Y.Z"),
        ({"ray_num_cpus": -2}, "ray_num_cpus must be a whole number of 0 or more, got -2"),
        ({"ray_num_gpus": True}, "ray_num_gpus must be a whole number of 0 or more, got true"),
        ({"ray_num_cpus": 2.5}, "ray_num_cpus must be a whole number"),
        ({"ray_resources": {"CPU": 4}}, "ray_resources must map names to numbers"),
        ({"ray_resources": {"ssd": "lots"}}, "ray_resources must map names to numbers"),
        ({"ray_labels": {"team": 3}}, "ray_labels must map names to text values"),
        ({"ray_node_ip": "10.0.0.9"}, "ray_node_ip '10.0.0.9' is not an address of this host; the host has: 10.0.0.1"),
        ({"ipv4s": ["10.0.0.1", "10.0.1.1"]}, "ray_node_ip is not set and the host has 2 addresses"),
        ({"ray_install_source": "index"}, "ray_install_source is index but ray_index_url is empty"),
        ({"ray_gcs_ft": "redis", "ray_redis_address": "h:1"}, "its password file /nonexistent does not exist"),
        ({"ray_gcs_ft": "redis", "ray_redis_port": 6379}, "ray_gcs_port and ray_redis_port use the same port"),
        ({"ray_gcs_ft": "redis", "ray_redis_port": 8080}, "ray_metrics_export_port and ray_redis_port use the same"),
        ({"ray_dashboard_port": 70000}, 'whole numbers from 1024 to 65535 (Ray runs unprivileged), got {"ray_da'),
        ({"ray_metrics_export_port": 80}, 'got {"ray_metrics_export_port": 80}'),
        ({"ray_runtime_env_agent_port": None}, 'got {"ray_runtime_env_agent_port": null}'),
        ({"ray_max_worker_port": "many"}, 'got {"ray_max_worker_port": "many"}'),
        ({"ray_min_worker_port": 19999}, "ray_min_worker_port 19999 must be below ray_max_worker_port 19999"),
        ({"ray_node_manager_port": 6379}, "ray_gcs_port and ray_node_manager_port use the same port"),
        ({"ray_autoscaler_metrics_port": 8078}, "ray_autoscaler_metrics_port and ray_dashboard_agent_grpc_port use"),
        ({"ray_metrics_export_port": 12000}, "ray_metrics_export_port is inside the worker port range 10002-19999"),
        ({"ray_prefix": "/usr"}, "ray_prefix '/usr' is a system folder"),
        ({"ray_prefix": "/home/lab/ray"}, "ray_prefix '/home/lab/ray' is under /home, which Ray's unit hides"),
        ({"ray_prefix": "/run/user/0/ray"}, "ray_prefix '/run/user/0/ray' is under /run/user, which Ray's unit hides"),
        ({"ray_temp_dir": "/root/ray-tmp"}, "ray_temp_dir '/root/ray-tmp' is under /root, which Ray's unit hides"),
        ({"ray_temp_dir": "ray tmp"}, "ray_temp_dir 'ray tmp' is not an absolute path of letters, digits and _"),
        ({"ray_temp_dir": "/opt/../home/x"}, "ray_temp_dir '/opt/../home/x' is not in its plain form"),
        ({"ray_temp_dir": "/var/lib/ray/tmp/"}, "ray_temp_dir '/var/lib/ray/tmp/' is not in its plain form"),
        ({"ray_temp_dir": "/etc"}, "ray_temp_dir '/etc' is a system folder"),
        ({"ray_temp_dir": "/tmp/ray"}, "ray_temp_dir '/tmp/ray' is under /tmp, which is private to Ray's unit"),
        ({"ray_environment": {"RAY_AUTH_MODE": "disabled"}}, "RAY_AUTH_MODE would change Ray's authentication"),
        ({"ray_environment": {"DASHBOARD_METRIC_PORT": 9}}, "DASHBOARD_METRIC_PORT is the kit's; set ray_dash"),
        ({"ray_node_exporter_port": 8080}, "ray_metrics_export_port and ray_node_exporter_port use the same port"),
        ({"ray_prometheus_port": 8265}, "ray_dashboard_port and ray_prometheus_port use the same port"),
        ({"ray_prometheus_port": 12000}, "ray_prometheus_port is inside the worker port range"),
        ({"ray_fanout_port": 9180}, "ray_fanout_port must be a whole number from 1 to 1023 (only root may"),
        ({"ray_fanout_port": "x"}, 'ray_fanout_port must be a whole number from 1 to 1023 (only root may listen th'),
        ({"ray_dashboard_access": "vpn"}, 'ray_dashboard_access must be direct or tunnel, got "vpn"'),
        ({"ray_dashboard_access": "tunnel", "ray_dashboard_host": "0.0.0.0"}, "ray_dashboard_host 0.0.0.0 contradicts"),
    ],
)  # fmt: skip
def test_each_bad_setting_is_named(change: dict, message: str) -> None:
    errors = checks.ray_settings_errors({**GOOD_SETTINGS, **change})
    assert any(message in error for error in errors), errors


def test_a_workers_ports_leave_out_the_heads_but_not_those_ray_reserves_on_every_node() -> None:
    worker = {**GOOD_SETTINGS, "is_head": False, "ray_gcs_ft": "redis", "ray_gcs_port": 8100}
    assert set(checks.ray_ports(worker, False)) == set(checks.NODE_PORTS)
    assert checks.ray_settings_errors({**worker, "ray_node_manager_port": 8100, "ray_redis_port": 8076}) == []
    # Serve's proxy runs on every node.
    assert checks.ray_settings_errors({**worker, "ray_node_manager_port": 8000}) == [
        "ray_node_manager_port and ray_serve_port use the same port"
    ]
    assert checks.ray_settings_errors({**worker, "ray_node_manager_port": 8265}) == [
        "ray_node_manager_port and ray_dashboard_port use the same port"
    ]


def test_every_problem_is_named_at_once() -> None:
    errors = checks.ray_settings_errors({**GOOD_SETTINGS, "ray_num_cpus": -1, "ray_prefix": "/", "os_family": "Suse"})
    assert len(errors) == 3, errors


PINS = {"ray_version": "2.60.0", "ray_python_version": "3.11.2", "ray_extras": ["default"],
        "ray_extra_packages": ["numpy"], "ray_python_source_url": ""}  # fmt: skip
PYTHON_ORG = "https://www.python.org/ftp/python/3.11.2/Python-3.11.2.tgz"


def _lock(tmp_path: Path, **meta: object) -> str:
    header = {"arch": "x86_64", "extra_packages": ["numpy"], "python_version": "3.11.2", "ray_extras": ["default"],
              "ray_known_extras": ["default", "serve"], "ray_version": "2.60.0",
              "python_source": {"url": PYTHON_ORG, "sha256": "ab" * 32}, **meta}  # fmt: skip
    path = tmp_path / "cluster-x86_64.txt"
    path.write_text("# raykit-lock: " + json.dumps(header) + "\nray==2.60.0 \\\n")
    return str(path)


def test_a_lock_made_from_the_pins_passes(tmp_path: Path) -> None:
    assert checks.ray_lock_errors(_lock(tmp_path), "x86_64", PINS) == []


def test_a_missing_lock_says_to_run_lock(tmp_path: Path) -> None:
    errors = checks.ray_lock_errors(str(tmp_path / "cluster-aarch64.txt"), "aarch64", PINS)
    assert errors == [f"no lock for architecture aarch64 ({tmp_path}/cluster-aarch64.txt); run `invoke lock`"]


def test_changed_pins_and_unknown_extras_are_named(tmp_path: Path) -> None:
    pins = {**PINS, "ray_version": "2.59.0", "ray_extras": ["default", "bogus"]}
    unknown, changed = checks.ray_lock_errors(_lock(tmp_path), "x86_64", pins)
    assert unknown == "ray_extras: unknown extra bogus (Ray 2.60.0 has: default, serve)"
    assert "ray_version 2.59.0 / lock 2.60.0" in changed and "ray_extras default,bogus / lock default" in changed


def test_a_lock_made_from_another_python_source_is_refused(tmp_path: Path) -> None:
    pins = {**PINS, "ray_python_source_url": "http://mirror.example/Python-3.11.2.tgz"}
    (error,) = checks.ray_lock_errors(_lock(tmp_path), "x86_64", pins)
    assert error.startswith("ray_python_source_url http://mirror.example/Python-3.11.2.tgz / lock " + PYTHON_ORG)
    assert "run `invoke lock`" in error


def test_paths_differ_names_each_path_the_probe_found_otherwise() -> None:
    wanted = {"/etc/a": {"sha256": "1", "mode": "0644"}, "/etc/b": {"sha256": "2", "mode": "0644"}}
    found = {"/etc/a": {"sha256": "1", "mode": "0644"}, "/etc/b": {"sha256": "2", "mode": "0666"}}
    assert checks.ray_paths_differ(found, wanted) == ["/etc/b"]  # a mode counts, as content does
    assert checks.ray_paths_differ(found, wanted, ["/etc/a"]) == []
    assert checks.ray_paths_differ({}, wanted) == ["/etc/a", "/etc/b"]  # absent from the probe
