"""The bad-input generator of the CLI robustness test (tests/test_cli_robustness.py).

From a click parameter's declaration alone it derives the inputs that the declaration must reject:
a missing value, an empty string, the wrong type, values just outside the declared range (negative,
zero, huge), NaN and infinities, and paths of the wrong kind (a directory for a file, missing, below a
regular file, without permission). Values a declaration allows are never generated, so a loose
declaration shows up as a test failure. A parameter whose type the generator does not know, or a
numeric option without a lower bound, is reported by :func:`problems` instead of being skipped.

Path values are placeholders (``<dir>``, ``<file>``, ...) that the test resolves in its scratch world.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from typing import List, Optional, Union

import click

from svmix.cli import FiniteFloat, IntList, OutPath, TeacherSpec, Text

OMIT = object()  # leave the parameter out of the command line
NO_VALUE = object()  # give the option as the last word, without its value


@dataclass(frozen=True)
class Case:
    label: str
    value: Union[str, object]  # a command-line word (maybe a path placeholder), OMIT or NO_VALUE


# Path placeholders, resolved by the test (see test_cli_robustness.World.resolve).
DIR, FILE, MISSING, BELOW_FILE = "<dir>", "<file>", "<missing>", "<below-file>"
UNREADABLE_FILE, UNREADABLE_DIR, IN_READONLY_DIR = "<unreadable-file>", "<unreadable-dir>", "<in-readonly-dir>"


def permissions_enforced() -> bool:
    """False when running as root (or on a file system) where a mode-000 file is still readable."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = os.path.join(tmp, "probe")
        with open(probe, "w") as f:
            f.write("x")
        os.chmod(probe, 0)
        try:
            with open(probe):
                return False
        except PermissionError:
            return True
        finally:
            os.chmod(probe, 0o600)


PERMISSIONS = permissions_enforced()
WRONG_TEXT = ["gpu", "a/b", "no equals sign", "=1", "-x", "x y"]  # pattern-violating candidates


def _outside_range(rng: Union[click.IntRange, click.FloatRange], x: float) -> bool:
    below = rng.min is not None and (x <= rng.min if rng.min_open else x < rng.min)
    above = rng.max is not None and (x >= rng.max if rng.max_open else x > rng.max)
    return below or above


def _range_cases(rng: Union[click.IntRange, click.FloatRange]) -> List[Case]:
    """Negative, zero, just below the minimum and, when a maximum is declared, just above it and huge."""
    step = 1 if isinstance(rng, click.IntRange) else 1e-3
    candidates = [("negative", -1), ("zero", 0), ("below-min", rng.min - step)]
    if rng.max is not None:
        candidates += [("above-max", rng.max + step), ("huge", 10 ** 40 if step == 1 else 1e300)]
    seen, cases = set(), []
    for label, x in candidates:
        if x not in seen and _outside_range(rng, x):
            seen.add(x)
            cases.append(Case(label, repr(x) if isinstance(x, float) else str(x)))
    return cases


def _type_problem(param: click.Parameter) -> Optional[str]:
    t = param.type
    if isinstance(param, click.Option) and param.is_flag:
        return None
    if isinstance(t, (click.IntRange, click.FloatRange)):
        if t.min is None:
            return "numeric option without a lower bound"
        if isinstance(t, click.FloatRange) and not isinstance(t, FiniteFloat):
            return "click.FloatRange accepts NaN and inf: use svmix.cli.FiniteFloat"
        return None
    if isinstance(t, OutPath) or (isinstance(t, click.Path) and t.exists):
        return None
    if isinstance(t, click.Path):
        return "click.Path neither an input (exists=True) nor an output (svmix.cli.OutPath)"
    if isinstance(t, (click.Choice, IntList, Text, TeacherSpec)):
        return None
    return f"type {t!r} has no case class (declare a range, path, choice or svmix.cli type)"


def problems(param: click.Parameter) -> List[str]:
    """Why the generator cannot derive bad inputs for ``param`` (empty when it can)."""
    problem = _type_problem(param)
    return [problem] if problem else []


def cases(param: click.Parameter) -> List[Case]:
    """Every bad input the declaration of ``param`` must reject (empty list when it has a problem)."""
    if problems(param):
        return []
    out: List[Case] = []
    if param.required:
        out.append(Case("omitted", OMIT))
    if isinstance(param, click.Option) and param.is_flag:
        return out + [Case("flag-with-value", "=yes")]
    if isinstance(param, click.Option):
        out.append(Case("no-value", NO_VALUE))
    t = param.type
    out.append(Case("empty", ""))
    if isinstance(t, click.IntRange):
        out += [Case("wrong-type", "abc"), Case("fraction", "1.5")] + _range_cases(t)
    elif isinstance(t, click.FloatRange):
        out += [Case("wrong-type", "abc"), Case("nan", "nan"), Case("inf", "inf"), Case("-inf", "-inf")]
        out += _range_cases(t)
    elif isinstance(t, click.Choice):
        out.append(Case("not-a-choice", "no-such-choice"))
    elif isinstance(t, IntList):
        out += [Case("wrong-type", "a-b"), Case("fraction", "1.5"), Case("empty-item", "1,,2"),
                Case("empty-range", "3-1"), Case("repeated", "1,1"), Case("huge", f"0-{10 ** 12}")]
        if t.min is not None:
            out.append(Case("below-min", str(t.min - 1)))
    elif isinstance(t, Text):
        out += [Case("blank", "   "), Case("two-lines", "a\nb")]
        if t.pattern is not None:
            out += [Case(f"not-matching-{i}", w) for i, w in enumerate(WRONG_TEXT) if not re.fullmatch(t.pattern, w)]
    elif isinstance(t, TeacherSpec):
        out.append(Case("missing", MISSING))
    elif isinstance(t, OutPath):
        out += [Case("is-a-dir", DIR) if t.kind == "file" else Case("is-a-file", FILE),
                Case("below-a-file", BELOW_FILE)]
        if PERMISSIONS:
            out.append(Case("unwritable", IN_READONLY_DIR))
    elif isinstance(t, click.Path):
        out += [Case("missing", MISSING), Case("below-a-file", BELOW_FILE)]
        if not t.dir_okay:
            out.append(Case("is-a-dir", DIR))
        if not t.file_okay:
            out.append(Case("is-a-file", FILE))
        if PERMISSIONS and t.readable:
            out.append(Case("unreadable", UNREADABLE_FILE if t.file_okay else UNREADABLE_DIR))
    return out
