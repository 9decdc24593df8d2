"""Monitoring and log retention on the lab: Prometheus scrapes every node (asked directly, on the
monitoring host, not through the kit's `invoke metrics`), `invoke metrics` shows a running job's
CPU, a stopped node is a target down that doctor names, and the timer prunes old sessions."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raykit import cluster as raycluster
from tests.helpers import HEAD, ROOT, LabHost, all_ips, http_status, invoke, ray_state

pytestmark = pytest.mark.lab

WORKER = "raylab-3"
PROMETHEUS = 9090

TARGETS = """
import json, sys, urllib.request
found = json.load(urllib.request.urlopen(sys.argv[1] + "/api/v1/targets?state=active", timeout=10))
print(json.dumps([[t["labels"].get("job"), t["labels"].get("node"), t["health"]]
                  for t in found["data"]["activeTargets"]]))
"""

BURN = """
import sys, time
import ray

@ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
def burn(seconds):
    end = time.time() + seconds
    while time.time() < end:
        pass
    return ray.util.get_node_ip_address()

ray.init()
print("burned on", sorted(set(ray.get([burn.remote(float(sys.argv[1])) for _ in range(6)]))))
"""


def targets(head: LabHost) -> list[tuple[str, str, str]]:
    """(job, node, health) of every target, as Prometheus on the head lists them."""
    url = f"http://{head.address}:{PROMETHEUS}"
    out = head.ssh(f"python3 -c {shlex.quote(TARGETS)} {url}").stdout
    return [tuple(t) for t in json.loads(out)]


def wait_for_targets(head: LabHost, want: set[tuple[str, str, str]], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not want <= set(found := targets(head)):
        assert time.monotonic() < deadline, f"Prometheus's targets after {timeout:.0f} s: {found}; wanted {want}"
        time.sleep(1)


def test_prometheus_scrapes_every_nodes_ray_and_node_exporter_target(deployed: dict[str, LabHost]) -> None:
    head = deployed[HEAD]
    want = {("ray", name, "up") for name in deployed} | {("node", name, "up") for name in deployed}
    wait_for_targets(head, want | {("ray_head", HEAD, "up")})
    assert sum(1 for job, node, health in targets(head) if job == "ray_head" and health == "up") == 2
    # On the node address only, with the retention set; the dashboard reaches it.
    listening = head.ssh(f"sudo ss --listening --tcp --numeric --no-header sport = :{PROMETHEUS}").stdout
    assert f"{head.address}:{PROMETHEUS}" in listening, listening
    assert not {f"0.0.0.0:{PROMETHEUS}", f"*:{PROMETHEUS}", f"[::]:{PROMETHEUS}"} & set(listening.split()), listening
    assert "--storage.tsdb.retention.time=15d" in head.ssh("ps -o args= -C prometheus").stdout
    state = ray_state(deployed)
    token = Path(state["token_file"]).read_text().strip()
    assert http_status(state["dashboard_url"] + "/api/prometheus_health", token) == 200
    # Ray's Grafana dashboards, kept where each session does not move them.
    listed = head.ssh("ls /var/lib/ray/grafana-dashboards").stdout.split()
    assert "default_grafana_dashboard.json" in listed, listed


def test_metrics_json_shows_the_cpu_a_running_job_takes_on_more_than_one_node(
    deployed: dict[str, LabHost], tmp_path: Path
) -> None:
    script = tmp_path / "burn.py"
    script.write_text(BURN)
    job = subprocess.Popen(
        [str(Path(sys.executable).parent / "invoke"), "run", str(script), "--", "75"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 70
        while True:
            rows = json.loads(invoke("metrics", "--json", check=False).stdout or "[]")
            busy = sorted(row["node"] for row in rows if (row["cpu_ray"] or 0) > 0.3)
            if len(busy) >= 2:
                break
            assert job.poll() is None, job.communicate()[0]
            assert time.monotonic() < deadline, f"Ray's CPU per node never showed the job: {rows}"
            time.sleep(2)
        assert {row["node"] for row in rows} == set(deployed)
        assert all(row["cpu_total"] == 2 and row["up"] for row in rows), rows
        # Every column has its series: a wrong metric name or label would show "-" here.
        fields = ("mem_used", "mem_total", "store_used", "store_total", "temp_free", "temp_size")
        assert all(row[field] is not None for row in rows for field in fields), rows
        assert all(0 < row["temp_free"] < row["temp_size"] for row in rows), rows
    finally:
        output = job.communicate(timeout=180)[0]
    assert job.returncode == 0, output
    assert "burned on" in output, output


def test_a_stopped_worker_is_a_target_down_and_doctor_names_it(deployed: dict[str, LabHost]) -> None:
    head = deployed[HEAD]
    invoke("stop", "--hosts", WORKER)
    try:
        wait_for_targets(head, {("ray", WORKER, "down"), ("node", WORKER, "up")}, timeout=60)
        result = invoke("doctor", check=False, timeout=120)
        assert result.returncode == 1, result.stdout
        assert f"{WORKER}: Prometheus cannot scrape its ray {deployed[WORKER].address}:8080 target" in result.stdout
        metrics = invoke("metrics", check=False)
        assert metrics.returncode == 1 and "DOWN" in metrics.stdout, metrics.stdout
    finally:
        invoke("start", "--hosts", WORKER)
    raycluster.wait_for_cluster(ray_state(deployed), all_ips(deployed), timeout=120)


PLANT = """
set -e
cd /var/lib/ray/tmp
mkdir -p session_2020-01-01_00-00-00_000000_1/logs session_2020-01-02_00-00-00_000000_2/logs
mkdir -p session_2020-01-03_00-00-00_000000_3/ray_spilled_objects_x
touch session_2020-01-03_00-00-00_000000_3/ray_spilled_objects_x/object
touch -d '30 days ago' session_2020-01-01_00-00-00_000000_1/logs session_2020-01-01_00-00-00_000000_1 \
    session_2020-01-02_00-00-00_000000_2/logs session_2020-01-02_00-00-00_000000_2
