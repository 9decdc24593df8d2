"""The local lab: Debian hosts as systemd-nspawn containers on a bridge.

Each host boots systemd as PID 1 from its own overlayfs layer over one cached
debootstrap base image, gets a static address on a dedicated bridge, runs sshd
and has an unprivileged admin user with passwordless sudo, like a real lab
machine. Everything the lab makes lives under `state_dir` (plus the bridge and
the processes), so `down` can remove exactly that and nothing else.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import inspect
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from raykit.ssh import BATCH, ssh_argv

Log = Callable[[str], None]

BASE_PACKAGES = (
    "dbus",
    "iproute2",
    "libpam-systemd",
    "openssh-server",
    "python3-apt",
    "python3",
    "python3-venv",
    "sudo",
    "systemd",
    "systemd-sysv",
)
# Command -> Debian package that provides it on the controller.
CONTROLLER_TOOLS = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "ip": "iproute2",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "nft": "nftables",
}
FIREWALL_TABLE = "raykit_lab"  # nftables table (bridge family) of lab.block
FIRST_HOST_OFFSET = 11  # hosts get .11, .12, ...; the bridge (controller) gets .1
NSPAWN_REBOOT_EXIT = 133  # systemd-nspawn's exit code when the container rebooted
SUITE_RE = re.compile(r"^[a-z]+$")
DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")
HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
IFNAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,15}$")
BOOT_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 60.0


class LabError(Exception):
    """A problem the user can fix; shown as one line."""


@dataclass(frozen=True)
class LabSettings:
    """Where and how the lab is built; defaults come from invoke.yaml."""

    state_dir: Path
    cache_dir: Path
    bridge: str
    subnet: str
    prefix: str
    admin_user: str
    suite: str  # the hosts' Debian suite unless lab.up is given --suites
    mirror: str

    @property
    def network(self) -> ipaddress.IPv4Network:
        return parse_subnet(self.subnet)

    @property
    def ssh_key(self) -> Path:
        return self.state_dir / "ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "ssh" / "known_hosts"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "lab.json"


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    suite: str  # the Debian release it runs, e.g. bookworm


@dataclass(frozen=True)
class LabState:
    """What the lab made, kept in `state_dir/lab.json` so a later run can adopt or clean it."""

    subnet: str
    bridge: str
    prefix: str
    suites: tuple[str, ...]  # given to the hosts in turn, also to hosts added later
    bases: dict[str, str]  # suite -> its base image
    hosts: tuple[Host, ...]

    def to_json(self) -> str:
        data = asdict(self)
        data["hosts"] = [asdict(h) for h in self.hosts]
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LabState:
        data = json.loads(text)
        if "bases" not in data:  # written before labs had several suites: one base, base-SUITE-DIGEST
            suite = Path(data["base"]).name.split("-")[1]
            data["suites"], data["bases"] = [suite], {suite: data["base"]}
            data["hosts"] = [{**h, "suite": suite} for h in data["hosts"]]
        return cls(
            subnet=data["subnet"],
            bridge=data["bridge"],
            prefix=data["prefix"],
            suites=tuple(data["suites"]),
            bases=dict(data["bases"]),
            hosts=tuple(Host(**h) for h in data["hosts"]),
        )


# --- validation (pure) --------------------------------------------------------


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    """The lab subnet: a private IPv4 network of /24 or larger, given by its network address."""
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise LabError(f"subnet {text!r} is not a network address with a prefix ({exc})") from None
    if not isinstance(net, ipaddress.IPv4Network) or not net.is_private or net.prefixlen > 24:
        raise LabError(f"subnet {text!r} is not a private IPv4 network of /24 or larger")
    if net.is_loopback or net.is_link_local:
        raise LabError(f"subnet {text!r} is loopback or link-local; use e.g. 10.77.0.0/24")
    return net


def check_hostname(name: str, field: str = "host name") -> str:
    if not HOSTNAME_RE.match(name):
        raise LabError(
            f"{field} {name!r} is not a valid hostname "
            "(lowercase letters, digits and '-', 1-63 characters, not starting or ending with '-')"
        )
    return name


def check_bridge(name: str) -> str:
    if not IFNAME_RE.match(name):
        raise LabError(f"bridge {name!r} is not a valid interface name (1-15 of a-z A-Z 0-9 _ -)")
    return name


def host_names(prefix: str, count: int) -> list[str]:
    return [check_hostname(f"{prefix}-{i}") for i in range(1, count + 1)]


def parse_suites(text: str) -> tuple[str, ...]:
    """--suites: Debian suite names, comma-separated, given to the hosts in turn."""
    suites = tuple(part.strip() for part in text.split(","))
    for suite in suites:
        if not SUITE_RE.match(suite):
            raise LabError(f"--suites: {suite!r} is not a Debian suite name (lowercase letters, e.g. bookworm,trixie)")
    return suites


def plan_hosts(prefix: str, subnet: str, count: int, suites: Sequence[str]) -> tuple[Host, ...]:
    """Names, addresses and suites of a lab of `count` hosts; the first is the Ray head."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise LabError(f"--hosts must be a whole number of at least 1, got {count!r}")
    check_hostname(prefix, "host name prefix")
    net = parse_subnet(subnet)
    room = net.num_addresses - FIRST_HOST_OFFSET - 1
    if count > room:
        raise LabError(f"--hosts {count} does not fit in subnet {subnet} (room for {room})")
    names = host_names(prefix, count)
    return tuple(Host(n, str(net[FIRST_HOST_OFFSET + i]), suites[i % len(suites)]) for i, n in enumerate(names))


