"""Writing a file so no reader ever sees half of it: the one way every part of cyxwiz
writes its state files (ready files, seeds, session tokens, downloaded models)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike, data: bytes | str, *, mode: int = 0o644, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it, synced, then moved
    into place (readers see the old file or the new one). ``mode`` 0o600 keeps it to its
    owner (the folder is made 0o700 then). ``exclusive``: keep a file already there (two
    processes writing the same one at once both end up with the first one written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if mode & 0o077 == 0 else 0o777)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data.encode() if isinstance(data, str) else data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if not exclusive:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
