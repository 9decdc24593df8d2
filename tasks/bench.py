"""Benchmarks on the local lab (`invoke bench.*`); they reset, stop and reboot its hosts."""

from __future__ import annotations

import configparser
import functools
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from invoke import Context, Exit, task

from raykit import cluster, pybuild
from raykit import lab as labkit
from raykit.ssh import ssh_argv
from raykit.wheelhouse import CACHE as WHEELHOUSE_CACHE
from raykit.wheelhouse import tar_path, wheelhouse_id
from tasks.cluster import deploy, lock, provision, reset, rollback, stop
from tasks.common import (
    INVENTORY_HELP,
    ROOT,
    VENV_BIN,
    cluster_state,
    host_vars,
    lab_settings,
    print_table,
    say,
    user_errors,
)
from tasks.lab import down, up
from tasks.serve import run_examples


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


def lab_variant(c: Context, tmp: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """The lab's inventory, edited, beside the same group_vars (in tmp)."""
    lab_inventory = ROOT / c.config.lab.inventory
    variant = tmp / "inventory" / "variant.yml"
    variant.parent.mkdir()
    (variant.parent / "group_vars").symlink_to(lab_inventory.parent / "group_vars")
    hosts = yaml.safe_load(lab_inventory.read_text())
    edit(hosts)
    variant.write_text(yaml.safe_dump(hosts))
    return variant


@task(help={"cold": "also delete the cached base image first (measures debootstrap too)"})
def bench_lab(c: Context, cold: bool = False) -> None:
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
def bench_cluster(c: Context, inventory: str | None = None) -> None:
    """Measure provision and deploy from clean hosts (reset first; wheelhouse cached), no-op reruns,
    and a deploy that starts stopped nodes again."""
    lab_only(c, inventory, "bench.cluster")
    figures = []

    def timed(name: str, action) -> None:
        start = time.monotonic()
        action()
        figures.append({"step": name, "seconds": f"{time.monotonic() - start:.1f}"})

    reset(c, yes=True, inventory=inventory)
    sent = controller_sent_bytes(c)
    timed("provision (cold, wheelhouse cached)", lambda: provision(c, inventory=inventory))
    sent = controller_sent_bytes(c) - sent
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
    print_table(figures)
    say(f"bench: the controller sent {sent / 1e6:.0f} MB into the lab's bridge during the cold provision")


@task()
def bench_grow(c: Context) -> None:
    """Measure adding a fresh host to the running lab cluster: lab.up one host more, then
    provision and deploy until its node is alive (the others keep running); the lab keeps it."""
    lab_only(c, None, "bench.grow")
    deploy(c)
    before = cluster_state(c, None)["hosts"]
    up(c, hosts=str(len(before) + 1))
    figures = []
    for name, action in (("provision (the new host; the others no-op)", lambda: provision(c)),
                         ("deploy (to its node alive; the others keep running)", lambda: deploy(c))):  # fmt: skip
        start = time.monotonic()
        action()
        figures.append({"step": name, "seconds": f"{time.monotonic() - start:.1f}"})
    figures.append({"step": "in all", "seconds": f"{sum(float(f['seconds']) for f in figures):.1f}"})
    print_table(figures)


def controller_sent_bytes(c: Context) -> int:
    """What the controller has sent into the lab's bridge (the kernel's counter: the hosts'
    traffic to each other is switched past it)."""
    state = labkit.load_state(lab_settings(c))
    assert state is not None  # lab_only checked
    return int(Path(f"/sys/class/net/{state.bridge}/statistics/tx_bytes").read_text())


@task(help={"hosts": "lab sizes to measure, comma-separated (default 1,3,6)"})
def bench_scale(c: Context, hosts: str = "1,3,6") -> None:
    """For each lab size (the lab made anew, every host with ray_num_cpus 1): time a cold
    provision, a deploy to every node alive and both no-ops, and the bytes the controller sent."""
    lab_only(c, None, "bench.scale")
    sizes = [int(n) for n in hosts.split(",")]
    before = len(cluster_state(c, None)["hosts"])
    figures = []

    def one_cpu_each(inv: dict[str, Any]) -> None:
        for group in inv["all"]["children"].values():
            for hostvars in (group.get("hosts") or {}).values():
                hostvars["ray_num_cpus"] = 1

    try:
        for size in sizes:
            down(c)
            up(c, hosts=str(size))
            with tempfile.TemporaryDirectory() as tmp:
                inventory = str(lab_variant(c, Path(tmp), one_cpu_each))
                for step, action in (("provision (cold, wheelhouse cached)", provision),
                                     ("provision (no-op)", provision),
                                     ("deploy (to every node alive)", deploy), ("deploy (no-op)", deploy)):  # fmt: skip
                    sent, start = controller_sent_bytes(c), time.monotonic()
                    action(c, inventory=inventory)
                    took, sent = time.monotonic() - start, controller_sent_bytes(c) - sent
                    figures.append({"hosts": str(size), "step": step, "seconds": f"{took:.1f}",
                                    "controller sent MB": f"{sent / 1e6:.0f}"})  # fmt: skip
    finally:  # the lab at its size again (its hosts fresh), whatever failed
        down(c)
        up(c, hosts=str(before))
    print_table(figures)


# ray up's nodes: the hosts' own python3, the same locked wheels installed by the same uv
# (so the figures compare the orchestration, not the installers), Ray as the admin user.
RAYUP_ENV = "~/rayup-env"
RAYUP_WHEELS = "~/rayup-wheels"
RAYUP_NODES_ALIVE = """
import json, urllib.request
nodes = json.load(urllib.request.urlopen("http://127.0.0.1:8265/api/v0/nodes?limit=100", timeout=5))
print(sum(n["state"] == "ALIVE" for n in nodes["data"]["result"]["result"]))
"""


def rayup_config(head: str, workers: list[str], user: str, key: Path, wheelhouse: str) -> dict[str, Any]:
    """ray up's cluster file for the local provider: every host a fixed node, set up over SSH."""
    wheels = f"{RAYUP_WHEELS}/{wheelhouse}"
    ray = f"{RAYUP_ENV}/bin/ray"
    return {
        "cluster_name": "raykit-bench",
        "provider": {"type": "local", "head_ip": head, "worker_ips": workers},
        "auth": {"ssh_user": user, "ssh_private_key": str(key)},
        "min_workers": len(workers),
        "max_workers": len(workers),
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5,
        "setup_commands": [
            f"test -x {RAYUP_ENV}/bin/python || python3 -m venv --without-pip {RAYUP_ENV}",
            f"UV_NO_CONFIG=1 {wheels}/uv pip sync --python {RAYUP_ENV}/bin/python --require-hashes --offline"
            f" --no-index --find-links {wheels}/wheels {wheels}/requirements.txt",
        ],
        "head_start_ray_commands": [
            f"{ray} stop",
            f"{ray} start --head --port=6379 --autoscaling-config=~/ray_bootstrap_config.yaml --disable-usage-stats",
        ],
        "worker_start_ray_commands": [f"{ray} stop", f"{ray} start --address=$RAY_HEAD_IP:6379"],
    }


@task(help={"timeout": "seconds ray up's cluster may take to have every node alive (default 900)"})
def bench_rayup(c: Context, timeout: float = 900) -> None:
    """Time `ray up` (local provider, v1 autoscaler) and the kit's provision + deploy, each
    from bare lab hosts to every node alive, in the same run; ray up gets the wheels and
    rsync copied to the hosts first, untimed, and everything it left is removed after it."""
    lab_only(c, None, "bench.rayup")
    settings = lab_settings(c)
    state = labkit.load_state(settings)
    assert state is not None  # lab_only checked
    names = [h.name for h in state.hosts]
    hostvars = {name: host_vars(c, name, None) for name in names}

    def on(name: str, command: str, warn: bool = False) -> str:
        return c.run(shlex.join(ssh_argv(hostvars[name], name, command)), hide=True, warn=warn).stdout

    def copy(name: str, local: Path, remote: str) -> None:
        ssh = ssh_argv(hostvars[name], name)
        c.run(shlex.join(["scp", "-q", *ssh[1:-1], str(local), f"{ssh[-1]}:{remote}"]))

    with user_errors():
        labkit.ensure_controller_tools(say, {"rsync": "rsync"}, "ray up")  # it syncs files to the head with rsync
    reset(c, yes=True)
    # The lock's own wheelhouse, as provision names it (the cache may hold other pins' too).
    arch = on(names[0], "uname -m").strip()
    wheelhouse = wheelhouse_id(ROOT / "locks" / f"cluster-{arch}.txt", arch, False)
    cache = Path(hostvars[names[0]].get("ray_wheelhouse_cache", str(WHEELHOUSE_CACHE))).expanduser()
    tar = tar_path(cache, wheelhouse)
    if not tar.is_file():
        raise Exit(f"error: no wheelhouse {wheelhouse} in the controller's cache; run `invoke provision` once", code=2)
    report = ROOT / "roles/ray/files/raykit_report.py"
    installed: dict[str, list[str]] = {}
    say("bench: copying the wheels and rsync to the hosts for ray up (untimed)")
    for host in state.hosts:
        name = host.name
        rsync = json.loads(c.run(f"{VENV_BIN}/python -m raykit.debs --release {host.suite} --arch {arch} rsync",
                                 hide=True).stdout)  # fmt: skip
        for local in (tar, Path(rsync["debs_tar"]), report):
            copy(name, local, f"/tmp/{local.name}")
        on(name, f"mkdir -p {RAYUP_WHEELS} && tar -xf /tmp/{tar.name} -C {RAYUP_WHEELS} && rm /tmp/{tar.name}")
        done = on(name, shlex.join(["sudo", "python3", "-I", "-S", f"/tmp/{report.name}", "install-debs",
                                    f"/tmp/{Path(rsync['debs_tar']).name}", json.dumps(rsync["debs"])]))  # fmt: skip
        on(name, f"rm /tmp/{report.name}")
        installed[name] = json.loads(done)["installed"]
    head = state.hosts[0]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "cluster.yaml")
        workers = [h.address for h in state.hosts[1:]]
        config.write_text(yaml.safe_dump(rayup_config(head.address, workers, settings.admin_user, settings.ssh_key,
                                                      wheelhouse)))  # fmt: skip
        env = {"RAY_UP_enable_autoscaler_v2": "0"}
        try:
            start = time.monotonic()
            c.run(f"{VENV_BIN}/ray up -y --no-config-cache {config}", env=env, hide="out")
            deadline = start + timeout
            alive = 0
            while alive < len(names):
                if time.monotonic() > deadline:
                    raise Exit(f"error: ray up's cluster had {alive} of {len(names)} nodes alive after {timeout:.0f} s")
                found = on(head.name, shlex.join(["python3", "-c", RAYUP_NODES_ALIVE]) + " 2>/dev/null || echo 0")
                alive = int(found.strip() or 0)
            rayup_s = time.monotonic() - start
        finally:
            c.run(f"{VENV_BIN}/ray down -y {config}", env=env, hide=True, warn=True)
            for name in names:  # ray down leaves processes behind
                # Every step on every host, whatever failed before it (warn: no exception).
                on(name, f"pkill -KILL -u {settings.admin_user} -f '[r]ayup-env'; true", warn=True)  # matches no shell
                on(name, f"rm -rf {RAYUP_ENV} {RAYUP_WHEELS} ~/ray_bootstrap_config.yaml ~/ray_bootstrap_key.pem"
                         " ~/.ray /tmp/ray", warn=True)  # fmt: skip
                if installed[name]:
                    on(name, shlex.join(["sudo", "apt-get", "purge", "--yes", "-qq", *installed[name]]), warn=True)
    start = time.monotonic()
    provision(c)
    deploy(c)
    kit_s = time.monotonic() - start
    what = "bare hosts to every node alive"
    print_table([{what: "ray up (wheels and rsync pre-copied)", "seconds": f"{rayup_s:.1f}"},
                 {what: "invoke provision + deploy", "seconds": f"{kit_s:.1f}"}])  # fmt: skip
    say(f"bench: the kit took {kit_s / rayup_s:.2f}x ray up's time, on {len(names)} hosts")


