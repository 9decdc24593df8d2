"""The local lab: Debian hosts as systemd-nspawn containers on this machine (`invoke lab.*`)."""

from __future__ import annotations

import configparser
import json
from collections.abc import Iterable
from pathlib import Path

from invoke import Context, task

from raykit import lab as labkit
from raykit.inventory import lab_inventory, write_inventory
from tasks.common import (
    ROOT,
    lab_settings,
    print_table,
    say,
    step,
    user_errors,
)


@task(
    help={
        "hosts": "number of hosts, one head + workers (default: the lab's current count, else lab.hosts)",
        "subnet": "private IPv4 network for the lab bridge, /24 or larger (default: lab.subnet)",
        "prefix": "host name prefix; hosts are PREFIX-1 .. PREFIX-N (default: lab.prefix)",
        "suites": "Debian suites given to the hosts in turn, e.g. bookworm,trixie (default: the lab's, else lab.suite)",
    }
)
def up(
    c: Context,
    hosts: str | None = None,
    subnet: str | None = None,
    prefix: str | None = None,
    suites: str | None = None,
) -> None:
    """Create the local lab (or add hosts to it) and write inventory/lab.yml."""
    settings = lab_settings(c, subnet, prefix)
    with user_errors(), step("lab.up"):
        count = None if hosts is None else _as_int(hosts, "--hosts")
        given = None if suites is None else labkit.parse_suites(suites)
        before = labkit.load_state(settings)
        state = labkit.up(settings, count, int(c.config.lab.hosts), say, given)
        forget_facts({h.name for h in state.hosts} - {h.name for h in (before.hosts if before else ())})
        path = ROOT / c.config.lab.inventory
        write_inventory(path, lab_inventory(settings, state.hosts))
    say(f"{len(state.hosts)} hosts up; inventory: {path.relative_to(ROOT)}")


def forget_facts(names: Iterable[str]) -> None:
    """Ansible's cached facts of these hosts (ansible.cfg): a lab host made anew is a new machine,
    maybe of another release, with another Python."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "ansible.cfg")
    folder = Path(cfg.get("defaults", "fact_caching_connection", fallback="")).expanduser()
    for name in names:
        # The jsonfile cache names a host's file NAME, or PREFIX_NAME (Ansible 2.19: s1_NAME).
        for path in [folder / name, *folder.glob(f"*_{name}")] if folder.name else []:
            path.unlink(missing_ok=True)


def _as_int(value: str | int, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise labkit.LabError(f"{field} must be a whole number, got {value!r}") from None


@task
def down(c: Context) -> None:
    """Remove the lab: containers, overlays, mounts, bridge, key and inventory/lab.yml."""
    settings = lab_settings(c)
    with user_errors():
        state = labkit.load_state(settings)
        labkit.down(settings, say)
    forget_facts(h.name for h in (state.hosts if state else ()))
    (ROOT / c.config.lab.inventory).unlink(missing_ok=True)


@task(name="status", help={"json": "print JSON instead of a table"})
def lab_status(c: Context, json_: bool = False) -> None:
    """List the lab's hosts, addresses and state."""
    rows = labkit.status(lab_settings(c))
    if json_:
        print(json.dumps(rows, indent=2))
    elif rows:
        print_table(rows)
    else:
        say("there is no lab; run `invoke lab.up`")


@task(help={"host": "lab host name, e.g. raylab-2"})
def reboot(c: Context, host: str) -> None:
    """Reboot one lab host cleanly (systemd inside boots again; its disk is kept)."""
    with user_errors(), step(f"lab.reboot {host}"):
        labkit.reboot(lab_settings(c), host, say)


@task(help={"host": "lab host name, e.g. raylab-2"})
def poweroff(c: Context, host: str) -> None:
    """Cut one lab host's power (no clean shutdown; its disk is kept)."""
    with user_errors():
        labkit.poweroff(lab_settings(c), host)


@task(help={"host": "lab host name, e.g. raylab-2"})
def poweron(c: Context, host: str) -> None:
    """Boot a powered-off lab host and wait for its sshd."""
    with user_errors(), step(f"lab.poweron {host}"):
        labkit.poweron(lab_settings(c), host)


@task(help={"host": "lab host name, e.g. raylab-2"})
def unplug(c: Context, host: str) -> None:
    """Cut one lab host's network link; it keeps running, cut off from the others."""
    with user_errors():
        labkit.set_link(lab_settings(c), host, up=False)


@task(help={"host": "lab host name, e.g. raylab-2"})
def plug(c: Context, host: str) -> None:
    """Restore one lab host's network link."""
    with user_errors():
        labkit.set_link(lab_settings(c), host, up=True)


@task(
    name="block",
    help={"source": "lab host whose packets are dropped", "target": "lab host they were going to", "port": "TCP port"},
)
def block_port(c: Context, source: str, target: str, port: str) -> None:
    """Firewall one TCP port between two lab hosts (e.g. a worker and the head's GCS port)."""
    with user_errors():
        labkit.block(lab_settings(c), source, target, _as_int(port, "--port"))


@task(name="unblock")
def unblock_ports(c: Context) -> None:
    """Remove every firewall rule lab.block added."""
    with user_errors():
        labkit.unblock()
