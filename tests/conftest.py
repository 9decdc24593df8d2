"""The lab's states as fixtures. Each reaches its state from whatever the lab is in, and costs
only a check when the lab is already there, so any test runs alone and in any order."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from raykit import cluster as raycluster
from tests.helpers import (
    ENV,
    INVENTORY,
    LAB_HOSTS,
    PASSED,
    SSH_MASTERS,
    WAITED,
    LabHost,
    all_ips,
    close_ssh_masters,
    invoke,
    ray_state,
    read_inventory,
)

IN_CI = os.environ.get("CI") == "true"

# One line per host, the last it prints: what of Ray is on it, read on the host itself.
# The kit's Redis left on a head (ray_gcs_ft) is not the lab's deployed state.
STATE_SCRIPT = f"""
if test -e /etc/systemd/system/ray.service; then
  echo "deployed $(systemctl is-active ray)$(test -e /var/lib/raykit-redis && echo ' with redis')"
elif test "$(readlink /opt/ray/current)" = {ENV} -a ! -e /etc/ray; then echo provisioned
elif test -e /opt/ray -o -e /etc/ray || getent passwd ray >/dev/null; then echo partial
else echo fresh; fi
"""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--given-order", action="store_true", help="run the tests in the order given, not by scenario")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: needs the local lab (root, systemd-nspawn)")


# Scenarios in the order that changes the lab least: the deployed cluster's tests first, then
# reset's, the lab's own (they end with the lab down), fresh hosts, and last the lab grown by a
# host (test_ray_firewall's fourth host is test_python's trixie one). Within one, the files' order.
LATER_FILES = {"test_reset.py": 1, "test_lab.py": 2, "test_provision.py": 3}
GROWN_LAB = {"four_hosts": 4, "mixed_lab": 5}


def scenario(item: pytest.Item) -> int:
    grown = [rank for name, rank in GROWN_LAB.items() if name in getattr(item, "fixturenames", ())]
    return max(grown) if grown else LATER_FILES.get(item.path.name, 0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--given-order"):
        items.sort(key=scenario)  # stable: the collected order within a scenario


# Seconds per test file, fixtures included: where the suite's time goes (README, Measured).
FILE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = report.nodeid.split("::")[0]
    FILE_SECONDS[path] = FILE_SECONDS.get(path, 0.0) + report.duration


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.when == "call":
        item.stash[PASSED] = report.passed
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    close_ssh_masters()
    shutil.rmtree(SSH_MASTERS, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.section("minutes per test file")
    for path, seconds in sorted(FILE_SECONDS.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{seconds / 60:6.1f}  {path}")
    if WAITED:
        terminalreporter.section("minutes the tests waited for (parallel calls summed)")
        for kind, (calls, seconds) in sorted(WAITED.items(), key=lambda item: -item[1][1]):
            terminalreporter.write_line(f"{seconds / 60:6.1f}  {kind} ({calls:.0f} calls)")


def lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root"
    if shutil.which("systemd-nspawn") is None and shutil.which("apt-get") is None:
        return "the lab needs systemd-nspawn (or apt-get to install it)"
    return None


def host_states(hosts: dict[str, LabHost]) -> dict[str, str | None]:
    """host -> its Ray state (see STATE_SCRIPT); None when it does not answer."""

    def read(host: LabHost) -> str | None:
        try:
            result = host.ssh(STATE_SCRIPT, check=False, timeout=15)
        except subprocess.TimeoutExpired:
            return None
        lines = result.stdout.strip().splitlines()  # after what a chatty login shell prints
        return lines[-1] if result.returncode == 0 and lines else None

    with ThreadPoolExecutor(len(hosts)) as pool:
        return dict(zip(hosts, pool.map(read, hosts.values()), strict=True))


@pytest.fixture
def running_lab() -> dict[str, LabHost]:
    """The lab running, with whatever number of hosts it has (LAB_HOSTS when there was none)."""
    reason = lab_unavailable()
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true but the lab cannot run here: {reason}")
        pytest.skip(reason)
    hosts = read_inventory() if INVENTORY.exists() else {}
    if not hosts or None in host_states(hosts).values():
        for name in hosts:  # a test that failed may have left a host unplugged or a port blocked
            invoke("lab.plug", name, check=False)
        invoke("lab.unblock", check=False)
        # Without --hosts: the lab keeps its count (a fresh clone has no inventory of a lab that
        # runs), and a new lab gets lab.hosts.
        invoke("lab.up")
    return read_inventory()


@pytest.fixture
def lab(running_lab: dict[str, LabHost]) -> dict[str, LabHost]:
    """The lab running exactly LAB_HOSTS hosts (a grown lab is made again: the lab cannot shrink)."""
    if len(running_lab) != LAB_HOSTS:
        invoke("lab.down")
        invoke("lab.up", "--hosts", str(LAB_HOSTS))
    return read_inventory()


@pytest.fixture
def fresh_hosts(lab: dict[str, LabHost]) -> dict[str, LabHost]:
    """Hosts with nothing of Ray on them, as provision first finds them (after `./bootstrap demo`
    they are deployed, so Ray is removed from them first)."""
    if set(host_states(lab).values()) != {"fresh"}:
        invoke("reset", "--yes")
    return lab


@pytest.fixture
def provisioned(lab: dict[str, LabHost]) -> dict[str, LabHost]:
    """Hosts provisioned and never deployed."""
    states = set(host_states(lab).values())
    if states != {"provisioned"}:
        if states - {"fresh", "provisioned"}:
            invoke("reset", "--yes")
        invoke("provision")
    return lab


@pytest.fixture
def deployed(lab: dict[str, LabHost]) -> dict[str, LabHost]:
    """The lab provisioned and deployed, every node alive in Ray."""
    if set(host_states(lab).values()) == {"deployed active"}:
        try:
            raycluster.wait_for_cluster(ray_state(lab), all_ips(lab), timeout=60)
            return lab
        except raycluster.ClusterError:
            pass  # deploy repairs it
    invoke("provision")
    invoke("deploy")
    raycluster.wait_for_cluster(ray_state(lab), all_ips(lab), timeout=120)
    return lab
