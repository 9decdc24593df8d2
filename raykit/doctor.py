"""`invoke doctor`: playbooks/doctor.yml's facts and Ray's own view, turned into findings
that name the host, say what is wrong in plain words, and how to fix it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raykit.cluster import alive_by_ip

# Beyond this, hosts' logs and Ray's timestamps stop lining up; NTP keeps clocks far closer.
CLOCK_SKEW_LIMIT_S = 2.0
YOUNG_S = 5


@dataclass(frozen=True)
class Finding:
    host: str
    problem: str
    fix: str
    details: str = ""


def token_digest(path: Path) -> str | None:
    """The same digest the hosts report for their copy; the token itself is never shown."""
    try:
        return hashlib.sha256(path.read_bytes().strip()).hexdigest()
    except FileNotFoundError:
        return None


def diagnose(
    state: dict[str, Any], nodes: list[dict[str, Any]], controller_token: str | None, auth_mode: str | None = "token"
) -> list[Finding]:
    """Every finding, host by host in inventory order; empty when the cluster is healthy.
    auth_mode is what the head's dashboard says it enforces (None: it did not answer)."""
    alive = alive_by_ip(nodes)
    findings = []
    for host in state["inventory"]:
        info = state["hosts"].get(host)
        if info is None:
            findings.append(
                Finding(
                    host,
                    "did not answer over SSH, or its checks failed",
                    f"check that {host} is powered on and `ssh` reaches it; "
                    "`invoke doctor --verbose` shows Ansible's error",
                )
            )
            continue
        findings += _host_findings(host, info, alive, controller_token)
    if auth_mode is not None and auth_mode != "token":
        findings.append(
            Finding(
                state["head"],
                f"Ray's dashboard says its authentication mode is {auth_mode!r}, not 'token': "
                "anyone who reaches the cluster can run code on it",
                "`invoke deploy` (the kit's settings turn token authentication on), then `invoke doctor`",
            )
        )
    if not nodes and state["head"] in state["hosts"]:
        findings.append(
            Finding(
                state["head"],
                f"Ray's dashboard at {state['dashboard_url']} does not answer (nodes unknown)",
                f"`invoke logs {state['head']}`; `invoke restart`",
            )
        )
    return findings


def _host_findings(
    host: str, info: dict[str, Any], alive: dict[str, Any], controller_token: str | None
) -> list[Finding]:
    found = []
    env, service, checks = info["environment"], info["service"], info.get("checks") or {}
    files = env.get("files", [])
    drift = [problem for problem in env["problems"] if problem not in files]
    if drift:
        found.append(
            Finding(host, "its Python or Ray differs from the pins: " + "; ".join(drift), "`invoke provision`")
        )
    if files:
        what = (
            "its Ray environment has no manifest: an earlier version of the kit (or a hand) made it, and nothing in it "
            "can be trusted"
            if files[0].startswith("no manifest")
            else f"{len(files)} file(s) of its Ray environment differ from what provision installed "
            "(code there may have been planted)"
        )
        found.append(
            Finding(
                host,
                what,
                "`invoke provision` (makes the environment anew, as root's, read-only to Ray)",
                "\n".join(files),
            )
        )
    if checks.get("start_up_hooks"):
        found.append(
            Finding(
                host,
                "start-up code in the ray user's home (a Ray job wrote it; the kit never runs it, a Python "
                "started there as ray would)",
                "remove these files and find the job that wrote them",
                "\n".join(checks["start_up_hooks"]),
            )
        )
    for path in checks.get("settings_edited", []):
        found.append(
            Finding(
                host,
                f"{path} differs from what deploy writes (edited by hand?)",
                "`invoke deploy` (writes it back and restarts that node)",
            )
        )
    if checks.get("firewall"):
        found.append(
            Finding(
                host,
                "its firewall differs from the inventory: " + "; ".join(checks["firewall"]),
                "`invoke deploy` (loads the inventory's rules; Ray is not restarted)",
            )
        )
    # A crashing node is mostly waiting to be restarted; caught just after a start it is young,
    # and just after a crash, deactivating (systemd ends what its Ray left) with restarts counted.
    failing = service["active"] in ("activating", "failed") or (
        service["restarts"] > 0
        and (service["active"] == "deactivating" or (service["active"] == "active" and service["uptime_s"] < YOUNG_S))
    )
    if failing:
        found.append(
            Finding(
                host,
                f"Ray's unit keeps failing ({service['active']}, restarted {service['restarts']} times)",
                f"find the cause in its journal (below, or `invoke logs {host}`), then `invoke deploy`",
                checks.get("journal", ""),
            )
        )
    elif service.get("drained"):
        pass  # taken out on purpose (`invoke drain`): status and deploy name it
    elif service["active"] != "active":
        found.append(Finding(host, f"Ray is {service['active']}", f"`invoke start --hosts {host}`"))
    elif info["ip"] not in alive and alive:
        found.append(
            Finding(
                host,
                f"Ray runs but its node ({info['ip']}) is not in the cluster",
                f"`invoke restart --hosts {host}`; if it stays out, `invoke logs {host}`",
                checks.get("journal", ""),
            )
        )
    for port in checks.get("ports", []):
        if port["error"]:
            found.append(
                Finding(
                    host,
                    f"cannot reach {port['name']} at {port['address']}: {port['error']}",
                    "open that TCP port between the nodes (firewall, security group)",
                )
            )
    if service.get("installed") and checks.get("token_sha256") != controller_token:
        found.append(
            Finding(
                host,
                "its cluster token differs from the controller's"
                if checks.get("token_sha256")
                else "it has no cluster token",
                "`invoke deploy` (installs the controller's token and restarts that node)",
            )
        )
    node = alive.get(info["ip"])
    store = (node or {}).get("resources_total", {}).get("object_store_memory")
    if store and checks.get("shm_bytes") is not None and store > checks["shm_bytes"]:
        found.append(
            Finding(
                host,
                f"its object store ({_gb(store)}) is larger than /dev/shm ({_gb(checks['shm_bytes'])}): "
                "Ray spills to disk, slowly",
                "enlarge /dev/shm (tmpfs size) and `invoke restart`, "
                "or set ray_object_store_memory and `invoke deploy`",
            )
        )
    if checks.get("time") is not None:
        # The host read its clock between the controller's two readings; outside them, it is off.
        skew = max(checks["time"] - checks["controller_after"], 0) or min(
            checks["time"] - checks["controller_before"], 0
        )
        if abs(skew) > CLOCK_SKEW_LIMIT_S:
            found.append(
                Finding(
                    host,
                    f"its clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the controller's",
                    "run time synchronisation on every host (systemd-timesyncd or chrony)",
                )
            )
    return found


def _gb(value: float) -> str:
    return f"{value / 1e9:.1f} GB"


def render(findings: list[Finding], hosts: int) -> str:
    if not findings:
        return f"doctor: all {hosts} hosts healthy"
    lines = []
    for f in findings:
        lines.append(f"{f.host}: {f.problem}")
        lines.append(f"  fix: {f.fix}")
        lines += [f"  | {line}" for line in f.details.strip().splitlines()]
    lines.append(f"doctor: {len(findings)} problem(s) on {len({f.host for f in findings})} of {hosts} hosts")
    return "\n".join(lines)
