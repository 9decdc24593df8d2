"""Provision's fan-out: the controller sends each archive (the wheelhouse, the kit's build of
Python) once, to the first host that needs it, its seed; the other hosts that need the same
bytes fetch them from the seed over the hosts' own network, checked against their digest.
The plan is computed here once; roles/ray/tasks/fanout.yml carries it out."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

_DIGESTS: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str) -> str:
    """The file's sha256, read once per run for an unchanged file (the wheelhouse is large)."""
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def plan(hosts: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """hosts, in play order: {host, ip, port (its ray_fanout_port), items: [{name, src (on the
    controller), dest (on the host)}]}.

    Per host: `seeds`, the items it seeds (from the controller); `fetch`, the items it gets from
    a seed, each with its `peer` and `url`; `serve`, digest -> path of what it serves; `allow`,
    the addresses of the hosts that fetch from it (the only ones it answers). Items are the
    same when their bytes are: hosts of one architecture share a wheelhouse, of one release
    group a build, whatever their names."""
    out: dict[str, dict[str, Any]] = {h["host"]: {"seeds": [], "fetch": [], "serve": {}, "allow": []} for h in hosts}
    seeds: dict[str, tuple[Mapping[str, Any], str]] = {}
    for h in hosts:
        for item in h["items"]:
            digest = sha256_file(item["src"])
            entry = {**item, "sha256": digest}
            if digest not in seeds:
                seeds[digest] = (h, item["dest"])
                out[h["host"]]["seeds"].append(entry)
                continue
            seed, path = seeds[digest]
            served = out[seed["host"]]
            served["serve"][digest] = path
            if h["ip"] not in served["allow"]:
                served["allow"].append(h["ip"])
            url = f"http://{seed['ip']}:{seed['port']}/{digest}"
            out[h["host"]]["fetch"].append({**entry, "peer": seed["host"], "url": url})
    return out


def server_argv(
    interpreter: str, script: str, ip: str, port: int, host_plan: Mapping[str, Any], unit: str, deadline: str
) -> list[str]:
    """The systemd-run command line of a seed's server: a transient unit that is ready once it
    listens, runs as a user of its own with no write access anywhere, and stops at the deadline
    even if provision never comes back to stop it."""
    # The port is below 1024: it may bind it, as no Ray job can.
    properties = ["Type=notify", "DynamicUser=yes", f"RuntimeMaxSec={deadline}", "NoNewPrivileges=yes",
                  "PrivateTmp=yes", "ProtectHome=yes", "PrivateDevices=yes",
                  "AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE"]  # fmt: skip
    files = [f"{digest}={path}" for digest, path in sorted(host_plan["serve"].items())]
    command = [interpreter, "-I", "-S", "-c", script, ip, str(port), ",".join(host_plan["allow"]), *files]
    return ["systemd-run", f"--unit={unit}", "--collect", "--quiet", *(f"--property={p}" for p in properties),
            "--", *command]  # fmt: skip


def fallback_message(host: str, failed: Mapping[str, Any]) -> str:
    """What a host whose fetch failed says before it copies from the controller instead."""
    results = failed.get("results") or [failed]
    reasons = [
        f"{r['item']['name']} from {r['item']['peer']} ({r['item']['url']}): {r.get('response') or r.get('msg')}"
        for r in results
        if r.get("failed") and isinstance(r.get("item"), Mapping)
    ]
    what = "; ".join(reasons) or failed.get("msg", "the archives")
    return f"{host}: could not fetch {what}; copying from the controller instead"
