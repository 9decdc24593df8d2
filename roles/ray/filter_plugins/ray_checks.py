"""The role's checks: preflight's of the inventory's values (each returns the problems it finds,
in words that name the field, so the role refuses a host before anything on it changes), and
doctor's of what a host holds."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raykit.cluster_lock import LockError, read_header, unknown_extras
from raykit.endpoint import ACCESS
from raykit.pybuild import source_url

# Folders a prefix must never be: reset removes the prefix whole.
SYSTEM_FOLDERS = frozenset(
    [
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/lib32",
        "/lib64",
        "/media",
        "/mnt",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/srv",
        "/sys",
        "/tmp",
        "/usr",
        "/usr/bin",
        "/usr/lib",
        "/usr/local",
        "/usr/sbin",
        "/usr/share",
        "/var",
        "/var/cache",
        "/var/lib",
        "/var/log",
        "/var/tmp",
    ]
)
# Label and resource names and label values go into `ray start --labels=k=v,...` and
# `--resources='{json}'` on the unit's command line: only characters that need no quoting.
UNIT_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# systemd's EnvironmentFile reads quotes and backslashes, and a newline ends the value.
ENV_VALUE_BREAKS = re.compile(r"[\"'\\\n\r]")
# Ray's own switches for its authentication: the kit keeps token authentication on.
AUTH_SWITCH = re.compile(r"^RAY_AUTH_", re.IGNORECASE)
# Ray's minimum object store (ray_constants.OBJECT_STORE_MINIMUM_MEMORY_BYTES).
OBJECT_STORE_MINIMUM_BYTES = 75 * 1024 * 1024


PREFIX_PATH = re.compile(r"^[A-Za-z0-9_./-]+$")
# Ray's unit runs with ProtectHome=true: to Ray these folders are empty and read-only.
HIDDEN_FROM_RAY = ("/home", "/root", "/run/user")
# And with PrivateTmp=true: Ray's own copies of these, which nothing else sees.
PRIVATE_TO_RAY = ("/tmp", "/var/tmp")


def _under(path: str, folders: tuple[str, ...]) -> str | None:
    """The one of folders that path is or lies under."""
    return next((folder for folder in folders if path == folder or path.startswith(folder + "/")), None)


def _hidden_error(name: str, path: str) -> list[str]:
    hidden = _under(path, HIDDEN_FROM_RAY)
    if hidden is None:
        return []
    return [
        f"{name} {path!r} is under {hidden}, which Ray's unit hides from Ray (ProtectHome=true); use a folder "
        f"outside {', '.join(HIDDEN_FROM_RAY)}"
    ]


def ray_prefix_errors(prefix: Any) -> list[str]:
    """ray_prefix must be an absolute folder of the kit's own, not a system folder, and plain
    enough for the unit's command line and PATH."""
    if not isinstance(prefix, str) or not prefix.startswith("/"):
        return [f"ray_prefix {prefix!r} is not an absolute path"]
    if not PREFIX_PATH.match(prefix):
        return [
            f"ray_prefix {prefix!r} has a character that would break the unit or PATH (use letters, digits and _ . / -)"
        ]
    normal = _plain(prefix)
    if normal in SYSTEM_FOLDERS or ".." in normal.split("/"):
        return [
            f"ray_prefix {prefix!r} is a system folder (reset removes the prefix whole); use a folder of its own, "
            "e.g. /opt/ray"
        ]
    # Hosts' paths are compared as strings (what provision keeps, what a link points to).
    if prefix != normal:
        return [f"ray_prefix {prefix!r} is not in its plain form: write {normal!r}"]
    return []


def ray_temp_dir_errors(temp_dir: Any) -> list[str]:
    """ray_temp_dir goes on the unit's command line and into its ReadWritePaths: a folder of
    Ray's own, which Ray and its drivers reach."""
    if not (isinstance(temp_dir, str) and temp_dir.startswith("/") and PREFIX_PATH.match(temp_dir)):
        return [f"ray_temp_dir {temp_dir!r} is not an absolute path of letters, digits and _ . / -"]
    normal = _plain(temp_dir)
    if temp_dir != normal or ".." in normal.split("/"):
        return [f"ray_temp_dir {temp_dir!r} is not in its plain form (no //, . or .. and no trailing /)"]
    if normal in SYSTEM_FOLDERS:
        return [f"ray_temp_dir {temp_dir!r} is a system folder; use a folder of Ray's own, e.g. /var/lib/ray/tmp"]
    private = _under(normal, PRIVATE_TO_RAY)
    if private:
        return [
            f"ray_temp_dir {temp_dir!r} is under {private}, which is private to Ray's unit (PrivateTmp=true): "
            "drivers on the host would not find its sessions"
        ]
    return _hidden_error("ray_temp_dir", temp_dir)


