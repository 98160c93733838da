"""Progress of long work: a live bar on a terminal, concise periodic lines in log files.

One mechanism for every tool. When stderr is a terminal, a tqdm bar is drawn there and the log
files of the ``svmix`` logger get a line every ``every`` seconds. When stderr is not a terminal
(a pipe, a recipe's ``tee`` into ``exp/run.log``, a batch job), no carriage-return stream is
written at all: the log files still get a line every ``every`` seconds, and stderr gets the lines
that pass a quarter of the total (at most three per meter, see ``svmix.utils.logging.DETAIL``),
whatever the machine's speed. Each line says done/total, the rate and the ETA; a last line gives
the total time.

    with Progress(total=len(items), desc="extract", unit="utt") as bar:
        for item in items:
            ...
            bar.update()
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Any, Iterable, Iterator, Optional

from svmix.utils.logging import DETAIL, is_terminal

#: Default seconds between two log lines of one progress meter.
DEFAULT_EVERY = 30.0
#: Without a total, every this many periodic lines is a milestone (also written off a terminal).
UNKNOWN_TOTAL_MILESTONE = 10

_log = logging.getLogger("svmix.progress")


def format_duration(seconds: float) -> str:
    """A wall time as ``1h02m03s``, ``4m05s`` or ``6s`` (progress lines, ETAs, run-time tables)."""
    seconds = int(round(max(seconds, 0.0)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def stderr_is_terminal() -> bool:
    return is_terminal(sys.stderr)


class Progress:
    """Count work done; show it as a bar on a terminal and as log lines every ``every`` seconds.

    ``enabled=False`` makes every call a no-op (non-main ranks, ``--no-progress``).
    ``initial`` is work already done before this run (a resumed job): rates and ETAs count only
    what this run does.
    """

    def __init__(self, total: Optional[int] = None, desc: str = "", unit: str = "it", initial: int = 0,
                 enabled: bool = True, position: Optional[int] = None, every: float = DEFAULT_EVERY,
                 leave: bool = True) -> None:
        if every <= 0:
            raise ValueError(f"every must be > 0 seconds, got {every}")
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self._start_n = int(initial)
        self.enabled, self.every = enabled, float(every)
        self._t0 = self._last = time.monotonic()
        self._closed = False
        self._lines = 0  # periodic lines written so far
        self._milestone = self._milestone_of(self.n)
        self._bar = None
        if enabled and stderr_is_terminal():
            from tqdm import tqdm
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, position=position,
                             leave=leave, dynamic_ncols=True, file=sys.stderr)

    # -- counting -------------------------------------------------------------------------------
    def update(self, n: int = 1) -> None:
        if not self.enabled or self._closed:
            return
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self._lines += 1
            milestone = self._milestone_of(self.n)
            passed = milestone > self._milestone
            self._milestone = max(milestone, self._milestone)
            self._emit(self.status(now), detail=not passed)

    def _milestone_of(self, n: int) -> int:
        """Quarters of the total passed at ``n``, up to three (without a total: tens of periodic lines)."""
        if self.total:
            return min(4 * n // self.total, 3)  # 100% is the closing line
        return self._lines // UNKNOWN_TOTAL_MILESTONE

    def close(self) -> None:
        if not self.enabled or self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elapsed = time.monotonic() - self._t0
        done = self.n - self._start_n
        rate = f", {done / elapsed:.3g} {self.unit}/s" if elapsed > 0 and done > 0 else ""
        total = f"/{self.total}" if self.total is not None else ""
        self._emit(f"{self.desc}: {self.n}{total} {self.unit} in {format_duration(elapsed)}{rate}")

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- reporting ------------------------------------------------------------------------------
    def status(self, now: Optional[float] = None) -> str:
        """One line: ``desc: done/total unit (pct), rate unit/s, ETA``."""
        now = time.monotonic() if now is None else now
        elapsed = now - self._t0
        done = self.n - self._start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {self.n}"]
        if self.total:
            parts[0] += f"/{self.total} {self.unit} ({100.0 * self.n / self.total:.0f}%)"
        else:
            parts[0] += f" {self.unit}"
        parts.append(f"{rate:.3g} {self.unit}/s")
        if self.total and rate > 0:
            parts.append(f"ETA {format_duration((self.total - self.n) / rate)}")
        return ", ".join(parts)

    def _emit(self, message: str, detail: bool = False) -> None:
        if self._bar is None:
            _log.info(message, extra=DETAIL if detail else None)
            return
        # A bar is on the terminal: write the line to the log files only, not across the bar.
        record = _log.makeRecord(_log.name, logging.INFO, __file__, 0, message, None, None)
        logger: Optional[logging.Logger] = _log
        while logger is not None:
            for handler in logger.handlers:
                if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
                    handler.handle(record)
            logger = logger.parent if logger.propagate else None


def track(iterable: Iterable[Any], total: Optional[int] = None, **kwargs: Any) -> Iterator[Any]:
    """Iterate ``iterable`` under a :class:`Progress` (``total`` defaults to ``len(iterable)``)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(total=total, **kwargs) as bar:
        for item in iterable:
            yield item
            bar.update()
