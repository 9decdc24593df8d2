"""raykit: a supervised, secured Ray cluster on plain machines.

Run `invoke --list` for the tasks; defaults come from invoke.yaml.
"""

from __future__ import annotations

import json
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from invoke import Collection, Context, Exit, task

from raykit import lab as labkit
from raykit.inventory import lab_inventory, write_inventory

ROOT = Path(__file__).resolve().parent


def say(msg: str) -> None:
    print(f"raykit: {msg}", flush=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """A LabError is the user's to fix: one line, exit status 2, no traceback."""
    try:
        yield
    except labkit.LabError as exc:
        raise Exit(f"error: {exc}", code=2) from None


@contextmanager
def step(name: str) -> Iterator[None]:
    start = time.monotonic()
    say(f"{name} ...")
    yield
    say(f"{name} done in {time.monotonic() - start:.1f} s")


def lab_settings(c: Context, subnet: str | None = None, prefix: str | None = None) -> labkit.LabSettings:
    cfg = c.config.lab
    return labkit.LabSettings(
        state_dir=Path(cfg.state_dir),
        cache_dir=Path(cfg.cache_dir),
        bridge=cfg.bridge,
        subnet=subnet or cfg.subnet,
        prefix=prefix or cfg.prefix,
        admin_user=cfg.admin_user,
        suite=cfg.suite,
        mirror=cfg.mirror,
    )


def print_table(rows: list[dict[str, str]]) -> None:
    if not rows:
        return
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in rows[0]}
    print("  ".join(k.upper().ljust(w) for k, w in widths.items()))
    for row in rows:
        print("  ".join(str(row[k]).ljust(w) for k, w in widths.items()))


# --- lab ----------------------------------------------------------------------


@task(
    help={
        "hosts": "number of hosts, one head + workers (default: the lab's current count, else lab.hosts)",
        "subnet": "private IPv4 network for the lab bridge, /24 or larger (default: lab.subnet)",
        "prefix": "host name prefix; hosts are PREFIX-1 .. PREFIX-N (default: lab.prefix)",
    }
)
def up(c, hosts=None, subnet=None, prefix=None):
    """Create the local lab (or add hosts to it) and write inventory/lab.yml."""
    settings = lab_settings(c, subnet, prefix)
    with user_errors(), step("lab.up"):
        count = None if hosts is None else _as_int(hosts, "--hosts")
        state = labkit.up(settings, count, int(c.config.lab.hosts), say)
        path = ROOT / c.config.lab.inventory
        write_inventory(path, lab_inventory(settings, state.hosts))
    say(f"{len(state.hosts)} hosts up; inventory: {path.relative_to(ROOT)}")


