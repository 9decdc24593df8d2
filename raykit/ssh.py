"""The one way the kit and its tests reach a host over ssh: from the host's Ansible
connection variables, as Ansible does."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# For commands the kit runs itself: never a prompt, and a dead host fails in seconds.
BATCH = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=5")


def ssh_argv(
    hostvars: Mapping[str, Any], host: str, remote: str | Sequence[str] = (), options: Sequence[str] = ()
) -> list[str]:
    """An ssh command line that reaches `host` with its inventory variables. `remote` is a
    shell command line as is, or an argv (quoted for the remote shell); none opens a session
    (or a tunnel, with -L among the options)."""
    argv = ["ssh", *options]
    if hostvars.get("ansible_ssh_private_key_file"):
        argv += ["-i", str(Path(hostvars["ansible_ssh_private_key_file"]).expanduser())]
    if hostvars.get("ansible_port"):
        argv += ["-p", str(hostvars["ansible_port"])]
    argv += shlex.split(hostvars.get("ansible_ssh_common_args", ""))
    user = hostvars.get("ansible_user")
    target = hostvars.get("ansible_host", host)
    argv.append(f"{user}@{target}" if user else target)
    if isinstance(remote, str):
        return [*argv, remote]
    return argv + ([shlex.join(remote)] if remote else [])
