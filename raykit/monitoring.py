"""Monitoring (roles/ray_monitoring): the Prometheus scrape targets the inventory makes, the
settings' checks, and `invoke metrics`: one row per node from Prometheus's HTTP API, and the
findings `invoke doctor` makes of them."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from raykit.cluster import ClusterError
from raykit.doctor import Finding

DURATION = re.compile(r"^([0-9]+[smhdwy])+$")
SIZE = re.compile(r"^[0-9]+[KMGT]?$")
# Doctor's limits.
STORE_FULL = 0.90
DISK_LOW = 0.10
QUERY_TIMEOUT_S = 10.0

ZERO = "0 * max by (node) (ray_node_cpu_count)"
# Instant queries; `node` is the inventory name the scrape config gives every target.
QUERIES = {
    "cpu_percent": "max by (node) (ray_node_cpu_utilization)",
    "cpu_total": "max by (node) (ray_node_cpu_count)",
    "cpu_ray": "sum by (node) (ray_component_cpu_percentage) / 100",
    "mem_used": "max by (node) (ray_node_mem_used)",
    "mem_total": "max by (node) (ray_node_mem_total)",
    "store_used": "sum by (node) (ray_object_store_used_memory)",
    "store_available": "sum by (node) (ray_object_store_available_memory)",
    # RUNNING, RUNNING_IN_RAY_GET, RUNNING_IN_RAY_WAIT, as Ray's own dashboards count them; 0 on
    # a node whose Ray reports but has no such task.
    "tasks_running": f'sum by (node) (ray_tasks{{State=~"RUNNING.*"}}) or {ZERO}',
    # Each worker's count of failed tasks only grows: an hour's growth, or a new worker's all.
    # Counted where the task's owner runs (usually the driver's node), as Ray records it.
    "tasks_failed_1h": (
        f'clamp_min(sum by (node) (max_over_time(ray_tasks{{State="FAILED"}}[1h]))'
        f' - sum by (node) (ray_tasks{{State="FAILED"}} offset 1h), 0)'
        f' or sum by (node) (max_over_time(ray_tasks{{State="FAILED"}}[1h])) or {ZERO}'
    ),
    "temp_free": 'node_filesystem_avail_bytes{job="node"}',
    "temp_size": 'node_filesystem_size_bytes{job="node"}',
}


def settings_errors(s: Mapping[str, Any]) -> list[str]:
    """Every problem with the monitoring settings (the head's values: they are cluster-wide),
    each naming its field. hosts: the inventory's hosts."""
    errors = []
    if not isinstance(s["ray_monitoring"], bool):
        errors.append(f"ray_monitoring must be true or false, got {json.dumps(s['ray_monitoring'])}")
    host = s["ray_monitoring_host"]
    if host and host not in s["hosts"]:
        errors.append(f"ray_monitoring_host {host!r} is not a host of the inventory ({', '.join(s['hosts'])})")
    for name in ("ray_monitoring_retention", "ray_monitoring_scrape_interval"):
        if not (isinstance(s[name], str) and DURATION.match(s[name])):
            errors.append(f"{name} must be a Prometheus duration like 15d or 30s, got {json.dumps(s[name])}")
    return errors


def packages_found(output: str, packages: list[str]) -> dict[str, list[str]]:
    """From preflight's read (dpkg-query's "PACKAGE STATUS" lines, "---", the kit's marker):
    which of packages are not fully installed, and which packages the kit installed here."""
    status, _, marker = output.partition("---")
    installed = {
        fields[0] for line in status.splitlines() if len(fields := line.split()) == 2 and fields[1] == "installed"
    }
    return {"lacking": [name for name in packages if name not in installed], "marked": marker.split()}


def service_down(state: Mapping[str, Any]) -> bool:
    """A unit (as files/monitoring_state.py reads it) that is not enabled and active."""
    return not (state.get("enabled") == "enabled" and state.get("active") == "active")


def log_errors(s: Mapping[str, Any]) -> list[str]:
    """Every problem with one host's log settings (roles/ray_logs), each naming its field."""
    errors = []
    days = s["ray_log_retention_days"]
    if not (isinstance(days, int) and not isinstance(days, bool) and days >= 1):
        errors.append(f"ray_log_retention_days must be a whole number of 1 or more, got {json.dumps(days)}")
    if not (isinstance(s["ray_journal_max_use"], str) and SIZE.match(s["ray_journal_max_use"])):
        errors.append(f"ray_journal_max_use must be a size like 256M or 1G, got {json.dumps(s['ray_journal_max_use'])}")
    return errors


# Each node's ports Prometheus scrapes (the head's two only on the head).
PORTS = (
    "ray_metrics_export_port",
    "ray_node_exporter_port",
    "ray_dashboard_metrics_port",
    "ray_autoscaler_metrics_port",
)


def nodes(hosts: Iterable[Mapping[str, Any]], head: str, ports: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each inventory host (its hostvars) as a scrape target: name, address (from its facts, else
    the inventory's), role, its own ports (the inventory's, else ports: the defaults), and the
    mount point of its Ray temp dir (deploy reads it and caches it; / until then)."""
    return [
        {
            "name": h["inventory_hostname"],
            "address": str(
                h.get("_ray_node_address") or h.get("ray_node_ip") or h.get("ansible_host") or h["inventory_hostname"]
            ),
            "role": "head" if h["inventory_hostname"] == head else "worker",
            "ports": {name: int(h.get(name) or ports[name]) for name in PORTS},
            # This run's, else the fact cache's (a host that did not run this time).
            "temp_mount": str(
                h.get("_ray_monitoring_temp_mount")
                or (h.get("ansible_facts") or {}).get("_ray_monitoring_temp_mount")
                or "/"
            ),
        }
        for h in hosts
    ]


def scrape_config(nodes: Iterable[Mapping[str, Any]], prometheus: str, interval: str) -> dict[str, Any]:
    """prometheus.yml from the inventory's nodes (see nodes); prometheus: its own host:port. The
    node exporter's targets carry the temp dir's mount point, so `invoke metrics` picks that
    file system's free space."""
    listed = list(nodes)

    def target(node: Mapping[str, Any], port: str, **extra: str) -> dict[str, Any]:
        labels = {"node": node["name"], "role": node["role"], **extra}
        return {"targets": [f"{node['address']}:{node['ports'][port]}"], "labels": labels}

    head = [n for n in listed if n["role"] == "head"]
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {"job_name": "ray", "static_configs": [target(n, "ray_metrics_export_port") for n in listed]},
            {
                "job_name": "ray_head",
                "static_configs": [
                    target(n, port)
                    for n in head
                    for port in ("ray_dashboard_metrics_port", "ray_autoscaler_metrics_port")
                ],
            },
            {
                "job_name": "node",
                "static_configs": [target(n, "ray_node_exporter_port", ray_temp_mount=n["temp_mount"]) for n in listed],
            },
            {"job_name": "prometheus", "static_configs": [{"targets": [prometheus]}]},
        ],
    }