def _plain(path: str) -> str:
    return "/" + "/".join(part for part in path.split("/") if part not in ("", "."))


def ray_prefix_parent_errors(prefix: str, loose: list[str] | None) -> list[str]:
    """Folders above the prefix that someone but root may write: they could swap the prefix
    (and what root installs and runs there) between two steps of provision."""
    return (
        [
            f"ray_prefix {prefix}: {', '.join(loose)} above it is not root's or is writable by others; choose a "
            "prefix whose parents only root may change"
        ]
        if loose
        else []
    )


# Ports Ray reads from the environment, each written there from its variable (ray_node's vars).
PORT_ENVIRONMENT = {
    "DASHBOARD_METRIC_PORT": "ray_dashboard_metrics_port",
    "AUTOSCALER_METRIC_PORT": "ray_autoscaler_metrics_port",
}


def ray_value_errors(labels: Any, resources: Any, environment: Any) -> list[str]:
    """Label, resource and environment names and values that would break the unit or the env file,
    and environment keys that would switch Ray's authentication."""
    errors = []
    if isinstance(labels, Mapping):
        for name, value in labels.items():
            for what, text in (("name", name), ("value", value)):
                if isinstance(text, str) and not UNIT_WORD.match(text):
                    errors.append(
                        f"ray_labels: {what} {text!r} of {name!r} has a character that would break the unit's "
                        "command line (use letters, digits and _ . : / -)"
                    )
    if isinstance(resources, Mapping):
        for name in resources:
            if not isinstance(name, str) or not UNIT_WORD.match(name):
                errors.append(
                    f"ray_resources: name {name!r} has a character that would break the unit's command line "
                    "(use letters, digits and _ . : / -)"
                )
    if not isinstance(environment, Mapping):
        return [*errors, f"ray_environment must map names to values, got {environment!r}"]
    for name, value in environment.items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            errors.append(f"ray_environment: {name!r} is not a variable name")
        elif AUTH_SWITCH.match(name):
            errors.append(
                f"ray_environment: {name} would change Ray's authentication; the kit keeps token "
                "authentication on (remove it)"
            )
        elif name in PORT_ENVIRONMENT:
            errors.append(f"ray_environment: {name} is the kit's; set {PORT_ENVIRONMENT[name]} instead")
        if isinstance(value, (dict, list)) or ENV_VALUE_BREAKS.search(str(value)):
            errors.append(
                f"ray_environment: the value of {name} has a quote, a backslash or a line break, which "
                "would break /etc/ray/ray.env"
            )
    return errors


def ray_user_errors(name: str, found: Any, uid: Any, login_user: str) -> list[str]:
    """Ray's user must be an account of its own: not root, not the SSH user, not a person's."""
    if name in ("root", login_user) or uid == 0:
        return [
            f"ray_user {name!r} is {'root' if name == 'root' or uid == 0 else 'the SSH user'}; Ray needs an account "
            "of its own (the kit makes it: no login shell, no sudo)"
        ]
    # The kit's own account has its home in /var/lib/NAME (a shell set by hand there is repaired);
    # any other existing account belongs to a person or a service, which provision would change.
    if not found or found["home"] == f"/var/lib/{name}":
        return []
    if found["home"] == "/home" or found["home"].startswith("/home/"):
        why = f"with its home in {found['home']}"
    elif found["shell"] not in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false"):
        why = f"with a login shell ({found['shell']})"
    else:
        why = f"of another service (home {found['home']})"
    return [f"ray_user {name!r} is an existing account {why}; Ray needs an account of its own (the kit makes it)"]


