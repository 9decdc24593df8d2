"""invoke provision on the lab: identical Python and Ray on every host, checked on the hosts themselves."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import (
    ENV,
    HEAD,
    PINS,
    LabHost,
    assert_refused,
    controller_sent_bytes,
    install_fake_wheel,
    invoke,
    on_every_host,
    recap,
    task_results,
    wheelhouse_tar_bytes,
    write_inventory_variant,
)

pytestmark = pytest.mark.lab

# Computed on the host without the kit: versions, and every installed file's hash from RECORD
# (uv_cache.json is uv's own bookkeeping of file times).
DIRECT_CHECK = (
    "/opt/ray/current/bin/python -c 'import importlib.metadata as m, platform;"
    ' print(platform.python_version(), m.version("ray"))\''
    " && cat /opt/ray/current/lib/python3*/site-packages/*.dist-info/RECORD | grep -v uv_cache.json"
    " | sort | sha256sum | cut -c1-64"
)


def provision(*args: str) -> subprocess.CompletedProcess[str]:
    return invoke("provision", *args, check=False)


def direct_state(host: LabHost) -> tuple[str, str, str]:
    python, ray, digest = host.ssh(DIRECT_CHECK).stdout.split()
    return python, ray, digest


# --- bad input: refused before anything changes ---------------------------------


def _no_head(inv: dict) -> None:
    inv["children"]["ray_workers"]["hosts"].update(inv["children"].pop("ray_head")["hosts"])


def _empty_head(inv: dict) -> None:
    inv["children"]["ray_workers"]["hosts"].update(inv["children"]["ray_head"]["hosts"])
    inv["children"]["ray_head"]["hosts"] = {}


def _two_heads(inv: dict) -> None:
    name, hvars = next(iter(inv["children"]["ray_workers"]["hosts"].items()))
    inv["children"]["ray_head"]["hosts"][name] = hvars
    del inv["children"]["ray_workers"]["hosts"][name]


def _head_also_worker(inv: dict) -> None:
    inv["children"]["ray_workers"]["hosts"].update(inv["children"]["ray_head"]["hosts"])


def _one_machine_twice(inv: dict) -> None:
    workers = inv["children"]["ray_workers"]["hosts"]
    name, hvars = sorted(workers.items())[0]
    workers[f"{name}-again"] = dict(hvars)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_no_head, "group ray_head must hold exactly one host, it holds 0"),
        (_empty_head, "group ray_head must hold exactly one host, it holds 0"),
        (_two_heads, "group ray_head must hold exactly one host, it holds 2"),
        (_head_also_worker, "is in both ray_head and ray_workers"),
        (on_every_host(ray_python_version="3.11"), "ray_python_version '3.11' is not X.Y.Z"),
        (on_every_host(ray_version="2.59.0"), "ray_version 2.59.0 / lock 2.60.0"),
        (on_every_host(ray_extras=["default", "bogus"]), "ray_extras: unknown extra bogus"),
        (on_every_host(ray_num_cpus=-2), "ray_num_cpus must be a whole number of 0 or more, got -2"),
        (on_every_host(ray_num_cpus="four"), "ray_num_cpus"),
        (on_every_host(ray_num_cpus=2.5), "ray_num_cpus"),
        (on_every_host(ray_resources=["ssd"]), "ray_resources"),
        (on_every_host(ray_resources={"ssd": "lots"}), "ray_resources must map names to numbers"),
        (on_every_host(ray_node_ip="10.77.0.250"), "ray_node_ip '10.77.0.250' is not an address of this host"),
        (on_every_host(ray_extra_packages=["numpy", "requests"]), "run `invoke lock`"),
        (on_every_host(ray_user="ops"), "ray_user 'ops' is the SSH user"),
        (on_every_host(ray_user="root"), "ray_user 'root' is root"),
        (on_every_host(ray_prefix="/opt"), "ray_prefix '/opt' is a system folder"),
        (on_every_host(ray_prefix="/usr/"), "ray_prefix '/usr/' is a system folder"),
        (on_every_host(ray_prefix="/home/ray"), "ray_prefix '/home/ray' is under /home, which Ray's unit hides"),
        (on_every_host(ray_temp_dir="/home/ray/tmp"), "ray_temp_dir '/home/ray/tmp' is under /home, which Ray's"),
        (on_every_host(ray_labels={"team": "a,b"}), "ray_labels: value 'a,b' of 'team' has a character"),
        (on_every_host(ray_labels={"team": "it's"}), "ray_labels: value \"it's\" of 'team' has a character"),
        (on_every_host(ray_resources={"ssd=1": 1}), "ray_resources: name 'ssd=1' has a character"),
        (on_every_host(ray_environment={"FOO": "a\nb"}), "ray_environment: the value of FOO has a quote"),
        (on_every_host(ray_environment={"RAY_AUTH_MODE": "disabled"}), "RAY_AUTH_MODE would change Ray's auth"),
        (on_every_host(ray_object_store_memory=10**6), "below Ray's minimum of 78643200 bytes"),
        (_one_machine_twice, "-again are the same machine"),
    ],
    ids=[
        "no-head-group", "empty-head", "two-heads", "head-also-worker", "python-not-xyz", "ray-not-in-lock",
        "unknown-extra", "negative-cpus", "cpus-not-integer", "cpus-float", "resources-not-mapping",
        "resources-not-numbers", "node-ip-not-on-host", "pin-changed-without-relock", "user-is-ssh-user",
        "user-is-root", "prefix-opt", "prefix-usr", "prefix-home", "temp-dir-home", "label-comma", "label-quote",
        "resource-equals", "env-newline", "env-auth-off", "object-store-tiny", "one-machine-twice",
    ],
)  # fmt: skip
def test_bad_input_is_refused_before_any_host_changes(fresh_hosts, tmp_path: Path, edit, message: str) -> None:
    assert_refused(provision("--inventory", str(write_inventory_variant(tmp_path, edit))), message)


def test_a_persons_account_is_refused_as_rays_user(fresh_hosts, tmp_path: Path) -> None:
    person = fresh_hosts[sorted(fresh_hosts)[1]]
    person.ssh("sudo useradd --create-home --shell /bin/bash alice")
    try:
        result = provision("--inventory", str(write_inventory_variant(tmp_path, on_every_host(ray_user="alice"))))
        assert_refused(result, f"{person.name}: ray_user 'alice' is an existing account with its home in /home/alice")
    finally:
        person.ssh("sudo userdel --remove alice")


def test_a_tiny_dev_shm_is_refused_instead_of_a_restart_loop(fresh_hosts) -> None:
    small = fresh_hosts[sorted(fresh_hosts)[2]]
    size = small.ssh("df --output=size -B1 /dev/shm | tail -1").stdout.strip()
    small.ssh("sudo mount -o remount,size=64m /dev/shm")
    try:
        assert_refused(provision(), f"{small.name}: the object store would be", "80% of this host's /dev/shm",
                       "below Ray's minimum")  # fmt: skip
    finally:
        small.ssh(f"sudo mount -o remount,size={size} /dev/shm")


def test_too_little_free_disk_is_refused(fresh_hosts, tmp_path: Path) -> None:
    full = fresh_hosts[sorted(fresh_hosts)[1]]
    full.ssh("sudo mkdir -p /srv/raykit-small && sudo mount -t tmpfs -o size=20m tmpfs /srv/raykit-small")
    try:
        variant = write_inventory_variant(tmp_path, on_every_host(ray_prefix="/srv/raykit-small"))
        assert_refused(provision("--inventory", str(variant)),
                       f"{full.name}: ray_prefix /srv/raykit-small has 20 MiB free; provision needs about")  # fmt: skip
    finally:
        full.ssh("sudo umount /srv/raykit-small && sudo rmdir /srv/raykit-small")


def test_redis_packages_of_another_architecture_are_refused(fresh_hosts, tmp_path: Path) -> None:
    cache = tmp_path / "debs"
    cache.mkdir()
    (cache / "redis-server_5%3a7.0.15-1~deb12u1_arm64.deb").write_bytes(b"")
    variant = write_inventory_variant(tmp_path, on_every_host(ray_gcs_ft="redis", ray_redis_packages_cache=str(cache)))
    assert_refused(provision("--inventory", str(variant)),
                   "raylab-1: cached Redis packages for another architecture than the head's (amd64)",
                   "redis-server_5%3a7.0.15-1~deb12u1_arm64.deb")  # fmt: skip


def test_python_mismatch_is_refused_with_a_host_found_wanted_table(fresh_hosts, tmp_path: Path) -> None:
    worker = sorted(fresh_hosts)[1]

    # The system provider takes the distro's python3 as it is (auto would build 3.11.9 there).
    def edit(inv: dict) -> None:
        inv["children"]["ray_workers"]["hosts"][worker]["ray_python_version"] = "3.11.9"
        inv["children"]["ray_workers"]["hosts"][worker]["ray_python_provider"] = "system"

    result = provision("--inventory", str(write_inventory_variant(tmp_path, edit)))
    assert_refused(result, "HOST", "FOUND", "WANTED", "nothing was changed")
    row = next(line for line in result.stdout.splitlines() if line.strip().startswith(worker))
    assert row.split()[:3] == [worker, "3.11.2", "3.11.9"]


def test_a_host_without_the_providers_python_is_refused_in_the_table(fresh_hosts) -> None:
    worker = fresh_hosts[sorted(fresh_hosts)[1]]
    target = worker.ssh("readlink /usr/bin/python3").stdout.strip()  # Debian: python3 -> python3.11
    worker.ssh("sudo rm /usr/bin/python3")
    try:
        result = provision()
    finally:
        worker.ssh(f"sudo ln -sfn {target} /usr/bin/python3")
    assert_refused(result, "HOST", "FOUND", "WANTED", "nothing was changed")
    lines = result.stdout.splitlines()
    row = next(i for i, line in enumerate(lines) if line.strip().startswith(worker.name))
    assert lines[row].split()[:3] == [worker.name, "missing", PINS["ray_python_version"]]
    assert "the probe failed:" in lines[row + 1] and "/usr/bin/python3" in lines[row + 1], lines[row + 1]


def test_an_unreachable_host_is_named_and_no_host_is_touched(fresh_hosts) -> None:
    worker = sorted(fresh_hosts)[-1]
    invoke("lab.poweroff", worker)
    try:
        result = provision()
    finally:
        invoke("lab.poweron", worker)
    assert result.returncode != 0
    unreachable = result.stdout.split(f"fatal: [{worker}]: UNREACHABLE!", 1)
    assert len(unreachable) == 2, result.stdout[-3000:]
    assert fresh_hosts[worker].address in unreachable[1][:400], unreachable[1][:400]  # how ssh failed, with the address
    counts = recap(result.stdout)
    assert counts[worker]["unreachable"] == 1
    assert all(c["changed"] == 0 for c in counts.values()), counts


# --- provisioning -------------------------------------------------------------


def test_lock_resolves_the_pins_for_the_hosts_architecture_with_hashes(lab, tmp_path: Path) -> None:
    invoke("lock", "--out", str(tmp_path), timeout=600)
    arch = next(iter(lab.values())).ssh("uname -m").stdout.strip()
    lock = (tmp_path / f"cluster-{arch}.txt").read_text()
    header = json.loads(lock.splitlines()[0].removeprefix("# raykit-lock: "))
    assert (header["python_version"], header["ray_version"], header["ray_extras"], header["extra_packages"]) == (
        PINS["ray_python_version"], PINS["ray_version"], PINS["ray_extras"], PINS["ray_extra_packages"],
    )  # fmt: skip
    for package in ("ray", "numpy", "uv", "fastapi"):
        block = re.search(rf"^{package}==\S+ \\\n(\s+--hash=sha256:[0-9a-f]{{64}}.*\n)+", lock, re.MULTILINE)
        assert block, f"{package} is not locked with hashes"
    assert re.search(rf"^ray=={PINS['ray_version']} ", lock, re.MULTILINE)


def test_provision_installs_identical_python_and_ray_everywhere(fresh_hosts) -> None:
    sent = controller_sent_bytes()
    result = provision()
    sent = controller_sent_bytes() - sent
    assert result.returncode == 0, result.stdout[-3000:]
    # The controller sent the wheelhouse once, to the head; the others fetched it from there.
    tar = wheelhouse_tar_bytes(fresh_hosts[HEAD])
    assert tar <= sent < 1.5 * tar, f"the controller sent {sent} bytes for a {tar}-byte wheelhouse"
    fetched = re.findall(r"^changed: \[(\S+)\] => \(item=wheelhouse from (\S+)\)", result.stdout, re.MULTILINE)
    assert sorted(fetched) == [(name, HEAD) for name in sorted(fresh_hosts) if name != HEAD], fetched
    assert "could not be found" in fresh_hosts[HEAD].ssh("systemctl status raykit-fanout", check=False).stderr
    states = {name: direct_state(h) for name, h in fresh_hosts.items()}
    assert {s[:2] for s in states.values()} == {(PINS["ray_python_version"], PINS["ray_version"])}, states
    assert len({s[2] for s in states.values()}) == 1, f"installed files differ: {states}"
    for host in fresh_hosts.values():
        assert host.ssh("readlink /opt/ray/current").stdout.strip() == ENV


def test_deploy_check_on_hosts_never_deployed_names_each_node_and_starts_nothing(provisioned) -> None:
    deployed = "ls -d /etc/systemd/system/ray.service /etc/ray 2>/dev/null"
    result = invoke("deploy", "--check", check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    for name in provisioned:
        assert f"{name}: restarting Ray (settings, stopped" in result.stdout, result.stdout[-3000:]
    assert not any(h.ssh(deployed, check=False).stdout for h in provisioned.values())


def test_second_provision_changes_nothing(provisioned) -> None:
    result = provision()
    assert result.returncode == 0, result.stdout[-3000:]
    counts = recap(result.stdout)
    assert set(provisioned) <= set(counts)
    assert {name: c["changed"] for name, c in counts.items()} == {name: 0 for name in counts}
    # The probe and the report found every host as provision makes it: no install task ran.
    for task in ("Install exactly the locked packages, hashes checked", "Copy the archives this host seeds",
                 "Fetch each archive from its seed", "Unpack the wheelhouse on the host",
                 "Unpack the bytecode of the modules a Ray node imports", "Create the ray system user",
                 "Point current at this environment"):  # fmt: skip
        assert task_results(result.stdout, task) == {"skipping"}, (task, result.stdout[-3000:])


WHEELHOUSE_DIGEST = (
    "cd /opt/ray/wheelhouse/*/ && test -f .complete && find . -type f | sort | xargs sha256sum | sha256sum"
)


def test_a_seed_that_cannot_be_reached_makes_its_hosts_fall_back_to_the_controller(provisioned) -> None:
    head = provisioned[HEAD]
    for host in provisioned.values():
        host.ssh("sudo rm -r /opt/ray/wheelhouse/*/")
    peers = [name for name in provisioned if name != HEAD]
    for name in peers:  # the lab's bridge drops their packets to the seed's server, as for a host that is down
        invoke("lab.block", name, HEAD, "900")
    try:
        sent = controller_sent_bytes()
        result = provision()
        sent = controller_sent_bytes() - sent
    finally:
        invoke("lab.unblock")
    assert result.returncode == 0, result.stdout[-3000:]
    for name in peers:
        assert f"{name}: could not fetch wheelhouse from {HEAD}" in result.stdout, result.stdout[-3000:]
    assert sent >= len(provisioned) * wheelhouse_tar_bytes(head), f"the controller sent {sent} bytes"
    digests = {name: host.ssh(f"sudo sh -c '{WHEELHOUSE_DIGEST}'").stdout for name, host in provisioned.items()}
    assert len(set(digests.values())) == 1, digests
    assert "could not be found" in head.ssh("systemctl status raykit-fanout.service", check=False).stderr


def test_provision_repairs_hand_made_changes_outside_the_packages(provisioned) -> None:
    # A no-op provision skips what preflight's probe found unchanged: the probe must see these.
    victim = provisioned[sorted(provisioned)[2]]
    victim.ssh("sudo chmod 0700 /opt/ray/venvs && sudo ln -sfn /tmp /opt/ray/current && sudo usermod -s /bin/bash ray")
    result = provision()
    assert result.returncode == 0, result.stdout[-3000:]
    assert recap(result.stdout)[victim.name]["changed"] > 0
    assert victim.infra.file("/opt/ray/venvs").mode == 0o755
    assert victim.infra.file("/opt/ray/current").linked_to == ENV
    assert victim.infra.user("ray").shell == "/usr/sbin/nologin"


def test_environment_is_roots_and_read_only_to_the_unprivileged_ray_user(provisioned) -> None:
    site = f"{ENV}/lib/python{PINS['ray_python_version'].rsplit('.', 1)[0]}/site-packages"
    for host in provisioned.values():
        for tree in (ENV, "/opt/ray/wheelhouse"):
            assert host.ssh(f"sudo find {tree} ! -user root -o ! -type l -perm /022 | head -3").stdout == "", host.name
        assert host.infra.file(f"{ENV}.manifest.json").user == "root"
        for target in (f"{site}/planted.pth", f"{site}/ray/__init__.py", f"{ENV}/bin/ray", ENV + "/x"):
            wrote = host.ssh(f"sudo -u ray sh -c 'echo x >> {target}'", check=False)
            assert wrote.returncode != 0 and "Permission denied" in wrote.stderr, (host.name, target, wrote.stderr)
        ray = host.infra.user("ray")
        assert ray.shell in ("/usr/sbin/nologin", "/bin/false"), ray.shell
        assert ray.groups == ["ray"], ray.groups
        assert "not allowed" in host.ssh("sudo -l -U ray").stdout


def test_versions_reports_every_host_and_the_job_client(provisioned) -> None:
    rows = json.loads(invoke("versions", "--json").stdout)
    by_host = {row["host"]: row for row in rows}
    assert set(provisioned) <= set(by_host) and "controller (job client)" in by_host
    for name in provisioned:
        assert (by_host[name]["python"], by_host[name]["ray"], by_host[name]["status"]) == (
            PINS["ray_python_version"], PINS["ray_version"], "ok",
        )  # fmt: skip
    assert len({by_host[name]["digest"] for name in provisioned}) == 1


# Every module of ENV that Ray's CLI and its dashboard import, whose pyc Python would not use as
# it is (missing, or not a checked-hash pyc of this very source); -B: the check writes none.
UNCOMPILED = (
    "sudo -u ray /opt/ray/current/bin/python -B -c '"
    "import importlib.util as u, sys, ray.scripts.scripts, ray.dashboard.dashboard\n"
    "for m in list(sys.modules.values()):\n"
    '    f = getattr(m, "__file__", None) or ""\n'
    '    if f.startswith(sys.prefix) and f.endswith(".py"):\n'
    '        try: pyc = open(u.cache_from_source(f), "rb").read(16)\n'
    '        except OSError: pyc = b""\n'
    '        if pyc[4:8] != (3).to_bytes(4, "little") or pyc[8:] != u.source_hash(open(f, "rb").read()):\n'
    "            print(f)'"
)


def test_hand_made_drift_is_flagged_repaired_and_compiled(provisioned, tmp_path: Path) -> None:
    victim = provisioned[sorted(provisioned)[1]]
    install_fake_wheel(victim, tmp_path, "ray", "2.59.0")
    try:
        assert direct_state(victim)[1] == "2.59.0"
        flagged = invoke("versions", check=False)
        assert flagged.returncode != 0
        row = next(line for line in flagged.stdout.splitlines() if line.startswith(victim.name))
        assert "ray 2.59.0 (lock 2.60.0)" in row
        assert "installed files differ" in row or "Ray 2.59.0 (pin 2.60.0)" in row
    finally:
        repaired = provision()
    assert repaired.returncode == 0, repaired.stdout[-3000:]
    assert recap(repaired.stdout)[victim.name]["changed"] > 0
    states = {name: direct_state(h) for name, h in provisioned.items()}
    assert len(set(states.values())) == 1, states
    assert invoke("versions", check=False).returncode == 0
    # The repaired host's modules are compiled as provision compiles them, like every other host's.
    for host in provisioned.values():
        found = host.ssh(f"cd /tmp && {UNCOMPILED}")
        assert found.returncode == 0, found.stderr
        assert found.stdout.split() == [], (host.name, found.stdout.split()[:5])
        assert host.ssh(f"find {ENV} -name '*.pyc' ! -user root | head -3").stdout == "", host.name