def query(url: str, expr: str, opener: Callable[..., Any] = urllib.request.urlopen) -> list[dict[str, Any]]:
    """One instant query's vector: [{metric: labels, value: [time, text]}]."""
    full = f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        with opener(full, timeout=QUERY_TIMEOUT_S) as response:
            body = json.loads(response.read())
    except (OSError, ValueError) as exc:
        raise ClusterError(f"Prometheus at {url} did not answer {expr!r}: {exc}") from None
    if body.get("status") != "success":
        raise ClusterError(f"Prometheus refused {expr!r}: {body.get('error', body)}")
    return list(body["data"]["result"])


def targets(url: str, opener: Callable[..., Any] = urllib.request.urlopen) -> list[dict[str, Any]]:
    """Every target the scrape config lists, scraped yet or not: labels, health, lastError."""
    try:
        with opener(f"{url}/api/v1/targets?state=active", timeout=QUERY_TIMEOUT_S) as response:
            return list(json.loads(response.read())["data"]["activeTargets"])
    except (OSError, ValueError, KeyError) as exc:
        raise ClusterError(f"Prometheus at {url} did not list its targets: {exc}") from None


def collect(url: str, opener: Callable[..., Any] = urllib.request.urlopen) -> dict[str, list[dict[str, Any]]]:
    return {"targets": targets(url, opener), **{name: query(url, expr, opener) for name, expr in QUERIES.items()}}


def _value(series: Mapping[str, Any]) -> float:
    return float(series["value"][1])


def rows(results: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per node Prometheus scrapes (from its targets, so a node that is down still has
    its row), by name. targets: each target's health (up, down, or unknown until its first
    scrape), and why the last scrape failed. None: no such series."""
    found: dict[str, dict[str, Any]] = {}
    for target in results["targets"]:
        labels = target["labels"]
        node = labels.get("node")
        if not node:  # Prometheus's own
            continue
        row = found.setdefault(node, {"node": node, "role": labels.get("role", ""), "targets": {}, "errors": {}})
        name = f"{labels['job']} {labels['instance']}"
        row["targets"][name] = target["health"]
        if target.get("lastError"):
            row["errors"][name] = target["lastError"]
    by_node = {
        name: {s["metric"].get("node"): _value(s) for s in results[name]}
        for name in QUERIES
        if name not in ("temp_free", "temp_size")
    }
    for node, row in sorted(found.items()):
        row["up"] = all(health == "up" for health in row["targets"].values())
        for name, values in by_node.items():
            row[name] = values.get(node)
        percent, total = row.pop("cpu_percent"), row["cpu_total"]
        row["cpu_used"] = None if percent is None or total is None else round(percent / 100 * total, 2)
        used, available = row["store_used"], row.pop("store_available")
        row["store_total"] = None if used is None or available is None else used + available
        row["temp_free"], row["temp_size"] = _temp_disk(results, node)
    return [found[node] for node in sorted(found)]


def _temp_disk(results: Mapping[str, list[dict[str, Any]]], node: str) -> tuple[float | None, float | None]:
    """The free and whole size of the file system that holds the node's Ray temp dir."""

    def pick(name: str) -> float | None:
        for series in results[name]:
            labels = series["metric"]
            if labels.get("node") == node and labels.get("mountpoint") == labels.get("ray_temp_mount"):
                return _value(series)
        return None

    return pick("temp_free"), pick("temp_size")


