"""One output, one run: the lock every tool that writes a directory or file takes on its output.

    with output_lock(out_dir, "svmix-extract"):            # a directory: OUT/.svmix.lock
        ...
    with output_lock(out_file, "svmix-export", is_dir=False):  # a file: DIR/.NAME.svmix.lock
        ...

Rule: a second run on an output that another run holds refuses at once with an
:class:`OutputBusyError` naming the holder (pid, host, start time, command), or, with
``wait_seconds``, waits that long for it first. The ranks of one torchrun launch (same
``LaunchEnv.run_id``) share the lock, as do nested acquisitions by one process.

Mechanism: the lock file holds the owner record (JSON) and every holder keeps a shared ``flock``
on it for as long as it holds the lock. Checking and registering happen under an exclusive
``flock`` on the directory containing the lock file, held for milliseconds. The last holder to
release deletes the lock file.

Stale locks: ``flock`` locks belong to open files, so the kernel drops them when their process
dies, SIGKILL included; forked children (DataLoader workers) close their inherited copy, so
orphaned workers do not keep it. A lock file left by a killed run therefore has no holder: the next run
finds it stale, logs a warning naming the dead run, and takes it over. A lock never blocks forever
on a dead process, and a reused pid cannot keep it alive. The one exception is a filesystem
without working ``flock`` (some network mounts). There the lock is not enforced.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Set, Union

from svmix.errors import SvmixError
from svmix.utils.logging import get_logger

LOCK_NAME = ".svmix.lock"
_log = get_logger("lock")
_STARTED = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
_HELD_FDS: Set[int] = set()  # lock files this process holds


def _close_inherited() -> None:
    """In a forked child (DataLoader workers): drop the parent's lock files, so that workers left
    behind by a killed run do not keep its output locked."""
    for fd in list(_HELD_FDS):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_FDS.clear()


os.register_at_fork(after_in_child=_close_inherited)


class OutputBusyError(SvmixError):
    """The output is held by another run; ``owner`` is its record."""

    def __init__(self, message: str, owner: Dict[str, Any]):
        super().__init__(message)
        self.owner = owner


def lock_path(target: Union[str, os.PathLike], is_dir: bool = True) -> Path:
    """The lock file of an output directory (inside it) or of an output file (next to it)."""
    target = Path(target)
    return target / LOCK_NAME if is_dir else target.parent / f".{target.name}{LOCK_NAME}"


def this_run(tool: str) -> Dict[str, Any]:
    """The owner record of this process: who holds an output, for another run's error message."""
    from svmix.train.distributed import launch_env

    run_id = launch_env().run_id or f"{socket.gethostname()}:{os.getpid()}:{_STARTED}"
    return {"tool": tool, "pid": os.getpid(), "host": socket.gethostname(), "started": _STARTED,
            "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else tool,
            "run_id": run_id}


def describe(owner: Dict[str, Any]) -> str:
    return (f"{owner.get('tool', 'svmix')} run (pid {owner.get('pid')} on {owner.get('host')}, started "
            f"{owner.get('started')}: {owner.get('command')})")


@contextlib.contextmanager
def directory_guard(directory: Union[str, os.PathLike]) -> Iterator[None]:
    """Exclusive ``flock`` on ``directory`` itself: short critical sections of cooperating processes
    (registration here; a sharded job's bookkeeping). Released if the process dies."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the flock


def _read_owner(fd: int) -> Dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while True:
        block = os.read(fd, 1 << 16)
        if not block:
            break
        data += block
    try:
        owner = json.loads(data.decode() or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        owner = {}
    return owner if isinstance(owner, dict) else {}


def _write_owner(fd: int, owner: Dict[str, Any]) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(owner, sort_keys=True) + "\n").encode())


@dataclass
class OutputLock:
    """A held output lock (see the module docstring); ``release()`` or use :func:`output_lock`."""

    path: Path
    owner: Dict[str, Any]
    _fd: Optional[int] = field(default=None, repr=False)
    _created_dir: Optional[Path] = field(default=None, repr=False)

    @classmethod
    def acquire(cls, target: Union[str, os.PathLike], tool: str, is_dir: bool = True,
                wait_seconds: float = 0.0, poll_seconds: float = 0.2) -> "OutputLock":
        path = lock_path(target, is_dir)
        created = None
        if not path.parent.exists():
            created = path.parent
            while not created.parent.exists():
                created = created.parent
        path.parent.mkdir(parents=True, exist_ok=True)
        me = this_run(tool)
        deadline = time.monotonic() + max(0.0, wait_seconds)
        while True:
            fd = cls._try_register(path, me)
            if isinstance(fd, int):
                _HELD_FDS.add(fd)
                return cls(path, me, fd, created)
            if time.monotonic() >= deadline:
                target_kind = "output directory" if is_dir else "output file"
                raise OutputBusyError(f"{Path(target)}: {target_kind} is in use by another {describe(fd)}; "
                                      "wait for it to finish or choose another output", fd)
            time.sleep(poll_seconds)

    @staticmethod
    def _try_register(path: Path, me: Dict[str, Any]) -> Union[int, Dict[str, Any]]:
        """Our fd holding a shared flock on ``path`` (registered), or the record of the run holding it."""
        with directory_guard(path.parent):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    owner = _read_owner(fd)  # live holders: share only with our own run
                    if owner.get("run_id") != me["run_id"]:
                        os.close(fd)
                        return owner
                    fcntl.flock(fd, fcntl.LOCK_SH)  # holders are shared; nobody else is in the guard
                    return fd
                stale = _read_owner(fd)
                if stale:
                    _log.warning("%s: taking over the lock of a %s that is no longer running", path.parent,
                                 describe(stale))
                _write_owner(fd, me)
                fcntl.flock(fd, fcntl.LOCK_SH)  # no competitor can slip in: we hold the guard
                return fd
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                raise

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        _HELD_FDS.discard(fd)
        with directory_guard(self.path.parent):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the last holder removes the file
                last = True
            except OSError:
                last = False
            if last:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            os.close(fd)
        if last and self._created_dir is not None:
            _remove_empty_dirs(self.path.parent, self._created_dir)

    def __enter__(self) -> "OutputLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _remove_empty_dirs(start: Path, top: Path) -> None:
    """Remove ``start`` and its parents up to ``top`` while empty (directories this run created)."""
    path = start
    while True:
        try:
            path.rmdir()
        except OSError:
            return
        if path == top or top not in path.parents:
            return
        path = path.parent


def output_lock(target: Union[str, os.PathLike], tool: str, is_dir: bool = True,
                wait_seconds: float = 0.0) -> OutputLock:
    """Take the lock of output ``target`` for ``tool`` (a context manager); see the module docstring."""
    return OutputLock.acquire(target, tool, is_dir, wait_seconds)
