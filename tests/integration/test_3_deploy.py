"""invoke deploy on the lab: a supervised, token-secured cluster, read through Ray itself."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import (
    HEAD,
    INVENTORY,
    TOKEN_FILE,
    LabHost,
    assert_refused,
    invoke,
    on_every_host,
    recap,
    write_inventory_variant,
)

pytestmark = pytest.mark.lab


def ray_alive_nodes(head: LabHost) -> dict[str, float]:
    """node IP -> CPUs of the alive nodes, asked of Ray's State API with the controller's Ray."""
    code = (
        "import json; from ray.util.state import list_nodes;"
        f"print(json.dumps({{n.node_ip: n.resources_total.get('CPU') for n in list_nodes("
        f"address='http://{head.address}:8265', limit=1000) if n.state == 'ALIVE'}}))"
    )
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(TOKEN_FILE)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


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


def main_pids(hosts: dict[str, LabHost]) -> dict[str, str]:
    return {name: h.ssh("systemctl show --property=MainPID --value ray").stdout.strip() for name, h in hosts.items()}


def http_status(url: str, token: str | None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def deploy_ok(*args: str) -> str:
    result = invoke("deploy", *args, check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    return result.stdout


# --- bad input --------------------------------------------------------------------


def test_deploy_before_provision_is_refused_and_starts_nothing(lab, tmp_path: Path) -> None:
    variant = write_inventory_variant(tmp_path, on_every_host(ray_prefix="/opt/not-provisioned"))
    result = invoke("deploy", "--inventory", str(variant), check=False)
    assert_refused(result, "no environment for Ray 2.60.0 / Python 3.11.2", "run `invoke provision` first")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"ray_dashboard_port": 6379}, "ray_gcs_port and ray_dashboard_port use the same port"),
        ({"ray_metrics_export_port": 12000}, "ray_metrics_export_port is inside the worker port range 10002-19999"),
        (
            {"ray_node_ip": "10.77.0.99"},
            "ray_node_ip '10.77.0.99' is not an address of this host; the host has: 10.77.",
        ),
    ],
    ids=["ports-collide", "port-in-worker-range", "node-ip-not-on-host"],
)
def test_bad_deploy_settings_are_refused(lab, tmp_path: Path, values: dict, message: str) -> None:
    result = invoke(
        "deploy", "--inventory", str(write_inventory_variant(tmp_path, on_every_host(**values))), check=False
    )
    assert_refused(result, message)


# --- the running cluster ----------------------------------------------------------


def test_cluster_has_exactly_the_inventory_nodes_with_their_cpus(cluster) -> None:
    assert ray_alive_nodes(cluster[HEAD]) == expected_nodes(cluster)


def test_units_are_enabled_active_and_ray_runs_as_ray(cluster) -> None:
    for host in cluster.values():
        assert host.ssh("systemctl is-enabled ray").stdout.strip() == "enabled"
        assert host.ssh("systemctl is-active ray").stdout.strip() == "active"
        main_pid = host.ssh("systemctl show --property=MainPID --value ray").stdout.strip()
        owners = host.ssh(f"ps -o user:20= -p {main_pid}; ps -eo user:20=,args= | grep -E '[r]aylet|[g]cs_server'")
        assert {line.split()[0] for line in owners.stdout.splitlines()} == {"ray"}, f"{host.name}: {owners.stdout}"


def unit_start_command(host: LabHost) -> list[str]:
    """The unit's ExecStart, split as systemd does (continued lines joined), up to Ray's `start`."""
    unit = host.ssh("cat /etc/systemd/system/ray.service").stdout.replace("\\\n", " ")
    line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart="))
    return argv[: argv.index("start")]


def test_the_unit_runs_rays_cli_without_the_subcommands_a_node_never_uses(cluster) -> None:
    # The unit's launcher trims Ray's CLI (imports on every start); with this Ray it still
    # is Ray's CLI, and the serve, job and state subcommands are really left out. A module
    # planted in Ray's working directory (writable by Ray's tasks) is not imported.
    for host in (cluster[HEAD], next(h for name, h in cluster.items() if name != HEAD)):
        command = " ".join(shlex.quote(arg) for arg in [*unit_start_command(host), "--help"])
        plant = "echo 'raise SystemExit(\"planted\")' > click.py"
        script = f"cd /var/lib/ray && {plant} && {command}; status=$?; rm -f click.py; exit $status"
        out = host.ssh(f"sudo -u ray sh -c {shlex.quote(script)}").stdout
        listed = out.split("Commands:")[1].splitlines()
        commands = {line.split()[0] for line in listed if line.startswith("  ") and line[2:3] != " "}
        assert {"start", "stop", "status"} <= commands, out
        assert not commands & {"serve", "job", "list", "summary"}, out


def test_token_is_required_by_the_jobs_api(cluster) -> None:
    url = f"http://{cluster[HEAD].address}:8265/api/jobs/"
    assert http_status(url, None) == 401
    assert http_status(url, "not-the-token") in (401, 403)
    assert http_status(url, TOKEN_FILE.read_text().strip()) == 200
    assert oct(TOKEN_FILE.stat().st_mode & 0o777) == "0o600"
    for host in cluster.values():
        assert host.ssh("sudo stat -c %U:%G:%a /etc/ray/auth_token").stdout.strip() == "root:ray:440"
        assert host.ssh("cat /etc/ray/auth_token", check=False).returncode != 0


def test_deploy_output_never_shows_the_token(cluster) -> None:
    out = invoke("deploy").stdout + invoke("status").stdout + invoke("dashboard").stdout
    assert TOKEN_FILE.read_text().strip() not in out


def test_a_driver_on_the_head_connects_despite_the_private_tmp(cluster) -> None:
    head = cluster[HEAD]
    code = f"import ray; ray.init(address='{head.address}:6379'); print(int(ray.cluster_resources()['CPU']))"
    out = head.ssh(
        "sudo -u ray env RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=/etc/ray/auth_token"
        f' /opt/ray/current/bin/python -c "{code}"',
        timeout=120,
    )
    assert int(out.stdout.strip().splitlines()[-1]) == sum(expected_nodes(cluster).values())


def test_a_job_entrypoint_finds_python_on_the_path(cluster) -> None:
    code = (
        "from ray.job_submission import JobSubmissionClient, JobStatus; import time;"
        f"c = JobSubmissionClient('http://{cluster[HEAD].address}:8265');"
        "j = c.submit_job(entrypoint='python -c \"import ray, sys; print(sys.executable, ray.__version__)\"');"
        "deadline = time.monotonic() + 120\n"
        "while c.get_job_status(j) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):\n"
        "    assert time.monotonic() < deadline; time.sleep(0.5)\n"
        "print(c.get_job_status(j).value); print(c.get_job_logs(j))"
    )
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(TOKEN_FILE)}
    cmd = [sys.executable, "-c", code]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert "SUCCEEDED" in out.stdout, out.stdout + out.stderr
    assert "/opt/ray/venvs/ray-2.60.0-py3.11.2/bin/python 2.60.0" in out.stdout


def test_status_shows_every_node_alive(cluster) -> None:
    nodes = json.loads(invoke("status", "--json").stdout)["nodes"]
    assert {(n["host"], n["in_ray"], n["unit"]) for n in nodes} == {
        (name, "alive", "active/enabled") for name in cluster
    }
    assert all(n["ray"] == "2.60.0" and n["python"] == "3.11.2" for n in nodes)


# --- changes and restarts -----------------------------------------------------------


def test_a_login_shell_that_prints_first_does_not_confuse_the_kit(cluster) -> None:
    # The kit's read-only checks run through raw, that is through the login shell, whose
    # startup files some labs make chatty: what they print comes before the kit's JSON.
    worker = next(name for name in cluster if name != HEAD)
    host, want = cluster[worker], expected_nodes(cluster)
    host.ssh("cp ~/.bashrc ~/.bashrc.raykit-test && sed -i '1i echo Welcome to the lab' ~/.bashrc")
    try:
        assert host.ssh("true").stdout.startswith("Welcome to the lab")
        assert all(c["changed"] == 0 for n, c in recap(deploy_ok()).items() if n in cluster)  # preflight's probe
        nodes = json.loads(invoke("status", "--json").stdout)["nodes"]  # the unit's state
        assert {(n["host"], n["unit"]) for n in nodes} == {(name, "active/enabled") for name in cluster}
        result = invoke("doctor", check=False, timeout=120)  # the host check
        assert f"all {len(cluster)} hosts healthy" in result.stdout, result.stdout[-3000:]
        invoke("restart", "--hosts", worker)  # stop/start/restart check the unit first
        assert ray_alive_nodes(cluster[HEAD]) == want
    finally:
        host.ssh("mv ~/.bashrc.raykit-test ~/.bashrc")


def test_second_deploy_changes_and_restarts_nothing(cluster) -> None:
    before = main_pids(cluster)
    out = deploy_ok()
    counts = recap(out)
    assert {n: c["changed"] for n, c in counts.items() if n in cluster} == {n: 0 for n in cluster}
    assert main_pids(cluster) == before
    # The probe found every node as deploy makes it: straight to the join check, no file task run
    # (the plan's task is named in the output, so the file task's absence means it never ran).
    assert re.search(r"TASK \[[\w.]+ : Render the node's files and compare", out), out[-3000:]
    units = re.search(r"TASK \[[\w.]+ : Write the settings and units.*?\n(.*?)\n\n", out, re.DOTALL)
    assert units and set(re.findall(r"^(\w+):", units.group(1), re.MULTILINE)) == {"skipping"}, out[-3000:]
    assert not re.search(r"TASK \[[\w.]+ : Write the settings folder", out), out[-3000:]


def test_deploy_repairs_hand_made_changes_on_a_node(cluster) -> None:
    # A no-op deploy skips what preflight's probe found unchanged: the probe must see these.
    edited, loosened = sorted(cluster)[1], sorted(cluster)[2]
    before = main_pids(cluster)
    cluster[edited].ssh("echo RAY_hand_made=1 | sudo tee -a /etc/ray/ray.env >/dev/null")
    cluster[loosened].ssh("sudo chmod 0444 /etc/ray/auth_token")
    cluster[HEAD].ssh("sudo systemctl disable --quiet ray")
    counts = recap(deploy_ok())
    assert all(counts[n]["changed"] > 0 for n in (edited, loosened, HEAD)), counts
    assert cluster[edited].ssh("sudo grep -c RAY_hand_made /etc/ray/ray.env", check=False).stdout.strip() == "0"
    assert cluster[loosened].ssh("sudo stat -c %a /etc/ray/auth_token").stdout.strip() == "440"
    assert cluster[HEAD].ssh("systemctl is-enabled ray").stdout.strip() == "enabled"
    after = main_pids(cluster)
    # A running head found disabled is only enabled; a worker's settings never restart it.
    assert after[HEAD] == before[HEAD]
    assert after[edited] != before[edited] and after[loosened] != before[loosened]  # they run the repaired files
    assert ray_alive_nodes(cluster[HEAD]) == expected_nodes(cluster)


def with_labels(hosts: list[str], labels: dict[str, str]):
    def edit(inv: dict) -> None:
        for group in inv["children"].values():
            for name, hvars in (group["hosts"] or {}).items():
                if name in hosts:
                    hvars["ray_labels"] = labels

    return edit


def test_a_worker_change_restarts_only_that_worker(cluster, tmp_path: Path) -> None:
    worker = sorted(cluster)[1]
    before = main_pids(cluster)
    deploy_ok("--inventory", str(write_inventory_variant(tmp_path, with_labels([worker], {"disk": "ssd"}))))
    after = main_pids(cluster)
    assert after[worker] != before[worker]
    assert {n: p for n, p in after.items() if n != worker} == {n: p for n, p in before.items() if n != worker}
    deploy_ok()  # back to the plain inventory
    wait_for_nodes(cluster)


def test_a_head_change_restarts_the_head_then_every_worker(cluster, tmp_path: Path) -> None:
    before = main_pids(cluster)
    deploy_ok("--inventory", str(write_inventory_variant(tmp_path, with_labels([HEAD], {"zone": "a"}))))
    after = main_pids(cluster)
    assert all(after[n] != before[n] for n in cluster), (before, after)
    deploy_ok()
    assert ray_alive_nodes(cluster[HEAD]) == expected_nodes(cluster)


def test_deploy_check_names_the_nodes_it_would_restart_and_changes_nothing(cluster, tmp_path: Path) -> None:
    def processes_and_settings() -> tuple[dict[str, str], dict[str, str]]:
        settings = "sudo sha1sum /etc/systemd/system/ray.service /etc/ray/ray.env"
        return main_pids(cluster), {name: h.ssh(settings).stdout for name, h in cluster.items()}

    before = processes_and_settings()
    variant = write_inventory_variant(tmp_path, with_labels([HEAD], {"zone": "a"}))
    out = invoke("deploy", "--check", "--inventory", str(variant)).stdout
    assert f"{HEAD}: restarting Ray (settings)" in out, out[-3000:]
    for worker in set(cluster) - {HEAD}:
        assert f"{worker}: restarting Ray (its head restarts)" in out, out[-3000:]
    (tmp_path / "redis").mkdir()
    variant = write_inventory_variant(tmp_path / "redis", lambda inv: inv["vars"].update(ray_gcs_ft="redis"))
    out = invoke("deploy", "--check", "--inventory", str(variant)).stdout
    assert f"{HEAD}: would install and start Redis for the GCS (ray_gcs_ft: redis)" in out, out[-3000:]
    assert processes_and_settings() == before
    assert cluster[HEAD].ssh("test -e /usr/bin/redis-server", check=False).returncode == 1
    assert ray_alive_nodes(cluster[HEAD]) == expected_nodes(cluster)


def test_stop_leaves_no_ray_process_and_start_brings_every_node_back(cluster) -> None:
    invoke("stop")
    for host in cluster.values():
        assert host.ssh("systemctl is-active ray", check=False).stdout.strip() == "inactive"
        assert host.ssh("pgrep -u ray -c", check=False).stdout.strip() == "0", host.name
    invoke("start")
    assert ray_alive_nodes(cluster[HEAD]) == expected_nodes(cluster)


def test_stop_with_a_powered_off_worker_still_stops_the_others(cluster) -> None:
    worker = sorted(cluster)[2]
    invoke("lab.poweroff", worker)
    try:
        result = invoke("stop", check=False)
        assert result.returncode != 0 and f"fatal: [{worker}]: UNREACHABLE" in result.stdout, result.stdout[-3000:]
        for name, host in cluster.items():
            if name != worker:
                assert host.ssh("systemctl is-active ray", check=False).stdout.strip() == "inactive", name
    finally:
        invoke("lab.poweron", worker)
    invoke("start")
    assert ray_alive_nodes(cluster[HEAD]) == expected_nodes(cluster)


def test_restart_of_one_worker_leaves_the_others(cluster) -> None:
    worker = sorted(cluster)[2]
    before = main_pids(cluster)
    invoke("restart", "--hosts", worker)
    after = main_pids(cluster)
    assert after[worker] != before[worker]
    assert {n: p for n, p in after.items() if n != worker} == {n: p for n, p in before.items() if n != worker}
    assert ray_alive_nodes(cluster[HEAD]) == expected_nodes(cluster)


def test_a_rebooted_worker_rejoins_with_no_command_run(cluster) -> None:
    worker = sorted(cluster)[1]
    invoke("lab.reboot", worker)
    took = wait_for_nodes(cluster, timeout=120)
    print(f"worker {worker} alive again {took:.1f} s after its host came back")


def test_logs_show_the_nodes_journal(cluster) -> None:
    out = invoke("logs", sorted(cluster)[1], "--lines", "200").stdout
    assert "ray start" in out or "Ray runtime started" in out


# --- reset (runs before the lab is reshaped) -----------------------------------------------


@pytest.mark.lab_teardown(order=0)
def test_reset_leaves_hosts_as_provision_found_them(cluster) -> None:
    assert invoke("reset", check=False).returncode == 2  # refuses without --yes
    invoke("reset", "--yes")
    for host in cluster.values():
        leftovers = host.ssh(
            "ls -d /etc/systemd/system/ray.service /etc/ray /opt/ray /var/lib/ray /var/lib/redis /usr/bin/redis-server"
            " 2>/dev/null; getent passwd ray; getent group ray;"
            " pgrep -a -f 'ray start|ray[.]scripts[.]scripts|raylet|gcs_server|redis-server'",
            check=False,
        ).stdout
        assert leftovers.strip() == "", f"{host.name}: {leftovers}"
    assert not TOKEN_FILE.exists()
    assert not TOKEN_FILE.with_suffix(".redis").exists()
    assert INVENTORY.exists()
    again = invoke("reset", "--yes")  # on clean hosts: succeeds, changes nothing
    assert all(c["changed"] == 0 for n, c in recap(again.stdout).items() if n in cluster), again.stdout[-3000:]
    # Starting Ray where it is not deployed names the host and what to run.
    assert_refused(invoke("start", check=False), f"{HEAD}: Ray is not deployed here", "run `invoke deploy`")
