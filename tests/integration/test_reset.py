"""invoke reset on the lab: hosts left as provision found them, judged on the hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import HEAD, INVENTORY, TOKEN_FILE, assert_refused, invoke, recap, write_inventory_variant

pytestmark = pytest.mark.lab

# What deploy and provision make on a host (Redis with ray_gcs_ft: redis; Prometheus on the head).
MADE = ("/etc/systemd/system/ray.service", "/etc/ray", "/opt/ray", "/var/lib/ray", "/var/lib/redis",
        "/usr/bin/redis-server", "/etc/raykit-firewall.nft", "/etc/raykit-firewall.loaded",
        "/etc/systemd/system/raykit-firewall.service",
        "/etc/systemd/system/nftables.service.d", "/etc/systemd/system/ray.service.d", "/usr/bin/prometheus",
        "/usr/bin/prometheus-node-exporter", "/var/lib/prometheus", "/var/lib/raykit-monitoring",
        "/etc/systemd/system/ray-prune.timer", "/usr/local/lib/raykit", "/etc/systemd/journald@ray.conf")  # fmt: skip
NFT_TABLE = "sudo nft list table inet raykit"


def test_reset_leaves_hosts_as_provision_found_them(deployed, tmp_path: Path) -> None:
    # Everything the kit can put on a host, the kit's Redis too.
    with_redis = write_inventory_variant(tmp_path, lambda inv: inv["vars"].update(ray_gcs_ft="redis"))
    try:
        invoke("deploy", "--inventory", str(with_redis))
        assert deployed[HEAD].infra.file("/usr/bin/redis-server").exists
        assert deployed[HEAD].infra.file("/usr/bin/prometheus").exists
        assert all(host.ssh(NFT_TABLE, check=False).returncode == 0 for host in deployed.values())
        assert invoke("reset", check=False).returncode == 2  # refuses without --yes
    finally:
        invoke("reset", "--yes")
    for host in deployed.values():
        assert [path for path in MADE if host.infra.file(path).exists] == [], host.name
        assert not host.infra.user("ray").exists and not host.infra.group("ray").exists, host.name
        assert host.ssh(NFT_TABLE, check=False).returncode != 0, f"{host.name}: the firewall's table is left"
        ray = "ray start|ray[.]scripts[.]scripts|raylet|gcs_server|redis-server|prometheus"
        running = host.ssh(f"pgrep -a -f '{ray}'", check=False)
        assert running.stdout == "", f"{host.name}: {running.stdout}"
    assert not TOKEN_FILE.exists()
    assert not TOKEN_FILE.with_suffix(".redis").exists()
    assert not TOKEN_FILE.with_suffix(".tls").exists()
    assert INVENTORY.exists()
    again = recap(invoke("reset", "--yes").stdout)  # on clean hosts: succeeds, changes nothing
    assert set(deployed) <= set(again) and all(again[n]["changed"] == 0 for n in deployed), again
    # Starting Ray where it is not deployed names the host and what to run.
    assert_refused(invoke("start", check=False), f"{HEAD}: Ray is not deployed here", "run `invoke deploy`")