def ray_same_machines(hosts: list[Mapping[str, Any]]) -> list[str]:
    """Hosts (their hostvars) that are one machine or share a node IP: each node must be listed
    once. One machine: the same /etc/machine-id (as the probe read it) and the same addresses;
    cloned machines share the first, not the second."""

    def machine(host: Mapping[str, Any]) -> str:
        found = (host.get("_ray_probe") or {}).get("machine_id")
        addresses = sorted(host.get("ansible_facts", {}).get("all_ipv4_addresses", []))
        return f"{found} {' '.join(addresses)}" if found else ""

    errors = []
    for label, value_of in (
        ("the same machine (same /etc/machine-id and addresses)", machine),
        ("given the same node IP", lambda h: h.get("_ray_node_address")),
    ):
        seen: dict[str, list[str]] = {}
        for host in hosts:
            value = value_of(host)
            if value:
                seen.setdefault(value, []).append(host["inventory_hostname"])
        errors += [
            f"{' and '.join(names)} are {label}; list each machine once in the inventory"
            for names in seen.values()
            if len(names) > 1
        ]
    return errors


def ray_object_store_errors(store_bytes: Any, shm_bytes: Any, set_by_user: bool) -> list[str]:
    """An object store below Ray's minimum: Ray refuses to start, and systemd would restart it forever."""
    if store_bytes is None or int(store_bytes) >= OBJECT_STORE_MINIMUM_BYTES:
        return []
    why = "ray_object_store_memory" if set_by_user else f"80% of this host's /dev/shm ({int(shm_bytes)} bytes)"
    return [
        f"the object store would be {int(store_bytes)} bytes ({why}), below Ray's minimum of "
        f"{OBJECT_STORE_MINIMUM_BYTES} bytes; set ray_object_store_memory higher or enlarge /dev/shm"
    ]


# Debian's names for the architectures Ansible reports.
DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf", "ppc64le": "ppc64el", "s390x": "s390x"}


def ray_deb_errors(
    debs: list[str], arch: str, controller_arch: str, controller_release: str, head_release: str
) -> list[str]:
    """Redis packages the controller would give the head, made for another architecture or release.
    debs are the cached file names (NAME_VERSION_ARCH.deb); the controller downloads the rest
    for its own Debian architecture and release."""
    want = DEBIAN_ARCH.get(arch, arch)
    errors = []
    if (controller_arch, controller_release) != (want, head_release):
        errors.append(
            f"the controller downloads Redis's packages for its own Debian ({controller_release}, "
            f"{controller_arch}), the head runs {head_release} on {want}"
        )
    wrong = [deb for deb in debs if deb.removesuffix(".deb").rsplit("_", 1)[-1] not in (want, "all")]
    if wrong:
        errors.append(
            f"cached Redis packages for another architecture than the head's ({want}): {', '.join(sorted(wrong))}"
        )
    return errors


# Resources Ray sets from its own flags (ray_num_cpus, ray_num_gpus, ...), not ray_resources.
RAY_OWN_RESOURCES = frozenset({"CPU", "GPU", "memory", "object_store_memory"})
VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")
# The ports every node listens on; the head also its own (HEAD_PORTS). Each is pinned, so a
# firewall can name it; workers take theirs from ray_min_worker_port-ray_max_worker_port.
HEAD_PORTS = (
    "ray_gcs_port",
    "ray_dashboard_port",
    "ray_client_server_port",
    "ray_dashboard_metrics_port",
    "ray_autoscaler_metrics_port",
)
NODE_PORTS = (
    "ray_node_manager_port",
    "ray_object_manager_port",
    "ray_dashboard_agent_grpc_port",
    "ray_runtime_env_agent_port",
    "ray_metrics_export_port",
    "ray_dashboard_agent_listen_port",
)
# Ray reserves these on every node: it refuses a worker whose other ports take one of them.
RESERVED_PORTS = ("ray_dashboard_port", "ray_client_server_port")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def ray_ports(settings: Mapping[str, Any], is_head: bool) -> dict[str, Any]:
    """Every port this node listens on, by its variable's name."""
    names = (HEAD_PORTS if is_head else ()) + NODE_PORTS
    return {name: settings.get(name) for name in names}


