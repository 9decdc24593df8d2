"""The pinned Python on hosts that do not agree: three bookworm hosts (Python 3.11.2) and a trixie
one (3.13.5) in one lab. The distro's python3 serves where it is the pin, the kit's own build
(made on the controller) elsewhere; every Ray environment runs exactly the pin."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from raykit import cluster as raycluster
from tasks.lab import forget_facts
from tests.helpers import (
    GROWN_SUITES,
    LAB_HOSTS,
    PINS,
    LabHost,
    all_ips,
    assert_refused,
    invoke,
    main_pids,
    on_every_host,
    ray_state,
    read_inventory,
    recap,
    what_the_nodes_say,
    write_inventory_variant,
)

pytestmark = pytest.mark.lab

TRIXIE = f"raylab-{LAB_HOSTS + 1}"
RELEASES = {f"raylab-{n}": suite for n, suite in enumerate(GROWN_SUITES, start=1)}
PIN = PINS["ray_python_version"]
OTHER = "3.13.5"  # trixie's python3, which no bookworm host has
OTHER_SOURCE = "https://deb.debian.org/debian/pool/main/p/python3.13/python3.13_3.13.5.orig.tar.xz"
# A module every Ray worker imports, compiled by the controller into the new pin's environment.
NODE_PYC = (
    f"/opt/ray/venvs/ray-{PINS['ray_version']}-py{OTHER}/lib/python3.13/site-packages"
    "/ray/_private/workers/__pycache__/default_worker.cpython-313.pyc"
)
# A compiler, a build tool or a package of headers: none may be left on a host.
BUILD_PACKAGE = re.compile(r"^(gcc.*|g\+\+.*|cpp.*|make|build-essential|binutils.*|dpkg-dev|pkg-config|.*-dev)$")
BASE_STATUS = Path("/var/cache/raykit")  # the lab's base images: what each host had at first
SOURCE_CACHE = Path("~/.cache/raykit/python/src").expanduser()
# Each host's Ray environment on the pins: its Python version and the installation it was made from.
ON_THE_PINS = {name: (PIN, "/usr") for name in RELEASES} | {TRIXIE: (PIN, f"/opt/ray/python/{PIN}")}
# And the interpreter each host's running node executes then.
MINOR = PIN.rsplit(".", 1)[0]
NODES_ON_THE_PINS = {name: f"/usr/bin/python{MINOR}" for name in RELEASES} | {
    TRIXIE: f"/opt/ray/python/{PIN}/bin/python{MINOR}"
}


def releases(hosts: dict[str, LabHost]) -> dict[str, str]:
    return {name: h.ssh(". /etc/os-release && echo $VERSION_CODENAME").stdout.strip() for name, h in hosts.items()}


def env_python(host: LabHost, env: str = "/opt/ray/current") -> tuple[str, str]:
    """The Ray environment's Python version and the installation it was made from, run on the host
    (("", "") when there is none)."""
    code = "import platform, sys; print(platform.python_version(), sys.base_prefix)"
    found = host.ssh(f"{env}/bin/python -I -c {code!r}", check=False).stdout.split()[-2:]
    return (found[0], found[1]) if len(found) == 2 else ("", "")


# The binary the host's running Ray node executes, as the kernel holds it.
NODE_EXE = "/proc/$(systemctl show -P MainPID ray)/exe"


def node_interpreters(hosts: dict[str, LabHost]) -> dict[str, str]:
    """host -> the interpreter its running Ray node's process runs (read from /proc)."""
    return {name: host.ssh(f"sudo readlink {NODE_EXE}").stdout.strip() for name, host in hosts.items()}


def node_pythons(hosts: dict[str, LabHost]) -> dict[str, str]:
    """host -> the Python version its running Ray node's process runs: its very binary, run through
    /proc (provision may have replaced or moved the file since)."""
    said = {name: host.ssh(f"sudo {NODE_EXE} -V").stdout for name, host in hosts.items()}
    return {name: version.strip().removeprefix("Python ") for name, version in said.items()}


