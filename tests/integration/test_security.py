"""A shared lab's security on the lab: no path from a Ray job to root, tampering that shows and
is repaired, a sandboxed unit, and a token that is never replaced behind the hosts' back.
Judged on the hosts themselves (files, processes, systemd) and through Ray's own APIs."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Iterator

import pytest

from tests.helpers import (
    HEAD,
    PASSED,
    ROOT,
    TOKEN_FILE,
    LabHost,
    assert_refused,
    http_status,
    invoke,
    main_pids,
    recap,
    wait_for_nodes,
)

pytestmark = pytest.mark.lab

PLANT_JOB = ROOT / "tests" / "jobs" / "plant.py"
RECORD = "/var/lib/ray/planted-ran"
ENV = "/opt/ray/current"
SITE = f"{ENV}/lib/python3.11/site-packages"
PAYLOAD = f"import os; open({RECORD!r}, 'a').write(str(os.getuid()) + chr(10))"
# Where a job would plant code, and what; planted here by root, as if it had managed to.
IN_THE_ENVIRONMENT = {
    f"{SITE}/raykit_planted.pth": PAYLOAD,
    f"{SITE}/sitecustomize.py": PAYLOAD,
    f"{SITE}/ray/__init__.py": PAYLOAD,
    f"{SITE}/ray/_private/planted.so": "not really a library",
}


def uids_that_ran_planted_code(host: LabHost) -> list[str]:
    return host.ssh(f"sudo cat {RECORD} 2>/dev/null || true").stdout.split()


def workers(hosts: dict[str, LabHost]) -> list[LabHost]:
    return [h for name, h in sorted(hosts.items()) if name != HEAD]


@pytest.fixture
def repaired(deployed: dict[str, LabHost], request: pytest.FixtureRequest) -> Iterator[dict[str, LabHost]]:
    """The deployed lab; after a test that failed midway (each ends repaired when it passes),
    every environment provisioned again file by file and what the test planted elsewhere removed."""
    yield deployed
    if request.node.stash.get(PASSED, False):
        return
    invoke("provision", "--deep", check=False)
    for host in deployed.values():
        host.ssh("sudo rm -rf /var/lib/ray/.local /var/lib/ray/sitecustomize.py /etc/raykit-canary", check=False)


def test_a_job_cannot_write_where_root_runs_code_and_what_it_plants_never_runs_as_root(repaired) -> None:
    result = invoke("run", str(PLANT_JOB), check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    planted = json.loads(next(ln for ln in result.stdout.splitlines() if ln.startswith("PLANTED "))[8:])
    assert set(planted) == {h.address for h in repaired.values()}, planted
    for ip, outcome in planted.items():
        for path, what in outcome.items():
            if path.startswith(("/opt/ray/", "/etc/")):
                # Root's environment, wheelhouse and settings: read-only to Ray (and to its sandbox).
                assert what != "planted", (ip, path)
        home = [p for p in outcome if p.startswith("/var/lib/ray/")]
        assert home and all(outcome[p] == "planted" for p in home), (ip, outcome)  # Ray's own home: its to write
    for host in repaired.values():
        assert host.ssh(f"sudo grep -c planted-ran {SITE}/ray/__init__.py", check=False).stdout.strip() == "0"

    # Every kit command that reads or changes the hosts as root; then a Python Ray starts.
    for args in (("status",), ("versions",), ("provision",), ("deploy",)):
        invoke(*args)
    invoke("doctor", "--deep", check=False)
    invoke("restart", "--hosts", workers(repaired)[0].name)
    for host in repaired.values():
        assert "0" not in uids_that_ran_planted_code(host), host.name

    # The job's own files in Ray's home are named by doctor, with the host.
    doctor = invoke("doctor", check=False)
    assert doctor.returncode == 1, doctor.stdout
    for host in repaired.values():
        assert re.search(rf"^{host.name}: start-up code in the ray user's home", doctor.stdout, re.M), doctor.stdout
        assert "| /var/lib/ray/sitecustomize.py" in doctor.stdout
    for host in repaired.values():
        host.ssh("sudo rm -rf /var/lib/ray/.local /var/lib/ray/sitecustomize.py")
    assert invoke("doctor", check=False).returncode == 0


def test_code_planted_in_the_environment_never_runs_as_root_is_named_and_repaired(repaired) -> None:
    victim = workers(repaired)[-1]
    for path, text in IN_THE_ENVIRONMENT.items():
        victim.ssh(f"echo {shlex.quote(text)} | sudo tee -a {path} >/dev/null")
    for host in repaired.values():
        host.ssh(f"sudo rm -f {RECORD}")

    versions = invoke("versions", check=False)
    assert versions.returncode == 1
    row = next(ln for ln in versions.stdout.splitlines() if ln.startswith(victim.name))
    doctor = invoke("doctor", check=False)
    assert f"{victim.name}: 4 file(s) of its Ray environment differ from what provision installed" in doctor.stdout
    for path in IN_THE_ENVIRONMENT:
        real = path.replace(ENV, "/opt/ray/venvs/ray-2.60.0-py3.11.2")
        verb = "changed" if path.endswith("ray/__init__.py") else "added"
        assert f"{verb}: {real}" in row, row
        assert f"| {verb}: {real}" in doctor.stdout, doctor.stdout
    invoke("status")
    invoke("doctor", "--deep", check=False)
    invoke("deploy")
    assert "0" not in uids_that_ran_planted_code(victim)
    # The planted code does run, as ray, in the Ray that the victim starts: so it would have
    # recorded root's uid had anything above run it as root.
    invoke("restart", "--hosts", victim.name)
    ray_uid = victim.ssh("id -u ray").stdout.strip()
    assert ray_uid in uids_that_ran_planted_code(victim)

    pids = main_pids(repaired)
    reprovisioned = invoke("provision")
    assert recap(reprovisioned.stdout)[victim.name]["changed"] > 0
    assert "0" not in uids_that_ran_planted_code(victim)
    for path in IN_THE_ENVIRONMENT:
        if not path.endswith("ray/__init__.py"):
            assert victim.ssh(f"test ! -e {path}", check=False).returncode == 0, path
    assert victim.ssh(f"grep -c planted-ran {SITE}/ray/__init__.py", check=False).stdout.strip() == "0"
    assert invoke("versions", check=False).returncode == 0
    assert main_pids(repaired) == pids  # repaired without restarting Ray


def test_an_edit_that_keeps_size_and_time_is_found_by_doctor_deep_and_repaired(repaired) -> None:
    victim = workers(repaired)[0]
    module = f"{SITE}/ray/_version.py"
    flip = f"p = {module!r}; b = open(p, 'rb').read(); open(p, 'wb').write(b[:-1] + (b'#' if b[-1:] != b'#' else b' '))"
    keep = f"sudo cp -p {module} /tmp/orig.py"
    victim.ssh(f"{keep} && sudo python3 -c {shlex.quote(flip)} && sudo touch -r /tmp/orig.py {module}")
    assert invoke("doctor", check=False).returncode == 0  # size and time unchanged: the quick check misses it
    deep = invoke("doctor", "--deep", check=False)
    real = module.replace(ENV, "/opt/ray/venvs/ray-2.60.0-py3.11.2")
    assert deep.returncode == 1 and f"| changed: {real}" in deep.stdout, deep.stdout
    reprovisioned = invoke("provision", "--deep")
    assert recap(reprovisioned.stdout)[victim.name]["changed"] > 0
    assert invoke("doctor", "--deep", check=False).returncode == 0


def test_an_environment_an_earlier_version_let_ray_write_is_converted_without_a_restart(repaired) -> None:
    victim = workers(repaired)[0]
    real = "/opt/ray/venvs/ray-2.60.0-py3.11.2"
    # And a rollback's environment from before, which provision cannot make anew.
    older = "/opt/ray/venvs/ray-2.58.0-py3.11.2"
    victim.ssh(
        f"sudo rm -f {RECORD} && echo canary | sudo tee /etc/raykit-canary >/dev/null"
        f" && sudo mkdir -p {older}/bin && sudo ln -sfn {older} /opt/ray/older"
        " && sudo chown -R ray:ray /opt/ray/venvs && sudo rm /opt/ray/venvs/*.manifest.json"
    )
    # What ray could have left there: code for root to run, no interpreter (so no report),
    # and a link where root writes the manifest.
    victim.ssh(
        f"sudo -u ray sh -c {shlex.quote(f'echo {shlex.quote(PAYLOAD)} > {SITE}/raykit_planted.pth')}"
        f" && sudo -u ray rm {real}/bin/python && sudo -u ray ln -s /etc/raykit-canary {real}.manifest.json"
    )
    pids = main_pids(repaired)
    assert "no manifest" in invoke("versions", check=False).stdout
    converted = invoke("provision")
    assert recap(converted.stdout)[victim.name]["changed"] > 0
    said = " ".join(converted.stdout.split())  # the callback wraps long messages
    assert f"{victim.name}: {older} is not as provision installed it (no manifest" in said, said[-3000:]
    assert victim.ssh(f"test ! -e {older} && test ! -L /opt/ray/older", check=False).returncode == 0
    assert victim.ssh("sudo find /opt/ray ! -user root | head -3").stdout == ""
    assert victim.ssh("sudo cat /etc/raykit-canary && sudo rm /etc/raykit-canary").stdout == "canary\n"
    assert "0" not in uids_that_ran_planted_code(victim)
    assert victim.ssh(f"test ! -e {SITE}/raykit_planted.pth", check=False).returncode == 0
    assert main_pids(repaired) == pids
    again = invoke("provision")
    assert {n: c["changed"] for n, c in recap(again.stdout).items() if n in repaired} == dict.fromkeys(repaired, 0)
    wait_for_nodes(repaired)


def test_the_unit_is_sandboxed_and_systemd_rates_it_ok(deployed) -> None:
    for host in deployed.values():
        rating = host.ssh("sudo systemd-analyze security ray.service --no-pager | tail -1").stdout
        found = re.search(r"exposure level for ray.service: ([0-9.]+)", rating)
        assert found, (host.name, rating)
        exposure = float(found.group(1))
        assert exposure <= 5.0, (host.name, rating)
        pid = host.ssh("systemctl show --property=MainPID --value ray").stdout.strip()
        status = host.ssh(f"sudo grep -E '^(CapBnd|CapEff|NoNewPrivs|Seccomp):' /proc/{pid}/status").stdout
        fields = dict(line.split(":\t") for line in status.strip().splitlines())
        assert int(fields["CapBnd"], 16) == 0 and int(fields["CapEff"], 16) == 0, fields
        assert fields["NoNewPrivs"] == "1" and fields["Seccomp"] == "2", fields
        # In Ray's view of the file system even root could not write outside Ray's own folders.
        for folder in ("/usr", "/etc/ray", "/opt/ray"):
            probe = host.ssh(f"sudo nsenter --target {pid} --mount touch {folder}/raykit-probe", check=False)
            assert "Read-only file system" in probe.stderr, (host.name, folder, probe.stderr)


def test_a_controller_that_lost_its_token_is_refused_and_token_rotate_makes_a_new_one(deployed, tmp_path) -> None:
    old = TOKEN_FILE.read_text().strip()
    TOKEN_FILE.rename(tmp_path / "token")
    try:
        refused = invoke("deploy", check=False)
        assert_refused(refused, "The controller has no cluster token", HEAD, "invoke token.rotate")
        assert not TOKEN_FILE.exists()
        pids = main_pids(deployed)
        invoke("token.rotate")
    except BaseException:
        if not TOKEN_FILE.exists():  # the cluster's token, for the tests after this one
            (tmp_path / "token").rename(TOKEN_FILE)
        raise
    new = TOKEN_FILE.read_text().strip()
    assert new != old and len(new) == 64 and oct(TOKEN_FILE.stat().st_mode & 0o777) == "0o600"
    after = main_pids(deployed)
    assert all(after[name] != pids[name] for name in deployed), (pids, after)
    url = f"http://{deployed[HEAD].address}:8265/api/jobs/"
    assert http_status(url, new) == 200
    assert http_status(url, old) in (401, 403)
    for host in deployed.values():
        digest = host.ssh("sudo sha256sum /etc/ray/auth_token").stdout.split()[0]
        assert digest == hashlib.sha256((new + "\n").encode()).hexdigest(), host.name
    assert invoke("doctor", check=False).returncode == 0