def ray_settings_errors(s: Mapping[str, Any]) -> list[str]:
    """Every problem with one host's settings (its public variables, plus os_family, is_head,
    ipv4s: the host's addresses but loopback, monitoring and is_monitor), each naming its field."""
    errors = []
    if s["os_family"] != "Debian":
        errors.append(f"OS family {s['os_family']} is not supported yet (Debian only)")
    version = s["ray_python_version"]
    if not (isinstance(version, str) and VERSION.match(version)):
        errors.append(f"ray_python_version '{version}' is not X.Y.Z (e.g. 3.11.2)")
    for name in ("ray_num_cpus", "ray_num_gpus"):
        if s[name] is not None and not (_whole(s[name]) and s[name] >= 0):
            errors.append(f"{name} must be a whole number of 0 or more, got {json.dumps(s[name])}")
    resources = s["ray_resources"]
    if not (
        isinstance(resources, Mapping)
        and all(_number(v) and v >= 0 for v in resources.values())
        and not RAY_OWN_RESOURCES & set(resources)
    ):
        errors.append(
            "ray_resources must map names to numbers of 0 or more (CPUs and GPUs go in "
            f"ray_num_cpus/ray_num_gpus), got {json.dumps(resources)}"
        )
    labels = s["ray_labels"]
    if not (isinstance(labels, Mapping) and all(isinstance(v, str) for v in labels.values())):
        errors.append(f"ray_labels must map names to text values, got {json.dumps(labels)}")
    errors += ray_value_errors(labels, resources, s["ray_environment"])
    # Not in ray_prefix_errors: reset still removes a prefix an older kit let provision use there.
    errors += ray_prefix_errors(s["ray_prefix"]) or _hidden_error("ray_prefix", s["ray_prefix"])
    errors += ray_temp_dir_errors(s["ray_temp_dir"])
    ipv4s, wanted = s["ipv4s"], s["ray_node_ip"]
    node_ip = wanted or (ipv4s[0] if ipv4s else "")
    if not ((wanted or len(ipv4s) == 1) and node_ip in ipv4s):
        what = (
            f"'{wanted}' is not an address of this host"
            if wanted
            else f"is not set and the host has {len(ipv4s)} addresses"
        )
        errors.append(f"ray_node_ip {what}; the host has: {', '.join(ipv4s)}")
    access = s["ray_dashboard_access"]
    if access not in ACCESS:
        errors.append(f"ray_dashboard_access must be {' or '.join(ACCESS)}, got {json.dumps(access)}")
    elif s["is_head"] and access == "tunnel" and s["ray_dashboard_host"] not in ("", "127.0.0.1"):
        errors.append(
            f"ray_dashboard_host {s['ray_dashboard_host']} contradicts ray_dashboard_access: tunnel, which keeps "
            "the dashboard on the head's loopback; leave it empty"
        )
    if s["ray_install_source"] == "index" and not s["ray_index_url"]:
        errors.append("ray_install_source is index but ray_index_url is empty")
    redis_password = os.path.expanduser(s["ray_redis_password_file"])
    if s["ray_gcs_ft"] != "none" and s["ray_redis_address"] and not os.path.isfile(redis_password):
        errors.append(f"ray_redis_address is set but its password file {s['ray_redis_password_file']} does not exist")
    ports = {**ray_ports(s, s["is_head"]), **{name: s[name] for name in RESERVED_PORTS}}
    ports["ray_serve_port"] = s["ray_serve_port"]  # every node's Serve proxy, when Serve runs
    if s["is_head"] and s["ray_gcs_ft"] != "none" and not s["ray_redis_address"]:
        ports["ray_redis_port"] = s["ray_redis_port"]  # the kit's Redis, on the head's loopback
    if s["monitoring"]:  # the node exporter on every node, Prometheus on the monitoring host
        ports["ray_node_exporter_port"] = s["ray_node_exporter_port"]
    if s["is_monitor"]:
        ports["ray_prometheus_port"] = s["ray_prometheus_port"]
    fanout = s["ray_fanout_port"]  # provision's server: where only root listens, so no Ray job poses as it
    if not (_whole(fanout) and 1 <= fanout <= 1023):
        errors.append(f"ray_fanout_port must be a whole number from 1 to 1023 (only root may listen there), "
                      f"got {json.dumps(fanout)}")  # fmt: skip
    return errors + ray_port_errors(ports, s["ray_min_worker_port"], s["ray_max_worker_port"])