PROMETHEUS_FIGURES = """
import json, subprocess, sys, urllib.parse, urllib.request
url = sys.argv[1]
def one(expr):
    query = urllib.parse.urlencode({"query": expr})
    found = json.load(urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=10))["data"]["result"]
    return float(found[0]["value"][1]) if found else None
du = subprocess.run(["du", "--summarize", "--bytes", "/var/lib/prometheus"], capture_output=True, text=True)
print(json.dumps({
    "rss": one('process_resident_memory_bytes{job="prometheus"}'),
    "samples_per_s": one("rate(prometheus_tsdb_head_samples_appended_total[5m])"),
    "series": one("prometheus_tsdb_head_series"),
    "disk": int(du.stdout.split()[0]),
}))
"""


@task(help={"minutes": "how long to watch Prometheus's disk grow after the deploy (default 60)"})
def bench_monitoring(c: Context, minutes: float = 60) -> None:
    """Measure what monitoring costs: a cold deploy (reset, provision) without it and with it, in
    turn; then Prometheus's memory on the head, and its disk over `minutes`, extrapolated to
    ray_monitoring_retention's 15 days."""
    lab_only(c, None, "bench.monitoring")
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        for on in (False, True):

            def switch(inv: dict[str, Any], on: bool = on) -> None:
                inv["all"].setdefault("vars", {})["ray_monitoring"] = on

            (Path(tmp) / str(on)).mkdir()
            variant = lab_variant(c, Path(tmp) / str(on), switch)
            reset(c, yes=True, inventory=str(variant))
            provision(c, inventory=str(variant))
            start = time.monotonic()
            deploy(c, inventory=str(variant))
            figures.append({"what": f"cold deploy, monitoring {'on' if on else 'off'} (s)",
                            "value": f"{time.monotonic() - start:.1f}"})  # fmt: skip
    state = cluster_state(c, None)
    head = state["head"]
    argv = ssh_argv(host_vars(c, head, None), head, ["sudo", "python3", "-c", PROMETHEUS_FIGURES,
                                                     state["endpoint"]["prometheus_url"]])  # fmt: skip

    def read() -> dict[str, float]:
        return dict(json.loads(c.run(shlex.join(argv), hide=True).stdout))

    first, start = read(), time.monotonic()
    deadline = start + minutes * 60
    while time.monotonic() < deadline:
        time.sleep(min(60.0, max(0.0, deadline - time.monotonic())))
    last, hours = read(), (time.monotonic() - start) / 3600
    growth = (last["disk"] - first["disk"]) / hours
    samples_15d = last["samples_per_s"] * 86400 * 15
    figures += [
        {"what": "Prometheus's memory (RSS) on the head, 3 nodes", "value": f"{last['rss'] / 2**20:.0f} MiB"},
        {
            "what": "series / samples appended per second",
            "value": f"{last['series']:.0f} / {last['samples_per_s']:.0f}",
        },
        {
            "what": f"its disk after the deploy / {minutes:g} min later",
            "value": f"{first['disk'] / 2**20:.1f} MiB / {last['disk'] / 2**20:.1f} MiB",
        },
        {
            "what": "15 days at that growth (the head block and WAL: an upper bound)",
            "value": f"{growth * 24 * 15 / 2**30:.2f} GiB",
        },
        {
            "what": "15 days at Prometheus's 1-2 bytes a compacted sample",
            "value": f"{samples_15d / 2**30:.2f}-{samples_15d * 2 / 2**30:.2f} GiB",
        },
    ]
    print_table(figures)


