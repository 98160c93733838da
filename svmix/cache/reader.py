"""Fast reads of cached teacher frames for training (memory-mapped shards, opened lazily)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from svmix.cache.codecs import CODECS, LayerCodecs
from svmix.cache.format import FORMAT, MANIFEST, VERSION
from svmix.errors import SvmixError
from svmix.utils.fileio import read_json, sha256_file

REQUIRED_KEYS = ("format", "version", "teacher", "layers", "dtype", "hidden_size", "frame_shift", "utts", "shards")


def codec_spec_of(manifest: Dict[str, Any]) -> Dict[str, Any]:
    """The codec entry of a plan or manifest; one written before codecs existed has only ``dtype``."""
    return manifest.get("codec") or {"name": manifest["dtype"], "options": {}}


def open_codecs(cache_dir: Path, spec: Dict[str, Any], hidden: int, num_layers: int,
                state: Optional[Dict[str, Any]] = None) -> LayerCodecs:
    """The per-layer codecs of a cache; a trained codec's state is read from the file ``state``
    describes (``{"file", "arrays", "sha256"}``), after checking its sha256."""
    try:
        codecs = LayerCodecs(spec["name"], hidden, num_layers, spec.get("options"))
    except (TypeError, SvmixError) as e:
        raise SvmixError(f"{cache_dir}: codec {spec.get('name')!r} with options {spec.get('options')}: {e}") from None
    if codecs.trained:
        if not state:
            raise SvmixError(f"{cache_dir}: the {spec['name']} codec's trained state is not recorded; rebuild the cache")
        file = cache_dir / state["file"]
        if not file.is_file() or sha256_file(file) != state["sha256"]:
            raise SvmixError(f"{cache_dir}: codec state {state['file']} is missing or corrupt (checksum differs); "
                             "rerun svmix-cache-teacher to rebuild it")
        codecs.read_state(file, state["arrays"])
    return codecs


class TeacherCache:
    """A finished teacher feature cache; ``frames()`` returns float32 (num_layers, n, hidden),
    decoded from whatever codec the cache was written with (see :mod:`svmix.cache.codecs`).

    Shards are memory-mapped on first use and kept open; after a fork (DataLoader workers) or
    unpickling, each process maps them again, so one instance can be shared by workers.
    """

    def __init__(self, cache_dir: Union[str, os.PathLike]):
        self.cache_dir = Path(cache_dir)
        path = self.cache_dir / MANIFEST
        if not path.is_file():
            raise SvmixError(f"{self.cache_dir}: no {MANIFEST}; the teacher cache is missing or unfinished "
                             "(run svmix-cache-teacher)")
        manifest = read_json(path)
        missing = [k for k in REQUIRED_KEYS if not isinstance(manifest, dict) or k not in manifest]
        if missing:
            raise SvmixError(f"{path}: not a teacher cache manifest (missing {', '.join(missing)})")
        if manifest["format"] != FORMAT or manifest["version"] != VERSION:
            raise SvmixError(f"{path}: unsupported cache format {manifest['format']} v{manifest['version']} "
                             f"(expected {FORMAT} v{VERSION})")
        spec = codec_spec_of(manifest)
        if spec.get("name") not in CODECS.names():
            raise SvmixError(f"{path}: unsupported dtype {spec.get('name')} (known: {', '.join(CODECS.names())})")
        self.manifest: Dict[str, Any] = manifest
        self.layers: List[int] = list(manifest["layers"])
        self.hidden_size: int = int(manifest["hidden_size"])
        self.frame_shift: int = int(manifest["frame_shift"])
        self.dtype: str = spec["name"]
        self.codecs = open_codecs(self.cache_dir, spec, self.hidden_size, len(self.layers), spec.get("state"))
        self._row_bytes = len(self.layers) * self.codecs.row_bytes
        self._shards: List[Tuple[Path, int]] = []
        for shard in manifest["shards"]:
            file = self.cache_dir / shard["file"]
            size = file.stat().st_size if file.is_file() else -1
            if size != shard["bytes"] or size % self._row_bytes:
                problem = "missing" if size < 0 else f"{size} bytes, expected {shard['bytes']}"
                raise SvmixError(f"{self.cache_dir}: shard {shard['file']} is {problem}; "
                                 "rebuild the cache (svmix-cache-teacher --verify names bad shards)")
            self._shards.append((file, size // self._row_bytes))
        self._index: Dict[str, Tuple[int, int, int]] = {
            utt: (int(e["shard"]), int(e["offset"]), int(e["frames"])) for utt, e in manifest["utts"].items()}
        self.utt_ids: List[str] = list(self._index)
        self._maps: Dict[int, np.memmap] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state

    def __len__(self) -> int:
        return len(self.utt_ids)

    def __contains__(self, utt: str) -> bool:
        return utt in self._index

    def _entry(self, utt: str) -> Tuple[int, int, int]:
        try:
            return self._index[utt]
        except KeyError:
            raise SvmixError(f"{self.cache_dir}: utterance '{utt}' is not in the teacher cache") from None

    def _map(self, shard: int) -> np.memmap:
        if os.getpid() != self._pid:  # forked: do not share another process's mappings
            self._maps, self._pid = {}, os.getpid()
        mapped = self._maps.get(shard)
        if mapped is None:
            file, rows = self._shards[shard]
            mapped = np.memmap(file, dtype=np.uint8, mode="r", shape=(rows, len(self.layers), self.codecs.row_bytes))
            self._maps[shard] = mapped
        return mapped

    def num_frames(self, utt: str) -> int:
        return self._entry(utt)[2]

    def frames(self, utt: str, start_frame: int = 0, num_frames: Optional[int] = None) -> np.ndarray:
        """Frames [start_frame, start_frame + num_frames) of every cached layer: float32 (layers, n, hidden)."""
        shard, offset, total = self._entry(utt)
        if num_frames is None:
            num_frames = total - start_frame
        if start_frame < 0 or num_frames < 0 or start_frame + num_frames > total:
            raise SvmixError(f"{self.cache_dir}: frames [{start_frame}, {start_frame + num_frames}) out of range "
                             f"for utterance '{utt}' ({total} frames)")
        rows = self._map(shard)[offset + start_frame: offset + start_frame + num_frames]
        return self.codecs.decode(rows)

    @property
    def bytes_per_frame(self) -> int:
        """Stored bytes of one frame (all cached layers), without the codec state."""
        return self._row_bytes

    def check_compatible(self, teacher_spec: Any = None, layers: Optional[Sequence[int]] = None) -> None:
        """Raise ``SvmixError`` unless the cache holds ``layers`` (same list) of the teacher ``teacher_spec``.

        ``teacher_spec`` is a spec (bundle name / path) or a loaded teacher; teachers are compared by
        the fingerprint of their weights, so the same teacher under another path is compatible.
        """
        if teacher_spec is not None:
            fingerprint = getattr(teacher_spec, "fingerprint", None)
            if fingerprint is None:
                from svmix.teachers import teacher_fingerprint

                fingerprint = teacher_fingerprint(teacher_spec)
            cached = self.manifest["teacher"]
            if fingerprint != cached["fingerprint"]:
                spec = getattr(teacher_spec, "spec", teacher_spec)
                raise SvmixError(f"{self.cache_dir}: teacher cache was built with teacher '{cached['spec']}' "
                                 f"({cached['fingerprint'][:20]}), not '{spec}' ({fingerprint[:20]}); "
                                 "rebuild it with svmix-cache-teacher")
        if layers is not None and [int(x) for x in layers] != self.layers:
            raise SvmixError(f"{self.cache_dir}: teacher cache holds layers {self.layers}, "
                             f"but {list(layers)} were requested; rebuild it with --layers "
                             f"{','.join(str(x) for x in layers)}")
