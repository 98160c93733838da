"""Fast reading and writing of large whitespace-separated text tables (trials, score files).

Reading: tokens are exactly those of ``line.split()`` line by line (as in ``svmix.data.datadir``),
but each block of about a million lines is split in one call, with a marker token standing for every
line end so that tokens per line are known without splitting each line again. No per-line Python
object is kept, and ten million trials never exist as Python strings all at once.

Writing: rows are assembled in numpy as padded byte matrices (one per column) whose padding is
dropped in one boolean gather, so no Python string is formatted per row.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from itertools import repeat
from typing import Dict, Iterator, List, Sequence

import numpy as np

from svmix.data.datadir import text_lines
from svmix.errors import SvmixError

CHUNK_CHARS = 32 << 20  # about a million trial lines per block
LINE_END_MARKERS = "\x00\x01\x02\x03\x04\x05\x06\x07\x08\ue000\ue001\ue002"  # any one not in the text


@dataclass
class TokenChunk:
    """The non-blank lines of one block: their line numbers and whitespace-separated tokens."""

    lines: np.ndarray  # 1-based line numbers
    widths: np.ndarray  # tokens per line
    tokens: List[str]  # all tokens, line after line

    def __len__(self) -> int:
        return len(self.lines)

    @cached_property
    def width(self) -> int:
        """Tokens per line when every line has the same number, else 0."""
        if len(self.widths) and self.widths.min() == self.widths.max():
            return int(self.widths[0])
        return 0

    def column(self, k: int) -> List[str]:
        """Token ``k`` of every line; ``""`` where a line is shorter."""
        if k < self.width:
            return self.tokens[k::self.width]
        tokens = np.empty(len(self.tokens) + 1, dtype=object)
        tokens[:-1] = self.tokens
        tokens[-1] = ""
        starts = np.cumsum(self.widths) - self.widths
        return tokens[np.where(self.widths > k, starts + k, len(self.tokens))].tolist()


def split_lines(text: str, first_line: int = 1) -> TokenChunk:
    """Tokens of the lines of ``text`` (which ends with a newline), numbered from ``first_line``."""
    n_lines = text.count("\n")
    marker = next((c for c in LINE_END_MARKERS if c not in text), None)
    if marker is None:
        raise SvmixError(f"not a text table: control characters around line {first_line}")
    tokens = text.replace("\n", f" {marker} ").split()
    per_line = len(tokens) // n_lines  # tokens + 1 marker, if every line has as many tokens
    ends = slice(per_line - 1, None, per_line)
    if per_line > 1 and len(tokens) == per_line * n_lines and tokens[ends].count(marker) == n_lines:
        del tokens[ends]
        return TokenChunk(np.arange(first_line, first_line + n_lines), np.full(n_lines, per_line - 1), tokens)
    is_end = np.fromiter(map(marker.__eq__, tokens), bool, len(tokens))
    widths = np.diff(np.r_[-1, np.flatnonzero(is_end)]) - 1
    nonblank = np.flatnonzero(widths)
    kept = np.array(tokens, dtype=object)[~is_end].tolist()
    return TokenChunk(first_line + nonblank, widths[nonblank], kept)


def iter_token_chunks(path: os.PathLike, chunk_chars: int = CHUNK_CHARS) -> Iterator[TokenChunk]:
    """Yield the non-blank lines of ``path`` as ``TokenChunk`` s of about ``chunk_chars`` characters."""
    path = str(path)
    if not os.path.isfile(path):
        raise SvmixError(f"{path}: file not found")
    done = 0
    carry = ""
    with open(path, encoding="utf-8") as f:
        while True:
            try:
                block = f.read(chunk_chars)
            except UnicodeDecodeError as e:
                for _ in text_lines(path):  # raises the exact line and byte
                    pass
                raise SvmixError(f"{path}: not UTF-8 text after line {done} ({e.reason})") from None
            text = carry + block
            cut = text.rfind("\n") + 1 if block else len(text)
            text, carry = text[:cut], text[cut:]
            if not text:
                if not block:
                    return
                continue
            if not text.endswith("\n"):
                text += "\n"
            try:
                chunk = split_lines(text, done + 1)
            except SvmixError as e:
                raise SvmixError(f"{path}: {e}") from None
            done += text.count("\n")
            if len(chunk):
                yield chunk


def encode_ids(tokens: Sequence[str], vocab: Dict[str, int], grow: bool = False) -> np.ndarray:
    """Integer codes of ``tokens`` in ``vocab`` (-1 when unknown); ``grow`` adds unknown ones."""
    if grow:
        for token in set(tokens).difference(vocab):
            vocab[token] = len(vocab)
    return np.fromiter(map(vocab.get, tokens, repeat(-1)), np.int64, len(tokens))


@dataclass
class ByteColumn:
    """One text column of ``m`` rows: a padded (m, W) byte matrix and the mask of its real bytes."""

    chars: np.ndarray  # uint8
    keep: np.ndarray  # bool, same shape


class StringTable:
    """Strings (e.g. utterance ids) encoded once, to be written as columns by integer code."""

    def __init__(self, strings: Sequence[str]):
        encoded = [s.encode("utf-8") for s in strings]
        self.lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
        width = max(1, int(self.lengths.max(initial=1)))
        self.chars = np.array(encoded, dtype=f"S{width}").view(np.uint8).reshape(len(encoded), width)

    def column(self, codes: np.ndarray) -> ByteColumn:
        positions = np.arange(self.chars.shape[1])
        return ByteColumn(self.chars[codes], positions < self.lengths[codes][:, None])


def _digits(values: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` lowest decimal digits of non-negative ints as ASCII, most significant first."""
    out = np.empty((len(values), n), dtype=np.uint8)
    rest = values.copy()
    for k in range(n - 1, -1, -1):
        rest, digit = np.divmod(rest, 10)
        out[:, k] = digit
    return out + np.uint8(ord("0"))


