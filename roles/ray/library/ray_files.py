#!/usr/bin/python
"""Ansible module: make a host's folders and files in one round trip."""

from __future__ import annotations

DOCUMENTATION = r"""
module: ray_files
author: raykit
short_description: Make several folders and files, each with owner, group and mode, in one module run
description:
  - Provision makes the install folders; deploy writes a node's settings folder, token,
    environment file and unit. As separate C(ansible.builtin.file)/C(copy)/C(template)
    tasks each costs a module run (and a copy a stat, a transfer and a clean-up) per host
    and item; this makes them all in one run, in the order given.
  - A file is written to a temporary file in its folder that already has its owner, group
    and mode, then renamed over the old one, so no reader ever sees a partial file or
    looser permissions. Debian hosts only (no SELinux contexts are set).
options:
  paths:
    description:
      - Path -> wanted state, as the role's probe reports it, in the order to make them.
      - Each is a dict with C(type) (C(directory), C(file) or C(absent)), C(owner), C(group),
        C(mode) (octal string), and for a file C(sha1), the checksum of its content. An absent
        one is removed.
    type: dict
    required: true
  contents:
    description: Path -> content for every file in I(paths). Never logged.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Write the token, readable only by the ray group
  ray_files:
    paths:
      /etc/ray: {type: directory, owner: root, group: ray, mode: "0750"}
      /etc/ray/auth_token: {type: file, owner: root, group: ray, mode: "0440", sha1: "{{ token | hash('sha1') }}"}
    contents:
      /etc/ray/auth_token: "{{ token }}"
"""

RETURN = r"""
changed_paths:
  description: The paths created or changed (content, owner, group or mode), in the order given.
  type: list
  returned: always
"""

import grp
import hashlib
import os
import pwd
import tempfile

from ansible.module_utils.basic import AnsibleModule


def write_file(path: str, data: bytes, wanted: dict) -> None:
    """Replace path atomically with data, already carrying the wanted owner, group and mode."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".ray_files.")
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchown(out.fileno(), pwd.getpwnam(wanted["owner"]).pw_uid, grp.getgrnam(wanted["group"]).gr_gid)
            os.fchmod(out.fileno(), int(wanted["mode"], 8))
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def make(module: AnsibleModule, path: str, wanted: dict) -> bool:
    """Make one path as wanted; whether anything changed."""
    changed = False
    if wanted["type"] == "absent":
        if not os.path.lexists(path):
            return False
        if not module.check_mode:
            os.unlink(path)
        return True
    if wanted["type"] == "directory":
        if not os.path.isdir(path):
            changed = True
            if not module.check_mode:
                os.makedirs(path, 0o700)  # its owner and mode follow below
    else:
        data = module.params["contents"][path].encode()
        if hashlib.sha1(data).hexdigest() != wanted["sha1"]:
            raise ValueError("the content given does not match its sha1 in paths")
        try:
            with open(path, "rb") as current:
                changed = current.read() != data
        except FileNotFoundError:
            changed = True
        if changed and not module.check_mode:
            write_file(path, data, wanted)
    if module.check_mode and not os.path.lexists(path):
        return True
    attributes = module.load_file_common_arguments(
        {"path": path, "owner": wanted["owner"], "group": wanted["group"], "mode": wanted["mode"]}
    )
    return module.set_fs_attributes_if_different(attributes, changed) or changed


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "paths": {"type": "dict", "required": True},
            "contents": {"type": "dict", "default": {}, "no_log": True},
        },
        supports_check_mode=True,
    )
    changed_paths = []
    for path, wanted in module.params["paths"].items():
        try:
            if make(module, path, wanted):
                changed_paths.append(path)
        except (OSError, KeyError, ValueError) as exc:
            module.fail_json(msg=f"{path}: {exc}", changed=bool(changed_paths), changed_paths=changed_paths)
    module.exit_json(changed=bool(changed_paths), changed_paths=changed_paths)


if __name__ == "__main__":
    main()
