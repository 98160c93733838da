"""Shared plumbing for the click CLIs.

Every console script is declared with :func:`command` (its name is the script name) and wrapped by
:func:`user_errors`; both report a failure as ONE line on stderr, ``svmix-<tool>: error: <message>``,
and exit 1: user errors (``SvmixError``, OS errors) from the work, and bad command lines (click usage
errors: unknown option, missing or out-of-range value, wrong kind of path), found before any work.

The parameter types below make the option declarations checkable up front: numeric ranges that also
reject NaN/inf, input paths that must exist, output paths whose directory must be writable, integer
lists, names, teacher specs, devices and config overrides.
"""
from __future__ import annotations

import functools
import math
import os
import re
import sys
from typing import Any, Callable, List, NoReturn, Optional

import click

from svmix.errors import SvmixError

MAX_JOBS = 256  # upper bound of process/thread counts (--nj, --num-workers, --num-threads)
SEED = click.IntRange(0, 2 ** 32 - 1)  # what numpy accepts as a seed


def fail(prog: str, message: str) -> NoReturn:
    """Print ``<prog>: error: <message>`` (whitespace collapsed to one line) on stderr and exit 1."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(1)


def _prog_name() -> str:
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return "svmix"
    root = ctx.find_root()
    if isinstance(root.command, SvmixCommand):  # declared with its script name (:func:`command`)
        return root.command.name
    return root.info_name or "svmix"  # a plain click command: the name it was run as


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ``SvmixError`` and OS errors (missing files, full disk, no permission) into
    ``svmix-<tool>: error: <one line>``, exit 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (SvmixError, OSError) as e:
            fail(_prog_name(), str(e) or type(e).__name__)

    return wrapper


class SvmixCommand(click.Command):
    """A click command whose usage errors are one line, ``<name>: error: <message>`` (exit 1),
    instead of click's usage + hint + error block; ``--help`` is unchanged."""

    def main(self, args: Optional[List[str]] = None, prog_name: Optional[str] = None,
             complete_var: Optional[str] = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as e:
            fail(self.name or prog_name or "svmix", e.format_message())
        except click.Abort:
            fail(self.name or prog_name or "svmix", "aborted")
        sys.exit(rv if isinstance(rv, int) else 0)


def command(name: str, **kwargs: Any) -> Callable[[Callable[..., Any]], click.Command]:
    """``@click.command`` for a console script called ``name`` (``-h``/``--help``, one-line errors)."""
    kwargs.setdefault("context_settings", {"help_option_names": ["-h", "--help"]})
    return click.command(name, cls=SvmixCommand, **kwargs)


# ----------------------------------------------------------------------------- parameter types

class FiniteFloat(click.FloatRange):
    """A float range that also rejects NaN and ±inf (which ``click.FloatRange`` lets through)."""

    name = "float"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


class InPath(click.Path):
    """An existing, readable input: ``kind`` "file", "dir" or "any" (a file or a directory)."""

    def __init__(self, kind: str):
        if kind not in ("file", "dir", "any"):
            raise ValueError(kind)
        super().__init__(exists=True, file_okay=kind != "dir", dir_okay=kind != "file", readable=True)
        self.kind = kind

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        path = os.fspath(value)
        what = {"file": "file", "dir": "directory", "any": "file or directory"}[self.kind]
        if not path.strip():
            self.fail(f"empty path; expected a {what}.", param, ctx)
        if not os.path.exists(path):
            self.fail(f"{path}: {what} not found.", param, ctx)
        _check_kind(self, path, param, ctx)
        if not os.access(path, os.R_OK | (os.X_OK if os.path.isdir(path) else 0)):
            self.fail(f"{path}: permission denied.", param, ctx)
        return super().convert(value, param, ctx)


def _check_kind(self: click.Path, path: str, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> None:
    if os.path.isdir(path) and not self.dir_okay:
        self.fail(f"{path}: is a directory, expected a file.", param, ctx)
    if not os.path.isdir(path) and not self.file_okay:
        self.fail(f"{path}: not a directory.", param, ctx)


def in_file() -> InPath:
    """An existing, readable regular file."""
    return InPath("file")


def in_dir() -> InPath:
    """An existing, readable directory."""
    return InPath("dir")


class OutPath(click.Path):
    """An output file or directory: may exist (then of the right kind, writable); otherwise its nearest
    existing ancestor must be a writable directory, so nothing is computed that cannot be saved."""

    def __init__(self, kind: str):
        if kind not in ("file", "dir"):
            raise ValueError(kind)
        super().__init__(file_okay=kind == "file", dir_okay=kind == "dir", writable=True)
        self.kind = kind

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        path = os.fspath(value)
        if not path.strip():
            self.fail("empty path.", param, ctx)
        ancestor = os.path.abspath(path)
        while not os.path.lexists(ancestor):
            ancestor = os.path.dirname(ancestor)
        if ancestor == os.path.abspath(path):
            _check_kind(self, path, param, ctx)
            if not os.access(path, os.W_OK):
                self.fail(f"{path}: not writable.", param, ctx)
        elif not os.path.isdir(ancestor):
            self.fail(f"{path}: {ancestor} is not a directory.", param, ctx)
        elif not os.access(ancestor, os.W_OK | os.X_OK):
            self.fail(f"{path}: directory {ancestor} is not writable.", param, ctx)
        return super().convert(value, param, ctx)


class IntList(click.ParamType):
    """Comma-separated integers and inclusive ranges, ``"1,2,5-7"`` → ``[1, 2, 5, 6, 7]``; at least one,
    no repeats, each ``>= min``, at most ``max_items``."""

    name = "int-list"

    def __init__(self, min: Optional[int] = None, max_items: int = 1024):  # noqa: A002 (click's naming)
        self.min, self.max_items = min, max_items

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        if isinstance(value, list):
            return value
        out: List[int] = []
        for part in str(value).split(","):
            match = re.fullmatch(r"\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?", part)
            if not match:
                where = "" if part == value else f" in {value!r}"
                self.fail(f"{part.strip()!r}{where} is not an integer or a range LO-HI (e.g. 1,2,5-7).",
                          param, ctx)
            lo = int(match.group(1))
            hi = lo if match.group(2) is None else int(match.group(2))
            if hi < lo:
                self.fail(f"{value!r}: range {part.strip()!r} is empty.", param, ctx)
            if len(out) + hi - lo + 1 > self.max_items:
                self.fail(f"{value!r}: more than {self.max_items} values.", param, ctx)
            out.extend(range(lo, hi + 1))
        if self.min is not None and min(out) < self.min:
            self.fail(f"{value!r}: {min(out)} is smaller than {self.min}.", param, ctx)
        if len(set(out)) < len(out):
            self.fail(f"{value!r}: a value is listed twice.", param, ctx)
        return out


class Text(click.ParamType):
    """A one-line string with something in it; with ``pattern``, it must match the whole pattern
    (``what`` says what that means in the error)."""

    name = "text"

    def __init__(self, pattern: Optional[str] = None, what: str = ""):
        self.pattern, self.what = pattern, what

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        text = str(value)
        if not text.strip() or "\n" in text:
            self.fail(f"{value!r} is empty or not one line.", param, ctx)
        if self.pattern is not None and not re.fullmatch(self.pattern, text):
            self.fail(f"{value!r} is not {self.what}.", param, ctx)
        return text


NAME = Text(r"[A-Za-z0-9][A-Za-z0-9._-]*", "a name (letters, digits, '.', '_', '-')")
DEVICE = Text(r"cpu|cuda(:\d+)?", "a device (cpu, cuda or cuda:N)")
OVERRIDE = Text(r"[A-Za-z_][\w.-]*=.*", "KEY.SUB=VALUE")


class TeacherSpec(click.ParamType):
    """``--teacher``: a torchaudio bundle name, or an existing Hugging Face directory or svmix teacher
    checkpoint (checked without loading weights)."""

    name = "teacher"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        from svmix.teachers.sources import teacher_source

        if not str(value).strip():
            self.fail("empty teacher spec.", param, ctx)
        try:
            teacher_source(value)
        except SvmixError as e:
            self.fail(str(e), param, ctx)
        return value
