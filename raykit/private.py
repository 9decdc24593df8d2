"""Files on the controller that only their owner reads: the nodes' keys, the endpoint and the
cluster's state for invoke."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_private(path: Path, data: bytes) -> None:
    """A new file, readable by its owner alone from the start, renamed over the old one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ensure_private(path: Path, text: str, dry_run: bool = False, own_folder: bool = False) -> bool:
    """The file holding exactly `text`, mode 0600; with own_folder, its folder the kit's too:
    made where missing and kept at mode 0700. Whether that changed anything (with dry_run,
    whether it would)."""
    folder, data = path.parent, text.encode()
    folder_ok = not own_folder or (folder.is_dir() and folder.stat().st_mode & 0o777 == 0o700)
    file_ok = path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o777 == 0o600
    if folder_ok and file_ok and path.read_bytes() == data:
        return False
    if not dry_run:
        if own_folder:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
        write_private(path, data)
    return True
