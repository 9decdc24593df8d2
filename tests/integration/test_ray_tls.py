"""ray_tls and ray_dashboard_access: tunnel on the lab (README, "Encryption"): Ray's gRPC only
over mutual TLS with the cluster's CA, the dashboard on the head's loopback behind SSH; judged by
TLS handshakes from a node's own Python, TCP from the controller, and Ray's State API."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from raykit import cluster as raycluster
from tests.helpers import (
    HEAD,
    ROOT,
    LabHost,
    all_ips,
    assert_refused,
    dashboard_tunnel,
    http_status_from,
    invoke,
    main_pids,
    ray_state,
    tcp_from_here,
    write_inventory_variant,
)

pytestmark = pytest.mark.lab

DEFAULTS = yaml.safe_load((ROOT / "roles/ray/defaults/main.yml").read_text())
TLS_DIR = Path("~/.config/raykit/raylab-1.tls").expanduser()

# A gRPC client's first bytes, in clear or over TLS (with the node's certificate, or none):
# "talks" when the server answers with its HTTP/2 settings, else how it refused.
GRPC_PROBE = r"""
import socket, ssl, sys
host, port, how = sys.argv[1], int(sys.argv[2]), sys.argv[3]
preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
try:
    conn = socket.create_connection((host, port), timeout=5)
    if how != "plain":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations("/etc/ray/tls-ca.crt")
        ctx.set_alpn_protocols(["h2"])
        if how == "cert":
            ctx.load_cert_chain("/etc/ray/tls-node.crt", "/etc/ray/tls-node.key")
        conn = ctx.wrap_socket(conn, server_hostname=host)
    conn.sendall(preface)
    answer = conn.recv(9)
    print("talks" if len(answer) == 9 and answer[3] == 4 else f"no gRPC answer {answer!r}")
except (OSError, ssl.SSLError) as exc:
    print(f"refused: {type(exc).__name__}")
"""


def grpc_from(host: LabHost, address: str, port: int, how: str) -> str:
    command = f"sudo python3 -c {shlex.quote(GRPC_PROBE)} {address} {port} {how}"
    return host.ssh(command).stdout.strip().splitlines()[-1]


def test_tls_and_a_tunnel_leave_nothing_in_clear_and_a_new_certificate_restarts_only_its_node(
    deployed, tmp_path: Path
) -> None:
    # Nothing in clear: Ray's gRPC over TLS, and the dashboard's HTTP inside SSH.
    tls = write_inventory_variant(tmp_path, lambda inv: inv["vars"].update(ray_tls=True, ray_dashboard_access="tunnel"))
    head, worker = deployed[HEAD], deployed[sorted(deployed)[1]]
    gcs, dashboard = DEFAULTS["ray_gcs_port"], DEFAULTS["ray_dashboard_port"]
    try:
        # The dashboard moves to the head's loopback, where deploy cannot ask it which jobs run
        # before the restart: --force. Deploy's join check went through the tunnel.
        invoke("deploy", "--inventory", str(tls), "--force", timeout=900)
        with dashboard_tunnel(head) as through_ssh:
            raycluster.wait_for_cluster(through_ssh, all_ips(deployed), timeout=120)
        # The dashboard answers on the head's loopback alone, and still asks for the token.
        assert tcp_from_here(head.address, dashboard) != "open"
        assert http_status_from(head, f"http://127.0.0.1:{dashboard}/api/jobs/") == 401
        assert "alive" in invoke("status", "--inventory", str(tls)).stdout
        # The GCS speaks gRPC only to a client holding a certificate of the cluster's CA.
        seen = {how: grpc_from(worker, head.address, gcs, how) for how in ("cert", "none", "plain")}
        assert seen["cert"] == "talks" and seen["none"] != "talks" and seen["plain"] != "talks", seen
        raylet = {how: grpc_from(head, worker.address, DEFAULTS["ray_node_manager_port"], how) for how in seen}
        assert raylet["cert"] == "talks" and raylet["none"] != "talks" and raylet["plain"] != "talks", raylet
        # A controller that lost the CA the nodes hold is refused before anything changes.
        moved = TLS_DIR.with_name(TLS_DIR.name + ".moved")
        TLS_DIR.rename(moved)
        try:
            assert_refused(invoke("deploy", "--inventory", str(tls), check=False), "the controller has no cluster CA")
        finally:
            moved.rename(TLS_DIR)
        # Keys readable by root and Ray alone.
        modes = worker.ssh("sudo stat -c '%U:%G %a' /etc/ray/tls-node.key /etc/ray/tls-ca.crt").stdout.split()
        assert modes == ["root:ray", "440", "root:ray", "440"], modes
        invoke("examples", "--inventory", str(tls), timeout=1200)
        # A certificate issued again (here: lost on the controller) restarts its node alone.
        last = sorted(deployed)[-1]
        before = main_pids(deployed)
        (TLS_DIR / f"{last}.crt").unlink()
        invoke("deploy", "--inventory", str(tls), timeout=900)
        after = main_pids(deployed)
        assert [name for name in deployed if after[name] != before[name]] == [last]
        with dashboard_tunnel(head) as through_ssh:
            raycluster.wait_for_cluster(through_ssh, all_ips(deployed), timeout=120)
    finally:
        invoke("deploy", "--force", timeout=900)
    raycluster.wait_for_cluster(ray_state(deployed), all_ips(deployed), timeout=120)
    # Off again: the nodes run in clear, and their certificates are gone.
    assert grpc_from(worker, head.address, gcs, "plain") == "talks"
    assert worker.ssh("sudo test -e /etc/ray/tls-node.key", check=False).returncode == 1