def _size(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) < 1024:
        return f"{value:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if abs(value) < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def _pair(used: float | None, total: float | None, size: bool = True) -> str:
    if used is None and total is None:
        return "-"
    show = _size if size else (lambda v: "-" if v is None else f"{v:g}")
    return f"{show(used)} / {show(total)}"


def table(found: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The rows as `invoke metrics` prints them."""
    return [
        {
            "node": row["node"],
            "up": "up" if row["up"] else ("DOWN" if down(row) else "waiting"),
            "cpu used/total": _pair(row["cpu_used"], row["cpu_total"], size=False),
            "ray cpu": "-" if row["cpu_ray"] is None else f"{row['cpu_ray']:.2f}",
            "memory": _pair(row["mem_used"], row["mem_total"]),
            "object store": _pair(row["store_used"], row["store_total"]),
            "tasks running": "-" if row["tasks_running"] is None else f"{row['tasks_running']:.0f}",
            "failed 1h": "-" if row["tasks_failed_1h"] is None else f"{row['tasks_failed_1h']:.0f}",
            "temp dir free": _pair(row["temp_free"], row["temp_size"]),
        }
        for row in found
    ]


def down(row: Mapping[str, Any]) -> list[str]:
    """The node's targets whose last scrape failed (not those not scraped yet)."""
    return [name for name, health in row["targets"].items() if health == "down"]


def confirmed(
    url: str,
    opener: Callable[..., Any] = urllib.request.urlopen,
    timeout: float = 45.0,
    clock: Callable[[], float] = time.time,
    pause: Callable[[float], None] = time.sleep,
) -> list[dict[str, Any]]:
    """The rows, with every target that is down scraped again since this call began (a host
    that just came back is up on its next scrape): Prometheus's health is its last scrape's."""
    started = clock()
    found = rows(collect(url, opener))
    deadline = started + timeout
    while any(down(row) for row in found) and clock() < deadline:
        scraped = {
            f"{t['labels'].get('job')} {t['labels'].get('instance')}": _scraped_at(t) for t in targets(url, opener)
        }
        waiting = [name for row in found for name in down(row) if scraped.get(name, 0.0) < started]
        if not waiting:
            return rows(collect(url, opener))
        pause(1.0)
    return found


def _scraped_at(target: Mapping[str, Any]) -> float:
    """When Prometheus last scraped the target (its RFC 3339 time), 0 if never."""
    when = str(target.get("lastScrape") or "")
    try:
        return datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def findings(
    found: list[dict[str, Any]], prometheus_ok: bool | None, head: str, drained: Iterable[str] = ()
) -> list[Finding]:
    """What `invoke doctor` names: a target Prometheus cannot scrape, an object store over 90 %,
    a temp dir's disk under 10 % free, and the dashboard's Prometheus health failing
    (prometheus_ok: what the dashboard said; None: it did not answer, said elsewhere).
    drained: nodes `invoke drain` stopped, whose Ray has no metrics to scrape."""
    out = []
    left_out = set(drained)
    for row in found:
        node = row["node"]
        for target in down(row):
            if node in left_out and target.startswith("ray "):
                continue
            out.append(
                Finding(
                    node,
                    f"Prometheus cannot scrape its {target} target",
                    f"`invoke status`; `invoke logs {node}`; for the node target, "
                    "`systemctl status prometheus-node-exporter` there; `invoke deploy`",
                    row["errors"].get(target, ""),
                )
            )
        used, total = row["store_used"], row["store_total"]
        if used is not None and total and used / total > STORE_FULL:
            out.append(
                Finding(
                    node,
                    f"its object store is {used / total:.0%} full ({_size(used)} of {_size(total)}): "
                    "new objects spill to disk",
                    "free objects the jobs still hold (ray.internal.free, fewer live ObjectRefs), or "
                    "set ray_object_store_memory higher",
                )
            )
        free, size = row["temp_free"], row["temp_size"]
        if free is not None and size and free / size < DISK_LOW:
            out.append(
                Finding(
                    node,
                    f"the disk of Ray's temp dir has {free / size:.0%} free ({_size(free)} of {_size(size)})",
                    "lower ray_log_retention_days and `invoke deploy`, or free the disk; "
                    "`invoke status` shows the temp dir's size",
                )
            )
    if prometheus_ok is False:
        out.append(
            Finding(
                head,
                "Ray's dashboard says its Prometheus health check fails (its metrics views stay empty)",
                "`invoke deploy` (sets RAY_PROMETHEUS_HOST on the head); check Prometheus on the monitoring host",
            )
        )
    return out
