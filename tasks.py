"""raykit: a supervised, secured Ray cluster on plain machines.

Run `invoke --list` for the tasks; defaults come from invoke.yaml.
"""

from __future__ import annotations

import configparser
import functools
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from invoke import Collection, Context, Exit, task

from raykit import cluster, jobs
from raykit import doctor as doctorkit
from raykit import lab as labkit
from raykit.inventory import lab_inventory, write_inventory
from raykit.ssh import ssh_argv

ROOT = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
# Every tool a task starts (ansible-playbook, ansible-lint, pytest) finds the venv's own
# tools first, as in an activated venv: ansible-lint warns and alters PATH otherwise.
if str(VENV_BIN) not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")])


def say(msg: str) -> None:
    print(f"raykit: {msg}", flush=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Errors the user can fix (lab, cluster, job): one line, exit status 2, no traceback."""
    try:
        yield
    except (labkit.LabError, cluster.ClusterError, jobs.JobsError) as exc:
        raise Exit(f"error: {exc}", code=2) from None


@contextmanager
def step(name: str) -> Iterator[None]:
    start = time.monotonic()
    say(f"{name} ...")
    yield
    say(f"{name} done in {time.monotonic() - start:.1f} s")


def lab_settings(c: Context, subnet: str | None = None, prefix: str | None = None) -> labkit.LabSettings:
    cfg = c.config.lab
    return labkit.LabSettings(
        state_dir=Path(cfg.state_dir),
        cache_dir=Path(cfg.cache_dir),
        bridge=cfg.bridge,
        subnet=subnet or cfg.subnet,
        prefix=prefix or cfg.prefix,
        admin_user=cfg.admin_user,
        suite=cfg.suite,
        mirror=cfg.mirror,
    )


def print_table(rows: list[dict[str, str]]) -> None:
    if not rows:
        return
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in rows[0]}
    print("  ".join(k.upper().ljust(w) for k, w in widths.items()))
    for row in rows:
        print("  ".join(str(row[k]).ljust(w) for k, w in widths.items()))


# --- lab ----------------------------------------------------------------------


@task(
    help={
        "hosts": "number of hosts, one head + workers (default: the lab's current count, else lab.hosts)",
        "subnet": "private IPv4 network for the lab bridge, /24 or larger (default: lab.subnet)",
        "prefix": "host name prefix; hosts are PREFIX-1 .. PREFIX-N (default: lab.prefix)",
    }
)
def up(c, hosts=None, subnet=None, prefix=None):
    """Create the local lab (or add hosts to it) and write inventory/lab.yml."""
    settings = lab_settings(c, subnet, prefix)
    with user_errors(), step("lab.up"):
        count = None if hosts is None else _as_int(hosts, "--hosts")
        state = labkit.up(settings, count, int(c.config.lab.hosts), say)
        path = ROOT / c.config.lab.inventory
        write_inventory(path, lab_inventory(settings, state.hosts))
    say(f"{len(state.hosts)} hosts up; inventory: {path.relative_to(ROOT)}")


def _as_int(value: str | int, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise labkit.LabError(f"{field} must be a whole number, got {value!r}") from None


@task
def down(c):
    """Remove the lab: containers, overlays, mounts, bridge, key and inventory/lab.yml."""
    with user_errors():
        labkit.down(lab_settings(c), say)
    (ROOT / c.config.lab.inventory).unlink(missing_ok=True)


@task(name="status", help={"json": "print JSON instead of a table"})
def lab_status(c, json_=False):
    """List the lab's hosts, addresses and state."""
    rows = labkit.status(lab_settings(c))
    if json_:
        print(json.dumps(rows, indent=2))
    elif rows:
        print_table(rows)
    else:
        say("there is no lab; run `invoke lab.up`")


@task(help={"host": "lab host name, e.g. raylab-2"})
def reboot(c, host):
    """Reboot one lab host cleanly (systemd inside boots again; its disk is kept)."""
    with user_errors(), step(f"lab.reboot {host}"):
        labkit.reboot(lab_settings(c), host, say)


@task(help={"host": "lab host name, e.g. raylab-2"})
def poweroff(c, host):
    """Cut one lab host's power (no clean shutdown; its disk is kept)."""
    with user_errors():
        labkit.poweroff(lab_settings(c), host)


@task(help={"host": "lab host name, e.g. raylab-2"})
def poweron(c, host):
    """Boot a powered-off lab host and wait for its sshd."""
    with user_errors(), step(f"lab.poweron {host}"):
        labkit.poweron(lab_settings(c), host)


@task(help={"host": "lab host name, e.g. raylab-2"})
def unplug(c, host):
    """Cut one lab host's network link; it keeps running, cut off from the others."""
    with user_errors():
        labkit.set_link(lab_settings(c), host, up=False)


@task(help={"host": "lab host name, e.g. raylab-2"})
def plug(c, host):
    """Restore one lab host's network link."""
    with user_errors():
        labkit.set_link(lab_settings(c), host, up=True)


@task(
    name="block",
    help={"source": "lab host whose packets are dropped", "target": "lab host they were going to", "port": "TCP port"},
)
def block_port(c, source, target, port):
    """Firewall one TCP port between two lab hosts (e.g. a worker and the head's GCS port)."""
    with user_errors():
        labkit.block(lab_settings(c), source, target, _as_int(port, "--port"))


@task(name="unblock")
def unblock_ports(c):
    """Remove every firewall rule lab.block added."""
    with user_errors():
        labkit.unblock()


# --- cluster ------------------------------------------------------------------


def playbook(c: Context, name: str, inventory: str | None, *args: str, check: bool = True, **kwargs):
    """Run one of playbooks/ from the repository root, so ansible.cfg applies."""
    cmd = [_venv_bin("ansible-playbook"), f"playbooks/{name}.yml"]
    if inventory:
        cmd += ["--inventory", inventory]
    cmd += list(args)
    with c.cd(str(ROOT)):
        result = c.run(" ".join(shlex.quote(a) for a in cmd), pty=False, warn=True, **kwargs)
    if check and result.failed:
        raise Exit(f"error: ansible-playbook playbooks/{name}.yml failed (exit {result.exited}); see above", code=1)
    return result


INVENTORY_HELP = "Ansible inventory (default: ansible.cfg's, the local lab)"


@task(help={"inventory": INVENTORY_HELP, "out": "folder for the lock files (default: locks/)"})
def lock(c, inventory=None, out=None):
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
def provision(c, inventory=None, check=False, deep=False):
    """Install the identical Python and Ray on every host, offline from the controller's wheelhouse."""
    with step("provision"):
        args = (["--check"] if check else []) + (["-e", "raykit_report_deep=true"] if deep else [])
        playbook(c, "provision", inventory, *args)


@task(help={"inventory": INVENTORY_HELP, "check": "only report what would change and which nodes would restart"})
def deploy(c, inventory=None, check=False):
    """Start the head, then the workers, under systemd; wait until every node is alive in Ray."""
    with step("deploy"):
        playbook(c, "deploy", inventory, *(["--check"] if check else []))


def cluster_state(c: Context, inventory: str | None) -> dict:
    """playbooks/status.yml's read-only facts: nodes, units, environments, dashboard, token file."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "status.json")
        playbook(c, "status", inventory, "-e", f"raykit_report_file={out}", hide="out")
        return json.loads(out.read_text())


def show(rows: list[dict[str, str]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows)


@task(help={"inventory": INVENTORY_HELP, "json": "print JSON instead of a table"})
def versions(c, inventory=None, json_=False):
    """Show each host's Python, Ray and package digest, and the controller's job client; flag drift."""
    import ray  # the controller's job client; imported here because it is slow to import

    state = cluster_state(c, inventory)
    rows = cluster.version_rows(state)
    cluster_ray = {row["ray"] for row in rows}
    rows.append(
        {
            "host": "controller (job client)",
            "python": platform.python_version(),
            "ray": ray.__version__,
            "packages": "-",
            "digest": "-",
            "status": "ok" if cluster_ray == {ray.__version__} else "Ray differs from the cluster",
        }
    )
    show(rows, json_)
    if any(row["status"] != "ok" for row in rows):
        raise Exit("error: the hosts are not identical to the pins (see status); run `invoke provision`", code=1)


@task(help={"inventory": INVENTORY_HELP, "json": "print JSON instead of a table"})
def status(c, inventory=None, json_=False):
    """Show every node: alive in Ray, unit state, uptime, resources, versions; and the dashboard URL."""
    state = cluster_state(c, inventory)
    rows = cluster.status_rows(state, cluster.ray_nodes(state))
    if json_:
        print(json.dumps({"dashboard": state["dashboard_url"], "nodes": rows}, indent=2))
    else:
        print_table(rows)
        print(f"dashboard: {state['dashboard_url']} (token: {state['token_file']})")
    if any(row["in_ray"] != "alive" for row in rows):
        raise Exit("error: not every node is alive in Ray; see `invoke logs HOST`", code=1)


@task(
    name="doctor",
    help={
        "inventory": INVENTORY_HELP,
        "verbose": "also show Ansible's output",
        "deep": "hash every file of each environment against its manifest (not only sizes and times)",
    },
)
def doctor(c, inventory=None, verbose=False, deep=False):
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
    findings = doctorkit.diagnose(
        state, cluster.ray_nodes(state), doctorkit.token_digest(Path(state["token_file"])), cluster.auth_mode(state)
    )
    print(doctorkit.render(findings, len(state["inventory"])))
    if findings:
        raise Exit(code=1)


def service(c: Context, state: str, hosts: str | None, inventory: str | None) -> None:
    args = ["-e", f"ray_service_state={state}"]
    if hosts:
        args += ["-e", json.dumps({"ray_service_hosts": hosts.split(",")})]
    playbook(c, "service", inventory, *args)


HOSTS_HELP = "comma-separated hosts (default: all)"


@task(help={"hosts": HOSTS_HELP, "inventory": INVENTORY_HELP})
def stop(c, hosts=None, inventory=None):
    """Stop Ray (workers first, then the head)."""
    with step("stop"):
        service(c, "stopped", hosts, inventory)


@task(help={"hosts": HOSTS_HELP, "inventory": INVENTORY_HELP})
def start(c, hosts=None, inventory=None):
    """Start Ray (the head first, then the workers) and wait until every node is alive."""
    with step("start"):
        service(c, "started", hosts, inventory)


@task(help={"hosts": HOSTS_HELP + "; restarting the head restarts every worker", "inventory": INVENTORY_HELP})
def restart(c, hosts=None, inventory=None):
    """Restart Ray on some or all hosts, in order, and wait until every node is alive."""
    with step("restart"):
        service(c, "restarted", hosts, inventory)


@task(
    help={
        "host": "inventory host name",
        "lines": "how many recent lines (default 50)",
        "follow": "keep printing new lines",
        "inventory": INVENTORY_HELP,
    }
)
def logs(c, host, lines=50, follow=False, inventory=None):
    """Show a node's Ray journal (journalctl -u ray)."""
    remote = ["sudo", "journalctl", "--unit=ray", f"--lines={int(lines)}", "--no-pager"]
    remote += ["--follow"] if follow else []
    c.run(shlex.join(ssh_argv(host_vars(c, host, inventory), host, remote)), pty=follow)


def host_vars(c: Context, host: str, inventory: str | None) -> dict:
    cmd = [_venv_bin("ansible-inventory"), "--host", host] + (["--inventory", inventory] if inventory else [])
    with c.cd(str(ROOT)):
        found = c.run(shlex.join(cmd), hide=True, warn=True)
    if found.failed:
        raise Exit(f"error: no host {host!r} in the inventory", code=2)
    return json.loads(found.stdout)


@task(help={"inventory": INVENTORY_HELP})
def dashboard(c, inventory=None):
    """How to reach the dashboard and the Jobs API: URL, token use, and an SSH tunnel."""
    state = cluster_state(c, inventory)
    url, token_file = state["dashboard_url"], state["token_file"]
    ssh = ssh_argv(host_vars(c, state["head"], inventory), state["head"], [])
    tunnel = [ssh[0], "-N", "-L", f"8265:{url.split('://', 1)[1]}", *ssh[1:]]
    print(f"dashboard and Jobs API: {url}")
    print(f"token: in {token_file} (mode 0600); the dashboard asks for it, API clients send it:")
    print(f'  curl -H "Authorization: Bearer $(cat {token_file})" {url}/api/version')
    print(f"from elsewhere, through SSH: {shlex.join(tunnel)}")
    print("  then open http://localhost:8265")


@task(name="rotate", help={"inventory": INVENTORY_HELP})
def token_rotate(c, inventory=None):
    """Make a new cluster token and restart every node with it (running jobs end)."""
    with step("token.rotate"):
        playbook(c, "rotate", inventory)
        playbook(c, "deploy", inventory)


@task(help={"yes": "really remove Ray from every host", "inventory": INVENTORY_HELP})
def reset(c, yes=False, inventory=None):
    """Stop Ray and remove units, environments, token and the ray user from every host."""
    if not yes:
        raise Exit("error: reset removes Ray from every host of the inventory; run `invoke reset --yes`", code=2)
    with step("reset"):
        playbook(c, "reset", inventory)


# --- programs on the cluster --------------------------------------------------------

EXAMPLES = ROOT / "examples"


def run_job(c: Context, state: dict, script: Path, args: list[str], follow: bool, env: dict | None = None):
    token = cluster.read_token(state)
    return jobs.run(state["dashboard_url"], token, script, args, follow=follow, out=sys.stdout, env=env)


@task(
    help={
        "path": "the driver program, e.g. examples/tasks.py; its folder is the job's working directory",
        "follow": "stream the job's logs (default; --no-follow waits and prints them at the end)",
        "inventory": INVENTORY_HELP,
    }
)
def run(c, path, follow=True, inventory=None):
    """Run a driver on the cluster through the Jobs API (args after --); exits with the job's outcome."""
    script = Path(path).resolve()
    if not script.is_file():
        raise Exit(f"error: no file {path}", code=2)
    state = cluster_state(c, inventory)
    with user_errors():
        result = run_job(c, state, script, shlex.split(c.remainder), follow)
    if not follow:
        print(result.logs, end="")
    say(f"job {result.job_id}: {result.status.value} in {result.duration_s:.1f} s {result.message}".rstrip())
    if not result.ok:
        raise Exit(f"error: {path} failed: {result.message or result.status.value}", code=1)


def serve_env(c: Context, state: dict) -> dict[str, str]:
    replicas = min(len(state["hosts"]), int(c.config.serve.max_replicas))
    return {"RAYKIT_SERVE_PORT": str(c.config.serve.port), "RAYKIT_SERVE_REPLICAS": str(replicas)}


@task(help={"inventory": INVENTORY_HELP})
def examples(c, inventory=None):
    """Run every example in examples/ on the cluster and print a summary table."""
    state = cluster_state(c, inventory)
    rows = []
    for script in sorted(EXAMPLES.glob("*.py")):
        if script.name == "serve_check.py":  # a helper of serve_app.py, run from outside
            continue
        say(f"example {script.name} ...")
        env = serve_env(c, state) if script.name == "serve_app.py" else None
        with user_errors():
            result = run_job(c, state, script, [], follow=False, env=env)
        if not result.ok:
            print(result.logs, end="")
        used = re.search(r"^hosts used: (\d+)", result.logs, re.MULTILINE)
        rows.append(
            {
                "example": script.name,
                "result": "passed" if result.ok else f"FAILED ({result.message or result.status.value})",
                "duration": f"{result.duration_s:.1f} s",
                "hosts_used": used.group(1) if used else "-",
            }
        )
    print_table(rows)
    failed = [r["example"] for r in rows if r["result"] != "passed"]
    if failed:
        raise Exit(f"error: {len(failed)} example(s) failed: {', '.join(failed)}", code=1)


@task(name="deploy", help={"inventory": INVENTORY_HELP})
def serve_deploy(c, inventory=None):
    """Deploy the Serve example (examples/serve_app.py) on the head's serve.port; it stays up."""
    state = cluster_state(c, inventory)
    with user_errors():
        result = run_job(c, state, EXAMPLES / "serve_app.py", [], follow=True, env=serve_env(c, state))
    if not result.ok:
        raise Exit(f"error: the Serve app failed to deploy: {result.message}", code=1)
    say(f"serving on http://{state['hosts'][state['head']]['ip']}:{c.config.serve.port}/")


@task(name="status", help={"inventory": INVENTORY_HELP})
def serve_status(c, inventory=None):
    """Show the Serve applications and their deployments (dashboard REST API)."""
    state = cluster_state(c, inventory)
    with user_errors():
        apps = cluster.ray_api(state, "/api/serve/applications/").get("applications", {})
    rows = [
        {"application": name, "status": app["status"], "route": str(app.get("route_prefix")),
         "deployments": ", ".join(f"{d}={info['status']}" for d, info in app.get("deployments", {}).items())}
        for name, app in apps.items()
    ]  # fmt: skip
    print_table(rows) if rows else say("no Serve application is running")


@task(name="shutdown", help={"inventory": INVENTORY_HELP})
def serve_shutdown(c, inventory=None):
    """Remove every Serve application (and Serve's proxies) from the cluster."""
    state = cluster_state(c, inventory)
    with user_errors():
        cluster.ray_api(state, "/api/serve/applications/", method="DELETE")
    say("Serve shut down")


# --- checks -------------------------------------------------------------------


def _venv_bin(name: str) -> str:
    return str(VENV_BIN / name)


@task
def lint(c: Context) -> None:
    """ruff (lint and format), mypy, yamllint and ansible-lint (production profile) over the repository."""
    with c.cd(str(ROOT)):
        c.run(f"{_venv_bin('ruff')} check .", echo=True)
        c.run(f"{_venv_bin('ruff')} format --check .", echo=True)
        c.run(f"{_venv_bin('mypy')}", echo=True)
        c.run(f"{_venv_bin('yamllint')} --strict .", echo=True)
        c.run(f"{_venv_bin('ansible-lint')} --profile production", echo=True)


@task(
    pre=[lint],
    help={"k": "only tests matching this pytest -k expression", "unit": "unit tests only (no lab)"},
)
def test(c, k=None, unit=False):
    """Run the whole test suite: lint, unit tests, then integration tests on the lab."""
    args = [_venv_bin("pytest"), "-p", "no:cacheprovider", "-ra", "--durations=10"]
    if k:
        args += ["-k", k]
    args += ["tests/unit"] if unit else ["tests/unit", "tests/integration"]
    with c.cd(str(ROOT)):
        c.run(shlex.join(args), echo=True, pty=False)


# --- benchmarks ---------------------------------------------------------------


def lab_only(c: Context, inventory: str | None, task_name: str) -> None:
    """Benchmarks reset, stop and reboot hosts: only ever the local lab's."""
    lab_inventory_path = (ROOT / c.config.lab.inventory).resolve()
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "ansible.cfg")
    given = (ROOT / (inventory or cfg.get("defaults", "inventory", fallback="") or "")).resolve()
    if given != lab_inventory_path or labkit.load_state(lab_settings(c)) is None:
        raise Exit(
            f"error: {task_name} resets, stops and reboots hosts, so it runs only on the local lab "
            f"({lab_inventory_path.relative_to(ROOT)}, made by `invoke lab.up`), not on {given}; nothing was changed",
            code=2,
        )


