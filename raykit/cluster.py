"""The deployed cluster as invoke shows it: playbooks/status.yml's facts plus Ray's own view."""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Set
from contextlib import nullcontext
from pathlib import Path
from typing import Any

GIB = 1024**3


class ClusterError(Exception):
    """The cluster cannot be reached or read; shown as one line."""


def read_token(state: dict[str, Any]) -> str:
    path = Path(state["token_file"])
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise ClusterError(f"no cluster token at {path}; run `invoke deploy`") from None


def ray_api(state: dict[str, Any], path: str, method: str = "GET", timeout: float = 30) -> Any:
    """Call a dashboard API path with the cluster token; the token is never shown."""
    request = urllib.request.Request(
        state["dashboard_url"] + path, method=method, headers={"Authorization": f"Bearer {read_token(state)}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            return json.loads(body) if body else {}
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise ClusterError(f"the dashboard at {state['dashboard_url']} did not answer: {exc}") from None


NODES_PATH = "/api/v0/nodes?limit=10000&detail=true"


def ray_nodes(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Ray's nodes (State API), alive or dead; empty when the head is down."""
    try:
        return ray_api(state, NODES_PATH)["data"]["result"]["result"]
    except ClusterError:
        return []


AUTH_MODE_PATH = "/api/authentication_mode"


def auth_mode(state: dict[str, Any]) -> str | None:
    """The authentication mode the dashboard says it enforces ("token"); None when it is down."""
    try:
        return str(ray_api(state, AUTH_MODE_PATH).get("authentication_mode"))
    except ClusterError:
        return None


PROMETHEUS_HEALTH_PATH = "/api/prometheus_health"


def prometheus_health(state: dict[str, Any], timeout: float = 30) -> bool | None:
    """Whether the dashboard says it reaches its Prometheus (RAY_PROMETHEUS_HOST); None when the
    dashboard does not answer, or refuses (a token problem is doctor's other finding)."""
    request = urllib.request.Request(
        state["dashboard_url"] + PROMETHEUS_HEALTH_PATH, headers={"Authorization": f"Bearer {read_token(state)}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except urllib.error.HTTPError as exc:
        return False if exc.code >= 500 else None
    except (urllib.error.URLError, TimeoutError, ConnectionError):
        return None


def alive_by_ip(nodes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """node IP -> Ray's entry for the alive node on it."""
    return {n["node_ip"]: n for n in nodes if n.get("state") == "ALIVE"}


def alive_nodes(state: dict[str, Any]) -> dict[str, str]:
    """node id -> IP of the nodes Ray has alive."""
    return {n["node_id"]: n["node_ip"] for n in ray_nodes(state) if n.get("state") == "ALIVE"}


def poll_alive(
    state: dict[str, Any], done: Callable[[list[dict[str, Any]]], bool], timeout: float
) -> tuple[bool, list[dict[str, Any]], str]:
    """Poll Ray's alive nodes every 0.5 s, with a deadline (each request bounded by it too),
    until `done(alive)`; returns whether it was, the alive nodes last seen, and the last
    error reaching Ray."""
    deadline = time.monotonic() + timeout
    while True:
        error = ""
        try:
            left = max(1.0, min(5.0, deadline - time.monotonic()))
            nodes = ray_api(state, NODES_PATH, timeout=left)["data"]["result"]["result"]
        except ClusterError as exc:
            nodes, error = [], str(exc)
        alive = [n for n in nodes if n.get("state") == "ALIVE"]
        if done(alive) or time.monotonic() > deadline:
            return done(alive), alive, error
        time.sleep(0.5)


def wait_for_cluster(state: dict[str, Any], ips: set[str], gone: Set[str] = frozenset(), timeout: float = 120) -> float:
    """Seconds until Ray has exactly one alive node per IP in `ips` and none of the node ids
    in `gone` (nodes that were lost and must come back as new ones)."""
    start = time.monotonic()

    def whole(alive: list[dict[str, Any]]) -> bool:
        return sorted(n["node_ip"] for n in alive) == sorted(ips) and not gone & {n["node_id"] for n in alive}

    ok, alive, error = poll_alive(state, whole, timeout)
    if not ok:
        stale = sorted(n["node_ip"] for n in alive if n["node_id"] in gone)
        raise ClusterError(
            f"after {timeout:.0f} s Ray has alive: {sorted(n['node_ip'] for n in alive)}, want one node on each of "
            f"{sorted(ips)}" + (f"; still the old node on {stale}" if stale else "") + (f" ({error})" if error else "")
        )
    return time.monotonic() - start


def member(ip: str, cpus: float) -> str:
    """A node as deploy's join check names it: "IP=CPUS"."""
    return f"{ip}={int(cpus)}"


def members(alive: list[dict[str, Any]]) -> list[str]:
    """Alive nodes as the join check names them, sorted."""
    return sorted(member(n["node_ip"], n.get("resources_total", {}).get("CPU", 0)) for n in alive)


# On the head: when its unit started, and the GCS's registrations of nodes (both its clock).
RAY_START_PROBE = (
    "systemctl show ray --property=ExecMainStartTimestamp --value --timestamp=us+utc;"
    " grep 'Registering new node' {temp_dir}/session_latest/logs/gcs_server.out"
)


def ray_start_seconds(probe_output: str) -> float:
    """Seconds from the head's unit start to the last node registering with its GCS: Ray's
    own part of a deploy, read from RAY_START_PROBE's output."""
    first, *registrations = probe_output.strip().splitlines()
    started = datetime.datetime.strptime(first.split(" ", 1)[1], "%Y-%m-%d %H:%M:%S.%f UTC")
    last = max(datetime.datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f") for line in registrations)
    return (last - started).total_seconds()


def status_rows(state: dict[str, Any], nodes: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One row per inventory host: its unit, its environment, and Ray's view of its node."""
    alive = alive_by_ip(nodes)
    rows = []
    for host, info in state["hosts"].items():
        node = alive.get(info["ip"])
        res = node["resources_total"] if node else {}
        service, env = info["service"], info["environment"]
        rows.append(
            {
                "host": host,
                "role": info["role"],
                "ip": info["ip"],
                "in_ray": "alive" if node else ("drained" if service.get("drained") else "MISSING"),
                "unit": f"{service['active']}/{service['enabled']}",
                "uptime": _duration(service["uptime_s"]) if service["active"] == "active" else "-",
                "cpus": _num(res.get("CPU")),
                "gpus": _num(res.get("GPU")),
                "memory": _gib(res.get("memory")),
                "object_store": _gib(res.get("object_store_memory")),
                "ray": env["ray"],
                "python": env["python"],
                "temp_dir": _mib(info.get("temp_dir_bytes")),
            }
        )
    return rows


def port_rows(state: dict[str, Any]) -> list[dict[str, str]]:
    """One row per pinned port and the hosts that listen on it ("all" for every host), the
    head's first, the workers' range last: what a firewall must let the nodes reach."""
    pinned: dict[tuple[str, str], list[str]] = {}
    ranges: dict[tuple[str, str], list[str]] = {}
    for host, info in state["hosts"].items():
        for name, port in info["ports"].items():
            pinned.setdefault((name, str(port)), []).append(host)
        low, high = info["worker_ports"]
        ranges.setdefault(("ray_min_worker_port-ray_max_worker_port", f"{low}-{high}"), []).append(host)
    every = len(state["hosts"])
    return [
        {"port": port, "variable": name, "hosts": "all" if len(names) == every else ", ".join(names)}
        for (name, port), names in (pinned | ranges).items()
    ]


def version_rows(state: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {
            "host": host,
            "python": info["environment"]["python"],
            # The distro's interpreter, or the kit's build for the hosts' release (raykit.pybuild).
            "provider": info["environment"].get("provider", "missing"),
            "interpreter": info["environment"].get("interpreter", ""),
            "ray": info["environment"]["ray"],
            "packages": str(info["environment"]["packages"]),
            "digest": info["environment"]["digest"][:12],
            "status": "; ".join(info["environment"]["problems"] + _runs_elsewhere(info["environment"])) or "ok",
        }
        for host, info in state["hosts"].items()
    ]


def _runs_elsewhere(environment: dict[str, Any]) -> list[str]:
    """The node runs another environment than the pins' (rolled back, or provisioned but not
    deployed yet): what it runs, and the fix."""
    runs = environment.get("runs", "")
    if not runs:
        return []
    return [f"runs {runs.rsplit('/', 1)[-1]}, not the pins' environment: `invoke deploy` switches to it"]


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value / GIB:.1f}G"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}M"


def _duration(seconds: int) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def by_inventory(alive: list[dict[str, Any]], expected: list[str]) -> tuple[list[str], list[str]]:
    """Alive nodes (as IP=CPUS) on the addresses of the expected "IP=CPUS", and the others: hosts
    left running after they left the inventory, which the join check neither waits for nor counts."""
    ips = {member.split("=", 1)[0] for member in expected}
    return members([n for n in alive if n["node_ip"] in ips]), members([n for n in alive if n["node_ip"] not in ips])


JOBS_PATH = "/api/jobs/"


def running_jobs(jobs: list[dict[str, Any]]) -> list[str]:
    """The Jobs API's jobs that have not ended, as "ID (ENTRYPOINT)": the submission id, or the driver's job id."""
    return [
        f"{job.get('submission_id') or job.get('job_id')} ({job.get('entrypoint', '')})"
        for job in jobs
        if job.get("status") in ("PENDING", "RUNNING")
    ]


def wait_for_jobs(state: dict[str, Any], timeout: float) -> list[str]:
    """Poll until no job runs, up to timeout (0: ask once); the jobs still running then."""
    deadline = time.monotonic() + timeout
    while True:
        running = running_jobs(ray_api(state, JOBS_PATH, timeout=10))
        if not running or time.monotonic() >= deadline:
            return running
        time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))


def call(endpoint: dict[str, Any], python: str, command: str, timeout: Any, args: list[str] | None = None) -> str:
    """The shell command line of deploy's pipe lookups: `python -m raykit.cluster COMMAND` against
    the endpoint deploy writes (raykit.endpoint), through its tunnel when it has one."""
    argv = [python, "-m", "raykit.cluster", command, "--dashboard-url", endpoint["dashboard_url"]]
    argv += ["--token-file", endpoint["token_file"], "--timeout", str(timeout)]
    argv += ["--tunnel", json.dumps(endpoint["ssh"])] if endpoint["ssh"] else []
    return shlex.join(argv + list(args or []))


def main(argv: list[str] | None = None) -> int:
    """deploy's calls to Ray, from the controller (roles/ray_node/tasks/join.yml, jobs.yml):
    `wait IP=CPUS...` until exactly these nodes are alive, and `jobs` that have not ended. Each
    prints what it saw last as JSON and exits 0 either way: the caller decides (an Ansible pipe
    lookup keeps no output of a failed command)."""
    parser = argparse.ArgumentParser(description="Ask Ray which nodes are alive, or which jobs run.")
    parser.add_argument("command", choices=["wait", "jobs"])
    parser.add_argument("--dashboard-url", required=True)
    parser.add_argument("--token-file", required=True, help="the cluster token (read, never shown)")
    parser.add_argument("--timeout", type=float, default=120, help="wait: for the nodes; jobs: for them to end")
    parser.add_argument(
        "--tunnel", metavar="SSH_ARGV_JSON", help="reach the dashboard through ssh (on the head's loopback)"
    )
    parser.add_argument("nodes", nargs="*", metavar="IP=CPUS")
    args = parser.parse_intermixed_args(argv)  # nodes after the options: "*" would match none first
    from raykit.endpoint import tunnel  # it imports this module

    reach = tunnel(json.loads(args.tunnel), args.dashboard_url) if args.tunnel else nullcontext(args.dashboard_url)
    if args.command == "jobs":
        try:
            with reach as url:
                running = wait_for_jobs({"dashboard_url": url, "token_file": args.token_file}, args.timeout)
            print(json.dumps({"running": running, "error": ""}))
        except Exception as exc:
            print(json.dumps({"running": [], "error": f"{type(exc).__name__}: {exc}"}))
        return 0
    expected = sorted(args.nodes)

    try:
        with reach as url:
            state = {"dashboard_url": url, "token_file": args.token_file}
            joined, alive, error = poll_alive(
                state, lambda nodes: by_inventory(nodes, expected)[0] == expected, args.timeout
            )
    except Exception as exc:
        joined, alive, error = False, [], f"the join check failed: {type(exc).__name__}: {exc}"
    missing = sorted((Counter(expected) - Counter(members(alive))).elements())
    report = {
        "joined": joined,
        "alive": members(alive),
        "missing": missing,
        "strangers": by_inventory(alive, expected)[1],
    }
    print(json.dumps({**report, "error": error}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
