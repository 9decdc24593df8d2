"""The firewall's rules (roles/ray_firewall): which sources may reach which of Ray's ports on
one node, the checks of its settings, and how a loaded table differs from the inventory."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from raykit.ssh import ssh_argv

TABLE = "raykit"
# The settings that list sources: what each one opens (README, "Firewall").
SOURCE_LISTS = ("ray_admin_cidrs", "ray_serve_allow", "ray_metrics_allow")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def address_error(value: str) -> str:
    """Why nft cannot take value as written ("" when it can): scoped and IPv4-mapped IPv6
    addresses are not what nft lists back."""
    if "%" in value:
        return "has a scope (%...), which nft's rules cannot name"
    network = ipaddress.ip_network(value, strict=False).network_address
    if isinstance(network, ipaddress.IPv6Address) and network.ipv4_mapped:
        return "is an IPv4 address in IPv6 form; write it as IPv4"
    return ""


def network_errors(name: str, values: Any) -> list[str]:
    """A list setting of networks (a bare address is one host), each parsed; named on error."""
    if not isinstance(values, list):
        return [f"{name} must be a list of networks like 10.0.0.0/24, got {values!r}"]
    errors = []
    for value in values:
        try:
            ipaddress.ip_network(str(value), strict=True)
        except ValueError:
            try:
                loose = ipaddress.ip_network(str(value), strict=False)
            except ValueError:
                errors.append(f"{name}: {value!r} is not an IP address or network (like 10.0.0.0/24)")
            else:
                errors.append(f"{name}: {value!r} has host bits set; did you mean {loose}?")
            continue
        if address_error(str(value)):
            errors.append(f"{name}: {value!r} {address_error(str(value))}")
    return errors


def settings_errors(s: Mapping[str, Any]) -> list[str]:
    """Every problem with one host's firewall settings (its public variables, plus ssh: the
    probe's view of this run's SSH connection, and local: Ansible runs on the host itself)."""
    if not isinstance(s["ray_firewall"], bool):
        return [f"ray_firewall must be true or false, got {s['ray_firewall']!r}"]
    errors = [error for name in SOURCE_LISTS for error in network_errors(name, s[name])]
    controller = s["ray_controller_address"]
    if controller:
        try:
            ipaddress.ip_address(str(controller).split("%")[0])
        except ValueError:
            errors.append(f"ray_controller_address: {controller!r} is not an IP address")
        else:
            if address_error(str(controller)):
                errors.append(f"ray_controller_address: {controller!r} {address_error(str(controller))}")
    elif s["ray_firewall"] and not s["local"] and not s["ssh"]:
        errors.append(
            "cannot tell the controller's address as this host sees it (its SSH connection does not say); "
            "set ray_controller_address, or the firewall would lock the controller out of the dashboard"
        )
    return errors


def controller_route_errors(
    ssh: Mapping[str, Any] | None, dashboard_host: str, controller: str, jump: str = ""
) -> list[str]:
    """On the head: the SSH client's address is not where the controller's HTTP to the dashboard
    comes from when SSH goes through a jump host (jump: ssh's ProxyJump or ProxyCommand for the
    head) or reaches another address than the dashboard's."""
    if controller or not ssh:
        return []
    fix = (
        "set ray_controller_address to the controller's address as this host sees it, or the firewall "
        "would lock the controller out of the dashboard"
    )
    if jump:
        return [f"the controller reaches this host through {jump}, so {ssh['client']} is not the controller: {fix}"]
    if ssh["server"] != dashboard_host:
        return [
            f"the controller reaches this host over SSH at {ssh['server']} but its dashboard at {dashboard_host}: {fix}"
        ]
    return []


def ssh_jump(hostvars: Mapping[str, Any], host: str) -> str:
    """The jump host or proxy command ssh would use to reach host with its inventory variables
    ("" when it goes directly), as `ssh -G` resolves them with the user's ssh config."""
    argv = ssh_argv(hostvars, host, options=["-G"])
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key in ("proxyjump", "proxycommand") and value and value != "none":
            return f"{key} {value}"
    return ""


def ssh_port_errors(chains: list[dict[str, Any]], port: Any) -> list[str]:
    """SSH's port inside the ports a chain keeps to some sources: the firewall would cut the
    controller off in the middle of the run that loads it."""
    for chain in chains:
        for span in chain["ports"]:
            low, _, high = span.partition("-")
            if int(low) <= int(port) <= int(high or low):
                return [
                    f"SSH's port {port} lies in the ports the firewall keeps to its {chain['name']} sources "
                    f"({span}): move SSH or Ray's ports (ray_min_worker_port-ray_max_worker_port, or the "
                    "kernel's net.ipv4.ip_local_port_range, where Serve's replicas listen)"
                ]
    return []


# nft's match for each IP version's source address, which also names the sets.
FAMILIES = {4: "ip", 6: "ip6"}