@task(help={"cold": "also delete the cached base image first (measures debootstrap too)"})
def bench_lab(c, cold=False):
    """Measure lab.up for the default host count from no lab (and with --cold, no base image)."""
    settings = lab_settings(c)
    with user_errors():
        labkit.down(settings, say)
        if cold:
            for base in settings.cache_dir.glob(f"base-{settings.suite}-*"):
                shutil.rmtree(base)
        start = time.monotonic()
        up(c)
        took = time.monotonic() - start
    kind = "cold (debootstrap included)" if cold else "base image cached"
    say(f"bench: lab.up of {c.config.lab.hosts} hosts, {kind}: {took:.1f} s")


@task(help={"inventory": INVENTORY_HELP})
def bench_cluster(c, inventory=None):
    """Measure provision and deploy from clean hosts (reset first; wheelhouse cached), no-op reruns,
    and a deploy that starts stopped nodes again."""
    lab_only(c, inventory, "bench.cluster")
    figures = []

    def timed(name: str, action) -> None:
        start = time.monotonic()
        action()
        figures.append({"step": name, "seconds": f"{time.monotonic() - start:.1f}"})

    reset(c, yes=True, inventory=inventory)
    timed("provision (cold, wheelhouse cached)", lambda: provision(c, inventory=inventory))
    timed("provision (no-op)", lambda: provision(c, inventory=inventory))
    timed("deploy (to all nodes alive)", lambda: deploy(c, inventory=inventory))
    state = cluster_state(c, inventory)
    probe = cluster.RAY_START_PROBE.format(temp_dir="/var/lib/ray/tmp")  # ray_temp_dir, the lab keeps the default
    found = c.run(shlex.join(ssh_argv(host_vars(c, state["head"], inventory), state["head"],
                                              ["sudo", "sh", "-c", probe])), hide=True)  # fmt: skip
    figures.append({"step": "  of which Ray: head's unit start -> every node registered",
                    "seconds": f"{cluster.ray_start_seconds(found.stdout):.1f}"})  # fmt: skip
    timed("deploy (no-op)", lambda: deploy(c, inventory=inventory))
    stop(c, inventory=inventory)
    timed("deploy of stopped nodes (Ray's second start)", lambda: deploy(c, inventory=inventory))
    tars = sorted(Path("~/.cache/raykit/wheelhouse").expanduser().glob("*/wheelhouse.tar"))
    print_table(figures)
    for tar in tars:
        say(f"bench: bytes sent per host by a cold provision: {tar.stat().st_size} ({tar.parent.name})")


