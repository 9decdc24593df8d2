"""What the integration tests share: running the kit as a user does, reaching the lab's hosts,
and reading the cluster through oracles the kit does not own (ssh, systemd, Ray's State API)."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
import testinfra.host
import yaml
from testinfra.backend.base import BaseBackend, CommandResult

from raykit import cluster as raycluster
from raykit.endpoint import stop
from raykit.ssh import BATCH, ssh_argv

ROOT = Path(__file__).resolve().parent.parent
INVENTORY = ROOT / "inventory" / "lab.yml"
LAB_HOSTS = 3
# The lab grown by one host, a trixie one: test_python's mixed lab, and test_ray_firewall's outsider.
GROWN_SUITES = ["bookworm"] * LAB_HOSTS + ["trixie"]
HEAD = "raylab-1"
TOKEN_FILE = Path(f"~/.config/raykit/{HEAD}.token").expanduser()
PINS = yaml.safe_load((ROOT / "inventory/group_vars/all/ray.yml").read_text())
ENV = f"/opt/ray/venvs/ray-{PINS['ray_version']}-py{PINS['ray_python_version']}"

Edit = Callable[[dict[str, Any]], None]


# Whether the test itself passed (conftest), for fixtures that clean up only after a failure.
PASSED = pytest.StashKey[bool]()

# What the tests wait for: "invoke TASK" or "ssh" -> [calls, seconds] (conftest prints it).
WAITED: dict[str, list[float]] = {}

# The tests' ssh: one connection per host, reused (a new one costs a handshake and a login).
# A master whose host went away dies within seconds (ServerAlive); the masters are closed
# after every lab task, which may have rebooted, unplugged or replaced a host.
SSH_MASTERS = Path(tempfile.mkdtemp(prefix="raykit-ssh-"))
SSH_OPTIONS = (
    *BATCH,
    *("-o", "ControlMaster=auto", "-o", f"ControlPath={SSH_MASTERS}/%C", "-o", "ControlPersist=120"),
    *("-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=3"),
)


def close_ssh_masters() -> None:
    for master in SSH_MASTERS.iterdir():
        subprocess.run(["ssh", "-o", f"ControlPath={master}", "-O", "exit", "lab"], capture_output=True, check=False)


def timed_run(kind: str, cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    start = time.monotonic()
    try:
        return subprocess.run(cmd, **kwargs)
    finally:
        calls = WAITED.setdefault(kind, [0, 0.0])
        calls[0] += 1
        calls[1] += time.monotonic() - start


def invoke(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run an invoke task as a user would, from the repository root."""
    cmd = [str(Path(sys.executable).parent / "invoke"), *args]
    try:
        result = timed_run(
            f"invoke {args[0]}", cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    finally:
        if args[0].startswith("lab."):
            close_ssh_masters()
    if check and result.returncode != 0:
        pytest.fail(f"invoke {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


class _SshBackend(BaseBackend):
    """testinfra over the kit's one ssh command line, so tests reach hosts as Ansible does."""

    NAME = "raykit"

    def __init__(self, host: LabHost, **kwargs: Any) -> None:
        super().__init__(host.name, **kwargs)
        self.lab_host = host

    def run(self, command: str, *args: str, **kwargs: Any) -> CommandResult:
        cmd = self.get_command(command, *args)
        argv = ssh_argv(self.lab_host.hostvars, self.lab_host.name, cmd, SSH_OPTIONS)
        out = timed_run("ssh", argv, capture_output=True, timeout=60)
        return self.result(out.returncode, self.encode(cmd), out.stdout, out.stderr)


@dataclass(frozen=True)
class LabHost:
    name: str
    address: str
    hostvars: dict[str, Any]  # the inventory's, as Ansible reaches the host

    def ssh(self, command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        cmd = ssh_argv(self.hostvars, self.name, command, SSH_OPTIONS)
        result = timed_run("ssh", cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            pytest.fail(f"{self.name}: {command!r} exited {result.returncode}: {result.stderr.strip()}")
        return result

    def copy(self, local: Path, remote: str) -> None:
        ssh = ssh_argv(self.hostvars, self.name, options=SSH_OPTIONS)
        scp = ["scp", "-q", *ssh[1:-1], str(local), f"{ssh[-1]}:{remote}"]
        subprocess.run(scp, check=True, timeout=30)

    @cached_property
    def infra(self) -> testinfra.host.Host:
        """The host as testinfra sees it (files, users, services, processes); `with h.infra.sudo():`."""
        return testinfra.host.Host(_SshBackend(self))


def controller_sent_bytes() -> int:
    """What the controller has sent into the lab's bridge, by the kernel's counter (hosts'
    traffic to each other is switched past it)."""
    bridge = json.loads(Path("/var/lib/raykit/lab/lab.json").read_text())["bridge"]
    return int(Path(f"/sys/class/net/{bridge}/statistics/tx_bytes").read_text())


def wheelhouse_tar_bytes(host: LabHost) -> int:
    """The size of the controller's tar of the one wheelhouse the host has."""
    (name,) = host.ssh("ls /opt/ray/wheelhouse").stdout.split()
    return (Path("~/.cache/raykit/wheelhouse").expanduser() / name / "wheelhouse.tar").stat().st_size


def read_inventory() -> dict[str, LabHost]:
    """The lab's hosts as any Ansible user sees them: from inventory/lab.yml."""
    inv = yaml.safe_load(INVENTORY.read_text())["all"]
    return {
        name: LabHost(name, hvars["ansible_host"], {**inv["vars"], **hvars})
        for group in ("ray_head", "ray_workers")
        for name, hvars in (inv["children"][group]["hosts"] or {}).items()
    }


# --- ansible-playbook's output and inventory variants -----------------------------

RECAP_RE = r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)"


def recap(output: str) -> dict[str, dict[str, int]]:
    """host -> counts from ansible-playbook's PLAY RECAP."""
    return {
        m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "unreachable": int(m.group(4)),
                     "failed": int(m.group(5))}
        for m in re.finditer(RECAP_RE, output, re.MULTILINE)
    }  # fmt: skip


def task_results(output: str, task: str) -> set[str]:
    """How the hosts came out of the named task in ansible-playbook's output ({"ok"},
    {"skipping"}, ...); empty when the task is not in it."""
    found = re.search(rf"TASK \[[\w.]+ : {re.escape(task)}.*?\n(.*?)\n\n", output, re.DOTALL)
    return set(re.findall(r"^(\w+):", found.group(1), re.MULTILINE)) if found else set()


def write_inventory_variant(tmp: Path, edit: Edit) -> Path:
    """A copy of the lab inventory changed by `edit(inventory_dict)`, beside the real group_vars."""
    inv = yaml.safe_load(INVENTORY.read_text())
    edit(inv["all"])
    folder = tmp / "inventory"
    folder.mkdir(exist_ok=True)
    if not (folder / "group_vars").exists():
        (folder / "group_vars").symlink_to(ROOT / "inventory" / "group_vars")
    path = folder / "variant.yml"
    path.write_text(yaml.safe_dump(inv, sort_keys=False))
    return path


def on_every_host(**values: object) -> Edit:
    """An inventory edit setting host variables on every host (they beat group_vars)."""

    def edit(inv: dict[str, Any]) -> None:
        for group in inv["children"].values():
            for hvars in (group["hosts"] or {}).values():
                hvars.update(values)

    return edit


def with_labels(hosts: list[str], labels: dict[str, str]) -> Edit:
    def edit(inv: dict[str, Any]) -> None:
        for group in inv["children"].values():
            for name, hvars in (group["hosts"] or {}).items():
                if name in hosts:
                    hvars["ray_labels"] = labels

    return edit


def assert_refused(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    """Failed with the message, and no task changed anything on any host."""
    assert result.returncode != 0, result.stdout[-3000:]
    for phrase in phrases:
        assert phrase in result.stdout, f"{phrase!r} not in output:\n{result.stdout[-3000:]}"
    counts = recap(result.stdout)
    assert counts, result.stdout[-2000:]
    assert all(c["changed"] == 0 for c in counts.values()), counts


def install_fake_wheel(host: LabHost, tmp: Path, name: str, version: str) -> None:
    """Put a package the lock does not have into the host's Ray environment, by hand, the way
    an admin's stray `pip install` would (a wheel with one module; the environment is root's)."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/_stray.py": "",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: raykit-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    wheel = tmp / f"{name}-{version}-py3-none-any.whl"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    wheel.write_bytes(buf.getvalue())
    host.copy(wheel, f"/tmp/{wheel.name}")
    host.ssh(
        f"cd /tmp && sudo $(ls -d /opt/ray/wheelhouse/*/uv | head -1) pip install --quiet --offline"
        f" --no-deps --python /opt/ray/current/bin/python /tmp/{wheel.name}"
    )


# --- the cluster, read through Ray and systemd ---------------------------------------


def _alive_nodes_field(head: LabHost, field: str) -> dict[str, float]:
    """node IP -> a field of each alive node, asked of Ray's State API with the controller's Ray."""
    code = (
        "import json; from ray.util.state import list_nodes;"
        f"print(json.dumps({{n.node_ip: {field} for n in list_nodes("
        f"address='http://{head.address}:8265', limit=1000) if n.state == 'ALIVE'}}))"
    )
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(TOKEN_FILE)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def ray_alive_nodes(head: LabHost) -> dict[str, float]:
    """node IP -> CPUs of the alive nodes."""
    return _alive_nodes_field(head, "n.resources_total.get('CPU')")


def ray_start_times(head: LabHost) -> dict[str, float]:
    """node IP -> when Ray says the alive node started (ms since the epoch)."""
    return _alive_nodes_field(head, "n.start_time_ms")


def expected_nodes(hosts: dict[str, LabHost]) -> dict[str, float]:
    return {h.address: float(h.ssh("nproc").stdout.strip()) for h in hosts.values()}


def wait_for_nodes(hosts: dict[str, LabHost], timeout: float = 120) -> float:
    """Seconds until exactly the hosts are alive in Ray, polled with a deadline."""
    start = time.monotonic()
    want = expected_nodes(hosts)
    while True:
        try:
            if ray_alive_nodes(hosts[HEAD]) == want:
                return time.monotonic() - start
        except subprocess.CalledProcessError:
            pass  # the head is still starting
        assert time.monotonic() - start < timeout, f"nodes not all alive after {timeout} s"
        time.sleep(1)


def main_pid(host: LabHost) -> str:
    return host.ssh("systemctl show --property=MainPID --value ray").stdout.strip()


def main_pids(hosts: dict[str, LabHost]) -> dict[str, str]:
    return {name: main_pid(h) for name, h in hosts.items()}


def http_status(url: str, token: str | None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


# A job whose driver and tasks, spread over the nodes, each evaluate EXPRESSION.
SPREAD_JOB = """
import json

import ray
ray.init()

@ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
def said():
    return EXPRESSION

print("said:", json.dumps(sorted({EXPRESSION, *ray.get([said.remote() for _ in range(12)])})))
"""


def what_the_nodes_say(tmp_path: Path, expression: str, inventory: Path | None = None) -> list[str]:
    """What a job's driver and its tasks on the nodes evaluate EXPRESSION to, as a sorted list."""
    script = tmp_path / "spread_job.py"
    script.write_text(SPREAD_JOB.replace("EXPRESSION", expression))
    args = ["--inventory", str(inventory)] if inventory else []
    out = invoke("run", str(script), *args, timeout=600).stdout
    said = next(line for line in out.splitlines() if line.startswith("said: "))
    return list(json.loads(said.removeprefix("said: ")))


def ray_state(hosts: dict[str, LabHost]) -> dict[str, str]:
    """Where raykit.cluster's readers find the cluster: the head's dashboard and the token."""
    return {"dashboard_url": f"http://{hosts[HEAD].address}:8265", "token_file": str(TOKEN_FILE)}


def all_ips(hosts: dict[str, LabHost]) -> set[str]:
    return {h.address for h in hosts.values()}


def node_ids(state: dict[str, str], host: LabHost) -> set[str]:
    """The ids of the host's alive Ray nodes (a restarted node comes back with a new one)."""
    return {node for node, ip in raycluster.alive_nodes(state).items() if ip == host.address}


TCP_PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("open")
except ConnectionRefusedError:
    print("refused")
except OSError:
    print("dropped")
"""


def tcp_from(host: LabHost, address: str, port: int) -> str:
    """open, refused or dropped: a TCP connection from host (its system python3) to address:port."""
    return host.ssh(f"python3 -c {shlex.quote(TCP_PROBE)} {address} {port}").stdout.strip().splitlines()[-1]


def tcp_from_here(address: str, port: int) -> str:
    """The same probe run on the controller."""
    done = subprocess.run([sys.executable, "-c", TCP_PROBE, address, str(port)], capture_output=True, text=True)
    return done.stdout.strip()


def nft_table(host: LabHost) -> subprocess.CompletedProcess[str]:
    """The firewall's table as the host's nft lists it (fails when it is not loaded)."""
    return host.ssh("sudo nft list table inet raykit", check=False)


HTTP_PROBE = """
import sys, urllib.error, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=10).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
"""


@contextmanager
def dashboard_tunnel(head: LabHost, port: int = 8265) -> Iterator[dict[str, str]]:
    """The tests' own SSH tunnel to the head's loopback dashboard (no master: a forward made
    through one outlives this block): yields where raykit.cluster's readers find Ray."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local = probe.getsockname()[1]
    forward = ["-N", "-o", "ExitOnForwardFailure=yes", "-L", f"127.0.0.1:{local}:127.0.0.1:{port}"]
    ssh = ssh_argv(head.hostvars, head.name, options=(*BATCH, *forward))
    proc = subprocess.Popen(ssh, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while tcp_from_here("127.0.0.1", local) != "open":
            assert proc.poll() is None and time.monotonic() < deadline, f"no tunnel to {head.name}:{port}"
            time.sleep(0.1)
        yield {"dashboard_url": f"http://127.0.0.1:{local}", "token_file": str(TOKEN_FILE)}
    finally:
        stop(proc, grace=10)  # an ssh that a SIGTERM left running was seen once in CI


def http_status_from(host: LabHost, url: str) -> int:
    """The HTTP status a request without the token gets from host (its system python3)."""
    return int(host.ssh(f"python3 -c {shlex.quote(HTTP_PROBE)} {shlex.quote(url)}").stdout.strip().splitlines()[-1])
