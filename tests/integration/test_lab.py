"""The local lab, checked from outside the kit: through Ansible, SSH and the machine's own view."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from raykit.ssh import BATCH, ssh_argv
from tests.helpers import (
    INVENTORY,
    LAB_HOSTS,
    PINS,
    ROOT,
    LabHost,
    assert_refused,
    invoke,
    on_every_host,
    read_inventory,
    write_inventory_variant,
)

pytestmark = pytest.mark.lab

STATE_DIR = Path("/var/lib/raykit/lab")
CACHE_DIR = Path("/var/cache/raykit")
BRIDGE = "raykit0"


def ansible(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(Path(sys.executable).parent / "ansible"), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def ansible_stdout(pattern: str, command: str, *extra: str) -> dict[str, str]:
    """host -> stdout of `command`, run through Ansible's command module."""
    result = ansible(pattern, "-m", "ansible.builtin.command", "-a", command, *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(re.findall(r"^(\S+) \| CHANGED \| rc=0 >>\n(.*)$", result.stdout, re.MULTILINE))


def lab_status() -> list[dict[str, str]]:
    return json.loads(invoke("lab.status", "--json").stdout)


def boot_marks(hosts: dict[str, LabHost]) -> dict[str, str]:
    return {name: h.ssh("sudo cat /run/raykit-test-boot", check=False).stdout.strip() for name, h in hosts.items()}


def set_boot_marks(hosts: dict[str, LabHost]) -> str:
    token = uuid.uuid4().hex
    for host in hosts.values():
        host.ssh(f"echo {token} | sudo tee /run/raykit-test-boot >/dev/null")
    return token


# The lab's systemd-nspawn processes, and only the lab's (the kit's Python builds run one too).
LAB_NSPAWN = f"^systemd-nspawn .*--directory={STATE_DIR}/hosts/"


def nspawn_processes() -> list[str]:
    """The lab's live systemd-nspawn processes (zombies wait for the machine's init to reap them)."""
    out = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=True)
    rows = [line.split(None, 2) for line in out.stdout.splitlines()]
    return [" ".join(row) for row in rows if re.match(LAB_NSPAWN, row[2]) and not row[1].startswith("Z")]


def kill_every_lab_process() -> None:
    """What ending a session does: the boot loops, nspawn and every process inside the hosts."""
    subprocess.run(["pkill", "-KILL", "-f", LAB_NSPAWN], check=False)
    roots = {(st.st_dev, st.st_ino) for st in map(os.stat, STATE_DIR.glob("hosts/*/root"))}
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            st = os.stat(f"/proc/{pid}/root")
            if (st.st_dev, st.st_ino) in roots or "raykit-lab" in Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(int(pid), signal.SIGKILL)
        except OSError:
            continue
    deadline = time.monotonic() + 30
    while nspawn_processes():
        assert time.monotonic() < deadline, "systemd-nspawn survived SIGKILL"
        time.sleep(0.1)


def write_everywhere(hosts: dict[str, LabHost], name: str) -> str:
    """A fresh token in ~/NAME on every host, synced to disk; returns the token."""
    content = uuid.uuid4().hex
    for host in hosts.values():
        host.ssh(f"echo {content} > ~/{name} && sync")
    return content


def assert_kept_everywhere(name: str, content: str) -> None:
    for host in read_inventory().values():
        assert host.ssh(f"cat ~/{name}").stdout.strip() == content, host.name


def lab_mounts() -> list[str]:
    return [ln for ln in Path("/proc/mounts").read_text().splitlines() if str(STATE_DIR) in ln]


# --- the running lab ----------------------------------------------------------


def test_inventory_has_one_head_and_the_rest_workers(lab: dict[str, LabHost]) -> None:
    inv = yaml.safe_load(INVENTORY.read_text())["all"]["children"]
    assert len(inv["ray_head"]["hosts"]) == 1
    assert len(inv["ray_workers"]["hosts"]) == LAB_HOSTS - 1
    assert len(lab) == LAB_HOSTS


def test_each_host_answers_ansible_as_the_admin_user_with_sudo(lab: dict[str, LabHost]) -> None:
    assert ansible_stdout("all", "whoami") == {name: "ops" for name in lab}
    assert ansible_stdout("all", "id -u", "--become") == {name: "0" for name in lab}