@task()
def bench_faults(c):
    """Measure recovery on the local lab's cluster: a killed raylet, reboots, a cut link."""
    lab_only(c, None, "bench.faults")
    settings = lab_settings(c)
    state = cluster_state(c, None)
    ips = {info["ip"] for info in state["hosts"].values()}
    head = state["head"]
    workers = sorted(h for h in state["hosts"] if h != head)
    if len(workers) < 2:
        raise Exit("error: bench.faults needs a lab of 3 hosts or more", code=2)
    first, second = workers[:2]
    figures = []

    def node_ids(host: str | None = None) -> set[str]:
        want = state["hosts"][host]["ip"] if host else None
        return {node for node, ip in cluster.alive_nodes(state).items() if want in (None, ip)}

    def started(name: str) -> bool:
        # A node is alive in Ray 0.5 s before its `ray start` is done; a head that goes away
        # in between leaves that worker waiting 30 s on the old GCS (Ray's deadline).
        _, host = labkit.find_host(settings, name)
        since = "$(systemctl show ray --property=ExecMainStartTimestamp --value --timestamp=unix)"
        check = f'sudo journalctl --unit=ray --output=cat --since="{since}" | grep -q "Ray runtime started"'
        return (
            subprocess.run(labkit.ssh_command(settings, host, check), capture_output=True, check=False).returncode == 0
        )

    def measure(name: str, fault, host: str | None, up_ips: set[str] = ips) -> None:
        gone = node_ids(host)
        start = time.monotonic()
        fault()
        cluster.wait_for_cluster(state, up_ips, gone=gone, timeout=300)
        figures.append({"fault": name, "seconds": f"{time.monotonic() - start:.1f}"})
        say(f"bench: {name}: {figures[-1]['seconds']} s")
        for each in [head, *workers] if host is None else [host]:  # the next fault starts from a settled cluster
            if state["hosts"][each]["ip"] in up_ips:
                labkit.wait_until(functools.partial(started, each), 60, f"{each}'s ray start to finish")

    def kill_raylet() -> None:
        _, host = labkit.find_host(settings, first)
        labkit.run(labkit.ssh_command(settings, host, ["sudo", "pkill", "--signal", "KILL", "--exact", "raylet"]))

    with user_errors():
        cluster.wait_for_cluster(state, ips)
        measure(f"raylet killed on {first} -> cluster whole", kill_raylet, first)
        measure(f"lab.reboot {first} -> its node alive", lambda: labkit.reboot(settings, first, say), first)
        measure(f"lab.reboot {head} (head) -> every node alive", lambda: labkit.reboot(settings, head, say), None)
        cut = ips - {state["hosts"][second]["ip"]}
        measure(f"lab.unplug {second} -> Ray declares it dead", lambda: labkit.set_link(settings, second, up=False),
                second, cut)  # fmt: skip
        measure(f"lab.plug {second} -> its node alive", lambda: labkit.set_link(settings, second, up=True), second)
    print_table(figures)


