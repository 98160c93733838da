"""Logging to stderr and to a file in the experiment directory.

Periodic lines (every N steps, every N seconds) are *detail*: log them with ``extra=DETAIL``. Log
files get every line; stderr gets detail lines only when it is a terminal. Off a terminal (a recipe's
``tee`` into ``exp/run.log``, a batch job) stderr keeps the milestones, so a recipe's log stays short
whatever the machine's speed, and the tool's own log file in its output directory keeps the rest.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator, Optional

FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"

#: ``extra=`` for a periodic line: in log files always, on stderr only when it is a terminal.
DETAIL = {"svmix_detail": True}


def is_terminal(stream: object) -> bool:
    """Whether ``stream`` is an open terminal (False for pipes, files and closed or odd streams)."""
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


class _DetailOnTerminalOnly(logging.Filter):
    """Drops detail records from a stream handler whose stream is not a terminal."""

    def __init__(self, handler: logging.StreamHandler) -> None:
        super().__init__()
        self.handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "svmix_detail", False) or is_terminal(self.handler.stream)


def setup_logging(log_file: Optional[os.PathLike] = None, level: int = logging.INFO) -> logging.Logger:
    """Configure the ``svmix`` logger once per process; add ``log_file`` (appending) when given."""
    logger = logging.getLogger("svmix")
    logger.setLevel(level)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
               for h in logger.handlers):
        stream = logging.StreamHandler()
        stream.setFormatter(logging.Formatter(FORMAT))
        stream.addFilter(_DetailOnTerminalOnly(stream))
        logger.addHandler(stream)
    if log_file is not None:
        log_file = Path(log_file).resolve()
        if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == log_file
                   for h in logger.handlers):
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(log_file)
            handler.setFormatter(logging.Formatter(FORMAT))
            logger.addHandler(handler)
    logger.propagate = False
    return logger


@contextlib.contextmanager
def logging_to(log_file: Optional[os.PathLike]) -> Iterator[None]:
    """``setup_logging(log_file)`` for the duration of the block: a file handler this call adds is
    removed at its end, so a later run in the same process does not write into this run's log."""
    logger = setup_logging()
    if log_file is None:
        yield
        return
    before = set(logger.handlers)
    setup_logging(log_file)
    added = [h for h in logger.handlers if h not in before]
    try:
        yield
    finally:
        for handler in added:
            logger.removeHandler(handler)
            handler.close()


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"svmix.{name}")
