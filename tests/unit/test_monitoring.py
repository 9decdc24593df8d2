"""Monitoring's logic (raykit.monitoring) and the prune script (roles/ray_logs/files/ray_prune.py):
the targets the inventory makes, the rows `invoke metrics` shows from Prometheus's answers, the
findings doctor makes of them, and which session folders the timer removes."""

from __future__ import annotations

import io
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from raykit import monitoring
from raykit.cluster import ClusterError
from tests.unit import plugins

prune = plugins.load("ray_logs/files/ray_prune.py")

PORTS = {
    "ray_metrics_export_port": 8080,
    "ray_dashboard_metrics_port": 44227,
    "ray_autoscaler_metrics_port": 44217,
    "ray_node_exporter_port": 9100,
}
GOOD = {
    "ray_monitoring": True,
    "ray_monitoring_host": "",
    "ray_monitoring_retention": "15d",
    "ray_monitoring_scrape_interval": "15s",
    "hosts": ["h1", "h2"],
}


def test_the_targets_come_from_the_inventory() -> None:
    hosts: list[dict[str, Any]] = [
        {"inventory_hostname": "h1", "_ray_node_address": "10.0.0.1", "_ray_monitoring_temp_mount": "/"},
        {"inventory_hostname": "h2", "ansible_host": "10.0.0.2", "_ray_monitoring_temp_mount": "/data",
         "ray_metrics_export_port": 8081},
    ]  # fmt: skip
    config = monitoring.scrape_config(monitoring.nodes(hosts, "h1", PORTS), "10.0.0.1:9090", "15s")
    jobs = {job["job_name"]: job["static_configs"] for job in config["scrape_configs"]}
    assert [s["targets"] for s in jobs["ray"]] == [["10.0.0.1:8080"], ["10.0.0.2:8081"]]  # h2's own port
    assert [s["targets"] for s in jobs["ray_head"]] == [["10.0.0.1:44227"], ["10.0.0.1:44217"]]
    assert jobs["node"][1] == {
        "targets": ["10.0.0.2:9100"],
        "labels": {"node": "h2", "role": "worker", "ray_temp_mount": "/data"},
    }
    assert jobs["prometheus"] == [{"targets": ["10.0.0.1:9090"]}]
    assert config["global"]["scrape_interval"] == "15s"


def test_good_settings_pass() -> None:
    assert monitoring.settings_errors(GOOD) == []
    assert monitoring.log_errors({"ray_log_retention_days": 14, "ray_journal_max_use": "256M"}) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ray_monitoring": "yes"}, 'ray_monitoring must be true or false, got "yes"'),
        ({"ray_monitoring_host": "h9"}, "ray_monitoring_host 'h9' is not a host of the inventory (h1, h2)"),
        ({"ray_monitoring_retention": "15 days"}, "ray_monitoring_retention must be a Prometheus duration"),
        ({"ray_monitoring_scrape_interval": 15}, "ray_monitoring_scrape_interval must be a Prometheus duration"),
    ],
)
def test_each_bad_setting_is_named(change: dict[str, Any], message: str) -> None:
    errors = monitoring.settings_errors({**GOOD, **change})
    assert any(message in error for error in errors), errors


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ray_log_retention_days": 0}, "ray_log_retention_days must be a whole number of 1 or more, got 0"),
        ({"ray_log_retention_days": True}, "ray_log_retention_days must be a whole number"),
        ({"ray_journal_max_use": "lots"}, 'ray_journal_max_use must be a size like 256M or 1G, got "lots"'),
    ],
)
def test_each_bad_log_setting_is_named(change: dict[str, Any], message: str) -> None:
    errors = monitoring.log_errors({"ray_log_retention_days": 14, "ray_journal_max_use": "256M", **change})
    assert any(message in error for error in errors), errors


def series(value: float, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [0, str(value)]}


def target(health: str, **labels: str) -> dict[str, Any]:
    return {"labels": labels, "health": health, "lastError": "connection refused" if health == "down" else ""}