# --- the main job -------------------------------------------------------------


@task
def demo(c):
    """The whole job on the local lab: lab.up, provision, deploy, examples, status (steps timed)."""
    started = time.monotonic()
    timings = []
    for name, action in (
        ("lab.up", lambda: up(c)),
        ("provision", lambda: provision(c)),
        ("deploy", lambda: deploy(c)),
        ("examples", lambda: examples(c)),
        ("status", lambda: status(c)),
    ):
        t0 = time.monotonic()
        say(f"demo step {name} ...")
        action()
        timings.append({"step": name, "seconds": f"{time.monotonic() - t0:.1f}"})
    print_table(timings)
    say(f"demo finished in {time.monotonic() - started:.1f} s")


lab = Collection("lab", up, down, lab_status, reboot, poweroff, poweron, unplug, plug, block_port, unblock_ports)
serve = Collection("serve", serve_deploy, serve_status, serve_shutdown)
bench = Collection("bench")
bench.add_task(bench_lab, name="lab")
bench.add_task(bench_cluster, name="cluster")
bench.add_task(bench_faults, name="faults")
ns = Collection(
    demo,
    lint,
    test,
    lock,
    provision,
    deploy,
    versions,
    status,
    doctor,
    stop,
    start,
    restart,
    logs,
    dashboard,
    reset,
    run,
    examples,
)
ns.add_collection(lab)
ns.add_collection(Collection("token", token_rotate))
ns.add_collection(serve)
ns.add_collection(bench)
