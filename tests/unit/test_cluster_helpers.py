"""Pure helpers behind provision, status and logs."""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import sys
from pathlib import Path

import pytest

from raykit import cluster, cluster_lock, wheelhouse
from raykit.ssh import BATCH, ssh_argv
from tests.unit import plugins

LOCK = """# raykit-lock: {"arch": "x86_64", "python_version": "3.11.2"}
numpy==2.4.6 \\
    --hash=sha256:aaa \\
    --hash=sha256:bbb
    # via -r cluster.in
uv==0.13.9 \\
    --hash=sha256:ccc
    # via -r cluster.in
"""


def test_requirement_blocks_keep_each_package_with_its_hashes() -> None:
    blocks = wheelhouse.requirement_blocks(LOCK)
    assert set(blocks) == {"numpy", "uv"}
    assert blocks["uv"] == "uv==0.13.9 \\\n    --hash=sha256:ccc\n"
    assert blocks["numpy"].count("--hash") == 2


def test_pip_platforms_cover_every_manylinux_level_up_to_2_28() -> None:
    tags = wheelhouse.pip_platforms("aarch64")
    assert tags[0] == "manylinux_2_17_aarch64" and "manylinux_2_28_aarch64" in tags
    assert "manylinux2014_aarch64" in tags and "manylinux_2_29_aarch64" not in tags


def test_lock_requirements_name_ray_with_extras_and_the_installer() -> None:
    pins = cluster_lock.Pins("3.11.2", "2.60.0", ("default", "serve"), ("numpy",))
    assert pins.requirements() == "ray[default,serve]==2.60.0\nnumpy\nuv\n"
    assert cluster_lock.Pins("3.11.2", "2.60.0", (), ()).requirements() == "ray==2.60.0\nuv\n"


SOURCE = {"url": "https://www.python.org/ftp/python/3.11.2/Python-3.11.2.tgz", "sha256": "ab" * 32}


def test_lock_header_round_trips(tmp_path: Path) -> None:
    pins = cluster_lock.Pins("3.11.2", "2.60.0", ("default",), ())
    path = tmp_path / "cluster-x86_64.txt"
    path.write_text(cluster_lock.header(pins, "x86_64", ["default", "serve"], SOURCE) + "\nray==2.60.0\n")
    meta = cluster_lock.read_header(path)
    assert (meta["ray_version"], meta["arch"], meta["ray_known_extras"]) == ("2.60.0", "x86_64", ["default", "serve"])
    assert meta["python_source"] == SOURCE


def test_lock_without_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cluster-x86_64.txt"
    path.write_text("ray==2.60.0\n")
    with pytest.raises(cluster_lock.LockError, match="run `invoke lock`"):
        cluster_lock.read_header(path)


def test_the_wheelhouse_is_named_by_its_lock_and_source(tmp_path: Path) -> None:
    lock = tmp_path / "cluster-x86_64.txt"
    lock.write_text("# raykit-lock: {}\nray==2.60.0\n")
    name = wheelhouse.wheelhouse_id(lock, "x86_64", False)
    assert name.startswith("x86_64-") and len(name) == len("x86_64-") + 16
    assert wheelhouse.wheelhouse_id(lock, "x86_64", True) == name + "-index"
    lock.write_text("# raykit-lock: {}\nray==2.61.0\n")
    assert wheelhouse.wheelhouse_id(lock, "x86_64", False) != name


def test_unknown_extra_is_refused_before_resolving(tmp_path: Path) -> None:
    pins = cluster_lock.Pins("3.11.2", "2.60.0", ("default", "bogus"), ())
    with pytest.raises(cluster_lock.LockError, match="unknown extra bogus"):
        cluster_lock.compile_lock(pins, "x86_64", tmp_path, uv="/nonexistent/uv", python_source=SOURCE)


STATE = {
    "dashboard_url": "http://10.77.0.11:8265",
    "token_file": "/nonexistent",
    "head": "raylab-1",
    "hosts": {
        "raylab-1": {
            "ip": "10.77.0.11", "role": "head",
            "service": {"active": "active", "enabled": "enabled", "uptime_s": 3725},
            "environment": {"python": "3.11.2", "ray": "2.60.0", "packages": 75, "digest": "ab" * 32, "problems": []},
        },
        "raylab-2": {
            "ip": "10.77.0.12", "role": "worker",
            "service": {"active": "failed", "enabled": "enabled", "uptime_s": 0},
            "environment": {"python": "3.11.2", "ray": "2.59.0", "packages": 75, "digest": "cd" * 32,
                            "problems": ["ray 2.59.0 (lock 2.60.0)"]},
        },
    },
}  # fmt: skip


