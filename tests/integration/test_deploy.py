"""invoke deploy on the lab: a supervised, token-secured cluster, read through Ray itself."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest
import yaml
from ray.job_submission import JobStatus, JobSubmissionClient

from raykit.jobs import auth_headers
from tests.helpers import (
    HEAD,
    ROOT,
    TOKEN_FILE,
    LabHost,
    assert_refused,
    expected_nodes,
    http_status,
    http_status_from,
    invoke,
    main_pid,
    main_pids,
    nft_table,
    on_every_host,
    ray_alive_nodes,
    recap,
    task_results,
    wait_for_nodes,
    with_labels,
    write_inventory_variant,
)

pytestmark = pytest.mark.lab


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
def test_bad_deploy_settings_are_refused(deployed, tmp_path: Path, values: dict, message: str) -> None:
    result = invoke(
        "deploy", "--inventory", str(write_inventory_variant(tmp_path, on_every_host(**values))), check=False
    )
    assert_refused(result, message)


# --- the running deployed ----------------------------------------------------------


def test_cluster_has_exactly_the_inventory_nodes_with_their_cpus(deployed) -> None:
    assert ray_alive_nodes(deployed[HEAD]) == expected_nodes(deployed)


def test_units_are_enabled_active_and_ray_runs_as_ray(deployed) -> None:
    for name, host in deployed.items():
        unit, processes = host.infra.service("ray"), host.infra.process
        assert unit.is_enabled and unit.is_running, name
        ray = [processes.get(pid=int(main_pid(host))), *processes.filter(comm="raylet")]
        if name == HEAD:
            ray += processes.filter(comm="gcs_server")
        assert len(ray) == (3 if name == HEAD else 2), (name, ray)
        assert {p.user for p in ray} == {"ray"}, (name, [(p.comm, p.user) for p in ray])


def unit_start_command(host: LabHost) -> list[str]:
    """The unit's ExecStart, split as systemd does (continued lines joined), up to Ray's `start`."""
    unit = host.ssh("cat /etc/systemd/system/ray.service").stdout.replace("\\\n", " ")
    line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart="))
    return argv[: argv.index("start")]


def test_the_unit_runs_rays_cli_without_the_subcommands_a_node_never_uses(deployed) -> None:
    # The unit's launcher trims Ray's CLI (imports on every start); with this Ray it still
    # is Ray's CLI, and the serve, job and state subcommands are really left out. A module
    # planted in Ray's working directory (writable by Ray's tasks) is not imported.
    for host in (deployed[HEAD], next(h for name, h in deployed.items() if name != HEAD)):
        command = " ".join(shlex.quote(arg) for arg in [*unit_start_command(host), "--help"])
        plant = "echo 'raise SystemExit(\"planted\")' > click.py"
        script = f"cd /var/lib/ray && {plant} && {command}; status=$?; rm -f click.py; exit $status"
        out = host.ssh(f"sudo -u ray sh -c {shlex.quote(script)}").stdout
        listed = out.split("Commands:")[1].splitlines()
        commands = {line.split()[0] for line in listed if line.startswith("  ") and line[2:3] != " "}
        assert {"start", "stop", "status"} <= commands, out
        assert not commands & {"serve", "job", "list", "summary"}, out


def test_token_is_required_by_the_jobs_api(deployed) -> None:
    url = f"http://{deployed[HEAD].address}:8265/api/jobs/"
    assert http_status(url, None) == 401
    assert http_status(url, "not-the-token") in (401, 403)
    assert http_status(url, TOKEN_FILE.read_text().strip()) == 200
    assert oct(TOKEN_FILE.stat().st_mode & 0o777) == "0o600"
    # The endpoint beside it, which deploy writes too, and their folder: the controller user's alone.
    endpoint = TOKEN_FILE.with_name(f"{HEAD}.endpoint.json")
    assert json.loads(endpoint.read_text())["head"] == HEAD
    assert [oct(p.stat().st_mode & 0o777) for p in (endpoint, TOKEN_FILE.parent)] == ["0o600", "0o700"]
    for host in deployed.values():
        with host.infra.sudo():
            token = host.infra.file("/etc/ray/auth_token")
            assert (token.user, token.group, token.mode) == ("root", "ray", 0o440), host.name
        assert host.ssh("cat /etc/ray/auth_token", check=False).returncode != 0


def test_deploy_output_never_shows_the_token(deployed) -> None:
    out = invoke("deploy").stdout + invoke("status").stdout + invoke("dashboard").stdout
    assert TOKEN_FILE.read_text().strip() not in out


def test_a_driver_on_the_head_connects_despite_the_private_tmp(deployed) -> None:
    head = deployed[HEAD]
    code = f"import ray; ray.init(address='{head.address}:6379'); print(int(ray.cluster_resources()['CPU']))"
    out = head.ssh(
        "sudo -u ray env RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=/etc/ray/auth_token"
        f' /opt/ray/current/bin/python -c "{code}"',
        timeout=120,
    )
    assert int(out.stdout.strip().splitlines()[-1]) == sum(expected_nodes(deployed).values())


def test_a_job_entrypoint_finds_python_on_the_path(deployed) -> None:
    code = (
        "from ray.job_submission import JobSubmissionClient, JobStatus; import time;"
        f"c = JobSubmissionClient('http://{deployed[HEAD].address}:8265');"
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


def test_status_shows_every_node_alive(deployed) -> None:
    nodes = json.loads(invoke("status", "--json").stdout)["nodes"]
    assert {(n["host"], n["in_ray"], n["unit"]) for n in nodes} == {
        (name, "alive", "active/enabled") for name in deployed
    }
    assert all(n["ray"] == "2.60.0" and n["python"] == "3.11.2" for n in nodes)


# The kit's pinned ports (README, "Ports"): the head's own, then every node's.
DEFAULTS = yaml.safe_load((ROOT / "roles/ray/defaults/main.yml").read_text())
HEAD_PORTS = {DEFAULTS[name] for name in ("ray_gcs_port", "ray_dashboard_port", "ray_client_server_port",
                                          "ray_dashboard_metrics_port", "ray_autoscaler_metrics_port")}  # fmt: skip
NODE_PORTS = {DEFAULTS[name] for name in ("ray_node_manager_port", "ray_object_manager_port",
                                          "ray_dashboard_agent_grpc_port", "ray_runtime_env_agent_port",
                                          "ray_metrics_export_port", "ray_dashboard_agent_listen_port")}  # fmt: skip
WORKER_PORTS = range(DEFAULTS["ray_min_worker_port"], DEFAULTS["ray_max_worker_port"] + 1)
SERVE_PORT = DEFAULTS["ray_serve_port"]


def listening(host: LabHost) -> dict[int, set[str]]:
    """port -> the ray user's processes that listen on it beyond loopback, as the host's ss sees them."""
    table, pids = host.ssh("sudo ss -Hltnp; echo --; pgrep -u ray").stdout.rsplit("--\n", 1)
    found: dict[int, set[str]] = {}
    for line in table.splitlines():
        if not line.startswith("LISTEN"):  # a login shell's chatter
            continue
        address, port = line.split()[3].rsplit(":", 1)
        ip = address.strip("[]").split("%")[0]
        if ip != "*" and ipaddress.ip_address(ip).is_loopback:
            continue
        ray = {command for command, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line) if pid in pids.split()}
        if ray:
            found.setdefault(int(port), set()).update(ray)
    return found


def unpinned(name: str, host: LabHost) -> tuple[dict[int, set[str]], list[int]]:
    """What the host's Ray listens on beyond its pinned ports, and which of those it does not listen on."""
    pinned = NODE_PORTS | (HEAD_PORTS if name == HEAD else set())
    found = listening(host)
    # Serve's replicas each take a random port for their own gRPC (Ray 2.60 binds "[::]:0"; README).
    replicas = {port for port, ray in found.items() if all(r.startswith("ray::ServeRepl") for r in ray)}
    others = {port: ray for port, ray in found.items() if port not in pinned | replicas | {SERVE_PORT, *WORKER_PORTS}}
    return others, sorted(pinned - set(found))


