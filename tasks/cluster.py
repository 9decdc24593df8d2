"""The cluster's life: lock, provision, deploy, status, doctor, stop/start/restart, logs, reset."""

from __future__ import annotations

import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

from invoke import Context, Exit, task

from raykit import cluster, monitoring
from raykit import doctor as doctorkit
from raykit import endpoint as endpointkit
from raykit.ssh import ssh_argv
from tasks.common import (
    INVENTORY_HELP,
    cluster_endpoint,
    cluster_state,
    dashboard_reached,
    host_vars,
    playbook,
    print_table,
    say,
    show,
    step,
    user_errors,
)


@task(help={"inventory": INVENTORY_HELP, "out": "folder for the lock files (default: locks/)"})
def lock(c: Context, inventory: str | None = None, out: str | None = None) -> None:
    """Resolve the pins (inventory/group_vars/all/ray.yml) into locks/cluster-ARCH.txt with hashes."""
    with step("lock"):
        playbook(c, "lock", inventory, *(["-e", f"raykit_lock_dir={Path(out).resolve()}"] if out else []))


@task(
    help={
        "inventory": INVENTORY_HELP,
        "check": "only report what would change",
        "deep": "hash every file of each environment against its manifest (not only sizes and times)",
    }
)
def provision(c: Context, inventory: str | None = None, check: bool = False, deep: bool = False) -> None:
    """Install the identical Python and Ray on every host, offline from the controller's wheelhouse."""
    with step("provision"):
        args = (["--check"] if check else []) + (["-e", "raykit_report_deep=true"] if deep else [])
        playbook(c, "provision", inventory, *args)


@task(
    help={
        "inventory": INVENTORY_HELP,
        "check": "only report what would change and which nodes would restart",
        "force": "restart the head even while jobs run (they end)",
        "wait": "seconds to wait for running jobs to end before restarting the head",
    }
)
def deploy(c: Context, inventory: str | None = None, check: bool = False, force: bool = False, wait: int = 0) -> None:
    """Start the head, then the workers, under systemd; wait until every node is alive in Ray.
    A head restart is refused while jobs run, unless --force or --wait lets them end."""
    with step("deploy"):
        playbook(c, "deploy", inventory, *_deploy_args(check, force, wait))


@task(
    help={
        "inventory": INVENTORY_HELP,
        "force": "restart the head even while jobs run (they end)",
        "wait": "seconds to wait for running jobs to end before restarting the head",
    }
)
def rollback(c: Context, inventory: str | None = None, force: bool = False, wait: int = 0) -> None:
    """Go back to the environment (Ray and Python) the cluster ran before deploy's last switch,
    with the inventory's settings; a second rollback goes forward again. Deploy runs the pins."""
    with step("rollback"):
        playbook(c, "deploy", inventory, "-e", "raykit_rollback=true", *_deploy_args(False, force, wait))


def _deploy_args(check: bool, force: bool, wait: int) -> list[str]:
    args = (["--check"] if check else []) + (["-e", "raykit_jobs_force=true"] if force else [])
    return args + (["-e", f"raykit_jobs_wait={int(wait)}"] if wait else [])


@task(help={"inventory": INVENTORY_HELP, "json": "print JSON instead of a table"})
def versions(c: Context, inventory: str | None = None, json_: bool = False) -> None:
    """Show each host's Python, Ray and package digest, and the controller's job client; flag drift."""
    import ray  # the controller's job client; imported here because it is slow to import

    state = cluster_state(c, inventory)
    rows = cluster.version_rows(state)
    cluster_ray = {row["ray"] for row in rows}
    rows.append(
        {
            "host": "controller (job client)",
            "python": platform.python_version(),
            "provider": "-",
            "interpreter": sys.executable,
            "ray": ray.__version__,
            "packages": "-",
            "digest": "-",
            "status": "ok" if cluster_ray == {ray.__version__} else "Ray differs from the cluster",
        }
    )
    show(rows, json_)
    if any(row["status"] != "ok" for row in rows):
        raise Exit(
            "error: the hosts are not identical to the pins (see status); `invoke provision`, then `invoke deploy`",
            code=1,
        )


