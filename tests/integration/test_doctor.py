"""invoke doctor on the lab: each fault made for real, then doctor must name the host and the fix."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raykit import cluster as raycluster
from tests.helpers import HEAD, TOKEN_FILE, LabHost, all_ips, install_fake_wheel, invoke, ray_state

pytestmark = pytest.mark.lab

WORKER = "raylab-2"
OTHER_WORKER = "raylab-3"


def doctor() -> subprocess.CompletedProcess[str]:
    return invoke("doctor", check=False, timeout=120)


def findings(result: subprocess.CompletedProcess[str]) -> list[str]:
    """doctor's findings, one per host and problem (a finding's later lines are indented)."""
    return re.split(r"\n(?=\S)", result.stdout)


def assert_finds(result: subprocess.CompletedProcess[str], host: str, *phrases: str) -> str:
    """doctor failed and one finding names `host` and says every phrase; returns that finding."""
    assert result.returncode == 1, result.stdout + result.stderr
    found = findings(result)
    mine = [f for f in found if f.startswith(f"{host}: ") and all(p in f for p in phrases)]
    assert mine, f"no finding on {host} saying {phrases}:\n{result.stdout}"
    others = [f for f in found if not f.startswith((f"{host}: ", "doctor: "))]
    assert not others, f"findings on other hosts:\n{result.stdout}"
    assert "fix: " in mine[0]
    return mine[0]


@pytest.fixture
def whole(deployed: dict[str, LabHost]) -> Iterator[dict[str, LabHost]]:
    """A healthy cluster before the fault; after the repair, Ray has every node again."""
    yield deployed
    raycluster.wait_for_cluster(ray_state(deployed), all_ips(deployed), timeout=180)


def test_doctor_passes_a_healthy_cluster(whole) -> None:
    result = doctor()
    assert result.returncode == 0, result.stdout
    assert f"all {len(whole)} hosts healthy" in result.stdout


def test_doctor_names_an_unreachable_host(whole) -> None:
    invoke("lab.poweroff", OTHER_WORKER)
    try:
        assert_finds(doctor(), OTHER_WORKER, "did not answer over SSH")
    finally:
        invoke("lab.poweron", OTHER_WORKER)


def test_doctor_names_version_drift(whole, tmp_path: Path) -> None:
    install_fake_wheel(whole[WORKER], tmp_path, "strayed", "0.1")
    try:
        assert_finds(doctor(), WORKER, "differs from the pins", "strayed 0.1 not in the lock", "invoke provision")
    finally:
        invoke("provision")
    assert doctor().returncode == 0


def test_doctor_names_a_failing_unit_and_shows_its_journal(whole) -> None:
    host = whole[WORKER]
    host.ssh("echo RAY_raylet_liveness_self_check_interval_ms=soon | sudo tee -a /etc/ray/ray.env >/dev/null")
    host.ssh("sudo systemctl restart ray")
    try:
        deadline = time.monotonic() + 30
        while int(host.ssh("systemctl show --property=NRestarts --value ray").stdout) < 1:
            assert time.monotonic() < deadline, "the unit did not fail"
            time.sleep(0.5)
        finding = assert_finds(doctor(), WORKER, "Ray's unit", "keeps failing")
        assert "| " in finding and "ray.service" in finding  # its journal lines
    finally:
        invoke("deploy")  # writes the environment back and restarts the node


def test_doctor_names_a_hand_edited_unit_a_head_without_authentication_and_a_token_mismatch(whole) -> None:
    # Three hosts changed by hand: one doctor names each, one deploy repairs them all.
    head, worker, third = whole[HEAD], whole[WORKER], whole[OTHER_WORKER]
    try:
        worker.ssh("echo '# tuned by hand' | sudo tee -a /etc/systemd/system/ray.service >/dev/null")
        auth_off = "s/^RAY_AUTH_MODE=token$/RAY_AUTH_MODE=disabled/"
        head.ssh(f"sudo sed -i '{auth_off}' /etc/ray/ray.env && sudo systemctl restart ray")
        third.ssh("echo not-the-cluster-token | sudo tee /etc/ray/auth_token >/dev/null")
        raycluster.wait_for_cluster(ray_state(whole), all_ips(whole), timeout=120)
        result = doctor()
        assert result.returncode == 1, result.stdout
        assert f"{WORKER}: /etc/systemd/system/ray.service differs from what deploy writes" in result.stdout
        assert f"{HEAD}: /etc/ray/ray.env differs from what deploy writes" in result.stdout
        assert f"{HEAD}: Ray's dashboard says its authentication mode is 'disabled', not 'token'" in result.stdout
        mismatch = [f for f in findings(result) if f.startswith(f"{OTHER_WORKER}: ")]
        assert len(mismatch) == 1 and "token differs from the controller's" in mismatch[0], result.stdout
        assert "fix: " in mismatch[0] and "invoke deploy" in mismatch[0], mismatch
        assert TOKEN_FILE.read_text().strip() not in result.stdout
    finally:
        invoke("deploy")
    assert doctor().returncode == 0


def test_doctor_names_a_node_that_runs_outside_the_cluster(whole) -> None:
    host, dropin = whole[WORKER], "/etc/systemd/system/ray.service.d/own-cluster.conf"
    try:
        # Someone made the worker a head of its own: the unit runs, the node is not ours.
        host.ssh(
            f"sudo mkdir -p {Path(dropin).parent} && printf '[Service]\\nExecStart=\\n"
            "ExecStart=/opt/ray/current/bin/ray start --block --head --port=6390"
            f" --node-ip-address={host.address} --temp-dir=/var/lib/ray/tmp"
            f" --include-dashboard=false --disable-usage-stats\\n' | sudo tee {dropin} >/dev/null"
            " && sudo systemctl daemon-reload && sudo systemctl restart ray"
        )
        raycluster.wait_for_cluster(ray_state(whole), all_ips(whole) - {host.address}, timeout=60)
        assert_finds(doctor(), WORKER, f"its node ({host.address}) is not in the cluster", "invoke restart")
    finally:
        host.ssh(f"sudo rm -f {dropin} && sudo systemctl daemon-reload")
        invoke("restart", "--hosts", WORKER)


def test_doctor_names_a_port_blocked_between_two_nodes(whole) -> None:
    head = whole[HEAD]
    invoke("lab.block", WORKER, HEAD, "6379")
    try:
        assert_finds(doctor(), WORKER, f"cannot reach the GCS port of {HEAD} at {head.address}:6379", "firewall")
    finally:
        invoke("lab.unblock")


def test_doctor_names_a_dev_shm_smaller_than_the_object_store(whole) -> None:
    host = whole[WORKER]
    options = host.ssh("findmnt --noheadings --output OPTIONS /dev/shm").stdout
    found = re.search(r"size=(\w+)", options)
    assert found, options
    size = found.group(1)
    host.ssh("sudo mount -o remount,size=256M /dev/shm")
    try:
        assert_finds(doctor(), WORKER, "larger than /dev/shm (0.3 GB)", "ray_object_store_memory")
    finally:
        host.ssh(f"sudo mount -o remount,size={size} /dev/shm")


def test_doctor_names_clock_skew(whole, tmp_path: Path) -> None:
    host, lib = whole[WORKER], tmp_path / "clock_skew.so"
    # The lab's hosts share the controller's kernel clock: skew the host's Python programs' view of it.
    source = Path(__file__).with_name("clock_skew.c")
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(lib), str(source), "-ldl"], check=True)
    host.copy(lib, "/tmp/clock_skew.so")
    host.ssh(
        "sudo install -m 0644 /tmp/clock_skew.so /usr/local/lib/clock_skew.so"
        " && echo /usr/local/lib/clock_skew.so | sudo tee /etc/ld.so.preload >/dev/null"
    )
    try:
        assert_finds(doctor(), WORKER, "clock is 300 s ahead of the controller's", "chrony")
    finally:
        host.ssh("sudo rm -f /etc/ld.so.preload /usr/local/lib/clock_skew.so")