def answers(h2_ray: str = "up", store_used: float = 1e9, temp_free: float = 50e9) -> dict[str, list[dict[str, Any]]]:
    """Prometheus's answers for a head h1 and a worker h2."""
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in monitoring.QUERIES}
    found["targets"] = [
        target("up", job="ray", instance="10.0.0.1:8080", node="h1", role="head"),
        target("up", job="node", instance="10.0.0.1:9100", node="h1", role="head"),
        target(h2_ray, job="ray", instance="10.0.0.2:8080", node="h2", role="worker"),
        target("up", job="node", instance="10.0.0.2:9100", node="h2", role="worker"),
        target("unknown", job="prometheus", instance="10.0.0.1:9090"),
    ]
    found["cpu_percent"] = [series(50, node="h1"), series(100, node="h2")]
    found["cpu_total"] = [series(2, node="h1"), series(2, node="h2")]
    found["store_used"] = [series(store_used, node="h1")]
    found["store_available"] = [series(2e9 - store_used, node="h1")]
    found["temp_free"] = [
        series(1, node="h1", mountpoint="/boot", ray_temp_mount="/"),
        series(temp_free, node="h1", mountpoint="/", ray_temp_mount="/"),
    ]
    found["temp_size"] = [series(100e9, node="h1", mountpoint="/", ray_temp_mount="/")]
    return found


def test_a_row_per_node_with_cpu_store_and_the_temp_dirs_disk() -> None:
    rows = monitoring.rows(answers())
    assert [row["node"] for row in rows] == ["h1", "h2"]
    h1, h2 = rows
    assert (h1["cpu_used"], h1["cpu_total"], h2["cpu_used"]) == (1.0, 2, 2.0)
    assert (h1["store_used"], h1["store_total"]) == (1e9, 2e9)
    assert (h1["temp_free"], h1["temp_size"]) == (50e9, 100e9)  # its temp dir's mount, not /boot
    assert h2["store_total"] is None and h2["temp_free"] is None  # no series: shown as -
    assert h1["up"] and h2["up"]
    assert monitoring.table(rows)[1]["object store"] == "-"
    assert monitoring.table(rows)[0]["object store"] == "953.7 MiB / 1.9 GiB"


def test_doctor_names_a_target_down_a_full_store_and_a_full_disk() -> None:
    rows = monitoring.rows(answers(h2_ray="down", store_used=1.9e9, temp_free=5e9))
    found = monitoring.findings(rows, prometheus_ok=False, head="h1")
    problems = [(f.host, f.problem) for f in found]
    assert ("h2", "Prometheus cannot scrape its ray 10.0.0.2:8080 target") in problems
    assert next(f.details for f in found if f.host == "h2") == "connection refused"
    assert any(host == "h1" and "object store is 95% full" in p for host, p in problems), problems
    assert any(host == "h1" and "temp dir has 5% free" in p for host, p in problems), problems
    assert any(host == "h1" and "Prometheus health check fails" in p for host, p in problems), problems
    assert monitoring.findings(monitoring.rows(answers()), prometheus_ok=True, head="h1") == []
    # A target not scraped yet is waiting, not down.
    waiting = monitoring.rows(answers(h2_ray="unknown"))
    assert monitoring.findings(waiting, prometheus_ok=True, head="h1") == []
    assert monitoring.table(waiting)[1]["up"] == "waiting"
    # The dashboard not answering is doctor's other finding, not this one's.
    assert monitoring.findings(monitoring.rows(answers()), prometheus_ok=None, head="h1") == []


def test_a_query_prometheus_refuses_is_a_clear_error() -> None:
    def opener(url: str, timeout: float) -> io.BytesIO:
        assert "query=up" in url
        return io.BytesIO(json.dumps({"status": "error", "error": "bad query"}).encode())

    with pytest.raises(ClusterError, match="Prometheus refused 'up': bad query"):
        monitoring.query("http://p:9090", "up", opener)

    def down(url: str, timeout: float) -> io.BytesIO:
        raise ConnectionRefusedError("refused")

    with pytest.raises(ClusterError, match="Prometheus at http://p:9090 did not answer"):
        monitoring.query("http://p:9090", "up", down)


def session(temp: Path, name: str, days_old: float, spilled: bool = False) -> Path:
    path = temp / name
    (path / "logs").mkdir(parents=True)
    if spilled:
        (path / "ray_spilled_objects_abc").mkdir()
        (path / "ray_spilled_objects_abc/obj").write_text("x")
    when = time.time() - days_old * 86400
    for p in (path / "logs", path):
        os.utime(p, (when, when))
    return path


