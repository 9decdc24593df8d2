"""How the controller reaches the cluster's dashboard and Jobs API without asking the hosts.

Deploy and status write the endpoint file next to the cluster token; `invoke run`, `examples`,
`serve.*` and `env` read it, with no playbook and no ssh. With `ray_dashboard_access: tunnel`
the dashboard listens on the head's loopback, and the controller reaches it through an SSH
tunnel over the connection the kit already uses, so the token never crosses the network in clear.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from raykit.cluster import ClusterError
from raykit.ssh import BATCH, ssh_argv

CONFIG_DIR = Path("~/.config/raykit")
ACCESS = ("direct", "tunnel")
TUNNEL_TIMEOUT_S = 15.0


def endpoint_path(head: str) -> Path:
    """The endpoint file of the cluster whose head is `head` (beside its token)."""
    return (CONFIG_DIR / f"{head}.endpoint.json").expanduser()


@dataclass(frozen=True)
class Endpoint:
    head: str
    head_ip: str
    # As the head serves it: its node IP, or its loopback behind a tunnel.
    dashboard_url: str
    token_file: str
    access: str
    serve_port: int
    # An ssh command line that reaches the head, for the tunnel.
    ssh: list[str] = field(default_factory=list)
    # Prometheus (ray_monitoring) as the nodes reach it, and an ssh command line to its host:
    # the controller always tunnels to it. Empty: no monitoring.
    prometheus_url: str = ""
    prometheus_ssh: list[str] = field(default_factory=list)


def endpoint(
    head: str,
    hostvars: Mapping[str, Any],
    head_ip: str,
    dashboard_url: str,
    token_file: str,
    access: str,
    serve_port: int,
    prometheus_url: str = "",
    monitor_hostvars: Mapping[str, Any] | None = None,
    monitor: str = "",
) -> dict[str, Any]:
    """The endpoint file's content, from deploy's and status's view of the cluster."""
    ssh = ssh_argv(hostvars, head, options=BATCH) if access == "tunnel" else []
    monitor_ssh = ssh_argv(monitor_hostvars, monitor, options=BATCH) if prometheus_url and monitor_hostvars else []
    return asdict(
        Endpoint(head, head_ip, dashboard_url, token_file, access, int(serve_port), ssh, prometheus_url, monitor_ssh)
    )


def load(head: str) -> Endpoint:
    path = endpoint_path(head)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ClusterError(
            f"this controller has not deployed the cluster of head {head} (no {path}); run `invoke deploy`"
        ) from None
    except (OSError, ValueError) as exc:
        raise ClusterError(f"cannot read {path} ({exc}); run `invoke status` to write it again") from None
    try:
        return Endpoint(**data)
    except TypeError:  # written by another version of the kit
        raise ClusterError(f"{path} is not this kit's endpoint file; run `invoke status` to write it again") from None


def host_port(url: str) -> tuple[str, int]:
    """A dashboard URL's host and port (what a tunnel forwards to)."""
    parts = urlsplit(url)
    if not (parts.hostname and parts.port):
        raise ClusterError(f"cannot tunnel to {url!r}: no host and port")
    return parts.hostname, parts.port


def free_port() -> int:
    """A local port nothing listens on now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tunnel_argv(ssh: list[str], local_port: int, remote_host: str, remote_port: int) -> list[str]:
    """ssh forwarding 127.0.0.1:local_port to remote_host:remote_port as the head sees it; it
    fails at once, rather than runs on, when the forward cannot be made."""
    forward = ["-N", "-o", "ExitOnForwardFailure=yes", "-L", f"127.0.0.1:{local_port}:{remote_host}:{remote_port}"]
    return [ssh[0], *forward, *ssh[1:]]


def listener_of(pid: int, port: int, proc_root: Path = Path("/proc")) -> bool:
    """Whether process pid holds the socket listening on 127.0.0.1:port: the tunnel's own
    ssh, not another local user's listener that took the port first (it would get the token)."""
    want = f"0100007F:{port:04X}"
    inodes = {
        f"socket:[{fields[9]}]"
        for line in (proc_root / "net/tcp").read_text().splitlines()[1:]
        if (fields := line.split()) and fields[1] == want and fields[3] == "0A"  # LISTEN
    }
    try:
        return any(os.readlink(fd) in inodes for fd in (proc_root / str(pid) / "fd").iterdir())
    except OSError:  # it exited meanwhile
        return False


def stop(proc: subprocess.Popen, grace: float) -> None:
    """Stop a tunnel's ssh: SIGTERM, then SIGKILL when it is still running after grace seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def tunnel(ssh: list[str], remote_url: str, timeout: float = TUNNEL_TIMEOUT_S) -> Iterator[str]:
    """remote_url (as the head serves it) reached through an SSH tunnel: yields the local URL.
    ssh runs in its own session, so a Ctrl-C meant for the job leaves the tunnel up to stop it."""
    local = free_port()
    argv = tunnel_argv(ssh, local, *host_port(remote_url))
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True
        )
        try:
            deadline = time.monotonic() + timeout
            while not listener_of(proc.pid, local):
                if proc.poll() is not None:
                    errors.seek(0)
                    said = errors.read().decode(errors="replace").strip() or f"exit {proc.returncode}"
                    raise ClusterError(f"the SSH tunnel to {remote_url} through {ssh[-1]} failed: {said}")
                if time.monotonic() > deadline:
                    message = f"the SSH tunnel to {remote_url} through {ssh[-1]} did not open in {timeout:.0f} s"
                    raise ClusterError(message)
                time.sleep(0.05)
            yield f"http://127.0.0.1:{local}"
        finally:
            stop(proc, grace=5)


@contextmanager
def reach(ep: Endpoint) -> Iterator[str]:
    """The dashboard URL this controller uses: the head's own, or a tunnel's local end."""
    if ep.access == "tunnel":
        with tunnel(ep.ssh, ep.dashboard_url) as url:
            yield url
    else:
        yield ep.dashboard_url


@contextmanager
def prometheus(ep: Endpoint) -> Iterator[str]:
    """Prometheus's URL for this controller: a tunnel's local end through its host (it answers
    the nodes and ray_metrics_allow only)."""
    if not ep.prometheus_url:
        raise ClusterError(f"the cluster of head {ep.head} has no monitoring (ray_monitoring is false)")
    with tunnel(ep.prometheus_ssh, ep.prometheus_url) as url:
        yield url


def shell_env(ep: Endpoint, url: str, shell: str) -> str:
    """What Ray's own clients (`ray job ...`, JobSubmissionClient) need, for `eval` in a shell."""
    env = {"RAY_ADDRESS": url, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": ep.token_file}
    if shell == "json":
        return json.dumps(env, indent=2)
    if shell == "fish":
        return "".join(f"set -gx {name} {_fish_quote(value)};\n" for name, value in env.items())
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())


def _fish_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