def test_ray_listens_beyond_loopback_only_on_the_pinned_ports(deployed) -> None:
    for name, host in deployed.items():
        # The agents and the head's metrics servers may bind after the node has joined.
        deadline = time.monotonic() + 30
        while (found := unpinned(name, host)) != ({}, []) and time.monotonic() < deadline:
            time.sleep(1)
        assert found == ({}, []), name
    # Without the token, from another node: the agents' HTTP says 401, but every metrics endpoint
    # answers (README, "Ports"); the firewall keeps the controller out of both.
    for name, host in deployed.items():
        other = deployed[HEAD if name != HEAD else sorted(deployed)[1]]
        agent = f"http://{host.address}:{DEFAULTS['ray_dashboard_agent_listen_port']}/api/job_agent/jobs/x/logs"
        assert http_status_from(other, agent) == 401, name
        metrics = ["ray_metrics_export_port"] + (
            ["ray_dashboard_metrics_port", "ray_autoscaler_metrics_port"] if name == HEAD else []
        )
        urls = {port: f"http://{host.address}:{DEFAULTS[port]}/metrics" for port in metrics}
        assert {port: http_status_from(other, url) for port, url in urls.items()} == dict.fromkeys(metrics, 200), name
        with pytest.raises(urllib.error.URLError, match="refused"):
            http_status(urls["ray_metrics_export_port"], None)
    # And status shows them: every node's ports on every host, the head's on the head alone.
    rows = {(row["port"], row["hosts"]) for row in json.loads(invoke("status", "--json").stdout)["ports"]}
    assert rows == {
        *((str(port), "all") for port in NODE_PORTS),
        *((str(port), HEAD) for port in HEAD_PORTS),
        (f"{WORKER_PORTS.start}-{WORKER_PORTS.stop - 1}", "all"),
    }


