"""Logging to stderr and to a file in the experiment directory."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"


def setup_logging(log_file: Optional[os.PathLike] = None, level: int = logging.INFO) -> logging.Logger:
    """Configure the ``svmix`` logger once per process; add ``log_file`` (appending) when given."""
    logger = logging.getLogger("svmix")
    logger.setLevel(level)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
               for h in logger.handlers):
        stream = logging.StreamHandler()
        stream.setFormatter(logging.Formatter(FORMAT))
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


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"svmix.{name}")
