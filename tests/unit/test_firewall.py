"""raykit.firewall: the rules' sources and ports, the settings' checks, and drift."""

from __future__ import annotations

import yaml

from raykit import debs, firewall
from tests.helpers import ROOT

DEFAULTS = yaml.safe_load((ROOT / "roles/ray/defaults/main.yml").read_text())
PORTS = {name: value for name, value in DEFAULTS.items() if name.endswith("_port")}
NODES = ["10.77.0.11", "10.77.0.12", "10.77.0.13"]
ALLOW = {"ray_admin_cidrs": ["192.168.5.0/24"], "ray_serve_allow": ["2001:db8::/64"], "ray_metrics_allow": []}
SSH = {"client": "10.77.0.1", "server": "10.77.0.11"}
GOOD = {"ray_firewall": True, "ray_admin_cidrs": [], "ray_serve_allow": [], "ray_metrics_allow": [],
        "ray_controller_address": "", "ssh": SSH, "local": False}  # fmt: skip


def chains(is_head: bool) -> dict[str, dict]:
    rules = firewall.ruleset(is_head, PORTS, [10002, 19999], [32768, 60999], NODES, "10.77.0.1", ALLOW)
    return {chain["name"]: chain for chain in rules}


def test_the_head_opens_its_dashboard_to_the_controller_and_its_gcs_to_admins_only() -> None:
    head = chains(True)
    assert head["dashboard"]["ports"] == ["8265"]
    assert head["dashboard"]["sources"] == {"ip": ["10.77.0.1", "10.77.0.11", "10.77.0.12/31", "192.168.5.0/24"],
                                            "ip6": []}  # fmt: skip
    assert head["admin"]["ports"] == ["6379", "10001"]
    assert "10.77.0.1" not in head["admin"]["sources"]["ip"]
    assert head["serve"]["sources"]["ip6"] == ["2001:db8::/64"]
    assert head["metrics"]["ports"] == ["8080", "44217", "44227"]


def test_behind_a_tunnel_the_dashboard_stays_closed_to_the_controller_and_admins() -> None:
    rules = firewall.ruleset(True, PORTS, [10002, 19999], [32768, 60999], NODES, "10.77.0.1", ALLOW, tunnel=True)
    dashboard = next(chain for chain in rules if chain["name"] == "dashboard")
    assert dashboard["ports"] == ["8265"]
    assert dashboard["sources"] == {"ip": ["10.77.0.11", "10.77.0.12/31"], "ip6": []}


def test_monitorings_ports_are_metrics_ports_the_controller_does_not_reach() -> None:
    rules = firewall.ruleset(
        True, PORTS, [10002, 19999], [32768, 60999], NODES, "10.77.0.1", ALLOW, False, [9100, 9090]
    )
    metrics = next(chain for chain in rules if chain["name"] == "metrics")
    assert metrics["ports"] == ["8080", "9090", "9100", "44217", "44227"]
    assert "10.77.0.1" not in metrics["sources"]["ip"]


def test_a_worker_names_only_its_own_ports_and_merges_the_ranges() -> None:
    worker = chains(False)
    assert list(worker) == ["metrics", "serve", "nodes"]
    # 52365 lies in the kernel's range for port 0, where Serve's replicas listen: one interval.
    assert worker["nodes"]["ports"] == ["8076-8079", "10002-19999", "32768-60999"]
    assert worker["nodes"]["sources"] == {"ip": ["10.77.0.11", "10.77.0.12/31"], "ip6": []}


def test_settings_errors_name_the_field() -> None:
    assert firewall.settings_errors(GOOD) == []
    bad = {**GOOD, "ray_admin_cidrs": ["10.0.0.300/24", "10.1.2.3/16"], "ray_metrics_allow": "10.0.0.0/8"}
    assert firewall.settings_errors(bad) == [
        "ray_admin_cidrs: '10.0.0.300/24' is not an IP address or network (like 10.0.0.0/24)",
        "ray_admin_cidrs: '10.1.2.3/16' has host bits set; did you mean 10.1.0.0/16?",
        "ray_metrics_allow must be a list of networks like 10.0.0.0/24, got '10.0.0.0/8'",
    ]
    assert firewall.settings_errors({**GOOD, "ray_controller_address": "ctl"}) == [
        "ray_controller_address: 'ctl' is not an IP address"
    ]
    unknown = firewall.settings_errors({**GOOD, "ssh": None})
    assert unknown and "set ray_controller_address" in unknown[0]
    assert firewall.settings_errors({**GOOD, "ssh": None, "local": True}) == []
    assert firewall.settings_errors({**GOOD, "ssh": None, "ray_firewall": False}) == []