def ray_port_errors(ports: Mapping[str, Any], low: Any, high: Any) -> list[str]:
    """Ports (variable name -> number) that Ray, run unprivileged, cannot listen on, that two
    variables share, or that fall in the workers' range low-high."""
    bad = {name: port for name, port in {**ports, "ray_min_worker_port": low, "ray_max_worker_port": high}.items()
           if not (_whole(port) and 1024 <= port <= 65535)}  # fmt: skip
    if bad:
        return [f"ports must be whole numbers from 1024 to 65535 (Ray runs unprivileged), got {json.dumps(bad)}"]
    errors = [f"ray_min_worker_port {low} must be below ray_max_worker_port {high}"] if low >= high else []
    by_port: dict[int, list[str]] = {}
    for name, port in ports.items():
        by_port.setdefault(port, []).append(name)
    errors += [f"{' and '.join(names)} use the same port" for _, names in sorted(by_port.items()) if len(names) > 1]
    return errors + [
        f"{name} is inside the worker port range {low}-{high}" for name, port in ports.items() if low <= port <= high
    ]


def ray_lock_errors(lock_file: str, arch: str, pins: Mapping[str, Any]) -> list[str]:
    """The lock for this host's architecture is missing, or was made from other pins than
    the inventory's (ray_version, ray_python_version, ray_extras, ray_extra_packages)."""
    try:
        meta = read_header(Path(lock_file))
    except FileNotFoundError:
        return [f"no lock for architecture {arch} ({lock_file}); run `invoke lock`"]
    except LockError as error:
        return [str(error)]
    errors = unknown_extras(pins["ray_extras"], meta["ray_known_extras"], meta["ray_version"])
    locked = {
        "ray_version": meta["ray_version"],
        "ray_python_version": meta["python_version"],
        "ray_extras": meta["ray_extras"],
        "ray_extra_packages": meta["extra_packages"],
    }
    source = meta.get("python_source", {}).get("url")
    if source != source_url(pins["ray_python_version"], pins["ray_python_source_url"]):
        errors.append(
            f"ray_python_source_url {source_url(pins['ray_python_version'], pins['ray_python_source_url'])} / "
            f"lock {source}; run `invoke lock` and commit locks/"
        )
    if {name: pins[name] for name in locked} != locked:
        differ = ", ".join(f"{name} {_pin(pins[name])} / lock {_pin(value)}" for name, value in locked.items())
        errors.append(f"the pins are not what the lock was made from ({differ}); run `invoke lock` and commit locks/")
    return errors


def _pin(value: Any) -> str:
    return ",".join(value) if isinstance(value, list) else str(value)


def ray_paths_differ(found: Mapping[str, Any], wanted: Mapping[str, Any], paths: list[str] | None = None) -> list[str]:
    """Which of paths (all of wanted's without them) the probe found otherwise than wanted
    (content, owner, group or mode)."""
    return [path for path in (list(wanted) if paths is None else paths) if found.get(path) != wanted.get(path)]


def ray_command_errors(results: list[Mapping[str, Any]], what: str) -> list[str]:
    """Each failed run of a looped command: its last line on stderr, or, for one killed without a
    word, `what` (formatted with the item's fields) and its exit."""
    return [
        ([line for line in result.get("stderr", "").splitlines() if line.strip()] or [""])[-1]
        or f"{what.format(**result['item'])} stopped (exit {result['rc']}) with no message"
        for result in results
        if result.get("rc") != 0
    ]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "ray_prefix_errors": ray_prefix_errors,
            "ray_prefix_parent_errors": ray_prefix_parent_errors,
            "ray_value_errors": ray_value_errors,
            "ray_user_errors": ray_user_errors,
            "ray_same_machines": ray_same_machines,
            "ray_object_store_errors": ray_object_store_errors,
            "ray_paths_differ": ray_paths_differ,
            "ray_command_errors": ray_command_errors,
            "ray_deb_errors": ray_deb_errors,
            "ray_ports": ray_ports,
            "ray_settings_errors": ray_settings_errors,
            "ray_lock_errors": ray_lock_errors,
        }
