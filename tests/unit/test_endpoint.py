"""raykit.endpoint: the endpoint file, the SSH tunnel to the head's loopback, and `invoke env`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from raykit import endpoint
from raykit.cluster import ClusterError

HOSTVARS = {"ansible_host": "10.77.0.11", "ansible_user": "ops", "ansible_ssh_private_key_file": "/k/id"}


def test_direct_access_needs_no_ssh_and_tunnel_keeps_the_heads_ssh_command_line() -> None:
    direct = endpoint.endpoint("raylab-1", HOSTVARS, "10.77.0.11", "http://10.77.0.11:8265", "/t", "direct", 8000)
    assert direct["ssh"] == [] and direct["dashboard_url"] == "http://10.77.0.11:8265"
    tunnel = endpoint.endpoint("raylab-1", HOSTVARS, "10.77.0.11", "http://127.0.0.1:8265", "/t", "tunnel", 8000)
    assert tunnel["ssh"][0] == "ssh" and tunnel["ssh"][-1] == "ops@10.77.0.11" and "BatchMode=yes" in tunnel["ssh"]


def test_a_missing_endpoint_file_says_to_deploy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(endpoint, "CONFIG_DIR", tmp_path)
    with pytest.raises(ClusterError, match="run `invoke deploy`"):
        endpoint.load("nohead")
    data = endpoint.endpoint("h", HOSTVARS, "10.0.0.1", "http://10.0.0.1:8265", "/t", "direct", 8000)
    endpoint.endpoint_path("h").write_text(json.dumps(data))
    assert endpoint.load("h").dashboard_url == "http://10.0.0.1:8265"


def test_the_tunnel_forwards_after_the_ssh_options_and_before_the_target() -> None:
    argv = endpoint.tunnel_argv(["ssh", "-i", "/k", "ops@h"], 40000, "127.0.0.1", 8265)
    assert argv == ["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-L", "127.0.0.1:40000:127.0.0.1:8265",
                    "-i", "/k", "ops@h"]  # fmt: skip


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args: object) -> None:
        pass


FAKE_SSH = r"""
import socket, sys, threading
# A stand-in for `ssh -N -L 127.0.0.1:LOCAL:HOST:PORT ... target`: forwards like ssh does.
spec = sys.argv[sys.argv.index("-L") + 1].split(":")
local, host, port = int(spec[1]), spec[2], int(spec[3])
server = socket.create_server(("127.0.0.1", local))
def pipe(a, b):
    while data := a.recv(65536):
        b.sendall(data)
    b.shutdown(socket.SHUT_WR)
while True:
    client, _ = server.accept()
    upstream = socket.create_connection((host, port))
    threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
    threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
"""


def test_a_tunnel_reaches_the_remote_url_and_closes_after(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fake = tmp_path / "ssh"
    fake.write_text(f"#!{sys.executable}\n{FAKE_SSH}")
    fake.chmod(0o755)
    remote = f"http://127.0.0.1:{server.server_address[1]}"
    with endpoint.tunnel([str(fake), "ops@h"], remote) as url:
        assert url != remote
        assert urllib.request.urlopen(url, timeout=5).read() == b"hello"
        port = int(url.rsplit(":", 1)[1])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    server.shutdown()


def test_a_tunnel_that_ssh_refuses_names_the_host_and_ssh_s_reason(tmp_path: Path) -> None:
    fake = tmp_path / "ssh"
    fake.write_text("#!/bin/sh\necho 'Permission denied (publickey).' >&2\nexit 255\n")
    fake.chmod(0o755)
    refused = pytest.raises(ClusterError, match=r"ops@h failed: Permission denied \(publickey\)")
    with refused, endpoint.tunnel([str(fake), "ops@h"], "http://127.0.0.1:8265"):
        pass


def test_env_prints_what_rays_clients_read_for_each_shell() -> None:
    ep = endpoint.Endpoint("h", "10.0.0.1", "http://10.0.0.1:8265", "/home/o p/.config/raykit/h.token", "direct", 8000)
    bash = endpoint.shell_env(ep, ep.dashboard_url, "bash")
    assert "export RAY_ADDRESS=http://10.0.0.1:8265\n" in bash and "RAY_AUTH_MODE=token" in bash
    out = subprocess.run(["bash", "-c", bash + 'printf %s "$RAY_AUTH_TOKEN_PATH"'], capture_output=True, text=True)
    assert out.stdout == "/home/o p/.config/raykit/h.token"
    assert json.loads(endpoint.shell_env(ep, ep.dashboard_url, "json"))["RAY_AUTH_MODE"] == "token"
    assert "set -gx RAY_AUTH_TOKEN_PATH '/home/o p/.config/raykit/h.token';" in endpoint.shell_env(ep, "u", "fish")


def test_a_port_someone_else_took_first_is_never_sent_the_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    squatter = socket.create_server(("127.0.0.1", 0))  # another local user, quicker than ssh
    port = squatter.getsockname()[1]
    assert endpoint.listener_of(os.getpid(), port)
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert not endpoint.listener_of(child.pid, port)
    finally:
        child.kill()
        child.wait()
    monkeypatch.setattr(endpoint, "free_port", lambda: port)
    fake = tmp_path / "ssh"
    fake.write_text(f"#!{sys.executable}\n{FAKE_SSH}")
    fake.chmod(0o755)
    with pytest.raises(ClusterError, match="failed"), endpoint.tunnel([str(fake), "ops@h"], "http://127.0.0.1:9"):
        pass
    squatter.close()