# --- changes and restarts -----------------------------------------------------------


def test_a_login_shell_that_prints_first_does_not_confuse_the_kit(deployed) -> None:
    # The kit's read-only checks run through raw, that is through the login shell, whose
    # startup files some labs make chatty: what they print comes before the kit's JSON.
    worker = next(name for name in deployed if name != HEAD)
    host, want = deployed[worker], expected_nodes(deployed)
    host.ssh("cp ~/.bashrc ~/.bashrc.raykit-test && sed -i '1i echo Welcome to the lab' ~/.bashrc")
    try:
        assert host.ssh("true").stdout.startswith("Welcome to the lab")
        counts = recap(deploy_ok())  # preflight's probe
        assert set(deployed) <= set(counts) and all(counts[n]["changed"] == 0 for n in deployed), counts
        nodes = json.loads(invoke("status", "--json").stdout)["nodes"]  # the unit's state
        assert {(n["host"], n["unit"]) for n in nodes} == {(name, "active/enabled") for name in deployed}
        result = invoke("doctor", check=False, timeout=120)  # the host check
        assert f"all {len(deployed)} hosts healthy" in result.stdout, result.stdout[-3000:]
        invoke("restart", "--hosts", worker)  # stop/start/restart check the unit first
        assert ray_alive_nodes(deployed[HEAD]) == want
    finally:
        host.ssh("mv ~/.bashrc.raykit-test ~/.bashrc")


def test_second_deploy_changes_and_restarts_nothing(deployed) -> None:
    before = main_pids(deployed)
    out = deploy_ok()
    counts = recap(out)
    assert {n: c["changed"] for n, c in counts.items() if n in deployed} == {n: 0 for n in deployed}
    assert main_pids(deployed) == before
    # The probe found every node as deploy makes it: straight to the join check, no file task run
    # (the plan's task is named in the output, so the file task's absence means it never ran).
    assert re.search(r"TASK \[[\w.]+ : Render the node's files and compare", out), out[-3000:]
    assert task_results(out, "Write the settings and units") == {"skipping"}, out[-3000:]
    assert not re.search(r"TASK \[[\w.]+ : Write the settings folder", out), out[-3000:]


