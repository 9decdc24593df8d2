"""Files on the controller that only their owner reads: the nodes' keys, the endpoint and the
cluster's state for invoke."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: bytes) -> None:
    """A new file, readable by its owner alone from the start, renamed over the old one."""
    tmp = path.with_name(f".{path.name}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def ensure_private(path: Path, text: str, dry_run: bool = False) -> bool:
    """The file holding exactly `text`, mode 0600, in a folder of mode 0700 (made where missing);
    whether that changed anything. With dry_run, only whether it would."""
    folder, data = path.parent, text.encode()
    folder_ok = folder.is_dir() and folder.stat().st_mode & 0o777 == 0o700
    file_ok = path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o777 == 0o600
    if folder_ok and file_ok and path.read_bytes() == data:
        return False
    if not dry_run:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        write_private(path, data)
    return True
