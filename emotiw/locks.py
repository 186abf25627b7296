"""One process at a time in a folder: an exclusive lock file that names its holder.

The lock is the kernel's ``flock`` on ``<folder>/<name>``, so it is released however its process ends (SIGKILL and
power loss included); the file's content (pid, host, start time, command) only names the holder for the message a
second process gets. A file left by a dead process is taken over, with a warning naming it.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import logging
import os
import socket
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)


class LockHeld(RuntimeError):
    """Another live process holds the lock; the message names it."""


class FolderLock:
    """``with FolderLock(path, what):`` holds ``path`` exclusively, or raises :class:`LockHeld` at once (no waiting).

    ``what`` names the work in the message (e.g. ``stage irnn of runs/demo``).
    """

    def __init__(self, path: str | os.PathLike, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = _read_holder(fd)
                os.close(fd)
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise LockHeld(
                        f"{self.what} is already running: {_describe(holder)}; {self._advice()}"
                    ) from None
                # a filesystem without locks (some network mounts): go on unguarded rather than refuse to run
                log.warning("cannot lock %s (%s); running without a lock", self.path, err)
                return self
            # The holder may have released (and unlinked) the file between our open and our flock: then we hold a
            # lock on a file nobody else sees, and must try again on the path's current file.
            if _same_file(fd, self.path):
                break
            os.close(fd)
        previous = _read_holder(fd)
        if previous:
            log.warning(
                "%s: taking over the lock of %s, which ended without releasing it",
                self.what,
                _describe(previous),
            )
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if _same_file(fd, self.path):
                self.path.unlink()
        finally:
            os.close(fd)  # drops the flock

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def _advice(self) -> str:
        return f"wait for it to end or stop it (its lock is {self.path}; a lock whose process has ended is taken over)"


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        text = os.pread(fd, 65536, 0).decode(errors="replace")
        return json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "a process that has not written its name yet"
    return (
        f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')} "
        f"(`{holder.get('command', '?')}`)"
    )