JOURNAL_CAP, PROMETHEUS_ARGS = "/etc/systemd/journald@ray.conf", "/etc/default/prometheus"


def service_pids(host: LabHost) -> list[str]:
    """The main PIDs of Ray's journal and of Prometheus on the host ("0" where one does not run)."""
    pids = host.ssh("systemctl show --property=MainPID --value systemd-journald@ray prometheus").stdout.split()
    return pids + ["0"] * (2 - len(pids))


def test_deploy_repairs_hand_made_changes_on_a_node(deployed) -> None:
    # A no-op deploy skips what preflight's probe found unchanged: the probe must see these.
    edited, loosened = sorted(deployed)[1], sorted(deployed)[2]
    before = main_pids(deployed)
    deployed[edited].ssh("echo RAY_hand_made=1 | sudo tee -a /etc/ray/ray.env >/dev/null")
    deployed[loosened].ssh("sudo chmod 0444 /etc/ray/auth_token")
    deployed[HEAD].ssh("sudo systemctl disable --quiet ray")
    # The logs' and monitoring's files too: their services restart with them, Ray does not.
    deployed[edited].ssh(f"echo '# by hand' | sudo tee -a {JOURNAL_CAP} >/dev/null")
    deployed[HEAD].ssh(f"echo '# by hand' | sudo tee -a {PROMETHEUS_ARGS} >/dev/null")
    services = {name: service_pids(deployed[name]) for name in (edited, HEAD)}
    counts = recap(deploy_ok())
    assert all(counts[n]["changed"] > 0 for n in (edited, loosened, HEAD)), counts
    assert deployed[edited].ssh("sudo grep -c RAY_hand_made /etc/ray/ray.env", check=False).stdout.strip() == "0"
    assert deployed[loosened].ssh("sudo stat -c %a /etc/ray/auth_token").stdout.strip() == "440"
    assert deployed[HEAD].ssh("systemctl is-enabled ray").stdout.strip() == "enabled"
    for name, path in ((edited, JOURNAL_CAP), (HEAD, PROMETHEUS_ARGS)):
        assert "# by hand" not in deployed[name].ssh(f"cat {path}").stdout, (name, path)
    assert service_pids(deployed[edited])[0] != services[edited][0]  # the journal, with its cap
    assert service_pids(deployed[HEAD])[1] != services[HEAD][1]  # Prometheus, with its settings
    after = main_pids(deployed)
    # A running head found disabled is only enabled; a worker's settings never restart it.
    assert after[HEAD] == before[HEAD]
    assert after[edited] != before[edited] and after[loosened] != before[loosened]  # they run the repaired files
    assert ray_alive_nodes(deployed[HEAD]) == expected_nodes(deployed)


def test_a_worker_change_restarts_only_that_worker(deployed, tmp_path: Path) -> None:
    worker = sorted(deployed)[1]
    before = main_pids(deployed)
    try:
        deploy_ok("--inventory", str(write_inventory_variant(tmp_path, with_labels([worker], {"disk": "ssd"}))))
        after = main_pids(deployed)
    finally:
        deploy_ok()  # back to the plain inventory
    assert after[worker] != before[worker]
    assert {n: p for n, p in after.items() if n != worker} == {n: p for n, p in before.items() if n != worker}
    wait_for_nodes(deployed)