def collapse(addresses: Iterable[str]) -> dict[str, list[str]]:
    """Addresses and networks, merged where they overlap (nft refuses overlapping intervals),
    by family (ip, ip6)."""
    networks = [ipaddress.ip_network(str(a), strict=False) for a in addresses if a]
    merged: dict[str, list[str]] = {}
    for version, family in FAMILIES.items():
        same = [n for n in networks if n.version == version]
        merged[family] = [
            str(n.network_address) if n.num_addresses == 1 else str(n)
            for n in ipaddress.collapse_addresses(same)  # type: ignore[type-var]
        ]
    return merged


def port_ranges(ports: Iterable[int | Sequence[int]]) -> list[str]:
    """Ports and [low, high] ranges, merged where they touch or overlap, as nft writes them."""
    spans = sorted((p, p) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in ports)
    merged: list[list[int]] = []
    for low, high in spans:
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return [str(low) if low == high else f"{low}-{high}" for low, high in merged]


def ruleset(
    is_head: bool,
    ports: Mapping[str, int],
    worker_ports: Sequence[int],
    ephemeral: Sequence[int],
    nodes: Iterable[str],
    controller: str,
    allow: Mapping[str, list[str]],
    tunnel: bool = False,
    monitoring: Sequence[int] = (),
) -> list[dict[str, Any]]:
    """The node's chains, in the order the input chain jumps to them: each with its ports and
    the sources it accepts, by IP version. A port listed in an earlier chain is decided there.
    nodes: every inventory node's address; allow: ray_admin_cidrs, ray_serve_allow, ray_metrics_allow;
    tunnel: the controller reaches the dashboard through SSH (ray_dashboard_access);
    monitoring: the node exporter's and Prometheus's ports on this node (ray_monitoring)."""
    members = list(nodes)
    head = (lambda *names: [ports[n] for n in names]) if is_head else (lambda *names: [])
    chains = [
        # The dashboard and Jobs API: what the controller's invoke tasks use, unless they tunnel.
        (
            "dashboard",
            head("ray_dashboard_port"),
            members if tunnel else [*members, controller, *allow["ray_admin_cidrs"]],
        ),
        # A driver's way in: ray.init("HEAD:GCS") and Ray Client.
        ("admin", head("ray_gcs_port", "ray_client_server_port"), [*members, *allow["ray_admin_cidrs"]]),
        (
            "metrics",
            [
                ports["ray_metrics_export_port"],
                *head("ray_dashboard_metrics_port", "ray_autoscaler_metrics_port"),
                *monitoring,
            ],
            [*members, *allow["ray_metrics_allow"]],
        ),
        # The controller checks the Serve example (invoke serve.*).
        ("serve", [ports["ray_serve_port"]], [*members, controller, *allow["ray_serve_allow"]]),
        # Between nodes only. Serve's replicas listen on a port the kernel picks (port 0).
        (
            "nodes",
            [
                ports["ray_node_manager_port"],
                ports["ray_object_manager_port"],
                ports["ray_dashboard_agent_grpc_port"],
                ports["ray_runtime_env_agent_port"],
                ports["ray_dashboard_agent_listen_port"],
                list(worker_ports),
                list(ephemeral),
            ],
            members,
        ),
    ]
    return [
        {"name": name, "ports": port_ranges(chain_ports), "sources": collapse(sources)}
        for name, chain_ports, sources in chains
        if chain_ports
    ]


def set_elements(chains: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The table's sets as the template names them (CHAIN_ip, CHAIN_ip6) and nft lists them."""
    return {f"{c['name']}_{f}": sorted(c["sources"][f]) for c in chains for f in FAMILIES.values()}


def drift(
    wanted: Mapping[str, list[str]], loaded: Mapping[str, list[str]] | None, rules_as_loaded: bool | None
) -> list[str]:
    """How the loaded table differs from what the inventory makes (empty: the same): its sets,
    and its chains against those deploy recorded when it loaded them."""
    if loaded is None:
        return ["its firewall table is not loaded: Ray's ports answer anyone"]
    found = []
    if not rules_as_loaded:
        found.append("its chains differ from the rules deploy loaded (edited by hand, or nft or the kit upgraded)")
    for name in sorted(set(wanted) | set(loaded)):
        extra = sorted(set(loaded.get(name, [])) - set(wanted.get(name, [])))
        lacking = sorted(set(wanted.get(name, [])) - set(loaded.get(name, [])))
        if name not in loaded:
            found.append(f"set {name} is missing")
        elif name not in wanted:
            found.append(f"set {name} is not the kit's")
        if extra:
            found.append(f"its {chain(name)} ports let in {', '.join(extra)}, which the inventory does not")
        if lacking and name in loaded:
            found.append(f"its {chain(name)} ports keep out {', '.join(lacking)}, which the inventory lets in")
    return found


def chain(set_name: str) -> str:
    return set_name.rsplit("_", 1)[0]


def node_addresses(hosts: Iterable[Mapping[str, Any]]) -> list[str]:
    """Each inventory host's node address (its hostvars): as its facts gave it, else as the
    inventory names it (a host that did not answer keeps its place in the others' rules), when
    that is an address: a name is left out."""
    found = []
    for h in hosts:
        value = str(h.get("_ray_node_address") or h.get("ray_node_ip") or h.get("ansible_host") or "")
        try:
            found.append(str(ipaddress.ip_address(value)))
        except ValueError:
            continue
    return found
