#!/usr/bin/python
"""Ansible module: write a node's folders and files in one round trip."""

from __future__ import annotations

DOCUMENTATION = r"""
module: ray_files
short_description: Write several folders and files, each with owner, group and mode, in one module run
description:
  - Provision makes the install folders; deploy writes a node's settings folder, token,
    environment file and unit. As separate C(ansible.builtin.file)/C(copy)/C(template)
    tasks each costs a module run (and a copy a stat, a transfer and a clean-up) per host
    and item; this makes them all in one run, in the order given, each file atomically.
  - Reports which paths it changed, so the caller can restart only on settings changes.
options:
  paths:
    description: Path -> wanted state, as the role's probe reports it (C(type) directory or file, C(owner), C(group), C(mode), and C(sha1) for a file).
    type: dict
    required: true
  contents:
    description: Path -> content for every file in I(paths). Never logged.
    type: dict
    default: {}
"""

RETURN = r"""
changed_paths:
  description: The paths created or changed (content, owner, group or mode), in the order given.
  type: list
  returned: always
"""

import hashlib
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule


def write_if_different(module: AnsibleModule, path: str, content: str) -> bool:
    data = content.encode()
    try:
        with open(path, "rb") as current:
            if current.read() == data:
                return False
    except FileNotFoundError:
        pass
    if not module.check_mode:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".ray_files.")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        # Not the old file's attributes: the caller's owner, group and mode follow.
        module.atomic_move(tmp, path, keep_dest_attrs=False)
    return True


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
        changed = False
        if wanted["type"] == "directory":
            if not os.path.isdir(path):
                changed = True
                if not module.check_mode:
                    os.mkdir(path, 0o700)  # its mode follows below
        else:
            content = module.params["contents"][path]
            if hashlib.sha1(content.encode()).hexdigest() != wanted["sha1"]:
                module.fail_json(msg=f"{path}: the content given does not match its sha1 in paths")
            changed = write_if_different(module, path, content)
        if module.check_mode and not os.path.lexists(path):
            changed_paths.append(path)
            continue
        attributes = module.load_file_common_arguments(
            {"path": path, "owner": wanted["owner"], "group": wanted["group"], "mode": wanted["mode"]}
        )
        if module.set_fs_attributes_if_different(attributes, changed) or changed:
            changed_paths.append(path)
    module.exit_json(changed=bool(changed_paths), changed_paths=changed_paths)


if __name__ == "__main__":
    main()