def test_deploy_check_names_the_nodes_it_would_restart_and_changes_nothing(deployed, tmp_path: Path) -> None:
    def processes_and_settings() -> tuple[dict[str, str], dict[str, str]]:
        settings = "sudo sha1sum /etc/systemd/system/ray.service /etc/ray/ray.env"
        return main_pids(deployed), {name: h.ssh(settings).stdout for name, h in deployed.items()}

    before = processes_and_settings()
    variant = write_inventory_variant(tmp_path, with_labels([HEAD], {"zone": "a"}))
    out = invoke("deploy", "--check", "--inventory", str(variant)).stdout
    assert f"{HEAD}: restarting Ray (settings)" in out, out[-3000:]
    for worker in set(deployed) - {HEAD}:
        assert f"{worker}: restarting Ray (its head restarts)" in out, out[-3000:]
    (tmp_path / "redis").mkdir()
    variant = write_inventory_variant(tmp_path / "redis", lambda inv: inv["vars"].update(ray_gcs_ft="redis"))
    out = invoke("deploy", "--check", "--inventory", str(variant)).stdout
    assert f"{HEAD}: would install and start Redis for the GCS (ray_gcs_ft: redis)" in out, out[-3000:]
    assert processes_and_settings() == before
    assert deployed[HEAD].ssh("test -e /usr/bin/redis-server", check=False).returncode == 1
    assert ray_alive_nodes(deployed[HEAD]) == expected_nodes(deployed)


def test_stop_leaves_no_ray_process_and_start_brings_every_node_back(deployed) -> None:
    invoke("stop")
    for host in deployed.values():
        assert host.ssh("systemctl is-active ray", check=False).stdout.strip() == "inactive"
        assert host.ssh("pgrep -u ray -c", check=False).stdout.strip() == "0", host.name
    invoke("start")
    assert ray_alive_nodes(deployed[HEAD]) == expected_nodes(deployed)


def test_stop_with_a_powered_off_worker_still_stops_the_others(deployed) -> None:
    worker = sorted(deployed)[2]
    invoke("lab.poweroff", worker)
    try:
        result = invoke("stop", check=False)
        assert result.returncode != 0 and f"fatal: [{worker}]: UNREACHABLE" in result.stdout, result.stdout[-3000:]
        for name, host in deployed.items():
            if name != worker:
                assert host.ssh("systemctl is-active ray", check=False).stdout.strip() == "inactive", name
    finally:
        invoke("lab.poweron", worker)
    invoke("start")
    assert ray_alive_nodes(deployed[HEAD]) == expected_nodes(deployed)


def test_restart_of_one_worker_leaves_the_others(deployed) -> None:
    worker = sorted(deployed)[2]
    before = main_pids(deployed)
    invoke("restart", "--hosts", worker)
    after = main_pids(deployed)
    assert after[worker] != before[worker]
    assert {n: p for n, p in after.items() if n != worker} == {n: p for n, p in before.items() if n != worker}
    assert ray_alive_nodes(deployed[HEAD]) == expected_nodes(deployed)


def test_a_rebooted_worker_rejoins_with_no_command_run(deployed) -> None:
    worker = sorted(deployed)[1]
    invoke("lab.reboot", worker)
    took = wait_for_nodes(deployed, timeout=120)
    print(f"worker {worker} alive again {took:.1f} s after its host came back")
    # Its firewall was loaded at boot, before Ray.
    assert nft_table(deployed[worker]).returncode == 0
    started = (
        deployed[worker]
        .ssh("systemctl show --property=ActiveEnterTimestampMonotonic --value raykit-firewall ray")
        .stdout.split()
    )
    assert 0 < int(started[0]) <= int(started[1]), started


def test_logs_show_the_nodes_journal(deployed) -> None:
    out = invoke("logs", sorted(deployed)[1], "--lines", "200").stdout
    assert "ray start" in out or "Ray runtime started" in out