def _as_int(value: str | int, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise labkit.LabError(f"{field} must be a whole number, got {value!r}") from None


@task
def down(c):
    """Remove the lab: containers, overlays, mounts, bridge, key and inventory/lab.yml."""
    with user_errors():
        labkit.down(lab_settings(c), say)
    (ROOT / c.config.lab.inventory).unlink(missing_ok=True)


@task(help={"json": "print JSON instead of a table"})
def status(c, json_=False):
    """List the lab's hosts, addresses and state."""
    rows = labkit.status(lab_settings(c))
    if json_:
        print(json.dumps(rows, indent=2))
    elif rows:
        print_table(rows)
    else:
        say("there is no lab; run `invoke lab.up`")


@task(help={"host": "lab host name, e.g. raylab-2"})
def reboot(c, host):
    """Reboot one lab host cleanly (systemd inside boots again; its disk is kept)."""
    with user_errors(), step(f"lab.reboot {host}"):
        labkit.reboot(lab_settings(c), host, say)


@task(help={"host": "lab host name, e.g. raylab-2"})
def poweroff(c, host):
    """Cut one lab host's power (no clean shutdown; its disk is kept)."""
    with user_errors():
        labkit.poweroff(lab_settings(c), host)


@task(help={"host": "lab host name, e.g. raylab-2"})
def poweron(c, host):
    """Boot a powered-off lab host and wait for its sshd."""
    with user_errors(), step(f"lab.poweron {host}"):
        labkit.poweron(lab_settings(c), host)


# --- cluster ------------------------------------------------------------------


def playbook(c: Context, name: str, inventory: str | None, *args: str, **kwargs):
    """Run one of playbooks/ from the repository root, so ansible.cfg applies."""
    cmd = [_venv_bin("ansible-playbook"), f"playbooks/{name}.yml"]
    if inventory:
        cmd += ["--inventory", inventory]
    cmd += list(args)
    with c.cd(str(ROOT)):
        result = c.run(" ".join(shlex.quote(a) for a in cmd), pty=False, warn=True, **kwargs)
    if result.failed:
        raise Exit(f"error: ansible-playbook playbooks/{name}.yml failed (exit {result.exited}); see above", code=1)
    return result


INVENTORY_HELP = "Ansible inventory (default: ansible.cfg's, the local lab)"


@task(help={"inventory": INVENTORY_HELP})
def lock(c, inventory=None):
    """Resolve the pins (inventory/group_vars/all/ray.yml) into locks/cluster-ARCH.txt with hashes."""
    with step("lock"):
        playbook(c, "lock", inventory)


@task(help={"inventory": INVENTORY_HELP, "check": "only report what would change"})
def provision(c, inventory=None, check=False):
    """Install the identical Python and Ray on every host, offline from the controller's wheelhouse."""
    with step("provision"):
        playbook(c, "provision", inventory, *(["--check"] if check else []))


@task(help={"inventory": INVENTORY_HELP, "json": "print JSON instead of a table"})
def versions(c, inventory=None, json_=False):
    """Show each host's Python, Ray and package digest, and the controller's job client; flag drift."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "versions.json")
        playbook(c, "versions", inventory, "-e", f"raykit_report_file={out}", hide="out")
        hosts = json.loads(out.read_text())
    rows = [
        {
            "host": name,
            "python": r["python"],
            "ray": r["ray"],
            "packages": str(r["packages"]),
            "digest": r["digest"][:12],
            "status": "; ".join(r["problems"]) or "ok",
        }
        for name, r in hosts.items()
    ]
    import ray  # the controller's job client; imported late, it is slow to import

    rows.append(
        {
            "host": "controller (job client)",
            "python": platform.python_version(),
            "ray": ray.__version__,
            "packages": "-",
            "digest": "-",
            "status": "ok" if all(ray.__version__ == r["ray"] for r in hosts.values()) else "Ray differs from the cluster",
        }
    )
    if json_:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows)
    if any(row["status"] != "ok" for row in rows):
        raise Exit("error: the hosts are not identical to the pins (see status); run `invoke provision`", code=1)


# --- checks -------------------------------------------------------------------


def _venv_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@task
def lint(c):
    """yamllint and ansible-lint (production profile) over the repository."""
    c.run(f"{_venv_bin('yamllint')} --strict .", echo=True)
    c.run(f"{_venv_bin('ansible-lint')} --profile production", echo=True)


@task(
    pre=[lint],
    help={"k": "only tests matching this pytest -k expression", "unit": "unit tests only (no lab)"},
)
def test(c, k=None, unit=False):
    """Run the whole test suite: lint, unit tests, then integration tests on the lab."""
    args = ["-p", "no:cacheprovider", "-ra"]
    if k:
        args += ["-k", k]
    args += ["tests/unit"] if unit else ["tests/unit", "tests/integration"]
    c.run(f"{_venv_bin('pytest')} {' '.join(args)}", echo=True, pty=False)


# --- benchmarks ---------------------------------------------------------------


@task(help={"cold": "also delete the cached base image first (measures debootstrap too)"})
def bench_lab(c, cold=False):
    """Measure lab.up for the default host count from no lab (and with --cold, no base image)."""
    settings = lab_settings(c)
    with user_errors():
        labkit.down(settings, say)
        if cold:
            for base in settings.cache_dir.glob(f"base-{settings.suite}-*"):
                shutil.rmtree(base)
        start = time.monotonic()
        up(c)
        took = time.monotonic() - start
    kind = "cold (debootstrap included)" if cold else "base image cached"
    say(f"bench: lab.up of {c.config.lab.hosts} hosts, {kind}: {took:.1f} s")


# --- the main job -------------------------------------------------------------


@task
def demo(c):
    """Bring up the local lab and show it (provision and deploy follow in later releases)."""
    started = time.monotonic()
    up(c)
    status(c)
    say(f"demo finished in {time.monotonic() - started:.1f} s")
    say("next: `ansible all -m ansible.builtin.ping` reaches every lab host as the admin user")


lab = Collection("lab", up, down, status, reboot, poweroff, poweron)
bench = Collection("bench")
bench.add_task(bench_lab, name="lab")
ns = Collection(demo, lint, test, lock, provision, versions)
ns.add_collection(lab)
ns.add_collection(bench)