def test_the_timer_removes_old_sessions_and_dead_spills_never_the_live_one(tmp_path: Path) -> None:
    old = session(tmp_path, "session_2026-01-01_00-00-00_1", 30, spilled=True)
    recent = session(tmp_path, "session_2026-11-30_00-00-00_2", 1, spilled=True)
    live = session(tmp_path, "session_2026-11-01_00-00-00_3", 40, spilled=True)  # a long-running node
    (tmp_path / "session_latest").symlink_to(live)
    # Links are never followed: an old folder elsewhere, and a session whose logs are a link.
    outside = session(tmp_path / "elsewhere", "session_x", 30, spilled=True)
    (tmp_path / "session_planted").symlink_to(outside)
    linked = session(tmp_path, "session_2026-11-29_00-00-00_4", 1)
    (linked / "logs").rmdir()
    (linked / "logs").symlink_to(outside / "logs")
    os.utime(linked, (time.time() - 86400, time.time() - 86400))
    removed = prune.prune(str(tmp_path), 14)
    assert removed == {
        "sessions": [old.name],
        "spilled": [f"{recent.name}/ray_spilled_objects_abc"],
        "errors": [],
    }
    assert not old.exists() and recent.exists() and linked.exists()
    assert (outside / "ray_spilled_objects_abc/obj").exists()
    assert (live / "ray_spilled_objects_abc/obj").exists()


state = plugins.load("ray_monitoring/files/monitoring_state.py")


def test_the_temp_dirs_mount_point_is_found_before_ray_made_the_folder(tmp_path: Path) -> None:
    expected = state.mount_point(str(tmp_path))
    assert state.mount_point(str(tmp_path / "not" / "yet")) == expected
    assert state.mount_point("/") == "/"
    assert os.path.ismount(expected)


def test_preflight_counts_a_half_installed_package_as_lacking() -> None:
    output = "prometheus half-configured\nprometheus-node-exporter installed\n---\nprometheus\nlibjs-d3\n"
    found = monitoring.packages_found(output, ["prometheus-node-exporter", "prometheus"])
    assert found == {"lacking": ["prometheus"], "marked": ["prometheus", "libjs-d3"]}
    assert monitoring.packages_found("---", ["prometheus-node-exporter"]) == {
        "lacking": ["prometheus-node-exporter"],
        "marked": [],
    }


def test_a_host_that_did_not_run_keeps_its_cached_mount_point() -> None:
    hosts = [
        {
            "inventory_hostname": "h2",
            "ansible_host": "10.0.0.2",
            "ansible_facts": {"_ray_monitoring_temp_mount": "/data"},
        }
    ]
    assert monitoring.nodes(hosts, "h1", PORTS)[0]["temp_mount"] == "/data"


def test_a_service_not_enabled_and_active_is_down() -> None:
    assert not monitoring.service_down({"enabled": "enabled", "active": "active", "stale": False})
    assert monitoring.service_down({"enabled": "masked", "active": "inactive", "stale": False})
    assert monitoring.service_down({"enabled": "enabled", "active": "failed", "stale": False})


def test_a_drained_nodes_ray_target_is_no_finding_but_its_node_exporter_is() -> None:
    rows = monitoring.rows(answers(h2_ray="down"))
    assert monitoring.findings(rows, prometheus_ok=True, head="h1", drained=["h2"]) == []
    found = answers()
    found["targets"][3] = target("down", job="node", instance="10.0.0.2:9100", node="h2", role="worker")
    problems = [f.problem for f in monitoring.findings(monitoring.rows(found), True, "h1", drained=["h2"])]
    assert problems == ["Prometheus cannot scrape its node 10.0.0.2:9100 target"]


class FakePrometheus:
    """Prometheus's answers over time: h2's Ray target down until a scrape after `back`."""

    def __init__(self, back: float) -> None:
        self.now, self.back = 1000.0, back

    def open(self, url: str, timeout: float) -> io.BytesIO:
        up = self.now >= self.back
        if "/api/v1/targets" in url:
            scraped = datetime.fromtimestamp(self.now - 0.5, tz=UTC).isoformat()
            listed = [{**t, "lastScrape": scraped} for t in answers(h2_ray="up" if up else "down")["targets"]]
            return io.BytesIO(json.dumps({"data": {"activeTargets": listed}}).encode())
        return io.BytesIO(json.dumps({"status": "success", "data": {"result": []}}).encode())

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_doctor_waits_for_a_fresh_scrape_before_it_calls_a_target_down() -> None:
    back = FakePrometheus(back=1000.2)  # a host that just came back: Prometheus still shows it down
    rows = monitoring.confirmed("http://p", back.open, clock=lambda: back.now, pause=back.sleep)
    assert all(row["up"] for row in rows)
    gone = FakePrometheus(back=10**9)  # still down: named once the deadline passes
    rows = monitoring.confirmed("http://p", gone.open, timeout=5, clock=lambda: gone.now, pause=gone.sleep)
    assert monitoring.down(rows[1]) == ["ray 10.0.0.2:8080"]