@task(help={"inventory": INVENTORY_HELP, "json": "print JSON instead of a table"})
def status(c: Context, inventory: str | None = None, json_: bool = False) -> None:
    """Show every node: alive in Ray, unit state, uptime, resources, versions; the ports each
    listens on; and the dashboard URL."""
    with user_errors(), dashboard_reached(cluster_state(c, inventory)) as state:
        rows = cluster.status_rows(state, cluster.ray_nodes(state))
    ports = cluster.port_rows(state)
    if json_:
        print(json.dumps({"dashboard": state["endpoint"]["dashboard_url"], "nodes": rows, "ports": ports}, indent=2))
    else:
        print_table(rows)
        print()
        print_table(ports)
        print(f"dashboard: {state['endpoint']['dashboard_url']} (token: {state['token_file']})")
    if any(row["in_ray"] == "MISSING" for row in rows):
        raise Exit("error: not every node is alive in Ray; see `invoke logs HOST`", code=1)


@task(
    name="doctor",
    help={
        "inventory": INVENTORY_HELP,
        "verbose": "also show Ansible's output",
        "deep": "hash every file of each environment against its manifest (not only sizes and times)",
    },
)
def doctor(c: Context, inventory: str | None = None, verbose: bool = False, deep: bool = False) -> None:
    """Check every host and Ray's view of the cluster; name each problem, its host and the fix."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "doctor.json")
        extra = ["-e", f"raykit_report_file={out}"] + (["-e", "raykit_report_deep=true"] if deep else [])
        # Unreachable hosts fail the playbook; they are findings, not the end of the check.
        ran = playbook(c, "doctor", inventory, *extra, check=False, hide=None if verbose else "out")
        if not out.exists():
            print(ran.stdout[-4000:])
            raise Exit(
                f"error: doctor could not read the cluster (ansible-playbook exit {ran.exited}); see above", code=1
            )
        state = json.loads(out.read_text())
    prometheus_ok = None
    try:
        with dashboard_reached(state) as reached:
            nodes, mode = cluster.ray_nodes(reached), cluster.auth_mode(reached)
            if state["endpoint"].get("prometheus_url"):
                prometheus_ok = cluster.prometheus_health(reached)
    except cluster.ClusterError:  # the tunnel failed: the finding that Ray does not answer says so
        nodes, mode = [], None
    findings = doctorkit.diagnose(state, nodes, doctorkit.token_digest(Path(state["token_file"])), mode)
    findings += _monitoring_findings(state, prometheus_ok)
    print(doctorkit.render(findings, len(state["inventory"])))
    if findings:
        raise Exit(code=1)


def _monitoring_findings(state: dict, prometheus_ok: bool | None) -> list[doctorkit.Finding]:
    """What Prometheus shows (ray_monitoring): targets down, full object stores and temp disks."""
    ep = endpointkit.Endpoint(**state["endpoint"])
    if not ep.prometheus_url:
        return []
    try:
        with endpointkit.prometheus(ep) as url:
            found = monitoring.confirmed(url)
    except cluster.ClusterError as exc:
        fix = "`invoke deploy` (starts it); `systemctl status prometheus` on the monitoring host"
        return [doctorkit.Finding(ep.prometheus_ssh[-1], f"Prometheus does not answer: {exc}", fix)]
    drained = [host for host, info in state["hosts"].items() if (info.get("service") or {}).get("drained")]
    return monitoring.findings(found, prometheus_ok, state["head"], drained)


@task(
    help={
        "inventory": INVENTORY_HELP,
        "json": "print JSON instead of a table",
        "watch": "refresh the table in place (Ctrl-C stops)",
        "every": "seconds between refreshes with --watch",
    }
)
def metrics(c: Context, inventory: str | None = None, json_: bool = False, watch: bool = False, every: int = 5) -> None:
    """One row per node from Prometheus (ray_monitoring): CPU, memory, object store, tasks running
    and failed in the last hour, the temp dir's disk free, and up or down."""
    ep = cluster_endpoint(inventory)
    with user_errors(), endpointkit.prometheus(ep) as url:
        found = monitoring.rows(monitoring.collect(url))
        if json_:
            print(json.dumps(found, indent=2))
        elif not watch:
            print_table(monitoring.table(found))
        else:
            try:
                while True:
                    # Home and clear, then the table: it refreshes in place.
                    print(f"\033[H\033[2J{ep.prometheus_url} at {time.strftime('%H:%M:%S')} (Ctrl-C stops)")
                    print_table(monitoring.table(found))
                    time.sleep(every)
                    found = monitoring.rows(monitoring.collect(url))
            except KeyboardInterrupt:
                return
    if not found or not all(row["up"] for row in found):
        raise Exit("error: Prometheus cannot scrape every target; `invoke doctor` names them", code=1)