def test_status_rows_join_units_with_rays_alive_nodes() -> None:
    nodes = [
        {"node_ip": "10.77.0.11", "state": "ALIVE",
         "resources_total": {"CPU": 2.0, "memory": 2 * 1024**3, "object_store_memory": 1024**3}},
        {"node_ip": "10.77.0.12", "state": "DEAD", "resources_total": {"CPU": 2.0}},
    ]  # fmt: skip
    head, worker = cluster.status_rows(STATE, nodes)
    assert (head["in_ray"], head["cpus"], head["memory"], head["object_store"], head["uptime"]) == (
        "alive", "2", "2.0G", "1.0G", "1h02m",
    )  # fmt: skip
    assert (worker["in_ray"], worker["unit"], worker["uptime"], worker["cpus"]) == (
        "MISSING",
        "failed/enabled",
        "-",
        "-",
    )


def test_port_rows_name_each_port_once_with_the_hosts_that_listen_on_it() -> None:
    head = {"ray_gcs_port": 6379, "ray_node_manager_port": 8076}
    state = {"hosts": {
        "raylab-1": {"ports": head, "worker_ports": [10002, 19999]},
        "raylab-2": {"ports": {"ray_node_manager_port": 8076}, "worker_ports": [10002, 19999]},
        "raylab-3": {"ports": {"ray_node_manager_port": 9076}, "worker_ports": [20002, 29999]},
    }}  # fmt: skip
    assert [tuple(row.values()) for row in cluster.port_rows(state)] == [
        ("6379", "ray_gcs_port", "raylab-1"),
        ("8076", "ray_node_manager_port", "raylab-1, raylab-2"),
        ("9076", "ray_node_manager_port", "raylab-3"),
        ("10002-19999", "ray_min_worker_port-ray_max_worker_port", "raylab-1, raylab-2"),
        ("20002-29999", "ray_min_worker_port-ray_max_worker_port", "raylab-3"),
    ]
    state["hosts"]["raylab-3"] = state["hosts"]["raylab-2"]
    assert {row["port"]: row["hosts"] for row in cluster.port_rows(state)}["8076"] == "all"


def test_version_rows_flag_drift() -> None:
    rows = {r["host"]: r for r in cluster.version_rows(STATE)}
    assert rows["raylab-1"]["status"] == "ok"
    assert rows["raylab-2"]["status"] == "ray 2.59.0 (lock 2.60.0)"
    assert rows["raylab-1"]["digest"] == "ab" * 6


def test_missing_token_is_a_one_line_error() -> None:
    with pytest.raises(cluster.ClusterError, match="run `invoke deploy`"):
        cluster.read_token(STATE)


def test_ssh_argv_reaches_a_host_as_ansible_does() -> None:
    hostvars = {
        "ansible_host": "10.77.0.12",
        "ansible_user": "ops",
        "ansible_ssh_private_key_file": "/keys/id",
        "ansible_ssh_common_args": "-o UserKnownHostsFile=/k -o StrictHostKeyChecking=yes",
    }
    argv = ssh_argv(hostvars, "raylab-2", ["sudo", "journalctl", "--unit=ray"])
    assert argv == [
        "ssh", "-i", "/keys/id", "-o", "UserKnownHostsFile=/k", "-o", "StrictHostKeyChecking=yes",
        "ops@10.77.0.12", "sudo journalctl --unit=ray",
    ]  # fmt: skip
    assert ssh_argv({}, "plainhost", [])[-1] == "plainhost"
    assert ssh_argv({}, "h", "sudo a && b", BATCH) == ["ssh", *BATCH, "h", "sudo a && b"]


def host_probe() -> dict:
    """roles/ray/files/raykit_report.py's functions (the file is passed to python -c, not imported)."""
    return vars(plugins.load("ray/files/raykit_report.py"))


def test_host_report_compares_installed_packages_with_the_lock() -> None:
    pins = host_probe()["locked_versions"](LOCK + "Ray_Thing==1.0 ; python_version >= '3'\n")
    assert pins == {"numpy": "2.4.6", "uv": "0.13.9", "ray-thing": "1.0"}
    assert json.dumps(pins)


def test_host_probe_reports_paths_as_the_file_template_and_link_tasks_set_them(tmp_path: Path) -> None:
    import grp
    import hashlib
    import pwd

    path_state = host_probe()["path_state"]
    settings = tmp_path / "ray.env"
    settings.write_text("A=1\n")
    settings.chmod(0o640)
    (tmp_path / "current").symlink_to("/opt/ray/venvs/x")
    me = (pwd.getpwuid(settings.stat().st_uid).pw_name, grp.getgrgid(settings.stat().st_gid).gr_name)
    assert path_state(str(settings)) == {
        "type": "file", "owner": me[0], "group": me[1], "mode": "0640",
        "sha1": hashlib.sha1(b"A=1\n").hexdigest(),  # what Ansible's checksum of the rendered content is
    }  # fmt: skip
    assert path_state(str(tmp_path / "current")) == {"type": "link", "target": "/opt/ray/venvs/x"}
    assert path_state(str(tmp_path))["type"] == "directory"
    assert path_state(str(tmp_path / "missing")) == {"type": "absent"}