@task(
    help={
        "hosts": "lab size for both runs (default 4)",
        "suites": "the mixed lab's suites, in turn",
        "runs": "cold provisions of each lab, taken in turn (default 3); the median counts",
    }
)
def bench_python(c: Context, hosts: int = 4, suites: str = "bookworm,bookworm,bookworm,trixie", runs: int = 3) -> None:
    """Measure a cold and a no-op provision of a uniform lab against a mixed lab's, whose hosts need
    the kit's build of Python (builds cached: provision the mixed lab once first), and show the builds."""
    labs = {"uniform": c.config.lab.suite, "mixed": suites}
    cold: dict[str, list[float]] = {kind: [] for kind in labs}
    noop: dict[str, float] = {}
    for run in range(runs):
        for kind, lab_suites in labs.items():
            down(c)
            up(c, hosts=str(hosts), suites=lab_suites)
            os.sync()  # the last lab's removal is written out before the clock starts, not during
            start = time.monotonic()
            provision(c)
            cold[kind].append(time.monotonic() - start)
            if run == runs - 1:
                start = time.monotonic()
                provision(c)
                noop[kind] = time.monotonic() - start
    figures = [
        {
            "lab": f"{kind} ({lab_suites})",
            "cold provision (s), median": f"{statistics.median(cold[kind]):.1f}",
            "each (s)": " / ".join(f"{took:.1f}" for took in cold[kind]),
            "no-op provision (s)": f"{noop[kind]:.1f}",
        }
        for kind, lab_suites in labs.items()
    ]
    print_table(figures)
    builds = sorted(pybuild.CACHE.expanduser().glob("cpython-*/python.tar.gz"))
    print_table(
        [
            {
                "build": tar.parent.name,
                "built in (s)": (tar.parent / "seconds").read_text().strip(),
                "archive (MB)": f"{tar.stat().st_size / 1e6:.1f}",
                "runtime packages (MB)": f"{(tar.parent / 'debs.tar').stat().st_size / 1e6:.1f}",
            }
            for tar in builds
        ]
    )
    ratio = statistics.median(cold["mixed"]) / statistics.median(cold["uniform"])
    say(f"bench: cold provision, mixed against uniform: {ratio:.2f}x")