def service(c: Context, state: str, hosts: str | None, inventory: str | None) -> None:
    args = ["-e", f"ray_service_state={state}"]
    if hosts:
        args += ["-e", json.dumps({"ray_service_hosts": hosts.split(",")})]
    playbook(c, "service", inventory, *args)


HOSTS_HELP = "comma-separated hosts (default: all)"


@task(help={"hosts": HOSTS_HELP, "inventory": INVENTORY_HELP})
def stop(c: Context, hosts: str | None = None, inventory: str | None = None) -> None:
    """Stop Ray (workers first, then the head)."""
    with step("stop"):
        service(c, "stopped", hosts, inventory)


@task(help={"hosts": HOSTS_HELP, "inventory": INVENTORY_HELP})
def start(c: Context, hosts: str | None = None, inventory: str | None = None) -> None:
    """Start Ray (the head first, then the workers) and wait until every node is alive."""
    with step("start"):
        service(c, "started", hosts, inventory)


@task(
    help={
        "hosts": HOSTS_HELP + "; restarting the head restarts every worker",
        "rolling": "the workers only, a batch at a time: each drains, and rejoins before the next",
        "batch": "workers per batch with --rolling (default 1)",
        "inventory": INVENTORY_HELP,
    }
)
def restart(
    c: Context, hosts: str | None = None, rolling: bool = False, batch: int = 1, inventory: str | None = None
) -> None:
    """Restart Ray on some or all hosts, in order, and wait until every node is alive; or,
    --rolling, the workers a batch at a time while the cluster keeps working."""
    if rolling and hosts:
        raise Exit("error: --rolling restarts every worker, a batch at a time; leave out --hosts", code=2)
    if batch < 1:
        raise Exit(f"error: --batch must be 1 or more, got {batch}", code=2)
    with step("restart"):
        if rolling:
            playbook(
                c, "rolling", inventory, "-e", json.dumps({"raykit_batch": batch, "ray_service_state": "restarted"})
            )
        else:
            service(c, "restarted", hosts, inventory)


@task(
    help={
        "host": "inventory host name",
        "lines": "how many recent lines (default 50)",
        "follow": "keep printing new lines",
        "inventory": INVENTORY_HELP,
    }
)
def logs(c: Context, host: str, lines: int = 50, follow: bool = False, inventory: str | None = None) -> None:
    """Show a node's Ray journal (journalctl --namespace=+ray -u ray)."""
    remote = ["sudo", "journalctl", "--namespace=+ray", "--unit=ray", f"--lines={int(lines)}", "--no-pager"]
    remote += ["--follow"] if follow else []
    c.run(shlex.join(ssh_argv(host_vars(c, host, inventory), host, remote)), pty=follow)


@task(help={"inventory": INVENTORY_HELP})
def dashboard(c: Context, inventory: str | None = None) -> None:
    """How to reach the dashboard and the Jobs API: URL, token use, and an SSH tunnel."""
    ep = cluster_endpoint(inventory)
    url = ep.dashboard_url
    tunnel = shlex.join(
        endpointkit.tunnel_argv(ssh_argv(host_vars(c, ep.head, inventory), ep.head), 8265, *endpointkit.host_port(url))
    )
    if ep.access == "tunnel":
        print(f"dashboard and Jobs API: on the head's loopback ({url}), through SSH only:")
        print(f"  {tunnel}")
        url = "http://localhost:8265"
        print(f"  then open {url}")
    else:
        print(f"dashboard and Jobs API: {url}")
    print(f"token: in {ep.token_file} (mode 0600); the dashboard asks for it, API clients send it:")
    print(f'  curl -H "Authorization: Bearer $(cat {ep.token_file})" {url}/api/version')
    if ep.access == "direct":
        print(f"from elsewhere, through SSH: {tunnel}")
        print("  then open http://localhost:8265")
    print('Ray\'s own clients (ray job submit/list/logs): eval "$(invoke env)"')


@task(
    name="env",
    help={"shell": "bash (default), fish, or json", "inventory": INVENTORY_HELP},
)
def env(c: Context, shell: str = "bash", inventory: str | None = None) -> None:
    """Print what Ray's own clients need (RAY_ADDRESS, the token): eval "$(invoke env)"."""
    if shell not in ("bash", "fish", "json"):
        raise Exit(f"error: --shell must be bash, fish or json, got {shell!r}", code=2)
    ep = cluster_endpoint(inventory)
    if ep.access == "tunnel":
        # On the head's loopback: Ray's clients reach it through a tunnel on the same port here.
        host, port = endpointkit.host_port(ep.dashboard_url)
        tunnel = shlex.join(endpointkit.tunnel_argv(ep.ssh, port, host, port))
        print(f"# the dashboard is on the head's loopback: keep this open meanwhile: {tunnel}", file=sys.stderr)
    print(endpointkit.shell_env(ep, ep.dashboard_url, shell), end="" if shell != "json" else "\n")


