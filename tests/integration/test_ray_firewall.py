"""The firewall on the lab (README, "Firewall"): Ray's ports answer the inventory's nodes and
refuse a lab host outside it, judged by TCP from the hosts themselves and by Ray's State API.

Named to run after test_python, whose four-host lab it reuses (the fourth host is the outsider)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from raykit import cluster as raycluster
from tests.helpers import (
    GROWN_SUITES,
    HEAD,
    LAB_HOSTS,
    ROOT,
    TOKEN_FILE,
    LabHost,
    all_ips,
    assert_refused,
    http_status,
    invoke,
    main_pids,
    nft_table,
    ray_start_times,
    ray_state,
    read_inventory,
    recap,
    tcp_from,
    tcp_from_here,
    write_inventory_variant,
)

pytestmark = pytest.mark.lab

DEFAULTS = yaml.safe_load((ROOT / "roles/ray/defaults/main.yml").read_text())
OUTSIDER = f"raylab-{LAB_HOSTS + 1}"


@pytest.fixture
def four_hosts(running_lab: dict[str, LabHost]) -> dict[str, LabHost]:
    """The lab with one host more than the cluster's inventory, every host provisioned. A new one is
    trixie, as test_python's: the two files then share one lab."""
    if len(running_lab) != LAB_HOSTS + 1:
        invoke("lab.up", "--hosts", str(LAB_HOSTS + 1), "--suites", ",".join(GROWN_SUITES), timeout=900)
    invoke("provision", timeout=1800)
    return read_inventory()


def assert_doctor_names(*problems: tuple[LabHost, str]) -> None:
    """doctor fails, naming each host's firewall and its problem."""
    found = invoke("doctor", check=False)
    assert found.returncode != 0
    for host, problem in problems:
        assert f"{host.name}: its firewall differs from the inventory: {problem}" in found.stdout, found.stdout


def without_outsider(tmp_path: Path) -> Path:
    return write_inventory_variant(tmp_path, lambda inv: inv["children"]["ray_workers"]["hosts"].pop(OUTSIDER))


def test_a_host_outside_the_inventory_is_refused_and_let_in_once_listed(
    four_hosts: dict[str, LabHost], tmp_path: Path
) -> None:
    hosts = four_hosts
    members = {name: h for name, h in hosts.items() if name != OUTSIDER}
    outsider, head, worker = hosts[OUTSIDER], hosts[HEAD], hosts[sorted(members)[1]]
    three = without_outsider(tmp_path)
    outsider.ssh("sudo systemctl stop ray", check=False)  # a host about to join, not yet a node
    invoke("deploy", "--inventory", str(three), timeout=900)
    raycluster.wait_for_cluster(ray_state(members), all_ips(members), timeout=120)
    invoke("serve.deploy", "--inventory", str(three), timeout=600)
    try:
        # The GCS, a raylet, a metrics port and Serve: open to a member, refused to the outsider.
        probes = [
            (head, DEFAULTS["ray_gcs_port"]),
            (worker, DEFAULTS["ray_node_manager_port"]),
            (worker, DEFAULTS["ray_metrics_export_port"]),
            (head, DEFAULTS["ray_serve_port"]),
        ]
        seen = {(h.name, port): (tcp_from(worker if h is head else head, h.address, port),
                                 tcp_from(outsider, h.address, port)) for h, port in probes}  # fmt: skip
        assert seen == dict.fromkeys(seen, ("open", "refused")), seen
        # The controller: the dashboard (401 without the token, 200 with it), not the GCS.
        token = TOKEN_FILE.read_text().strip()
        jobs = f"http://{head.address}:{DEFAULTS['ray_dashboard_port']}/api/jobs/"
        assert (http_status(jobs, None), http_status(jobs, token)) == (401, 200)
        assert tcp_from_here(head.address, DEFAULTS["ray_gcs_port"]) == "refused"
    finally:
        invoke("serve.shutdown", "--inventory", str(three), check=False)
    # Listed and deployed: every node opens its ports to it, and no node restarts for that
    # (systemd's main PIDs, and the start times Ray's State API gives).
    before, started = main_pids(members), ray_start_times(head)
    invoke("deploy", timeout=900)
    raycluster.wait_for_cluster(ray_state(hosts), all_ips(hosts), timeout=120)
    assert main_pids(members) == before
    grown = ray_start_times(head)
    assert {ip: grown[ip] for ip in started} == started and set(grown) == all_ips(hosts), (started, grown)
    assert tcp_from(outsider, worker.address, DEFAULTS["ray_metrics_export_port"]) == "open"
    again = recap(invoke("deploy").stdout)
    assert set(hosts) <= set(again) and all(again[n]["changed"] == 0 for n in hosts), again