@task()
def bench_faults(c: Context) -> None:
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
        journal = "sudo journalctl --namespace=+ray --unit=ray --output=cat"
        check = f'{journal} --since="{since}" | grep -q "Ray runtime started"'
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


@task(help={"runs": "runs of every example with and without TLS, taken in turn (default 3); the median counts"})
def bench_tls(c: Context, runs: int = 3) -> None:
    """Measure every example on the lab without and with ray_tls, in turn (deploy switches the
    cluster each time; it ends without TLS)."""
    lab_only(c, None, "bench.tls")
    with tempfile.TemporaryDirectory() as tmp:
        tls_inventory = lab_variant(
            c, Path(tmp), lambda hosts: hosts["all"].setdefault("vars", {}).update(ray_tls=True)
        )
        seconds: dict[str, dict[str, list[float]]] = {}
        try:
            for _ in range(runs):
                for kind, inventory in (("plain", None), ("tls", str(tls_inventory))):
                    deploy(c, inventory=inventory)
                    for row in run_examples(c, inventory):
                        if row["result"] != "passed":
                            raise Exit(f"error: {row['example']} failed with {kind}: {row['result']}", code=1)
                        times = seconds.setdefault(row["example"], {"plain": [], "tls": []})
                        times[kind].append(float(row["duration"].split()[0]))
        finally:
            deploy(c)
    medians = {name: {kind: statistics.median(times) for kind, times in t.items()} for name, t in seconds.items()}
    rows = [
        {"example": name, "plain s": f"{m['plain']:.1f}", "tls s": f"{m['tls']:.1f}",
         "ratio": f"{m['tls'] / m['plain']:.2f}"}
        for name, m in medians.items()
    ]  # fmt: skip
    print_table(rows)


