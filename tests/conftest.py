"""Shared fixtures: the integration suite brings up one lab and every test reuses it."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from raykit.ssh import BATCH, ssh_argv

ROOT = Path(__file__).resolve().parent.parent
INVENTORY = ROOT / "inventory" / "lab.yml"
LAB_HOSTS = 3
IN_CI = os.environ.get("CI") == "true"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: needs the local lab (root, systemd-nspawn)")
    config.addinivalue_line("markers", "lab_teardown(order=5): reshapes the lab; runs after every other test")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that reshape or remove the shared lab run last: by their order, then file order.
    def key(item: pytest.Item) -> int:
        marker = item.get_closest_marker("lab_teardown")
        return -1 if marker is None else marker.kwargs.get("order", 5)

    items.sort(key=key)


def invoke(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run an invoke task as a user would, from the repository root."""
    cmd = [str(Path(sys.executable).parent / "invoke"), *args]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        pytest.fail(f"invoke {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@dataclass(frozen=True)
class LabHost:
    name: str
    address: str
    hostvars: dict[str, Any]  # the inventory's, as Ansible reaches the host

    def ssh(self, command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        cmd = ssh_argv(self.hostvars, self.name, command, BATCH)
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            pytest.fail(f"{self.name}: {command!r} exited {result.returncode}: {result.stderr.strip()}")
        return result

    def copy(self, local: Path, remote: str) -> None:
        ssh = ssh_argv(self.hostvars, self.name, options=BATCH)
        scp = ["scp", "-q", *ssh[1:-1], str(local), f"{ssh[-1]}:{remote}"]
        subprocess.run(scp, check=True, timeout=30)


def read_inventory() -> dict[str, LabHost]:
    """The lab's hosts as any Ansible user sees them: from inventory/lab.yml."""
    inv = yaml.safe_load(INVENTORY.read_text())["all"]
    return {
        name: LabHost(name, hvars["ansible_host"], {**inv["vars"], **hvars})
        for group in ("ray_head", "ray_workers")
        for name, hvars in (inv["children"][group]["hosts"] or {}).items()
    }


def lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root"
    if shutil.which("systemd-nspawn") is None and shutil.which("apt-get") is None:
        return "the lab needs systemd-nspawn (or apt-get to install it)"
    return None


@pytest.fixture(scope="session")
def lab() -> dict[str, LabHost]:
    """One lab of LAB_HOSTS hosts for the whole session (lab.up adopts a running one)."""
    reason = lab_unavailable()
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true but the lab cannot run here: {reason}")
        pytest.skip(reason)
    invoke("lab.up", "--hosts", str(LAB_HOSTS))
    return read_inventory()


HEAD = "raylab-1"
TOKEN_FILE = Path(f"~/.config/raykit/{HEAD}.token").expanduser()


@pytest.fixture(scope="session")
def cluster(lab: dict[str, LabHost]) -> dict[str, LabHost]:
    """The lab provisioned and deployed (what deploy does is checked in test_3_deploy)."""
    for step in ("provision", "deploy"):
        result = invoke(step, check=False)
        assert result.returncode == 0, result.stdout[-3000:]
    return lab


RECAP_RE = r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)"


def recap(output: str) -> dict[str, dict[str, int]]:
    """host -> counts from ansible-playbook's PLAY RECAP."""
    return {
        m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "unreachable": int(m.group(4)),
                     "failed": int(m.group(5))}
        for m in re.finditer(RECAP_RE, output, re.MULTILINE)
    }  # fmt: skip


def write_inventory_variant(tmp: Path, edit) -> Path:
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


def on_every_host(**values: object):
    """An inventory edit setting host variables on every host (they beat group_vars)."""

    def edit(inv: dict) -> None:
        for group in inv["children"].values():
            for hvars in (group["hosts"] or {}).values():
                hvars.update(values)

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