def test_remove_takes_a_worker_out_and_the_next_deploy_closes_the_others_to_it(
    four_hosts: dict[str, LabHost], tmp_path: Path
) -> None:
    hosts = four_hosts
    outsider, head, worker = hosts[OUTSIDER], hosts[HEAD], hosts[sorted(hosts)[1]]
    invoke("deploy", timeout=900)  # four nodes, as the test before leaves them
    raycluster.wait_for_cluster(ray_state(hosts), all_ips(hosts), timeout=120)
    started = ray_start_times(head)
    invoke("remove", OUTSIDER, "--yes", timeout=900)
    # Ray: the other nodes alive as they were, no restart; the host: no unit, no account, no files.
    assert ray_start_times(head) == {ip: t for ip, t in started.items() if ip != outsider.address}
    left = outsider.ssh(
        "systemctl show --property=LoadState --value ray; getent passwd ray || echo no account;"
        "ls -d /opt/ray /etc/ray 2>/dev/null || echo no files"
    ).stdout.split()
    assert left == ["not-found", "no", "account", "no", "files"], left
    assert TOKEN_FILE.exists()  # the cluster still uses it
    # Out of the inventory and deployed: the others stop letting it in, with no restart.
    three = without_outsider(tmp_path)
    before = main_pids({name: h for name, h in hosts.items() if name != OUTSIDER})
    invoke("deploy", "--inventory", str(three), timeout=900)
    assert main_pids({name: h for name, h in hosts.items() if name != OUTSIDER}) == before
    assert tcp_from(outsider, worker.address, DEFAULTS["ray_metrics_export_port"]) == "refused"


def test_doctor_names_rules_changed_by_hand_and_deploy_restores_them_without_a_restart(deployed) -> None:
    head, added, inserted = (deployed[name] for name in sorted(deployed))
    before = main_pids(deployed)
    port = DEFAULTS["ray_node_manager_port"]
    assert tcp_from_here(inserted.address, port) == "refused"  # the controller is not a node
    # An address added to a set; a rule inserted by hand, which lets the controller in while the
    # sets stay as the inventory makes them; and a whole ruleset flushed.
    added.ssh("sudo nft add element inet raykit nodes_ip '{ 10.77.0.99 }'")
    inserted.ssh(f"sudo nft insert rule inet raykit input tcp dport {port} accept")
    head.ssh("sudo nft flush ruleset")
    assert tcp_from_here(inserted.address, port) == "open"
    assert_doctor_names(
        (added, "its nodes ports let in 10.77.0.99"),
        (inserted, "its chains differ from the rules deploy"),
        (head, "its firewall table is not loaded"),
    )
    invoke("deploy")
    table = nft_table(added)
    assert table.returncode == 0 and "10.77.0.99" not in table.stdout
    assert tcp_from_here(inserted.address, port) == "refused"
    assert nft_table(head).returncode == 0
    assert main_pids(deployed) == before
    invoke("doctor")


def test_a_node_whose_rules_fail_to_load_at_boot_keeps_ray_down_until_deploy(deployed) -> None:
    worker = deployed[sorted(deployed)[2]]
    state = ray_state(deployed)
    # Rules nft refuses, as a missing nft or a kernel without nf_tables would at boot.
    worker.ssh("echo 'not a rule' | sudo tee -a /etc/raykit-firewall.nft >/dev/null")
    invoke("lab.reboot", worker.name)
    deadline = time.monotonic() + 120
    # systemd tried to start Ray at least twice since the boot, and each start was refused.
    while int(worker.ssh("systemctl show --property=NRestarts --value ray").stdout.strip() or 0) < 2:
        assert time.monotonic() < deadline, worker.ssh("systemctl status --no-pager ray", check=False).stdout
        time.sleep(1)
    assert worker.ssh("systemctl is-active ray", check=False).stdout.strip() != "active"
    # Ray's own processes (the unit's ExecStopPost runs a moment as ray after each refused start).
    ray = worker.ssh("pgrep -a -u ray -f 'ray-node|raylet|gcs_server|python'", check=False)
    assert ray.returncode == 1, ray.stdout
    assert nft_table(worker).returncode != 0
    assert tcp_from(deployed[HEAD], worker.address, DEFAULTS["ray_node_manager_port"]) == "refused"
    assert worker.address not in raycluster.alive_nodes(state).values()
    assert_doctor_names((worker, "its firewall table is not loaded"))
    invoke("deploy")
    assert nft_table(worker).returncode == 0
    raycluster.wait_for_cluster(state, all_ips(deployed), timeout=120)


def test_debians_nftables_service_flushing_the_ruleset_keeps_the_kits_table(deployed) -> None:
    worker = deployed[sorted(deployed)[1]]
    try:
        # Its start and reload begin with `flush ruleset`; the kit's drop-in loads the table after.
        worker.ssh("sudo systemctl enable --quiet --now nftables && sudo systemctl reload nftables")
        assert nft_table(worker).returncode == 0
    finally:
        worker.ssh("sudo systemctl disable --quiet --now nftables", check=False)
    # Its stop flushes every table too; the drop-in loads the kit's after it.
    assert worker.ssh("systemctl is-active nftables", check=False).stdout.strip() == "inactive"
    assert nft_table(worker).returncode == 0
    assert recap(invoke("deploy").stdout)[worker.name]["changed"] == 0


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ray_admin_cidrs", ["10.77.0.300/24"], "ray_admin_cidrs: '10.77.0.300/24' is not an IP address or network"),
        ("ray_serve_allow", ["10.77.0.5/24"], "ray_serve_allow: '10.77.0.5/24' has host bits set; did you mean"),
        ("ray_controller_address", "controller", "ray_controller_address: 'controller' is not an IP address"),
    ],
)
def test_bad_firewall_settings_are_refused_before_any_change(
    deployed, tmp_path: Path, variable: str, value: object, message: str
) -> None:
    bad = write_inventory_variant(tmp_path, lambda inv: inv["vars"].update({variable: value}))
    assert_refused(invoke("deploy", "--inventory", str(bad), check=False), f"{HEAD}: ", message)