def test_a_head_change_waits_for_a_running_job_when_asked_then_restarts_every_node(deployed, tmp_path: Path) -> None:
    head = deployed[HEAD]
    client = JobSubmissionClient(f"http://{head.address}:8265", headers=auth_headers(TOKEN_FILE.read_text()))
    (tmp_path / "job").mkdir()
    # The job stamps its end in Ray's temp dir (the unit's private /tmp is not the host's).
    done = "/var/lib/ray/tmp/raykit-test-nap"
    (tmp_path / "job" / "nap.py").write_text(
        f"import time\ntime.sleep(20)\nopen({done!r}, 'w').write(str(time.time()))\n"
    )
    job = client.submit_job(entrypoint="python nap.py", runtime_env={"working_dir": str(tmp_path / "job")})
    deadline = time.monotonic() + 60
    while client.get_job_status(job) != JobStatus.RUNNING:
        assert time.monotonic() < deadline, client.get_job_info(job)
        time.sleep(0.5)
    changed = write_inventory_variant(tmp_path, with_labels([HEAD], {"zone": "a"}))  # the head's alone
    before = main_pids(deployed)
    try:
        refused = invoke("deploy", "--inventory", str(changed), check=False)
        assert_refused(refused, f"{HEAD}: deploy would restart the head", f"{job} (python nap.py)", "--wait SECONDS")
        assert main_pids(deployed) == before
        invoke("deploy", "--inventory", str(changed), "--wait", "120", timeout=900)
        # The head restarted only after the job had ended (both by the head's clock).
        started = head.ssh('date +%s.%N -d "$(systemctl show ray --property=ActiveEnterTimestamp --value)"')
        assert float(head.ssh(f"sudo cat {done}").stdout) < float(started.stdout), "restarted before the job ended"
        # The workers follow their head (a new GCS): every node restarted, and every one is back.
        after = main_pids(deployed)
        assert all(after[n] != before[n] for n in deployed), (before, after)
        assert ray_alive_nodes(deployed[HEAD]) == expected_nodes(deployed)
    finally:
        head.ssh(f"sudo rm -f {done}")
        invoke("deploy", timeout=900)


def test_a_node_left_running_outside_the_inventory_is_named_and_not_waited_for(deployed, tmp_path: Path) -> None:
    last = sorted(deployed)[-1]

    def without_last(inv: dict) -> None:
        inv["children"]["ray_workers"]["hosts"].pop(last)
        inv["vars"]["ray_firewall"] = False  # the others keep letting it in

    smaller = write_inventory_variant(tmp_path, without_last)
    try:
        result = invoke("deploy", "--inventory", str(smaller), timeout=900)
        said = " ".join(result.stdout.split())  # Ansible folds long messages
        assert (
            f"Alive in Ray but not among the nodes this run waited for (IP=CPUS): {deployed[last].address}=" in said
        ), said[-3000:]
        # The firewall is off on the others: its files gone, and Ray's unit no longer loads its rules.
        head = deployed[HEAD]
        gone = "/etc/raykit-firewall.nft /etc/raykit-firewall.loaded /etc/systemd/system/ray.service.d"
        assert head.ssh(f"ls -d {gone}", check=False).stdout == ""
        assert "nft" not in head.ssh("systemctl show --property=ExecStartPre ray").stdout
    finally:
        invoke("deploy", timeout=900)


def test_a_drained_worker_leaves_the_cluster_and_deploy_names_it_without_failing(deployed) -> None:
    last = sorted(deployed)[-1]
    others = {name: host for name, host in deployed.items() if name != last}
    try:
        invoke("drain", last, timeout=600)
        # Ray's own view: exactly the others alive; the host keeps its environment, its unit stopped.
        assert ray_alive_nodes(deployed[HEAD]) == expected_nodes(others)
        unit = deployed[last].ssh("systemctl is-active ray; systemctl is-enabled ray", check=False).stdout.split()
        assert unit == ["inactive", "disabled"]
        deployed[last].ssh("test -x /opt/ray/current/bin/python")
        result = invoke("deploy", timeout=900)
        assert f"Drained, left stopped: {last}" in result.stdout
        assert ray_alive_nodes(deployed[HEAD]) == expected_nodes(others)
        row = next(line for line in invoke("status").stdout.splitlines() if line.startswith(last))
        assert " drained " in row, row
        invoke("doctor")
    finally:
        invoke("undrain", last, timeout=900)
    assert ray_alive_nodes(deployed[HEAD]) == expected_nodes(deployed)