def bridge_address(subnet: str) -> str:
    net = parse_subnet(subnet)
    return f"{net[1]}/{net.prefixlen}"


def check_against_state(state: LabState | None, settings: LabSettings, hosts: tuple[Host, ...]) -> None:
    """Refuse a lab.up that would silently reshape an existing lab."""
    if state is None:
        return
    count = len(hosts)
    if state.subnet != settings.subnet:
        raise LabError(
            f"the lab already has {len(state.hosts)} hosts on subnet {state.subnet}; "
            f"run `invoke lab.down` before using subnet {settings.subnet}"
        )
    if state.prefix != settings.prefix:
        raise LabError(
            f"the lab already has hosts named {state.prefix}-N; "
            f"run `invoke lab.down` before using prefix {settings.prefix!r}"
        )
    if state.bridge != settings.bridge:
        raise LabError(
            f"the lab already uses bridge {state.bridge}; run `invoke lab.down` before using bridge {settings.bridge}"
        )
    if count < len(state.hosts):
        raise LabError(
            f"the lab has {len(state.hosts)} hosts and --hosts {count} would remove some; "
            "lab.up only adds hosts (run `invoke lab.down` first to shrink)"
        )
    for old, new in zip(state.hosts, hosts, strict=False):
        if old.suite != new.suite:
            raise LabError(
                f"{old.name} runs {old.suite} and --suites would make it {new.suite}; "
                "lab.up only adds hosts (run `invoke lab.down` first to change a host's suite)"
            )


def etc_hosts(hosts: tuple[Host, ...]) -> str:
    """Every host resolves every other by name: the hosts have no DNS server to ask."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{h.address}\t{h.name}" for h in hosts]
    return "\n".join(lines) + "\n"


def network_unit(address: str, prefixlen: int) -> str:
    # Sorts before the shipped 80-container-host0.network, which would give
    # the host a link-local address only.
    return f"[Match]\nName=host0\n\n[Network]\nAddress={address}/{prefixlen}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"


# --- state and locking --------------------------------------------------------


def load_state(settings: LabSettings) -> LabState | None:
    try:
        return LabState.from_json(settings.state_file.read_text())
    except FileNotFoundError:
        return None


def save_state(settings: LabSettings, state: LabState) -> None:
    tmp = settings.state_file.with_suffix(".tmp")
    tmp.write_text(state.to_json())
    tmp.replace(settings.state_file)


@contextlib.contextmanager
def locked(settings: LabSettings) -> Iterator[None]:
    """One lab command at a time."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.state_dir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