# What a job could plant: a link to an old folder of its own elsewhere, spilled objects in it.
mkdir -p /var/lib/ray/planted/ray_spilled_objects_y
touch /var/lib/ray/planted/ray_spilled_objects_y/object
touch -d '30 days ago' /var/lib/ray/planted
ln -sfn /var/lib/ray/planted session_2020-01-04_planted
"""


def test_the_timer_prunes_old_sessions_and_dead_spills_and_keeps_the_live_one(deployed: dict[str, LabHost]) -> None:
    worker = deployed[WORKER]
    worker.ssh(f"sudo -u ray sh -c {shlex.quote(PLANT)}")
    live = worker.ssh("sudo readlink -f /var/lib/ray/tmp/session_latest").stdout.strip()
    assert live.startswith("/var/lib/ray/tmp/session_2026"), live
    timer = worker.ssh("systemctl show ray-prune.timer --property=Triggers,ActiveState,UnitFileState").stdout
    assert "Triggers=ray-prune.service" in timer and "ActiveState=active" in timer, timer
    assert "UnitFileState=enabled" in timer, timer
    worker.ssh("sudo systemctl start ray-prune.service")  # what the timer starts, now
    left = set(worker.ssh("sudo ls /var/lib/ray/tmp").stdout.split())
    assert not {"session_2020-01-01_00-00-00_000000_1", "session_2020-01-02_00-00-00_000000_2"} & left, left
    assert {"session_2020-01-03_00-00-00_000000_3", "session_2020-01-04_planted", Path(live).name} <= left, left
    assert worker.ssh(f"sudo test -d {live}/logs", check=False).returncode == 0
    assert worker.ssh("sudo ls /var/lib/ray/tmp/session_2020-01-03_00-00-00_000000_3").stdout.split() == []
    # The link was not followed.
    assert worker.ssh("sudo test -f /var/lib/ray/planted/ray_spilled_objects_y/object", check=False).returncode == 0
    user = worker.ssh("systemctl show ray-prune.service --property=User").stdout.strip()
    assert user == "User=ray", user
    worker.ssh(
        "cd /var/lib/ray && sudo rm -rf tmp/session_2020-01-03_00-00-00_000000_3 tmp/session_2020-01-04_planted planted"
    )