# The driver both commands submit: a few lines, one task.
HELLO = "import ray\nray.init()\nprint(ray.get(ray.remote(lambda: 'hello').remote()))\n"


@task(help={"runs": "runs of each command (default 5)", "inventory": INVENTORY_HELP})
def bench_run(c: Context, runs: int = 5, inventory: str | None = None) -> None:
    """Time `invoke run` against Ray's own `ray job submit` (after `invoke env`) on the same small
    driver, interleaved, after a warm-up of each: wall time and the controller's CPU."""
    invoke_bin, ray_bin = str(VENV_BIN / "invoke"), str(VENV_BIN / "ray")
    env_args = ["env", "--shell", "json"] + (["--inventory", inventory] if inventory else [])
    ray_env = {**os.environ, **json.loads(subprocess.run([invoke_bin, *env_args], cwd=ROOT, check=True,
                                                         capture_output=True, text=True).stdout)}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "hello.py").write_text(HELLO)
        commands = {
            "invoke run": ([invoke_bin, "run", *(["--inventory", inventory] if inventory else []), f"{tmp}/hello.py"],
                           ROOT, os.environ),
            "ray job submit": ([ray_bin, "job", "submit", "--working-dir", ".", "--", "python", "hello.py"],
                               Path(tmp), ray_env),
        }  # fmt: skip
        seen: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in commands}
        for run in range(runs + 1):
            for name, (argv, cwd, env) in commands.items():
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.monotonic()
                done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
                wall = time.monotonic() - start
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                if done.returncode != 0 or "hello" not in done.stdout:
                    raise Exit(f"error: {name} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}", code=1)
                if run:  # the first round warms both up
                    seen[name]["wall"].append(wall)
                    seen[name]["cpu"].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    medians = {name: {k: statistics.median(v) for k, v in s.items()} for name, s in seen.items()}
    rows = [{"command": name, "wall s (median)": f"{m['wall']:.1f}", "cpu s (median)": f"{m['cpu']:.1f}"}
            for name, m in medians.items()]  # fmt: skip
    print_table(rows)
    ratio = medians["invoke run"]["wall"] / medians["ray job submit"]["wall"]
    say(f"bench: invoke run / ray job submit, wall time: {ratio:.2f}x ({runs} runs each, interleaved)")


