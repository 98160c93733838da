"""Embeddings from a Kaldi scp (via kaldiio), each read once and checked: 1-D vectors or (S, D)
segment matrices, every entry inside its ark, one dimension, finite, no zero vector."""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import BinaryIO, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from svmix.data.datadir import text_lines
from svmix.errors import SvmixError


@dataclass
class Embeddings:
    """Utterance embeddings keyed by id.

    ``data`` is an (N, D) float32 array when every entry is a vector, else a list of (S, D) float32
    segment matrices (vectors become 1-row matrices).
    """

    ids: List[str]
    data: Union[np.ndarray, List[np.ndarray]]
    dim: int
    source: str = "the embeddings"
    _index: Optional[Dict[str, int]] = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def index(self) -> Dict[str, int]:
        if self._index is None:
            self._index = {utt: i for i, utt in enumerate(self.ids)}
        return self._index

    @property
    def segmented(self) -> bool:
        return isinstance(self.data, list)

    def mean(self) -> np.ndarray:
        """Mean embedding over utterances (a segment matrix counts as the mean of its segments)."""
        if self.segmented:
            return np.mean([m.mean(axis=0) for m in self.data], axis=0, dtype=np.float64).astype(np.float32)
        return self.data.mean(axis=0, dtype=np.float64).astype(np.float32)

    @classmethod
    def from_mapping(cls, entries: Mapping[str, np.ndarray], source: str = "the embeddings",
                     where: Optional[Mapping[str, Tuple[int, str]]] = None) -> "Embeddings":
        """Validate and stack ``{utt: array}``: checks rank, dimension, finiteness and that no vector
        (or segment) is all zeros. Errors name the utterance and, from ``where`` (utt -> (scp line,
        ark location)), the line and location it was read from."""
        def problem(utt: str, text: str) -> SvmixError:
            if where and utt in where:
                line, location = where[utt]
                return SvmixError(f"{source}:{line}: embedding of '{utt}' {text} (read from {location})")
            return SvmixError(f"{source}: embedding of '{utt}' {text}")

        ids, arrays, dim, segmented = [], [], None, False
        for utt, value in entries.items():
            array = np.asarray(value, dtype=np.float32)
            if array.ndim not in (1, 2) or array.size == 0:
                raise problem(utt, f"has shape {array.shape}; expected a vector (D,) or a segment matrix (S, D)")
            if dim is None:
                dim = array.shape[-1]
            elif array.shape[-1] != dim:
                raise problem(utt, f"has dimension {array.shape[-1]}, but earlier ones have {dim}")
            segmented = segmented or array.ndim == 2
            ids.append(utt)
            arrays.append(array)
        if not ids:
            raise SvmixError(f"{source}: no embeddings")
        data = [a.reshape(-1, dim) for a in arrays] if segmented else np.stack(arrays)
        for fault, bad in (("contains NaN or infinite values", _not_finite(data)),
                           ("is all zeros (a zero vector has no direction to score)", _has_zero_row(data))):
            if bad.any():
                rows = np.flatnonzero(bad)
                others = ", ".join(f"'{ids[i]}'" for i in rows[1:3]) + (", ..." if len(rows) > 3 else "")
                also = f"; also {others}" if others else ""
                raise problem(ids[rows[0]], f"{fault}; {len(rows)} of {len(ids)} embeddings have this problem{also}")
        return cls(ids, data, dim, source)


def _not_finite(data: Union[np.ndarray, List[np.ndarray]]) -> np.ndarray:
    """Per utterance: any NaN or infinite value."""
    if isinstance(data, list):
        return np.array([not np.isfinite(m).all() for m in data])
    return ~np.isfinite(data).all(axis=1)


def _has_zero_row(data: Union[np.ndarray, List[np.ndarray]]) -> np.ndarray:
    """Per utterance: the vector, or any of its segments, is all zeros."""
    if isinstance(data, list):
        return np.array([not m.any(axis=1).all() for m in data])
    return ~data.any(axis=1)


HEADER_PEEK = 2 + 3 + 5 + 5  # "\0B", "FM ", two (size byte, int32) dimensions


def _binary_entry_bytes(fd: BinaryIO) -> Optional[int]:
    """Bytes that the Kaldi binary header at ``fd``'s position promises for a float or double vector
    or matrix, header included; None for other kinds (text, compressed), which kaldiio checks itself.
    A header cut off by the end of the file promises more bytes than are left."""
    head = fd.read(HEADER_PEEK)
    if len(head) < 2:
        return HEADER_PEEK
    if head[:2] != b"\0B":
        return None
    kind, space, rest = head[2:].partition(b" ")
    if not space:
        return HEADER_PEEK if len(head) < HEADER_PEEK else None
    if kind not in (b"FV", b"DV", b"FM", b"DM"):
        return None
    matrix = kind.endswith(b"M")
    header = 2 + len(kind) + 1 + (10 if matrix else 5)
    if len(rest) < header - 2 - len(kind) - 1:
        return header
    if rest[0] != 4 or (matrix and rest[5] != 4):
        return None
    count = struct.unpack("<i", rest[1:5])[0]
    if matrix:
        count *= struct.unpack("<i", rest[6:10])[0]
    return header + max(count, 0) * (4 if kind.startswith(b"F") else 8)


