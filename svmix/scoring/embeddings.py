"""Embeddings from a Kaldi scp (via kaldiio), each read once: 1-D vectors or (S, D) segment matrices."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Union

import numpy as np

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
    def from_mapping(cls, entries: Mapping[str, np.ndarray], source: str = "the embeddings") -> "Embeddings":
        """Validate and stack ``{utt: array}`` (checks rank and dimension, naming the utterance)."""
        ids, arrays, dim, segmented = [], [], None, False
        for utt, value in entries.items():
            array = np.asarray(value, dtype=np.float32)
            if array.ndim not in (1, 2) or array.size == 0:
                raise SvmixError(f"{source}: embedding of '{utt}' has shape {array.shape}; "
                                 f"expected a vector (D,) or a segment matrix (S, D)")
            if dim is None:
                dim = array.shape[-1]
            elif array.shape[-1] != dim:
                raise SvmixError(f"{source}: embedding of '{utt}' has dimension {array.shape[-1]}, "
                                 f"but earlier ones have {dim}")
            segmented = segmented or array.ndim == 2
            ids.append(utt)
            arrays.append(array)
        if not ids:
            raise SvmixError(f"{source}: no embeddings")
        data = [a.reshape(-1, dim) for a in arrays] if segmented else np.stack(arrays)
        return cls(ids, data, dim, source)


def _read_scp(path: str) -> Dict[str, np.ndarray]:
    import kaldiio

    if not os.path.isfile(path):
        raise SvmixError(f"{path}: file not found")
    entries: Dict[str, np.ndarray] = {}
    try:
        for utt, array in kaldiio.load_scp_sequential(path):
            if utt in entries:
                raise SvmixError(f"{path}: utterance '{utt}' appears twice")
            entries[utt] = array
    except SvmixError:
        raise
    except Exception as e:  # kaldiio raises many types for a bad scp or ark
        where = _scp_entry(path, len(entries))
        raise SvmixError(f"{path}: cannot read the embedding {where} (truncated or corrupt? "
                         f"{type(e).__name__}: {e})") from None
    return entries


def _scp_entry(path: str, index: int) -> str:
    """Name the ``index``-th (0-based) entry of an scp, the one ``load_scp_sequential`` failed on."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split(maxsplit=1)
            if parts and index == 0:
                return f"of '{parts[0]}' (line {lineno}: {parts[1].strip() if len(parts) > 1 else 'no location'})"
            index -= bool(parts)
    return "after the last entry"


def load_embeddings(scp: os.PathLike) -> Embeddings:
    """Read every embedding of a Kaldi scp once (``kaldiio.load_scp_sequential``)."""
    return Embeddings.from_mapping(_read_scp(str(scp)), source=str(scp))


def as_embeddings(source: Union[Embeddings, os.PathLike, Mapping[str, np.ndarray]]) -> Embeddings:
    """Accept an ``Embeddings``, an scp path or an ``{utt: array}`` mapping."""
    if isinstance(source, Embeddings):
        return source
    if isinstance(source, Mapping):
        return Embeddings.from_mapping(source)
    return load_embeddings(source)


def load_mean(path: os.PathLike) -> np.ndarray:
    """A mean embedding from a ``.npy`` file or a Kaldi scp/ark holding exactly one vector."""
    path = str(path)
    if path.endswith(".npy"):
        if not os.path.isfile(path):
            raise SvmixError(f"{path}: file not found")
        mean = np.load(path)
    else:
        entries = _read_scp(path) if not path.endswith(".ark") else _read_ark(path)
        if len(entries) != 1:
            raise SvmixError(f"{path}: a mean file must hold exactly one vector, found {len(entries)} entries")
        mean = next(iter(entries.values()))
    mean = np.asarray(mean, dtype=np.float32)
    if mean.ndim != 1:
        raise SvmixError(f"{path}: the mean must be a vector, got shape {mean.shape}")
    return mean


def _read_ark(path: str) -> Dict[str, np.ndarray]:
    import kaldiio

    if not os.path.isfile(path):
        raise SvmixError(f"{path}: file not found")
    try:
        return dict(kaldiio.load_ark(path))
    except Exception as e:
        raise SvmixError(f"{path}: cannot read ark ({type(e).__name__}: {e})") from None