class Outage:
    """Watches Ray's alive nodes from the controller every 0.2 s: from the first change to the
    nodes it started with (one gone, or the dashboard not answering) until every IP has a new
    node alive again."""

    def __init__(self, state: dict[str, str], ips: set[str]) -> None:
        self.state, self.ips = state, sorted(ips)
        self.before = set(cluster.alive_nodes(state))
        self.down: float | None = None
        self.up: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            try:
                alive = cluster.alive_nodes(self.state)
            except Exception:  # the head is restarting: down
                alive = {}
            now = time.monotonic()
            if self.down is None and set(alive) != self.before:
                self.down = now
            if self.down is not None and sorted(alive.values()) == self.ips and not set(alive) & self.before:
                self.up = now
                return

    def seconds(self) -> float:
        self._thread.join(timeout=120)
        self._stop.set()
        if self.down is None or self.up is None:
            raise Exit("error: the cluster did not go down and come back whole while watched", code=1)
        return self.up - self.down


@task(help={"old": "the Ray version to go from (default 2.59.0)", "runs": "upgrades and rollbacks (default 3)"})
def bench_upgrade(c: Context, old: str = "2.59.0", runs: int = 3) -> None:
    """Measure the stop of an upgrade (deploy of the pins' Ray over OLD) and of a rollback on
    the lab, as Ray's State API sees it from the controller; it ends on the pins."""
    lab_only(c, None, "bench.upgrade")

    def pin_old(hosts: dict[str, Any]) -> None:  # host variables beat group_vars
        for group in hosts["all"]["children"].values():
            for hvars in group["hosts"].values():
                hvars.update(ray_version=old, ray_lock_dir=f"{tmp}/locks")

    with tempfile.TemporaryDirectory() as tmp:
        old_inventory = lab_variant(c, Path(tmp), pin_old)
        lock(c, inventory=str(old_inventory), out=f"{tmp}/locks")
        provision(c, inventory=str(old_inventory))
        provision(c)
        state = cluster_state(c, None)
        ips = {host["ip"] for host in state["hosts"].values()}
        seconds: dict[str, list[float]] = {"upgrade (deploy)": [], "rollback": []}
        try:
            deploy(c, inventory=str(old_inventory))
            for _ in range(runs):
                for name, step in (("upgrade (deploy)", lambda: deploy(c)), ("rollback", lambda: rollback(c))):
                    outage = Outage(state, ips)
                    step()
                    seconds[name].append(outage.seconds())
        finally:
            deploy(c)
    print_table([{"switch": name, "stop s (median)": f"{statistics.median(v):.1f}",
                  "runs": " ".join(f"{x:.1f}" for x in v)} for name, v in seconds.items()])  # fmt: skip