def fixed_point_column(values: np.ndarray, decimals: int = 6) -> ByteColumn:
    """``values`` as ``'%.{decimals}f'`` text (the last digit may differ on exact ties).

    Non-finite or huge values (rare) are formatted by Python.
    """
    x = np.asarray(values, dtype=np.float64)
    special = ~np.isfinite(x) | (np.abs(x) >= 1e12)
    q = np.round(np.where(special, 0.0, x) * 10.0 ** decimals).astype(np.int64)
    whole, frac = np.divmod(np.abs(q), 10 ** decimals)
    n_int = len(str(int(whole.max(initial=0))))
    if n_int < 10:
        whole = whole.astype(np.int32)
    m, width = len(x), n_int + decimals + 2
    chars = np.empty((m, width), dtype=np.uint8)
    keep = np.ones((m, width), dtype=bool)
    chars[:, 0] = ord("-")
    keep[:, 0] = np.signbit(x)  # as printf: "-0.000000" for small negatives
    chars[:, 1:n_int + 1] = _digits(whole, n_int)
    keep[:, 1:n_int] = whole[:, None] >= 10 ** np.arange(n_int - 1, 0, -1)  # no leading zeros
    chars[:, n_int + 1] = ord(".")
    chars[:, n_int + 2:] = _digits(frac.astype(np.int32), decimals)
    if special.any():
        rows = np.flatnonzero(special)
        texts = [(f"%.{decimals}f" % v).encode() for v in x[rows]]
        pad = max(0, max(map(len, texts)) - width)
        chars = np.pad(chars, ((0, 0), (pad, 0)))
        keep = np.pad(keep, ((0, 0), (pad, 0)))
        for row, text in zip(rows, texts):
            chars[row, :len(text)] = np.frombuffer(text, np.uint8)
            keep[row] = np.arange(chars.shape[1]) < len(text)
    return ByteColumn(chars, keep)


def join_columns(columns: Sequence[ByteColumn], sep: str = " ", end: str = "\n") -> bytes:
    """The rows ``col_1 sep col_2 ... col_k end`` as UTF-8 bytes."""
    seps = [sep.encode()] * (len(columns) - 1) + [end.encode()]
    widths = [c.chars.shape[1] + len(s) for c, s in zip(columns, seps)]
    m = len(columns[0].chars)
    chars = np.empty((m, sum(widths)), dtype=np.uint8)
    keep = np.ones((m, sum(widths)), dtype=bool)
    start = 0
    for column, text, width in zip(columns, seps, widths):
        stop = start + column.chars.shape[1]
        chars[:, start:stop] = column.chars
        keep[:, start:stop] = column.keep
        chars[:, stop:start + width] = np.frombuffer(text, np.uint8)
        start += width
    return chars[keep].tobytes()