# --- controller prerequisites -------------------------------------------------


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, **kwargs)


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (it creates containers, mounts and a bridge); run as root")


def ensure_controller_tools(log: Log, tools: dict[str, str] = CONTROLLER_TOOLS, why: str = "the lab") -> None:
    """Install with apt-get the packages of the commands (command -> package) the controller lacks."""
    missing = sorted({pkg for cmd, pkg in tools.items() if shutil.which(cmd) is None})
    if not missing:
        return
    log(f"installing system packages {why} needs: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
        run(["apt-get", "install", "-y", "-qq", *missing], env=env, stdout=subprocess.DEVNULL)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise LabError(f"could not install {' '.join(missing)} with apt-get: {exc}") from None


# --- base image ---------------------------------------------------------------


def _customize_base(root: Path, admin_user: str) -> None:
    """Turn a debootstrap tree into a lab machine image (shared by every host)."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # each host gets its own keys
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("")  # no resolver is reachable: lookups would hang
    (root / "etc/machine-id").write_text("")
    (root / "etc/ssh/sshd_config.d/raykit-lab.conf").write_text(
        "PasswordAuthentication no\nPermitRootLogin no\nUseDNS no\n"
    )
    run(["systemctl", f"--root={root}", "enable", "systemd-networkd.service"], capture_output=True)
    run(["chroot", str(root), "useradd", "--create-home", "--shell", "/bin/bash", admin_user])
    sudoers = root / "etc/sudoers.d" / admin_user
    sudoers.write_text(f"{admin_user} ALL=(ALL) NOPASSWD:ALL\n")
    sudoers.chmod(0o440)
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()


def base_recipe(settings: LabSettings, suite: str) -> dict[str, object]:
    return {
        "suite": suite,
        "mirror": settings.mirror,
        "packages": BASE_PACKAGES,
        "admin_user": settings.admin_user,
        "customize": inspect.getsource(_customize_base),
    }


def base_image_path(settings: LabSettings, suite: str) -> Path:
    digest = hashlib.sha256(json.dumps(base_recipe(settings, suite), sort_keys=True).encode()).hexdigest()
    return settings.cache_dir / f"base-{suite}-{digest[:12]}"


def ensure_base_image(settings: LabSettings, suite: str, log: Log) -> Path:
    """Build a suite's base image once; rebuilt only when its recipe changes."""
    path = base_image_path(settings, suite)
    if (path / ".raykit-base").exists():
        return path
    if not (DEBOOTSTRAP_SCRIPTS / suite).exists():
        known = sorted(p.name for p in DEBOOTSTRAP_SCRIPTS.glob("*") if SUITE_RE.match(p.name))
        raise LabError(f"--suites: debootstrap does not know the suite {suite!r} (it knows: {', '.join(known)})")
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    building = path.with_name(path.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    log(f"building the base image with debootstrap ({suite}, about a minute, once)")
    logfile = settings.cache_dir / f"debootstrap-{suite}.log"
    cmd = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(BASE_PACKAGES)}",
        suite,
        str(building),
        settings.mirror,
    ]
    with logfile.open("w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        tail = logfile.read_text().strip().splitlines()[-3:]
        raise LabError(f"debootstrap failed (exit {rc}, see {logfile}): {' | '.join(tail)}")
    _customize_base(building, settings.admin_user)
    (building / ".raykit-base").write_text(json.dumps(base_recipe(settings, suite), sort_keys=True))
    building.rename(path)
    return path


def prune_base_images(settings: LabSettings, suite: str, keep: Path) -> None:
    """Older images of the suite (their recipe changed); other suites' images stay."""
    for old in settings.cache_dir.glob(f"base-{suite}-*"):
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


# --- processes, mounts, bridge ------------------------------------------------


def host_dir(settings: LabSettings, name: str) -> Path:
    return settings.state_dir / "hosts" / name


def host_root(settings: LabSettings, name: str) -> Path:
    return host_dir(settings, name) / "root"


def _pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _read(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def launcher_pids(root: Path) -> list[int]:
    """The boot loop and systemd-nspawn of one host, found by their command line."""
    marker = f"--directory={root}"
    return [p for p in _pids() if marker in _read(f"/proc/{p}/cmdline").split("\0")]


def container_pids(root: Path) -> list[int]:
    """Every process whose root directory is this host's tree, orphans included."""
    try:
        st = os.stat(root)
    except OSError:
        return []
    found = []
    for pid in _pids():
        try:
            pst = os.stat(f"/proc/{pid}/root")
        except OSError:
            continue
        if (pst.st_dev, pst.st_ino) == (st.st_dev, st.st_ino) and pid != os.getpid():
            found.append(pid)
    return found


def container_init(root: Path) -> int | None:
    """Host PID of the container's systemd (PID 1 inside)."""
    for pid in container_pids(root):
        nspid = [ln for ln in _read(f"/proc/{pid}/status").splitlines() if ln.startswith("NSpid:")]
        if nspid and nspid[0].split()[-1] == "1":
            return pid
    return None


def is_mounted(path: Path) -> bool:
    target = str(path)
    return any(line.split()[4] == target for line in _read("/proc/self/mountinfo").splitlines())


def host_state(settings: LabSettings, name: str) -> str:
    root = host_root(settings, name)
    if not is_mounted(root):
        return "stopped"
    launcher, init = launcher_pids(root), container_init(root)
    if launcher and init:
        return "running"
    if launcher:
        return "booting"
    return "orphaned" if container_pids(root) else "stopped"


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def kill_host(settings: LabSettings, name: str) -> None:
    """Power a host off hard: the boot loop first, so nothing boots it again, then every
    process of the container (orphans of a killed nspawn included), then its mount."""
    root = host_root(settings, name)
    for pid in launcher_pids(root) + container_pids(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: not launcher_pids(root) and not container_pids(root),
        BOOT_TIMEOUT_S,
        f"the processes of {name} to end",
    )
    if is_mounted(root) and subprocess.run(["umount", str(root)], capture_output=True, check=False).returncode:
        run(["umount", "--lazy", str(root)])
    delete_veth(name)
    # systemd-nspawn's own scratch folder, which it cannot remove when it is killed.
    shutil.rmtree(Path("/run/systemd/nspawn/propagate", name), ignore_errors=True)


def veth_name(name: str) -> str:
    """The host side of a container's link, as systemd-nspawn names it."""
    return f"vb-{name}"[:15]


def delete_veth(name: str) -> None:
    # The kernel removes a dead container's veth when its network namespace goes, which
    # can lag behind the processes; a leftover one makes the next boot fail ("File exists").
    if Path("/sys/class/net", veth_name(name)).exists():
        subprocess.run(["ip", "link", "delete", veth_name(name)], capture_output=True, check=False)


def bridge_exists(bridge: str) -> bool:
    return Path("/sys/class/net", bridge).exists()


def ensure_bridge(bridge: str, subnet: str) -> None:
    if not bridge_exists(bridge):
        run(["ip", "link", "add", bridge, "type", "bridge"])
    address = bridge_address(subnet)
    shown = run(["ip", "-4", "-o", "addr", "show", "dev", bridge], capture_output=True).stdout
    if address not in shown.split():
        run(["ip", "addr", "flush", "dev", bridge])
        run(["ip", "addr", "add", address, "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])


def delete_bridge(bridge: str) -> None:
    if bridge_exists(bridge):
        run(["ip", "link", "delete", bridge])


# --- hosts --------------------------------------------------------------------


def _uid_gid(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise LabError(f"user {user!r} is missing from the base image; run `invoke lab.down` and retry")


def mount_host(settings: LabSettings, base: Path, name: str) -> Path:
    hdir = host_dir(settings, name)
    root = hdir / "root"
    for sub in ("upper", "work", "root"):
        (hdir / sub).mkdir(parents=True, exist_ok=True)
    if not is_mounted(root):
        opts = f"lowerdir={base},upperdir={hdir / 'upper'},workdir={hdir / 'work'}"
        run(["mount", "-t", "overlay", "overlay", "-o", opts, str(root)])
    return root


def configure_host(settings: LabSettings, host: Host, hosts: tuple[Host, ...]) -> None:
    """Per-host files: identity once, the lab-wide view (peers, address, key) every time."""
    root = host_root(settings, host.name)
    hostkey = root / "etc/ssh/ssh_host_ed25519_key"
    if not hostkey.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", str(hostkey)])
        (root / "etc/hostname").write_text(host.name + "\n")
    (root / "etc/hosts").write_text(etc_hosts(hosts))
    # systemd in these containers sometimes fails to set up a unit's cgroup at boot
    # (exit 219/CGROUP); when that unit is the one lifting /run/nologin, nobody can log in.
    dropin = root / "etc/systemd/system/systemd-user-sessions.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "10-raykit-lab.conf").write_text("[Service]\nRestart=on-failure\nRestartSec=1\n")
    # Lingering keeps the admin user's systemd manager running: stopping it after the last
    # SSH session can hang here (its cgroup cannot be emptied), and every login waits for
    # that stop, for up to 2 minutes, longer than Ansible waits for sudo.
    linger = root / "var/lib/systemd/linger"
    linger.mkdir(parents=True, exist_ok=True)
    (linger / settings.admin_user).touch()
    netdir = root / "etc/systemd/network"
    netdir.mkdir(parents=True, exist_ok=True)
    (netdir / "10-host0.network").write_text(network_unit(host.address, settings.network.prefixlen))
    uid, gid = _uid_gid(root, settings.admin_user)
    sshdir = root / "home" / settings.admin_user / ".ssh"
    sshdir.mkdir(mode=0o700, exist_ok=True)
    keys = sshdir / "authorized_keys"
    keys.write_text(settings.ssh_key.with_suffix(".pub").read_text())
    for path in (sshdir, keys):
        os.chown(path, uid, gid)
    keys.chmod(0o600)


def boot_host(settings: LabSettings, state: LabState, name: str) -> None:
    """Start the container; the loop boots it again when systemd inside reboots."""
    hdir = host_dir(settings, name)
    nspawn = [
        "systemd-nspawn",
        "--quiet",
        "--boot",
        f"--directory={hdir / 'root'}",
        f"--machine={name}",
        f"--network-bridge={state.bridge}",
        # The controller does not run systemd, so nothing can register the machine.
        "--register=no",
        "--keep-unit",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        "--console=read-only",
    ]
    loop = f'while "$@"; [ $? -eq {NSPAWN_REBOOT_EXIT} ]; do :; done'
    with open(hdir / "console.log", "ab") as console:
        subprocess.Popen(
            ["sh", "-c", loop, "raykit-lab", *nspawn],
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def ssh_open(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=0.5):
            return True
    except OSError:
        return False


def connection_vars(settings: LabSettings) -> dict[str, str]:
    """How Ansible (and everything else) reaches the lab's hosts: the admin user, the lab's
    key, and strict checking against the host keys the lab wrote."""
    return {
        "ansible_user": settings.admin_user,
        "ansible_ssh_private_key_file": str(settings.ssh_key),
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={settings.known_hosts} -o StrictHostKeyChecking=yes",
    }


def ssh_command(settings: LabSettings, host: Host, remote: str | Sequence[str] = ()) -> list[str]:
    hostvars = {**connection_vars(settings), "ansible_host": host.address}
    return ssh_argv(hostvars, host.name, remote, BATCH)


def can_log_in(settings: LabSettings, host: Host) -> bool:
    """The admin user gets a shell: sshd is up and boot has lifted /run/nologin."""
    if not ssh_open(host.address):
        return False
    cmd = ssh_command(settings, host, "true")
    return subprocess.run(cmd, capture_output=True, timeout=15, check=False).returncode == 0


def wait_for_ssh(settings: LabSettings, hosts: tuple[Host, ...], timeout: float = BOOT_TIMEOUT_S) -> None:
    state = load_state(settings)
    assert state is not None, "every caller saves the lab's state first"
    write_known_hosts(settings, state.hosts)
    deadline = time.monotonic() + timeout
    for host in hosts:
        wait_until(
            functools.partial(can_log_in, settings, host),
            max(deadline - time.monotonic(), 0.1),
            f"a login on {host.name} ({host.address}); see {host_dir(settings, host.name) / 'console.log'}",
            interval=0.5,
        )


def ensure_ssh_key(settings: LabSettings) -> None:
    """A lab-only key, generated on first use, outside the repository."""
    if settings.ssh_key.exists():
        return
    settings.ssh_key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "raykit-lab", "-f", str(settings.ssh_key)])


def write_known_hosts(settings: LabSettings, hosts: tuple[Host, ...]) -> None:
    """The lab knows its hosts' keys, so SSH can check them instead of trusting on first use."""
    lines = []
    for host in hosts:
        pub = (host_root(settings, host.name) / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
        lines.append(f"{host.name},{host.address} {pub[0]} {pub[1]}")
    settings.known_hosts.write_text("\n".join(lines) + "\n")


def start_host(settings: LabSettings, state: LabState, host: Host) -> None:
    """Bring one host to running, cleaning whatever a killed earlier run left behind."""
    current = host_state(settings, host.name)
    if current == "running":
        return
    if current != "stopped":
        kill_host(settings, host.name)
    delete_veth(host.name)
    mount_host(settings, Path(state.bases[host.suite]), host.name)
    configure_host(settings, host, state.hosts)
    boot_host(settings, state, host.name)


# --- lab operations -----------------------------------------------------------


def up(
    settings: LabSettings, count: int | None, default_count: int, log: Log, suites: tuple[str, ...] | None = None
) -> LabState:
    """Create or adopt the lab so that it has `count` hosts running (existing count by default),
    given `suites` in turn (the lab's own by default, else settings.suite)."""
    check_bridge(settings.bridge)
    parse_subnet(settings.subnet)
    state = load_state(settings)
    wanted = count if count is not None else (len(state.hosts) if state else default_count)
    suites = suites or (state.suites if state else (settings.suite,))
    hosts = plan_hosts(settings.prefix, settings.subnet, wanted, suites)
    check_against_state(state, settings, hosts)
    require_root()
    ensure_controller_tools(log)
    with locked(settings):
        bases = dict(state.bases) if state else {}
        for suite in sorted({h.suite for h in hosts} - set(bases)):
            bases[suite] = str(ensure_base_image(settings, suite, log))
            prune_base_images(settings, suite, keep=Path(bases[suite]))
        for base in map(Path, bases.values()):
            if not (base / ".raykit-base").exists():
                raise LabError(f"the lab's base image {base} is gone; run `invoke lab.down`, then `invoke lab.up`")
        ensure_ssh_key(settings)
        state = LabState(settings.subnet, settings.bridge, settings.prefix, suites, bases, hosts)
        save_state(settings, state)  # before anything else, so a killed run can be cleaned up
        ensure_bridge(state.bridge, state.subnet)
        started = []
        for host in hosts:
            if host_state(settings, host.name) == "running":
                configure_host(settings, host, hosts)  # peers may have been added
            else:
                start_host(settings, state, host)
                started.append(host.name)
        if started:
            log(f"booting {', '.join(started)}")
        wait_for_ssh(settings, hosts)
    return state


def down(settings: LabSettings, log: Log) -> None:
    """Remove every container, mount, overlay, the bridge and the lab's state; keep the base image cache."""
    require_root()
    state = load_state(settings)
    names = {p.name for p in (settings.state_dir / "hosts").glob("*")}
    if state:
        names |= {h.name for h in state.hosts}
    with locked(settings):
        for name in sorted(names):
            kill_host(settings, name)
            shutil.rmtree(host_dir(settings, name), ignore_errors=True)
        delete_bridge(state.bridge if state else settings.bridge)
        if shutil.which("nft"):
            unblock()
        for path in (settings.ssh_key.parent, settings.state_file):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        shutil.rmtree(settings.state_dir / "hosts", ignore_errors=True)
    (settings.state_dir / ".lock").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        settings.state_dir.rmdir()
    log(f"removed {len(names)} hosts" if names else "no lab to remove")


def find_host(settings: LabSettings, name: str) -> tuple[LabState, Host]:
    state = load_state(settings)
    if state is None:
        raise LabError("there is no lab; run `invoke lab.up`")
    for host in state.hosts:
        if host.name == name:
            return state, host
    known = ", ".join(h.name for h in state.hosts)
    raise LabError(f"no lab host named {name!r} (hosts: {known})")


def poweroff(settings: LabSettings, name: str) -> None:
    """Cut the power: no clean shutdown, the disk is kept."""
    require_root()
    find_host(settings, name)
    with locked(settings):
        kill_host(settings, name)


def poweron(settings: LabSettings, name: str) -> None:
    require_root()
    state, host = find_host(settings, name)
    with locked(settings):
        start_host(settings, state, host)
        wait_for_ssh(settings, (host,))


def set_link(settings: LabSettings, name: str, up: bool) -> None:
    """Plug or unplug a running host's network cable: its port on the lab bridge goes up or down."""
    require_root()
    find_host(settings, name)
    if host_state(settings, name) != "running":
        raise LabError(f"host {name} is not running; use `invoke lab.poweron {name}`")
    run(["ip", "link", "set", "dev", veth_name(name), "up" if up else "down"])


def block(settings: LabSettings, source: str, target: str, port: int) -> None:
    """A firewall between two hosts: drop TCP from `source` to `target`'s `port` on the bridge."""
    require_root()
    (_, src), (_, dst) = find_host(settings, source), find_host(settings, target)
    chain = "{ type filter hook forward priority 0; policy accept; }"
    run(["nft", "add", "table", "bridge", FIREWALL_TABLE])
    run(["nft", "add", "chain", "bridge", FIREWALL_TABLE, "forward", chain])
    rule = ["ip", "saddr", src.address, "ip", "daddr", dst.address, "tcp", "dport", str(port), "drop"]
    run(["nft", "add", "rule", "bridge", FIREWALL_TABLE, "forward", *rule])


def unblock() -> None:
    """Remove every rule lab.block added."""
    require_root()
    subprocess.run(["nft", "delete", "table", "bridge", FIREWALL_TABLE], capture_output=True, check=False)


def reboot(settings: LabSettings, name: str, log: Log) -> None:
    """A clean reboot through systemd inside the host (Ctrl-Alt-Del); its disk is kept."""
    require_root()
    state, host = find_host(settings, name)
    root = host_root(settings, name)
    with locked(settings):
        init = container_init(root)
        if host_state(settings, name) != "running" or init is None:
            raise LabError(f"host {name} is not running; use `invoke lab.poweron {name}`")
        os.kill(init, signal.SIGINT)
        try:
            wait_until(lambda: container_init(root) not in (None, init), SHUTDOWN_TIMEOUT_S, f"{name} to reboot")
        except LabError:
            log(f"{name} did not shut down within {SHUTDOWN_TIMEOUT_S:.0f} s; resetting it")
            kill_host(settings, name)
            start_host(settings, state, host)
        wait_for_ssh(settings, (host,))


def release(settings: LabSettings, state: LabState, host: Host) -> str:
    """The Debian release the host runs, from its own os-release (its base image's while it is stopped)."""
    root = host_root(settings, host.name)
    tree = root if is_mounted(root) else Path(state.bases[host.suite])
    found = re.search(r'^VERSION_ID="?(\d+)', _read(str(tree / "etc/os-release")), re.MULTILINE)
    return f"{host.suite} ({found.group(1)})" if found else host.suite


def status(settings: LabSettings) -> list[dict[str, str]]:
    state = load_state(settings)
    if state is None:
        return []
    rows = []
    for i, host in enumerate(state.hosts):
        running = host_state(settings, host.name)
        rows.append(
            {
                "host": host.name,
                "address": host.address,
                "role": "head" if i == 0 else "worker",
                "release": release(settings, state, host),
                "state": running,
                "ssh": "open" if running == "running" and ssh_open(host.address) else "closed",
            }
        )
    return rows