def test_a_controller_reaching_ssh_elsewhere_than_the_dashboard_must_be_named() -> None:
    ssh = {"client": "10.0.0.5", "server": "10.0.0.11"}
    assert firewall.controller_route_errors(ssh, "10.0.0.11", "") == []
    assert "set ray_controller_address" in firewall.controller_route_errors(ssh, "192.168.1.11", "")[0]
    assert firewall.controller_route_errors(ssh, "192.168.1.11", "192.168.1.1") == []


def test_drift_names_what_the_loaded_table_lets_in_or_keeps_out() -> None:
    wanted = firewall.set_elements(list(chains(False).values()))
    assert firewall.drift(wanted, wanted, True) == []
    loaded = {**wanted, "nodes_ip": [*wanted["nodes_ip"], "10.77.0.99"], "metrics_ip": ["10.77.0.11"]}
    assert firewall.drift(wanted, loaded, True) == [
        "its metrics ports keep out 10.77.0.12/31, which the inventory lets in",
        "its nodes ports let in 10.77.0.99, which the inventory does not",
    ]
    assert firewall.drift(wanted, None, None) == ["its firewall table is not loaded: Ray's ports answer anyone"]
    assert firewall.drift(wanted, wanted, False) == [
        "its chains differ from the rules deploy loaded (edited by hand, or nft or the kit upgraded)"
    ]


def test_node_addresses_fall_back_to_the_inventory_and_leave_out_names() -> None:
    hosts = [{"_ray_node_address": "10.0.0.1", "inventory_hostname": "a"},
             {"ray_node_ip": "", "ansible_host": "10.0.0.2", "inventory_hostname": "b"},
             {"ansible_host": "gpu-box-3.lab", "inventory_hostname": "c"}]  # fmt: skip
    assert firewall.node_addresses(hosts) == ["10.0.0.1", "10.0.0.2"]


def test_addresses_nft_would_list_otherwise_are_refused() -> None:
    assert firewall.network_errors("ray_metrics_allow", ["::ffff:10.0.0.0/104", "fe80::1%eth0", "2001:db8::/32"]) == [
        "ray_metrics_allow: '::ffff:10.0.0.0/104' is an IPv4 address in IPv6 form; write it as IPv4",
        "ray_metrics_allow: 'fe80::1%eth0' has a scope (%...), which nft's rules cannot name",
    ]


def test_ssh_inside_a_kept_range_is_refused() -> None:
    worker = list(chains(False).values())
    assert firewall.ssh_port_errors(worker, 22) == []
    assert firewall.ssh_port_errors(worker, 50022)[0].startswith("SSH's port 50022 lies in the ports the firewall")
    assert "(10002-19999)" in firewall.ssh_port_errors(worker, "10022")[0]


def test_a_jump_host_is_found_with_ssh_config() -> None:
    hostvars = {"ansible_host": "10.77.0.11", "ansible_ssh_common_args": "-o ProxyJump=ops@jump.example"}
    assert firewall.ssh_jump(hostvars, "raylab-1") == "proxyjump ops@jump.example"
    assert firewall.ssh_jump({"ansible_host": "10.77.0.11", "ansible_ssh_common_args": "-F /dev/null"}, "h") == ""
    ssh = {"client": "10.9.0.5", "server": "10.77.0.11"}
    assert "is not the controller" in firewall.controller_route_errors(ssh, "10.77.0.11", "", "proxyjump j")[0]
    assert firewall.controller_route_errors(ssh, "10.77.0.11", "10.77.0.1", "proxyjump j") == []


def test_debs_closure_and_cache_folder(tmp_path) -> None:
    out = "nftables\n  Depends: libc6\n  Depends: <libfoo>\nlibc6\n<virtual>\nlibnftables1\n"
    assert debs.closure(out) == ["libc6", "libnftables1", "nftables"]
    one = debs.folder("trixie", "x86_64", ["nftables"], "http://m", tmp_path)
    assert one.name.startswith("trixie-amd64-") and one != debs.folder(
        "bookworm", "x86_64", ["nftables"], "http://m", tmp_path
    )
    assert debs.cached("trixie", "x86_64", ["nftables"], "http://m", tmp_path) is None