def test_join_check_names_missing_nodes_and_those_with_other_cpus(monkeypatch, capsys) -> None:
    nodes = [
        {"node_ip": "10.0.0.1", "state": "ALIVE", "resources_total": {"CPU": 2.0}},
        {"node_ip": "10.0.0.2", "state": "DEAD", "resources_total": {"CPU": 2.0}},
        {"node_ip": "10.0.0.3", "state": "ALIVE", "resources_total": {"CPU": 4.0}},
    ]
    monkeypatch.setattr(cluster, "ray_api", lambda state, path, timeout: {"data": {"result": {"result": nodes}}})
    common = ["wait", "--dashboard-url", "http://head:8265", "--token-file", "/t", "--timeout", "0"]
    # It prints what it saw and exits 0 either way: deploy's join check reads the JSON.
    assert cluster.main([*common, "10.0.0.1=2", "10.0.0.2=2", "10.0.0.3=2"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "joined": False, "alive": ["10.0.0.1=2", "10.0.0.3=4"], "missing": ["10.0.0.2=2", "10.0.0.3=2"],
        "strangers": [], "error": "",
    }  # fmt: skip
    assert cluster.main([*common, "10.0.0.3=4", "10.0.0.1=2"]) == 0
    assert json.loads(capsys.readouterr().out) | {"alive": []} == {
        "joined": True, "alive": [], "missing": [], "strangers": [], "error": "",
    }  # fmt: skip
    # Two inventory hosts on one address are two nodes, not one.
    cluster.main([*common, "10.0.0.1=2", "10.0.0.1=2", "10.0.0.3=4"])
    assert json.loads(capsys.readouterr().out) | {"alive": []} == {
        "joined": False, "alive": [], "missing": ["10.0.0.1=2"], "strangers": [], "error": "",
    }  # fmt: skip
    # A node alive on an address the inventory no longer lists is named, and not waited for.
    cluster.main([*common, "10.0.0.1=2"])
    assert json.loads(capsys.readouterr().out) | {"alive": []} == {
        "joined": True, "alive": [], "missing": [], "strangers": ["10.0.0.3=4"], "error": "",
    }  # fmt: skip
    # Exactly the inventory's nodes: a second node on an inventory address is not joined.
    nodes.append({"node_ip": "10.0.0.1", "state": "ALIVE", "resources_total": {"CPU": 2.0}})
    cluster.main([*common, "10.0.0.1=2", "10.0.0.3=4"])
    assert json.loads(capsys.readouterr().out)["joined"] is False


def test_jobs_lists_those_not_ended_and_waits_for_them_up_to_its_deadline(monkeypatch, capsys) -> None:
    answers = [
        [{"submission_id": "raysubmit_a", "status": "RUNNING", "entrypoint": "python a.py"},
         {"submission_id": None, "job_id": "02000000", "status": "PENDING", "entrypoint": "python b.py"},
         {"submission_id": "raysubmit_c", "status": "SUCCEEDED", "entrypoint": "python c.py"}],
        [{"submission_id": "raysubmit_a", "status": "STOPPED", "entrypoint": "python a.py"}],
    ]  # fmt: skip
    monkeypatch.setattr(
        cluster, "ray_api", lambda state, path, timeout: answers[0] if len(answers) == 2 else answers[-1]
    )
    common = ["jobs", "--dashboard-url", "http://head:8265", "--token-file", "/t", "--timeout", "0"]
    assert cluster.main(common) == 0
    assert json.loads(capsys.readouterr().out)["running"] == ["raysubmit_a (python a.py)", "02000000 (python b.py)"]
    answers.pop(0)
    assert cluster.main(common) == 0
    assert json.loads(capsys.readouterr().out) == {"running": [], "error": ""}


def test_join_check_reports_why_it_could_not_read_ray(capsys, tmp_path: Path) -> None:
    common = ["wait", "--dashboard-url", "http://127.0.0.1:9", "--timeout", "0"]
    assert cluster.main([*common, "--token-file", str(tmp_path / "none"), "10.0.0.1=2"]) == 0
    seen = json.loads(capsys.readouterr().out)
    assert not seen["joined"] and seen["missing"] == ["10.0.0.1=2"] and "no cluster token at" in seen["error"]


def test_ray_start_seconds_runs_from_the_head_unit_start_to_the_last_registration() -> None:
    out = (
        "Thu 2026-11-26 00:50:43.977194 UTC\n"
        "[2026-11-26 00:51:00,488 I 870 885] (gcs_server) gcs_node_manager.cc:111: Registering new node. node_id=a\n"
        "[2026-11-26 00:51:06,485 I 870 885] (gcs_server) gcs_node_manager.cc:111: Registering new node. node_id=c\n"
        "[2026-11-26 00:51:05,567 I 870 885] (gcs_server) gcs_node_manager.cc:111: Registering new node. node_id=b\n"
    )
    assert cluster.ray_start_seconds(out) == pytest.approx(22.507806)


def test_join_check_reports_its_own_failure_in_its_json(monkeypatch, capsys) -> None:
    def odd_answer(state, path, timeout):  # an answer of another shape than Ray's State API
        return {"data": {}}

    monkeypatch.setattr(cluster, "ray_api", odd_answer)
    assert cluster.main(["wait", "--dashboard-url", "http://head:8265", "--token-file", "/t", "10.0.0.1=2"]) == 0
    seen = json.loads(capsys.readouterr().out)
    assert seen["joined"] is False and seen["missing"] == ["10.0.0.1=2"]
    assert seen["error"].startswith("the join check failed: KeyError"), seen["error"]


def test_the_bytecode_is_compiled_only_by_a_python_that_runs_as_the_hosts_x_y(tmp_path: Path) -> None:
    shim = tmp_path / "python3.13"  # a version manager's shim with no such Python behind it
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.13: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    assert wheelhouse.runs_as(sys.executable, tuple(sys.version_info[:2]))
    assert not wheelhouse.runs_as(sys.executable, (2, 7))
    assert not wheelhouse.runs_as(str(shim), (3, 13))
    assert not wheelhouse.runs_as(str(tmp_path / "missing"), (3, 13))


def test_deploys_calls_to_ray_go_through_the_endpoints_tunnel_when_it_has_one() -> None:
    direct = {"dashboard_url": "http://10.0.0.1:8265", "token_file": "/t", "ssh": []}
    assert shlex.split(cluster.call(direct, "/py", "jobs", 0)) == [
        "/py", "-m", "raykit.cluster", "jobs", "--dashboard-url", "http://10.0.0.1:8265", "--token-file", "/t",
        "--timeout", "0",
    ]  # fmt: skip
    tunnel = {**direct, "dashboard_url": "http://127.0.0.1:8265", "ssh": ["ssh", "ops@h"]}
    argv = shlex.split(cluster.call(tunnel, "/py", "wait", 120, ["10.0.0.1=2"]))
    assert argv[-3:] == ["--tunnel", '["ssh", "ops@h"]', "10.0.0.1=2"]


def test_a_node_running_another_environment_than_the_pins_is_named_with_the_fix() -> None:
    env = {"python": "3.11.2", "ray": "2.60.0", "packages": 75, "digest": "ab" * 32, "problems": []}
    state = {
        "hosts": {
            "raylab-1": {"environment": {**env, "runs": ""}},
            "raylab-2": {"environment": {**env, "runs": "/opt/ray/venvs/ray-2.59.0-py3.11.2"}},
        }
    }
    rows = {r["host"]: r["status"] for r in cluster.version_rows(state)}
    assert rows == {
        "raylab-1": "ok",
        "raylab-2": "runs ray-2.59.0-py3.11.2, not the pins' environment: `invoke deploy` switches to it",
    }


def test_the_cache_keeps_the_newest_wheelhouses_of_each_architecture(tmp_path: Path) -> None:
    for age, name in enumerate(["x86_64-new", "x86_64-mid", "x86_64-old", "x86_64-oldest"]):
        tar = wheelhouse.tar_path(tmp_path, name)
        tar.parent.mkdir()
        tar.write_bytes(b"")
        os.utime(tar, (1000 - age, 1000 - age))
        (tmp_path / f".{name}.lock").write_text("")
    (tmp_path / "x86_64-broken").mkdir()  # a build that stopped before its tar
    (tmp_path / "x86_64-building").mkdir()  # another provision's build, under way
    wheelhouse.tar_path(tmp_path, "aarch64-old").parent.mkdir()
    wheelhouse.tar_path(tmp_path, "aarch64-old").write_bytes(b"")
    with open(tmp_path / ".x86_64-building.lock", "w") as busy:
        fcntl.flock(busy, fcntl.LOCK_EX)
        wheelhouse.prune(tmp_path, "x86_64", keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".x86_64-building.lock", ".x86_64-mid.lock", ".x86_64-new.lock",
        "aarch64-old", "x86_64-building", "x86_64-mid", "x86_64-new",
    ]  # fmt: skip
