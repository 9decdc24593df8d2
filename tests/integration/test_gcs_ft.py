"""ray_gcs_ft: redis on the lab: a head restart keeps the workers and a detached actor."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from raykit import cluster as raycluster
from raykit import jobs
from tests.helpers import (
    HEAD,
    ROOT,
    TOKEN_FILE,
    all_ips,
    invoke,
    main_pid,
    node_ids,
    ray_state,
    recap,
    task_results,
    write_inventory_variant,
)

pytestmark = pytest.mark.lab

COUNTER = ROOT / "tests" / "jobs" / "detached_counter.py"


def counter(state: dict[str, str], action: str) -> str:
    client = jobs.client(state["dashboard_url"], TOKEN_FILE.read_text().strip())
    job = jobs.submit(client, COUNTER, [action])
    status = jobs.wait(client, job, 120)
    logs = client.get_job_logs(job)
    assert status.value == "SUCCEEDED", logs
    return logs


def test_with_the_gcs_in_redis_a_head_restart_keeps_workers_and_detached_actors(deployed, tmp_path: Path) -> None:
    state, head = ray_state(deployed), deployed[HEAD]
    workers = {name: h for name, h in deployed.items() if name != HEAD}
    variant = str(write_inventory_variant(tmp_path, lambda inv: inv["vars"].update(ray_gcs_ft="redis")))
    try:
        result = invoke("deploy", "--inventory", variant, check=False)
        assert result.returncode == 0, result.stdout[-3000:]
        again = recap(invoke("deploy", "--inventory", variant).stdout)
        assert set(deployed) <= set(again) and all(c["changed"] == 0 for c in again.values()), again
        # Redis: on the head only, on localhost only, and it wants the password.
        listening = head.ssh("sudo ss --listening --tcp --numeric --processes").stdout
        redis = [line.split()[3] for line in listening.splitlines() if "redis-server" in line]
        assert redis and all(re.match(r"(127\.0\.0\.1|\[::1\]):6380$", a) for a in redis), listening
        assert "NOAUTH" in head.ssh("redis-cli -p 6380 get x", check=False).stdout
        password = Path(f"~/.config/raykit/{HEAD}.redis").expanduser().read_text().strip()
        assert password not in head.ssh("cat /etc/systemd/system/ray.service").stdout + result.stdout

        assert "count: 1 on" in counter(state, "create")
        before = {name: (main_pid(h), node_ids(state, h)) for name, h in workers.items()}
        old_head = node_ids(state, head)
        invoke("restart", "--inventory", variant, "--hosts", HEAD)
        raycluster.wait_for_cluster(state, all_ips(deployed), gone=old_head, timeout=120)
        assert "count: 2 on" in counter(state, "count")  # the actor, and its state, lived on
        assert {name: (main_pid(h), node_ids(state, h)) for name, h in workers.items()} == before
        old_head = node_ids(state, head)
        invoke("lab.reboot", HEAD)  # Redis and then the head start at boot
        raycluster.wait_for_cluster(state, all_ips(deployed), gone=old_head, timeout=120)
        assert "count: 3 on" in counter(state, "count")
        assert {name: (main_pid(h), node_ids(state, h)) for name, h in workers.items()} == before
        counter(state, "remove")
    finally:
        result = invoke("deploy", check=False)  # back to the lab's default, ray_gcs_ft: none
    assert result.returncode == 0, result.stdout[-3000:]
    # Switched off, the kit's Redis is gone with its state, and the next deploy is a no-op again.
    left = [path for path in ("/usr/bin/redis-server", "/var/lib/redis", "/var/lib/raykit-redis")
            if head.infra.file(path).exists]  # fmt: skip
    assert left == [], left
    noop = invoke("deploy").stdout
    assert set(deployed) <= set(recap(noop)) and all(c["changed"] == 0 for c in recap(noop).values()), noop[-3000:]
    assert task_results(noop, "Write the settings and units") == {"skipping"}, noop[-3000:]
