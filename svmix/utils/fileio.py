"""Atomic writes: a killed process never leaves a half-written file that a later stage would trust."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Union

from svmix.errors import SvmixError

PathLike = Union[str, os.PathLike]
_UMASK = os.umask(0)
os.umask(_UMASK)


class WriteError(SvmixError, OSError):
    """An OS error (full disk, no permission, ...) while writing ``path``; the message names ``path``.

    Still an ``OSError`` with the original ``errno``, so callers that test for one keep working."""

    def __init__(self, path: PathLike, error: OSError):
        super().__init__(error.errno, error.strerror or str(error))
        self.path = str(path)
        self.reason = error.strerror or " ".join(str(error).split()) or type(error).__name__

    def __str__(self) -> str:
        return f"{self.path}: cannot write ({self.reason}); any previous version is left unchanged"


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    An ``OSError`` on the way (creating the directory or the temporary file, writing in the block,
    fsync, rename) is raised as a :class:`WriteError` that names ``path``, unless it already names
    another file (e.g. one the block reads); the temporary file is removed.
    """
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp_path = Path(tmp)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; publish with the usual permissions
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except WriteError:
        raise
    except OSError as e:
        if e.filename is not None and str(e.filename) not in (str(tmp_path), str(path), str(path.parent)):
            raise
        raise WriteError(path, e) from e
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open`` for writing that publishes the file only when the block completes."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f


def write_json(path: PathLike, obj: Any) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def read_json(path: PathLike) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise SvmixError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise SvmixError(f"{path}: not valid JSON (not UTF-8 text: {e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise SvmixError(f"{path}: not valid JSON ({e})") from None


def torch_save_atomic(obj: Any, path: PathLike) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def torch_load(path: PathLike, what: str) -> Any:
    """``torch.load`` onto the CPU; an unreadable file is a one-line error naming it and ``what`` it is."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise SvmixError(f"{path}: cannot read {what} ({' '.join(str(e).split())[:200]})") from None


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def check_free_space(directory: PathLike, needed_bytes: int, what: str, margin: float = 1.1) -> None:
    """Stop before long work when ``directory``'s disk cannot hold ``needed_bytes`` (plus a margin)."""
    directory = Path(directory)
    probe = directory
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed_bytes * margin > free:
        raise SvmixError(
            f"{what} needs about {needed_bytes / 1e9:.2f} GB but {probe} has only {free / 1e9:.2f} GB free"
        )
