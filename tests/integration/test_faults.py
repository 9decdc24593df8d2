"""When a node fails: each fault made on the lab, the cluster whole again, read through Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raykit import cluster as raycluster
from raykit import jobs
from tests.helpers import (
    HEAD,
    ROOT,
    TOKEN_FILE,
    LabHost,
    all_ips,
    assert_refused,
    invoke,
    main_pid,
    main_pids,
    node_ids,
    ray_state,
    write_inventory_variant,
)

pytestmark = pytest.mark.lab

RETRIABLE_JOB = ROOT / "tests" / "jobs" / "retriable_tasks.py"


def restarts(host: LabHost) -> int:
    return int(host.ssh("systemctl show --property=NRestarts --value ray").stdout)


class RunningJob:
    """The retriable job, submitted and running its tasks on every node."""

    def __init__(self, state: dict[str, str], tasks: int = 120) -> None:
        self.client = jobs.client(state["dashboard_url"], TOKEN_FILE.read_text().strip())
        self.id = jobs.submit(self.client, RETRIABLE_JOB, [str(tasks)])
        deadline = time.monotonic() + 60
        while "tasks submitted" not in self.client.get_job_logs(self.id):
            assert time.monotonic() < deadline, self.client.get_job_logs(self.id)
            time.sleep(0.3)

    def assert_running(self) -> None:
        """Still running: the fault struck while its tasks ran."""
        assert self.client.get_job_status(self.id).value == "RUNNING", self.client.get_job_logs(self.id)

    def assert_correct(self, timeout: float = 240) -> None:
        status = jobs.wait(self.client, self.id, timeout)
        logs = self.client.get_job_logs(self.id)
        assert status.value == "SUCCEEDED", logs
        assert "(correct)" in logs, logs


def test_a_killed_raylet_is_restarted_and_a_running_job_completes(deployed) -> None:
    state, worker = ray_state(deployed), deployed["raylab-2"]
    before, restarts_before = node_ids(state, worker), restarts(worker)
    job = RunningJob(state)
    worker.ssh("sudo pkill --signal KILL --exact raylet")
    job.assert_running()
    took = raycluster.wait_for_cluster(state, all_ips(deployed), gone=before, timeout=60)
    print(f"raylet killed on {worker.name}: cluster whole again in {took:.1f} s")
    assert restarts(worker) == restarts_before + 1  # systemd did it, no command ran
    job.assert_correct()


def test_a_powered_off_worker_loses_no_work_and_rejoins_when_powered_on(deployed) -> None:
    state, worker = ray_state(deployed), deployed["raylab-3"]
    before = node_ids(state, worker)
    job = RunningJob(state)
    invoke("lab.poweroff", worker.name)
    job.assert_running()
    try:
        job.assert_correct()  # its tasks on the lost node ran again on the others
        raycluster.wait_for_cluster(state, all_ips(deployed) - {worker.address}, gone=before, timeout=120)
    finally:
        invoke("lab.poweron", worker.name)
    took = raycluster.wait_for_cluster(state, all_ips(deployed), gone=before, timeout=120)
    print(f"{worker.name} powered on: alive in Ray {took:.1f} s after its sshd answered")


def test_a_rebooted_head_comes_back_and_every_worker_rejoins(deployed) -> None:
    state = ray_state(deployed)
    before = set(raycluster.alive_nodes(state))
    start = time.monotonic()
    rebooted = invoke("lab.reboot", HEAD)
    # Every Ray process stopped with the head's unit, so the host shut down by itself: the
    # lab did not have to reset it (it does after 60 s).
    assert "resetting it" not in rebooted.stdout + rebooted.stderr
    raycluster.wait_for_cluster(state, all_ips(deployed), gone=before, timeout=120)
    print(f"head host rebooted: every node alive again in {time.monotonic() - start:.1f} s")
    RunningJob(state).assert_correct()


def test_restart_with_the_head_unreachable_restarts_no_worker(deployed) -> None:
    workers = [h for name, h in deployed.items() if name != HEAD]
    since = {h.name: h.ssh("date +%s").stdout.strip() for h in workers}
    invoke("lab.unplug", HEAD)
    try:
        refused = invoke("restart", check=False)
        assert refused.returncode != 0
        assert f"{HEAD} (the head) did not answer: not starting or restarting any node" in refused.stdout
    finally:
        invoke("lab.plug", HEAD)
    # A stop or restart asked of systemd is journaled as "Stopping"; a worker that gave up on
    # its lost head and was restarted by systemd on its own is not.
    for host in workers:
        journal = host.ssh(f"sudo journalctl --namespace=+ray --unit=ray --since=@{since[host.name]} --no-pager").stdout
        assert "Stopping ray.service" not in journal, (host.name, journal[-2000:])
    raycluster.wait_for_cluster(ray_state(deployed), all_ips(deployed), timeout=180)


def test_a_stopped_node_leaves_no_process_of_the_ray_user_running(deployed) -> None:
    # The sleep stands in for a Ray process that outlives `ray start`, as a head's agents
    # did (they wait 60 s on the GCS that stopped with them).
    worker = deployed["raylab-3"]
    worker.ssh("sudo -u ray setsid sleep 600 </dev/null >/dev/null 2>&1 &")
    assert worker.ssh("pgrep -u ray -x sleep", check=False).returncode == 0
    invoke("stop", "--hosts", worker.name)
    try:
        left = worker.ssh("pgrep -u ray -a", check=False).stdout
        assert left == "", left
    finally:
        worker.ssh("sudo pkill -u ray -x sleep", check=False)
        invoke("start", "--hosts", worker.name)


def test_a_worker_cut_off_the_network_rejoins_when_the_link_is_back(deployed) -> None:
    state, worker = ray_state(deployed), deployed["raylab-2"]
    before = node_ids(state, worker)
    invoke("lab.unplug", worker.name)
    try:
        # Longer than Ray's timeouts: the head has declared the node dead.
        took = raycluster.wait_for_cluster(state, all_ips(deployed) - {worker.address}, gone=before, timeout=180)
        print(f"{worker.name} unplugged: Ray declared it dead after {took:.1f} s")
    finally:
        invoke("lab.plug", worker.name)
    took = raycluster.wait_for_cluster(state, all_ips(deployed), gone=before, timeout=120)
    print(f"{worker.name} plugged back in: alive in Ray again {took:.1f} s later")


def test_a_provision_killed_while_installing_converges_on_the_next_run(deployed, tmp_path: Path) -> None:
    # A second install beside the live one, on one host, so the cluster keeps running.
    host, prefix = deployed["raylab-3"], "/opt/raykit-killed"

    def one_host(inv: dict) -> None:
        inv["children"]["ray_head"]["hosts"] = {host.name: inv["children"]["ray_workers"]["hosts"][host.name]}
        inv["children"]["ray_workers"]["hosts"] = {}
        inv["vars"]["ray_prefix"] = prefix

    variant = str(write_inventory_variant(tmp_path, one_host))
    cmd = [str(Path(sys.executable).parent / "invoke"), "provision", "--inventory", variant]
    run = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        installing = f"ls -d {prefix}/venvs/*/lib/python3*/site-packages/*.dist-info"
        while host.ssh(installing, check=False).returncode != 0:
            assert run.poll() is None and time.monotonic() < deadline, "provision ended before installing"
            time.sleep(0.2)
        os.killpg(run.pid, signal.SIGKILL)  # invoke, ansible-playbook and its workers
        run.wait()
        assert host.ssh(f"test -e {prefix}/current", check=False).returncode != 0, "killed too late"
        result = invoke("provision", "--inventory", variant, check=False)
        assert result.returncode == 0, result.stdout[-3000:]
        freeze = "import importlib.metadata as m; print(sorted((d.name, d.version) for d in m.distributions()))"
        live, killed = (
            host.ssh(f'{env}/bin/python -c "{freeze}"').stdout for env in ("/opt/ray/current", f"{prefix}/current")
        )
        assert killed == live
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        host.ssh(f"sudo rm -rf {prefix}", check=False)


def test_a_deploy_that_fails_on_one_worker_leaves_the_running_cluster_running(deployed, tmp_path: Path) -> None:
    state, broken = ray_state(deployed), deployed["raylab-3"]
    kept = {name: h for name, h in deployed.items() if h is not broken}
    before = {name: (main_pid(h), node_ids(state, h)) for name, h in kept.items()}

    def typo_on_one_worker(inv: dict) -> None:  # a Ray knob Ray cannot parse: only Ray finds out
        inv["children"]["ray_workers"]["hosts"][broken.name]["ray_environment"] = {
            "RAY_raylet_liveness_self_check_interval_ms": "5 s"
        }
        inv["vars"]["ray_join_timeout"] = 15  # the others keep running: only the broken one is waited for

    try:
        result = invoke(
            "deploy", "--inventory", str(write_inventory_variant(tmp_path, typo_on_one_worker)), check=False
        )
        assert result.returncode != 0
        assert f"--- {broken.name}: journalctl -u ray" in result.stdout, result.stdout[-3000:]
        assert {name: (main_pid(h), node_ids(state, h)) for name, h in kept.items()} == before
        raycluster.wait_for_cluster(state, {h.address for h in kept.values()}, timeout=30)
        RunningJob(state).assert_correct()
    finally:
        result = invoke("deploy", check=False)
    assert result.returncode == 0, result.stdout[-3000:]


def test_a_rolling_restart_restarts_each_worker_once_and_a_running_job_finishes(deployed) -> None:
    state = ray_state(deployed)
    workers = [name for name in deployed if name != HEAD]
    before = main_pids(deployed)
    job = RunningJob(state, tasks=360)  # a task a second per CPU: a minute, several times the restart
    invoke("restart", "--rolling", timeout=900)
    job.assert_running()  # the restart ended while the job ran
    after = main_pids(deployed)
    assert after[HEAD] == before[HEAD]
    assert all(after[name] != before[name] for name in workers), (before, after)
    raycluster.wait_for_cluster(state, all_ips(deployed), timeout=60)
    job.assert_correct(timeout=600)


def boot_marks(hosts: dict[str, LabHost]) -> dict[str, str]:
    """kept or gone: a file in /run, which every boot starts empty."""
    probe = "test -e /run/raykit-test-boot && echo kept || echo gone"
    return {name: host.ssh(probe).stdout.strip() for name, host in hosts.items()}


def test_a_rolling_reboot_reboots_each_worker_once_and_the_head_only_when_asked(deployed) -> None:
    state = ray_state(deployed)
    workers = [name for name in deployed if name != HEAD]
    for host in deployed.values():
        host.ssh("sudo touch /run/raykit-test-boot")
    job = RunningJob(state, tasks=360)  # about a minute: the two workers reboot in about 20 s
    invoke("reboot", "--rolling", timeout=1200)
    job.assert_running()  # the reboots ended while the job ran
    assert boot_marks(deployed) == {HEAD: "kept", **dict.fromkeys(workers, "gone")}
    raycluster.wait_for_cluster(state, all_ips(deployed), timeout=60)
    # The head's reboot would end the job: refused, naming it, before any host reboots.
    refused = invoke("reboot", "--rolling", "--include-head", check=False)
    assert_refused(refused, f"{HEAD}: reboot --include-head would reboot the head", job.id, "--wait SECONDS")
    assert boot_marks(deployed)[HEAD] == "kept"
    job.assert_correct(timeout=600)
    invoke("reboot", "--rolling", "--include-head", timeout=1200)
    assert boot_marks(deployed)[HEAD] == "gone"
    raycluster.wait_for_cluster(state, all_ips(deployed), timeout=60)