class _ArkReader:
    """Reads scp locations ``ARK:OFFSET`` with open files kept per ark, checking each entry lies inside
    its ark (a truncated ark is an error, not a shorter vector). Other locations (pipes, slices) go to
    ``kaldiio.load_mat``."""

    def __init__(self):
        import kaldiio
        from kaldiio.matio import read_kaldi

        self.load_mat, self.read_kaldi = kaldiio.load_mat, read_kaldi
        self.files: Dict[str, Tuple[BinaryIO, int]] = {}  # ark -> (open file, size)

    def read(self, location: str) -> np.ndarray:
        ark, sep, offset_text = location.rpartition(":")
        if not sep or not offset_text.isdigit() or ark.rstrip().endswith("|"):
            return self.load_mat(location)
        if ark not in self.files:
            if not os.path.isfile(ark):
                raise SvmixError(f"ark file {ark} not found")
            fd = open(ark, "rb")
            self.files[ark] = fd, os.fstat(fd.fileno()).st_size
        (fd, size), offset = self.files[ark], int(offset_text)
        if offset >= size:
            raise SvmixError(f"offset {offset} is past the end of {ark} ({size} bytes; truncated ark?)")
        fd.seek(offset)
        needed = _binary_entry_bytes(fd)
        if needed is not None and offset + needed > size:
            raise SvmixError(f"the entry at {location} needs {needed} bytes but {ark} ends {size - offset} bytes "
                             f"after its start (truncated ark)")
        fd.seek(offset)
        return self.read_kaldi(fd)

    def close(self) -> None:
        for fd, _ in self.files.values():
            fd.close()
        self.files.clear()


def _read_scp(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, Tuple[int, str]]]:
    """``({utt: array}, {utt: (scp line, ark location)})`` of a Kaldi scp; every error is one line naming the
    scp line, the utterance and the ark location."""
    entries: Dict[str, np.ndarray] = {}
    where: Dict[str, Tuple[int, str]] = {}
    reader = _ArkReader()
    try:
        for lineno, raw in text_lines(path):
            parts = raw.split(maxsplit=1)
            if not parts:
                continue
            if len(parts) < 2:
                raise SvmixError(f"{path}:{lineno}: expected '<utterance> <ark>:<offset>', got '{parts[0]}'")
            utt, location = parts[0], parts[1].strip()
            if utt in entries:
                raise SvmixError(f"{path}:{lineno}: utterance '{utt}' appears twice (first on line {where[utt][0]})")
            try:
                entries[utt] = reader.read(location)
            except SvmixError as e:
                raise SvmixError(f"{path}:{lineno}: cannot read the embedding of '{utt}': {e}") from None
            except Exception as e:  # kaldiio raises many types for a bad ark entry
                reason = " ".join(str(e).split()) or "no details"
                raise SvmixError(f"{path}:{lineno}: cannot read the embedding of '{utt}' from {location} "
                                 f"(truncated or corrupt? {type(e).__name__}: {reason})") from None
            where[utt] = (lineno, location)
    finally:
        reader.close()
    return entries, where


def load_embeddings(scp: os.PathLike) -> Embeddings:
    """Read and check every embedding of a Kaldi scp once (see ``Embeddings.from_mapping``)."""
    entries, where = _read_scp(str(scp))
    return Embeddings.from_mapping(entries, source=str(scp), where=where)


def as_embeddings(source: Union[Embeddings, os.PathLike, Mapping[str, np.ndarray]]) -> Embeddings:
    """Accept an ``Embeddings``, an scp path or an ``{utt: array}`` mapping."""
    if isinstance(source, Embeddings):
        return source
    if isinstance(source, Mapping):
        return Embeddings.from_mapping(source)
    return load_embeddings(source)


def load_mean(path: os.PathLike) -> np.ndarray:
    """A mean embedding from a ``.npy`` file or a Kaldi scp/ark holding exactly one vector: a
    non-empty finite float vector, else a one-line error naming the file."""
    path = str(path)
    if not os.path.isfile(path):
        raise SvmixError(f"{path}: file not found")
    if path.endswith(".npy"):
        try:
            mean = np.load(path, allow_pickle=False)
        except Exception as e:  # numpy raises several types for a file that is not an array
            raise SvmixError(f"{path}: cannot read the mean embedding (not a .npy array? "
                             f"{' '.join(str(e).split())[:200]})") from None
    else:
        entries = _read_scp(path)[0] if not path.endswith(".ark") else _read_ark(path)
        if len(entries) != 1:
            raise SvmixError(f"{path}: a mean file must hold exactly one vector, found {len(entries)} entries")
        mean = next(iter(entries.values()))
    if not isinstance(mean, np.ndarray) or mean.dtype.kind not in "biuf":
        raise SvmixError(f"{path}: the mean embedding must be a numeric array, got "
                         f"{getattr(mean, 'dtype', type(mean).__name__)}")
    mean = np.asarray(mean, dtype=np.float32)
    if mean.ndim != 1 or mean.size == 0:
        raise SvmixError(f"{path}: the mean must be a non-empty vector, got shape {mean.shape}")
    if not np.isfinite(mean).all():
        raise SvmixError(f"{path}: the mean embedding contains NaN or infinite values")
    return mean


def _read_ark(path: str) -> Dict[str, np.ndarray]:
    import kaldiio

    try:
        return dict(kaldiio.load_ark(path))
    except Exception as e:
        raise SvmixError(f"{path}: cannot read ark ({type(e).__name__}: {' '.join(str(e).split())})") from None
