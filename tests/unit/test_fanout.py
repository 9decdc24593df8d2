"""raykit.fanout: which host seeds each archive, who fetches it from where, and the seed's server."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raykit import fanout

SERVER = Path(__file__).resolve().parents[2] / "roles/ray/files/fanout_server.py"


@pytest.fixture
def archives(tmp_path: Path) -> dict[str, Path]:
    made = {}
    for name, content in {"wheels-x86": b"x86 wheels", "wheels-arm": b"arm wheels", "python": b"a build"}.items():
        made[name] = tmp_path / name
        made[name].write_bytes(content)
    return made


def item(archives: dict[str, Path], name: str, dest: str = "/opt/ray/wheelhouse/w.tar") -> dict[str, str]:
    return {"name": name, "src": str(archives[name]), "dest": dest}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_first_host_that_needs_an_archive_seeds_it_and_serves_it_to_the_others_only(archives) -> None:
    hosts = [
        {"host": "h1", "ip": "10.0.0.1", "port": 900, "items": [item(archives, "wheels-x86")]},
        {"host": "h2", "ip": "10.0.0.2", "port": 900, "items": [item(archives, "wheels-x86")]},
        {"host": "h3", "ip": "10.0.0.3", "port": 900, "items": [item(archives, "wheels-x86")]},
    ]
    plan = fanout.plan(hosts)
    wheels = digest(archives["wheels-x86"])
    assert [i["name"] for i in plan["h1"]["seeds"]] == ["wheels-x86"]
    assert plan["h1"]["serve"] == {wheels: "/opt/ray/wheelhouse/w.tar"}
    assert plan["h1"]["allow"] == ["10.0.0.2", "10.0.0.3"]
    for name in ("h2", "h3"):
        assert plan[name]["seeds"] == [] and plan[name]["serve"] == {}
        (fetch,) = plan[name]["fetch"]
        assert (fetch["peer"], fetch["url"], fetch["sha256"]) == ("h1", f"http://10.0.0.1:900/{wheels}", wheels)


def test_each_architecture_and_build_has_its_own_seed_and_a_host_with_everything_is_left_alone(archives) -> None:
    python = [item(archives, "python", "/var/cache/raykit-python.tar.gz")]
    hosts: list[dict[str, Any]] = [
        {"host": "done", "ip": "10.0.0.9", "port": 900, "items": []},
        {"host": "x1", "ip": "10.0.0.1", "port": 900, "items": [item(archives, "wheels-x86")]},
        {"host": "a1", "ip": "10.0.0.2", "port": 900, "items": [item(archives, "wheels-arm"), *python]},
        {"host": "x2", "ip": "10.0.0.3", "port": 900, "items": [item(archives, "wheels-x86"), *python]},
        {"host": "a2", "ip": "10.0.0.4", "port": 900, "items": [item(archives, "wheels-arm")]},
    ]
    plan = fanout.plan(hosts)
    assert plan["done"] == {"seeds": [], "fetch": [], "serve": {}, "allow": []}
    assert {(i["name"]) for i in plan["a1"]["seeds"]} == {"wheels-arm", "python"}
    assert {(f["name"], f["peer"]) for f in plan["x2"]["fetch"]} == {("wheels-x86", "x1"), ("python", "a1")}
    assert plan["a1"]["allow"] == ["10.0.0.3", "10.0.0.4"]
    assert [f["peer"] for f in plan["a2"]["fetch"]] == ["a1"]


def test_a_host_fetches_on_its_seeds_own_port(archives) -> None:
    hosts = [
        {"host": "h1", "ip": "10.0.0.1", "port": 901, "items": [item(archives, "python")]},
        {"host": "h2", "ip": "10.0.0.2", "port": 900, "items": [item(archives, "python")]},
    ]
    (fetch,) = fanout.plan(hosts)["h2"]["fetch"]
    assert fetch["url"].startswith("http://10.0.0.1:901/")


def test_archives_with_the_same_bytes_are_sent_once_whatever_their_name(archives, tmp_path: Path) -> None:
    twin = tmp_path / "twin"
    twin.write_bytes(archives["python"].read_bytes())
    hosts = [
        {"host": "h1", "ip": "10.0.0.1", "port": 900, "items": [item(archives, "python")]},
        {"host": "h2", "ip": "10.0.0.2", "port": 900, "items": [{"name": "other", "src": str(twin), "dest": "/tmp/x"}]},
    ]
    plan = fanout.plan(hosts)
    assert [f["peer"] for f in plan["h2"]["fetch"]] == ["h1"]


def test_the_server_runs_sandboxed_with_a_deadline_on_the_node_address() -> None:
    host_plan = {"serve": {"abc": "/opt/ray/wheelhouse/w.tar"}, "allow": ["10.0.0.2", "10.0.0.3"]}
    argv = fanout.server_argv(
        "/usr/bin/python3", "SCRIPT", "10.0.0.1", 900, host_plan, "raykit-fanout.service", "15min"
    )
    assert argv[:2] == ["systemd-run", "--unit=raykit-fanout.service"]
    for prop in ("Type=notify", "DynamicUser=yes", "RuntimeMaxSec=15min", "NoNewPrivileges=yes",
                 "AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE"):  # fmt: skip
        assert f"--property={prop}" in argv
    command = argv[argv.index("--") + 1 :]
    assert command == ["/usr/bin/python3", "-I", "-S", "-c", "SCRIPT", "10.0.0.1", "900", "10.0.0.2,10.0.0.3",
                       "abc=/opt/ray/wheelhouse/w.tar"]  # fmt: skip


def test_a_failed_fetch_is_named_with_its_peer_and_reason() -> None:
    failed = {
        "results": [
            {"failed": False, "item": {"name": "python", "peer": "h1", "url": "u0"}},
            {"failed": True, "msg": "Connection refused", "item": {"name": "wheelhouse", "peer": "h1", "url": "u1"}},
            {"failed": True, "msg": "Request failed", "response": "HTTP Error 404: File not found",
             "item": {"name": "python-debs", "peer": "h1", "url": "u2"}},
        ]
    }  # fmt: skip
    assert fanout.fallback_message("h2", failed) == (
        "h2: could not fetch wheelhouse from h1 (u1): Connection refused; python-debs from h1 (u2): "
        "HTTP Error 404: File not found; copying from the controller instead"
    )


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, bytes, str]]:
    payload = b"wheels " * 100_000
    path = tmp_path / "w.tar"
    path.write_bytes(payload)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    allowed = request.param
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", str(SERVER), "127.0.0.1", str(port), allowed, f"{digest(path)}={path}"],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not listening(port):
        assert time.monotonic() < deadline, "the server did not listen"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", payload, digest(path)
    finally:
        proc.kill()
        proc.wait()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


@pytest.mark.parametrize("server", ["10.0.0.2,127.0.0.1"], indirect=True)
def test_the_server_sends_an_archive_whole_by_its_digest_and_nothing_else(server) -> None:
    base, payload, sha = server
    assert get(f"{base}/{sha}") == (200, payload)
    assert get(f"{base}/{'0' * 64}")[0] == 404
    assert get(f"{base}/../../etc/passwd")[0] == 404


@pytest.mark.parametrize("server", ["10.0.0.2"], indirect=True)
def test_the_server_answers_only_the_listed_addresses(server) -> None:
    base, _, sha = server
    assert get(f"{base}/{sha}")[0] == 403
