"""Shared plumbing for the click CLIs: user errors become one line on stderr and a non-zero exit."""
from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import click

from svmix.errors import SvmixError


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ``SvmixError`` and OS errors (missing files, full disk, no permission) into
    ``svmix-<tool>: error: <one line>``, exit 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (SvmixError, OSError) as e:
            prog = click.get_current_context().info_name if click.get_current_context(silent=True) else "svmix"
            message = " ".join(str(e).split()) or type(e).__name__
            print(f"{prog}: error: {message}", file=sys.stderr)
            sys.exit(1)

    return wrapper


def parse_int_list(value: str) -> list:
    """Parse ``"1,2,5-7"`` into ``[1, 2, 5, 6, 7]``."""
    out = []
    for part in str(value).split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    return out