@task(help={"host": "a worker of the inventory", "inventory": INVENTORY_HELP})
def drain(c: Context, host: str, inventory: str | None = None) -> None:
    """Take a worker out: Ray drains its node (its work moves to the others), its unit is
    stopped and disabled, and deploy, start and restart leave it so; it stays provisioned."""
    with step("drain"):
        playbook(c, "drain", inventory, "-e", _drain_vars(host, True))


@task(help={"host": "a drained worker", "inventory": INVENTORY_HELP})
def undrain(c: Context, host: str, inventory: str | None = None) -> None:
    """Bring a drained worker back: deploy starts its node again."""
    with step("undrain"):
        playbook(c, "drain", inventory, "-e", _drain_vars(host, False))
        # On the environment the others run: a rollback's stays, new pins wait for `deploy`.
        playbook(c, "deploy", inventory, "-e", "raykit_keep_env=true")


def _drain_vars(host: str, drain: bool) -> str:
    # The host as stop's target: service_check then refuses one where Ray is not deployed.
    return json.dumps(
        {"raykit_drain_host": host, "raykit_drain": drain, "ray_service_state": "stopped", "ray_service_hosts": [host]}
    )


@task(
    name="reboot",
    help={
        "rolling": "one host at a time (the only way: required)",
        "include_head": "reboot the head too, last (every running job ends)",
        "force": "with --include-head: reboot the head even while jobs run",
        "wait": "with --include-head: seconds to wait for running jobs to end first",
        "inventory": INVENTORY_HELP,
    },
)
def reboot_hosts(
    c: Context,
    rolling: bool = False,
    include_head: bool = False,
    force: bool = False,
    wait: int = 0,
    inventory: str | None = None,
) -> None:
    """Reboot the hosts one at a time (kernel updates): each worker's node drains, the host
    reboots, and every node is alive again before the next; the head last, with --include-head."""
    if not rolling:
        raise Exit("error: reboot goes one host at a time: run `invoke reboot --rolling`", code=2)
    if (force or wait) and not include_head:
        raise Exit("error: --force and --wait are for the head's running jobs: add --include-head", code=2)
    extra = {"raykit_include_head": include_head, "raykit_jobs_force": force, "raykit_jobs_wait": wait}
    with step("reboot"):
        playbook(c, "reboot", inventory, "-e", json.dumps({**extra, "ray_service_state": "restarted"}))


@task(help={"host": "a worker of the inventory", "yes": "really remove Ray from the host", "inventory": INVENTORY_HELP})
def remove(c: Context, host: str, yes: bool = False, inventory: str | None = None) -> None:
    """Take a worker out for good: drain it, then remove Ray from that host alone (reset)."""
    if not yes:
        raise Exit(f"error: remove drains {host} and removes Ray from it; run `invoke remove {host} --yes`", code=2)
    with step("remove"):
        playbook(c, "drain", inventory, "-e", _drain_vars(host, True))
        playbook(c, "reset", inventory, "--limit", host)
    say(
        f"{host} is out of the cluster and has no Ray left. Delete it from the inventory, then run "
        "`invoke deploy`: the other nodes' firewalls stop letting it in."
    )


@task(name="rotate", help={"inventory": INVENTORY_HELP})
def token_rotate(c: Context, inventory: str | None = None) -> None:
    """Make a new cluster token and restart every node with it (running jobs end)."""
    with step("token.rotate"):
        playbook(c, "rotate", inventory)
        # The head's dashboard now refuses the old token, so deploy could not ask it which jobs run.
        playbook(c, "deploy", inventory, "-e", "raykit_jobs_force=true", "-e", "raykit_keep_env=true")


@task(help={"yes": "really remove Ray from every host", "inventory": INVENTORY_HELP})
def reset(c: Context, yes: bool = False, inventory: str | None = None) -> None:
    """Stop Ray and remove units, environments, token and the ray user from every host."""
    if not yes:
        raise Exit("error: reset removes Ray from every host of the inventory; run `invoke reset --yes`", code=2)
    with step("reset"):
        playbook(c, "reset", inventory)