def versions(inventory: Path | None = None) -> dict[str, dict[str, str]]:
    args = ["--inventory", str(inventory)] if inventory else []
    return {row["host"]: row for row in json.loads(invoke("versions", "--json", *args, check=False).stdout)}


def packages(host: LabHost) -> set[str]:
    return set(host.ssh("dpkg-query -W -f '${Package}\\n'").stdout.split())


def base_packages(suite: str) -> set[str]:
    """The packages of the suite's lab base image, read on the controller (the host's first state)."""
    (status,) = BASE_STATUS.glob(f"base-{suite}-*/var/lib/dpkg/status")
    return set(re.findall(r"^Package: (\S+)", status.read_text(), re.MULTILINE))


def provision(inventory: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return invoke("provision", *(["--inventory", str(inventory)] if inventory else []), check=check, timeout=1800)


def deploy(hosts: dict[str, LabHost], inventory: Path | None = None) -> None:
    invoke("deploy", *(["--inventory", str(inventory)] if inventory else []), timeout=900)
    raycluster.wait_for_cluster(ray_state(hosts), all_ips(hosts), timeout=120)


@pytest.fixture
def mixed_lab(running_lab: dict[str, LabHost]) -> dict[str, LabHost]:
    """Three bookworm hosts and a trixie one, Ray on them in whatever state the last test left."""
    if len(running_lab) != LAB_HOSTS + 1 or releases(running_lab) != RELEASES:
        if len(running_lab) != LAB_HOSTS:
            invoke("lab.down")
            invoke("lab.up", "--hosts", str(LAB_HOSTS))
        invoke("lab.up", "--hosts", str(LAB_HOSTS + 1), "--suites", ",".join(GROWN_SUITES), timeout=900)
    return read_inventory()


@pytest.fixture
def mixed(mixed_lab: dict[str, LabHost]) -> dict[str, LabHost]:
    """The mixed lab deployed with the pins and the default provider: the distro's Python on the
    bookworm hosts, the kit's build on the trixie one. A test that left another pin or provider
    (even one that failed midway) is put back here, by the next test that needs it."""
    hosts = mixed_lab
    if {name: env_python(h) for name, h in hosts.items()} != ON_THE_PINS or any(
        h.ssh("systemctl is-active ray", check=False).stdout.strip() != "active" for h in hosts.values()
    ):
        provision()
        deploy(hosts)
    elif node_interpreters(hosts) != NODES_ON_THE_PINS:  # provisioned, but not deployed since
        deploy(hosts)
    raycluster.wait_for_cluster(ray_state(hosts), all_ips(hosts), timeout=120)
    return hosts


def test_mixed_lab_runs_the_pin_on_every_host(mixed: dict[str, LabHost]) -> None:
    # Every Ray environment runs exactly the pin: the distro's on bookworm, the kit's build on trixie.
    assert {name: env_python(h) for name, h in mixed.items()} == ON_THE_PINS
    assert node_pythons(mixed) == dict.fromkeys(mixed, PIN)
    assert node_interpreters(mixed) == NODES_ON_THE_PINS
    alive = raycluster.alive_by_ip(raycluster.ray_nodes(ray_state(mixed)))
    assert set(alive) == all_ips(mixed)
    rows = versions()
    assert {name: rows[name]["provider"] for name in mixed} == {
        **{name: "system" for name in mixed if name != TRIXIE},
        TRIXIE: "built: debian-13-x86_64",
    }
    assert rows[TRIXIE]["interpreter"] == NODES_ON_THE_PINS[TRIXIE]
    # The build is root's, and no one else may change it.
    tree = mixed[TRIXIE].infra.file(f"/opt/ray/python/{PIN}")
    assert (tree.user, tree.group, tree.mode & 0o022) == ("root", "root", 0)


def test_a_second_provision_changes_nothing(mixed: dict[str, LabHost]) -> None:
    counts = recap(provision().stdout)
    assert set(counts) == {*mixed, "localhost"}  # localhost: the inventory's check
    assert {name: c["changed"] for name, c in counts.items()} == dict.fromkeys(counts, 0)
    pids = main_pids(mixed)
    counts = recap(invoke("deploy", timeout=900).stdout)
    assert {name: counts[name]["changed"] for name in mixed} == dict.fromkeys(mixed, 0)
    assert main_pids(mixed) == pids, "a no-op deploy restarted a node"


def test_the_examples_run_on_the_mixed_lab(mixed: dict[str, LabHost]) -> None:
    result = invoke("examples", check=False, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_no_compiler_or_build_dependency_reaches_a_host(mixed: dict[str, LabHost]) -> None:
    for name, host in mixed.items():
        added = packages(host) - base_packages(RELEASES[name])
        assert not {p for p in added if BUILD_PACKAGE.match(p)}, (name, added)
        assert not host.ssh("ls -a /var/cache").stdout.count("raykit-python"), name  # the copies
        assert not host.infra.file("/build").exists, name
    # The trixie host got only the runtime libraries its build links against, the firewall's nft
    # and the node exporter with what it needs (ray_monitoring records them).
    monitoring = set(mixed[TRIXIE].ssh("cat /var/lib/raykit-monitoring", check=False).stdout.split())
    assert "prometheus-node-exporter" in monitoring, monitoring
    added = packages(mixed[TRIXIE]) - base_packages("trixie") - {"nftables"} - monitoring
    assert all(p.startswith("lib") or p.endswith("-common") for p in added), added
    # And it installed only those the host lacked: none of the host's own packages (libc6...) again.
    (base_log,) = BASE_STATUS.glob("base-trixie-*/var/log/dpkg.log")
    first, log = base_log.read_text(), mixed[TRIXIE].ssh("cat /var/log/dpkg.log").stdout
    assert log.startswith(first)
    assert " install " in log[len(first) :] and " upgrade " not in log[len(first) :], log[len(first) :]


def test_interpreter_drift_is_reported_and_repaired(mixed: dict[str, LabHost]) -> None:
    host = mixed[TRIXIE]
    victim = f"/opt/ray/python/{PIN}/lib/python{MINOR}/json/__init__.py"
    host.ssh(f"echo 'raise SystemExit' | sudo tee -a {victim} >/dev/null")
    try:
        row = versions()[TRIXIE]
        assert f"interpreter changed: {victim}" in row["status"], row
    finally:
        counts = recap(provision().stdout)
    assert counts[TRIXIE]["changed"] > 0
    assert {name: counts[name]["changed"] for name in mixed if name != TRIXIE} == dict.fromkeys(
        set(mixed) - {TRIXIE}, 0
    )
    assert "raise SystemExit" not in host.ssh(f"tail -1 {victim}").stdout
    assert versions()[TRIXIE]["status"] == "ok"
    # Its node still runs the old tree, moved aside and deleted: deploy restarts that node alone.
    pids = main_pids(mixed)
    deploy(mixed)
    others = set(mixed) - {TRIXIE}
    assert {name: pid for name, pid in main_pids(mixed).items() if name in others} == {n: pids[n] for n in others}
    assert node_interpreters(mixed)[TRIXIE] == NODES_ON_THE_PINS[TRIXIE]


def test_a_pin_change_reverses_the_roles_and_deploy_switches(mixed: dict[str, LabHost], tmp_path: Path) -> None:
    hosts = mixed
    locks = tmp_path / "locks"
    inventory = write_inventory_variant(
        tmp_path,
        on_every_host(ray_python_version=OTHER, ray_python_source_url=OTHER_SOURCE, ray_lock_dir=str(locks)),
    )
    invoke("lock", "--inventory", str(inventory), "--out", str(locks), timeout=900)
    provision(inventory)
    # Staged beside the running cluster, which still runs the old pin until deploy. The controller
    # (bookworm) has no python3.13: its bytecode was compiled by the kit's build for bookworm.
    assert node_pythons(hosts) == dict.fromkeys(hosts, PIN)
    assert {name: h.ssh(f"test -f {NODE_PYC}", check=False).returncode for name, h in hosts.items()} == dict.fromkeys(
        hosts, 0
    )
    deploy(hosts, inventory)
    assert node_pythons(hosts) == dict.fromkeys(hosts, OTHER)
    assert node_interpreters(hosts) == {
        **{name: f"/opt/ray/python/{OTHER}/bin/python3.13" for name in hosts if name != TRIXIE},
        TRIXIE: "/usr/bin/python3.13",
    }
    rows = versions(inventory)
    assert {name: rows[name]["provider"] for name in hosts} == {
        **{name: "built: debian-12-x86_64" for name in hosts if name != TRIXIE},
        TRIXIE: "system",
    }
    # The old pin's environment stays, as previous (for `invoke rollback`), on the interpreter it ran.
    old = f"/opt/ray/venvs/ray-{PINS['ray_version']}-py{PIN}"
    assert {name: h.ssh("readlink /opt/ray/previous").stdout.strip() for name, h in hosts.items()} == dict.fromkeys(
        hosts, old
    )
    assert {name: env_python(h, old) for name, h in hosts.items()} == ON_THE_PINS
    # On the new pin as on the old: a second provision changes nothing, a job's driver and its
    # tasks on the nodes run the new pin, and every example passes.
    counts = recap(provision(inventory).stdout)
    assert {name: counts[name]["changed"] for name in hosts} == dict.fromkeys(hosts, 0)
    assert what_the_nodes_say(tmp_path, "__import__('platform').python_version()", inventory) == [OTHER]
    result = invoke("examples", "--inventory", str(inventory), check=False, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_the_build_provider_gives_every_host_the_kits_build(mixed_lab: dict[str, LabHost], tmp_path: Path) -> None:
    hosts = mixed_lab  # from any pin or provider: the test ends on the pins and the default provider
    inventory = write_inventory_variant(tmp_path, on_every_host(ray_python_provider="build"))
    out = provision(inventory).stdout
    # The bookworm hosts share one build: the controller sent it to one of them, the others fetched it there.
    copied = re.findall(r"^changed: \[(\S+)\] => \(item=python\)$", out, re.MULTILINE)
    fetched = re.findall(r"^changed: \[(\S+)\] => \(item=python from (\S+)\)$", out, re.MULTILINE)
    bookworm = sorted(name for name in hosts if name != TRIXIE)
    copied = [name for name in copied if name != TRIXIE]  # a new trixie host gets its own build
    assert (copied, sorted(fetched)) == (bookworm[:1], [(name, bookworm[0]) for name in bookworm[1:]]), out[-3000:]
    deploy(hosts, inventory)
    assert {name: env_python(h) for name, h in hosts.items()} == dict.fromkeys(hosts, (PIN, f"/opt/ray/python/{PIN}"))
    # Deploy restarted the nodes whose environment provision made anew.
    assert node_interpreters(hosts) == dict.fromkeys(hosts, f"/opt/ray/python/{PIN}/bin/python{MINOR}")
    rows = versions(inventory)
    assert {name: rows[name]["provider"] for name in hosts} == {
        name: f"built: debian-{12 if name != TRIXIE else 13}-x86_64" for name in hosts
    }
    assert {rows[name]["status"] for name in hosts} == {"ok"}
    # Back to the default provider: the bookworm hosts' builds of the pin are unused, and deploy
    # removes them (an environment the links keep for a rollback may keep another build).
    provision()
    deploy(hosts)
    trees = {name: h.ssh("ls -A /opt/ray/python").stdout.split() for name, h in hosts.items()}
    assert {name: PIN in found for name, found in trees.items()} == {name: name == TRIXIE for name in hosts}, trees
    assert {name: env_python(h) for name, h in hosts.items()} == ON_THE_PINS


# --- bad input: refused with its message, before any host changes ---------------------


def fake_source(tmp_path: Path) -> Path:
    """A source archive whose configure fails, as a broken or wrong archive would."""
    top = tmp_path / "Python-broken"
    top.mkdir()
    (top / "configure").write_text("#!/bin/sh\necho 'configure: error: this is not CPython' >&2\nexit 1\n")
    (top / "configure").chmod(0o755)
    archive = tmp_path / "broken.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(top, arcname="Python-broken")
    return archive


def relocked(tmp_path: Path, **values: object) -> Path:
    locks = tmp_path / "locks"
    inventory = write_inventory_variant(tmp_path, on_every_host(ray_lock_dir=str(locks), **values))
    invoke("lock", "--inventory", str(inventory), "--out", str(locks), timeout=900)
    return inventory


def test_a_source_that_differs_from_the_lock_is_refused(mixed: dict[str, LabHost], tmp_path: Path) -> None:
    archive = fake_source(tmp_path)
    inventory = relocked(tmp_path, ray_python_provider="build", ray_python_source_url=archive.as_uri())
    # Changed after the lock was made, and not in the controller's cache yet (a new mirror).
    archive.write_bytes(archive.read_bytes() + b"\0")
    for kept in SOURCE_CACHE.glob("*-broken.tar.gz"):
        kept.unlink()
    found = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert_refused(provision(inventory, check=False), f"has sha256 {found}, but the lock pins", "no host was changed")


def test_a_source_that_cannot_be_fetched_is_refused(mixed: dict[str, LabHost], tmp_path: Path) -> None:
    url = "https://deb.debian.org/debian/pool/main/p/no-such-python/Python-3.11.2.tgz"
    inventory = write_inventory_variant(tmp_path, on_every_host(ray_python_source_url=url))
    result = invoke("lock", "--inventory", str(inventory), "--out", str(tmp_path / "locks"), check=False)
    assert result.returncode != 0
    output = " ".join((result.stdout + result.stderr).split())  # as one line: Ansible folds long ones
    assert f"ray_python_source_url {url} cannot be fetched: HTTP Error 404" in output
    assert not (tmp_path / "locks").exists()


def test_a_failed_build_keeps_its_log_and_changes_no_host(mixed: dict[str, LabHost], tmp_path: Path) -> None:
    inventory = relocked(tmp_path, ray_python_provider="build", ray_python_source_url=fake_source(tmp_path).as_uri())
    result = provision(inventory, check=False)
    assert_refused(result, f"building Python {PIN} for debian-12-x86_64 failed", "no host was changed")
    (log,) = re.findall(r"its log is kept at (\S+\.log)", result.stdout)[:1]
    assert "configure: error: this is not CPython" in Path(log).read_text()


def test_a_host_the_kit_cannot_build_for_is_named(mixed: dict[str, LabHost], tmp_path: Path) -> None:
    host = mixed[TRIXIE]
    # The release file (a link on Debian) set aside, and a copy that says Ubuntu in its place.
    host.ssh(
        "sudo mv /etc/os-release /etc/os-release.raykit-test && sudo cp /etc/os-release.raykit-test /etc/os-release"
    )
    names = "s/^ID=.*/ID=ubuntu/; s/^NAME=.*/NAME=Ubuntu/; s/^PRETTY_NAME=.*/PRETTY_NAME=Ubuntu/"
    host.ssh(f"sudo sed -i -e '{names}; s/^VERSION_CODENAME=.*/VERSION_CODENAME=noble/' /etc/os-release")
    try:
        forget_facts([TRIXIE])  # Ansible reads the host's release afresh
        inventory = write_inventory_variant(tmp_path, on_every_host(ray_python_provider="build"))
        result = provision(inventory, check=False)
    finally:
        host.ssh("sudo mv /etc/os-release.raykit-test /etc/os-release")
        forget_facts([TRIXIE])
    assert_refused(result, f"{TRIXIE}: the kit cannot build Python for Ubuntu noble on x86_64", "bookworm")


def test_a_host_without_the_disk_for_the_build_is_refused(mixed: dict[str, LabHost]) -> None:
    host = mixed[TRIXIE]
    # A 20 MiB ray_prefix on the host that needs the build (Ray stopped meanwhile: it runs from there).
    host.ssh("sudo systemctl stop ray && sudo mount -t tmpfs -o size=20m,mode=0755 raykit-test /opt/ray")
    try:
        result = provision(check=False)
    finally:
        host.ssh("sudo umount /opt/ray && sudo systemctl start ray")
    assert_refused(
        result, f"{TRIXIE}: ray_prefix /opt/ray has 20 MiB free; the kit's build of Python {PIN} needs about"
    )
    assert "nothing was changed" in result.stdout