def test_root_cannot_log_in_over_ssh(lab: dict[str, LabHost]) -> None:
    host = next(iter(lab.values()))
    as_root = ssh_argv({**host.hostvars, "ansible_user": "root"}, host.name, "true", BATCH)
    result = subprocess.run(as_root, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 255 and "Permission denied" in result.stderr


def test_each_host_runs_systemd_as_pid_1(lab: dict[str, LabHost]) -> None:
    for host in lab.values():
        state = host.ssh("systemctl is-system-running --wait", check=False, timeout=90).stdout.strip()
        assert state in ("running", "degraded"), f"{host.name}: {state}"
        assert host.ssh("cat /proc/1/comm").stdout.strip() == "systemd"
        assert host.ssh("hostname").stdout.strip() == host.name


def test_each_host_has_its_own_address(lab: dict[str, LabHost]) -> None:
    seen = {}
    for host in lab.values():
        out = host.ssh("ip -4 -o addr show dev host0").stdout
        seen[host.name] = re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
    assert seen == {name: [h.address] for name, h in lab.items()}
    assert len({h.address for h in lab.values()}) == LAB_HOSTS


def test_hosts_resolve_each_other_by_name_without_a_dns_server(lab: dict[str, LabHost]) -> None:
    names = " ".join(lab)
    for host in lab.values():
        out = host.ssh(f"getent hosts {names}").stdout.split("\n")
        resolved = {parts[1]: parts[0] for parts in (ln.split() for ln in out) if len(parts) >= 2}
        assert resolved == {name: h.address for name, h in lab.items()}, host.name
        assert "nameserver" not in host.ssh("cat /etc/resolv.conf").stdout
        # An unknown name fails at once instead of hanging on an unreachable resolver.
        start = time.monotonic()
        assert host.ssh("getent hosts no-such-host.example", check=False).returncode == 2
        assert time.monotonic() - start < 3
    head = next(iter(lab.values()))
    for peer in lab:
        assert (
            head.ssh(f"ping -c1 -W2 {peer} >/dev/null 2>&1 || timeout 2 bash -c '</dev/tcp/{peer}/22'").returncode == 0
        )


def test_lab_up_again_changes_nothing(lab: dict[str, LabHost]) -> None:
    mark = set_boot_marks(lab)
    base_before = sorted(CACHE_DIR.glob("base-*"))
    inventory_before = INVENTORY.read_text()
    result = invoke("lab.up")
    assert "booting" not in result.stdout and "debootstrap" not in result.stdout
    assert boot_marks(lab) == {name: mark for name in lab}, "a host was rebooted"
    assert sorted(CACHE_DIR.glob("base-*")) == base_before
    assert INVENTORY.read_text() == inventory_before
    assert [r["state"] for r in lab_status()] == ["running"] * LAB_HOSTS


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hosts", "0"], "--hosts must be a whole number of at least 1"),
        (["--hosts", "three"], "--hosts must be a whole number"),
        (["--subnet", "8.8.8.0/24"], "subnet '8.8.8.0/24' is not a private IPv4 network of /24 or larger"),
        (["--subnet", "10.77.0.0/25"], "not a private IPv4 network of /24 or larger"),
        (["--prefix", "Ray_Lab"], "host name prefix 'Ray_Lab' is not a valid hostname"),
        (["--subnet", "10.78.0.0/24"], "already has 3 hosts on subnet 10.77.0.0/24"),
        (["--hosts", "2"], "would remove some"),
        (["--suites", "Trixie"], "'Trixie' is not a Debian suite name"),
        (["--suites", "trixie"], "raylab-1 runs bookworm and --suites would make it trixie"),
        (["--hosts", "4", "--suites", "bookworm,bookworm,bookworm,nosuch"], "debootstrap does not know the suite"),
    ],
)
def test_bad_input_is_refused_in_one_line_and_changes_nothing(
    lab: dict[str, LabHost], args: list[str], message: str
) -> None:
    mark = set_boot_marks(lab)
    before = lab_status()
    result = invoke("lab.up", *args, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert message in result.stderr
    assert lab_status() == before
    assert boot_marks(lab) == {name: mark for name in lab}
    assert not Path("/sys/class/net/raykit1").exists()


def test_reboot_restarts_a_host_and_keeps_its_files(lab: dict[str, LabHost]) -> None:
    host = lab[sorted(lab)[1]]
    content = uuid.uuid4().hex
    host.ssh(f"echo {content} > ~/kept-across-reboot")
    set_boot_marks({host.name: host})
    invoke("lab.reboot", host.name)
    assert boot_marks({host.name: host}) == {host.name: ""}, "the host did not boot again"
    assert host.ssh("cat ~/kept-across-reboot").stdout.strip() == content
    host.ssh("systemctl is-system-running --wait", check=False)
    assert host.ssh("systemctl is-system-running", check=False).stdout.strip() in ("running", "degraded")


def test_poweroff_and_poweron_keep_the_disk(lab: dict[str, LabHost]) -> None:
    host = lab[sorted(lab)[-1]]
    content = uuid.uuid4().hex
    host.ssh(f"echo {content} > ~/kept-across-power-cut && sync")
    invoke("lab.poweroff", host.name)
    assert {r["host"]: r["state"] for r in lab_status()}[host.name] == "stopped"
    assert host.ssh("true", check=False, timeout=15).returncode == 255
    invoke("lab.poweron", host.name)
    assert host.ssh("cat ~/kept-across-power-cut").stdout.strip() == content


def test_unknown_host_is_refused(lab: dict[str, LabHost]) -> None:
    result = invoke("lab.reboot", "no-such-host", check=False)
    assert result.returncode == 2 and "no lab host named 'no-such-host'" in result.stderr


# --- a lab that lost its processes, grows, or is removed ------------------------


def test_lab_up_adopts_a_lab_whose_processes_were_killed(lab: dict[str, LabHost]) -> None:
    """As when CI starts after a session's processes were ended: containers died,
    bridge, mounts and state files stayed."""
    content = write_everywhere(lab, "kept-across-kill")
    kill_every_lab_process()
    assert lab_mounts(), "the simulated crash should leave the overlay mounts behind"
    invoke("lab.up")
    assert [r["state"] for r in lab_status()] == ["running"] * LAB_HOSTS
    assert_kept_everywhere("kept-across-kill", content)


def test_lab_up_rebuilds_after_the_machine_rebooted(lab: dict[str, LabHost]) -> None:
    """A machine reboot loses processes, mounts and the bridge; state files stay."""
    content = write_everywhere(lab, "kept-across-machine-reboot")
    kill_every_lab_process()
    deadline = time.monotonic() + 30
    while lab_mounts():
        for line in lab_mounts():
            subprocess.run(["umount", line.split()[1]], capture_output=True, check=False)
        assert time.monotonic() < deadline, "could not unmount the lab's overlays"
    subprocess.run(["ip", "link", "delete", BRIDGE], check=True)
    invoke("lab.up")
    assert [r["state"] for r in lab_status()] == ["running"] * LAB_HOSTS
    assert_kept_everywhere("kept-across-machine-reboot", content)


def test_lab_up_adds_hosts_without_touching_the_others(lab: dict[str, LabHost]) -> None:
    mark = set_boot_marks(lab)
    invoke("lab.up", "--hosts", str(LAB_HOSTS + 1))
    grown = read_inventory()
    assert len(grown) == LAB_HOSTS + 1
    assert boot_marks(lab) == {name: mark for name in lab}, "an existing host was rebooted"
    (new,) = set(grown) - set(lab)
    for host in grown.values():
        out = host.ssh(f"getent hosts {' '.join(grown)}").stdout
        assert grown[new].address in out and new in out, host.name


def test_lab_up_gives_hosts_the_suites_in_turn(lab: dict[str, LabHost], tmp_path: Path) -> None:
    mark = set_boot_marks(lab)
    refused = invoke("lab.up", "--suites", "bookworm,trixie", check=False)
    assert refused.returncode == 2, refused.stderr
    assert "raylab-2 runs bookworm and --suites would make it trixie" in refused.stderr
    suites = ",".join(["bookworm"] * LAB_HOSTS + ["trixie"])
    invoke("lab.up", "--hosts", str(LAB_HOSTS + 1), "--suites", suites, timeout=900)
    grown = read_inventory()
    (new,) = set(grown) - set(lab)
    release = ". /etc/os-release && echo $VERSION_CODENAME $VERSION_ID"
    found = {name: h.ssh(release).stdout.strip() for name, h in grown.items()}
    assert found == {**dict.fromkeys(lab, "bookworm 12"), new: "trixie 13"}
    assert {r["host"]: r["release"] for r in lab_status()} == {
        **dict.fromkeys(lab, "bookworm (12)"),
        new: "trixie (13)",
    }
    assert boot_marks(lab) == {name: mark for name in lab}, "an existing host was rebooted"
    assert invoke("lab.up").returncode == 0  # the lab keeps its suites
    # The system provider takes the distro's python3 as it is: it differs there, and provision
    # says where (the default provider builds the pin for that host: test_python.py).
    python = grown[new].ssh("python3 -c 'import platform; print(platform.python_version())'").stdout.strip()
    system = write_inventory_variant(tmp_path, on_every_host(ray_python_provider="system"))
    result = invoke("provision", "--inventory", str(system), check=False)
    assert_refused(result, "HOST", "FOUND", "WANTED", "nothing was changed")
    row = next(line for line in result.stdout.splitlines() if line.strip().startswith(new))
    assert row.split()[:3] == [new, python, PINS["ray_python_version"]], row


def test_lab_down_leaves_no_bridge_mount_or_container(running_lab: dict[str, LabHost]) -> None:
    bases = sorted(CACHE_DIR.glob("base-*"))
    invoke("lab.down")
    assert not Path("/sys/class/net", BRIDGE).exists()
    assert not any(Path("/sys/class/net").glob("vb-*")), "a host's veth is left"
    assert not any(Path("/run/systemd/nspawn/propagate").glob("raylab-*")), "nspawn scratch folders are left"
    assert lab_mounts() == []
    assert nspawn_processes() == []
    assert not STATE_DIR.exists()
    assert not INVENTORY.exists()
    assert sorted(CACHE_DIR.glob("base-*")) == bases, "the base image cache should stay"
    assert json.loads(invoke("lab.status", "--json").stdout) == []
