"""Frame codecs of the teacher cache: how one hidden vector becomes a fixed number of bytes.

A codec turns (n, hidden) float32 vectors into (n, row_bytes) uint8 rows and back, so a shard
stays a memory-mappable array of fixed-size rows whatever the codec:

- ``float32``: the vector as it is (4·hidden bytes).
- ``float16``: the vector as IEEE half floats (2·hidden bytes).
- ``int8`` with ``scale="frame"``: symmetric per-vector quantisation, a float32 scale
  (max |x| / 127) and hidden int8 values: hidden + 4 bytes, about 2× smaller than float16; each
  value is within scale / 2.
- ``int8`` with ``scale="channel"``: one scale per dimension (max |x_c| / 127 over the sample
  frames, a trained codec): hidden bytes. Values beyond the sample's range are clipped.
- ``pq``: product quantisation in the spirit of multi-codebook distillation targets: the
  standardised vector is cut into ``subspaces`` equal parts, each replaced by the id of the nearest
  of 256 centroids (one byte). Codebooks are k-means (scikit-learn) on a sample of frames and are
  stored beside the shards; ``subspaces`` bytes per vector (e.g. 32 bytes for hidden 1024: 64×
  smaller than float16).

``distortion(x, decoded)`` gives the relative MSE and the mean cosine, for reports.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from svmix.errors import SvmixError
from svmix.registry import Registry

CODECS = Registry("cache codec")


class FrameCodec:
    """Base: ``row_bytes`` per vector; ``encode``/``decode`` (n, hidden) ⇄ (n, row_bytes)."""

    name = ""
    trained = False  # True when ``fit`` must run on sample frames before encoding

    def __init__(self, hidden: int):
        if hidden < 1:
            raise SvmixError(f"{self.name} codec: hidden size must be positive, got {hidden}")
        self.hidden = int(hidden)

    row_bytes: int

    def fit(self, sample: np.ndarray, seed: int = 0) -> None:
        """Train on (n, hidden) sample vectors (a no-op for untrained codecs)."""

    def state(self) -> Dict[str, np.ndarray]:
        """Arrays to store beside the shards (empty for untrained codecs)."""
        return {}

    def load_state(self, arrays: Dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state` returned."""

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.hidden:
            raise SvmixError(f"{self.name} codec: expected (n, {self.hidden}) vectors, got shape {x.shape}")
        return x

    def _check_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != self.row_bytes:
            raise SvmixError(f"{self.name} codec: expected (n, {self.row_bytes}) uint8 rows, "
                             f"got {rows.dtype} {rows.shape}")
        return rows


@CODECS.register("float32")
class Float32Codec(FrameCodec):
    name = "float32"

    @property
    def row_bytes(self) -> int:
        return 4 * self.hidden

    def encode(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self._check(x)).view(np.uint8)

    def decode(self, rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self._check_rows(rows)).view(np.float32).copy()


@CODECS.register("float16")
class Float16Codec(FrameCodec):
    name = "float16"

    @property
    def row_bytes(self) -> int:
        return 2 * self.hidden

    def encode(self, x: np.ndarray) -> np.ndarray:
        half = np.ascontiguousarray(self._check(x).astype(np.float16))
        if not np.isfinite(half).all():
            raise SvmixError("teacher features overflow float16 (non-finite values); use --dtype float32")
        return half.view(np.uint8)

    def decode(self, rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self._check_rows(rows)).view(np.float16).astype(np.float32)


@CODECS.register("int8")
class Int8Codec(FrameCodec):
    name = "int8"
    SCALES = ("frame", "channel")

    def __init__(self, hidden: int, scale: str = "frame"):
        super().__init__(hidden)
        if scale not in self.SCALES:
            raise SvmixError(f"int8 codec: scale must be one of {', '.join(self.SCALES)}, got {scale!r}")
        self.scale = scale
        self.trained = scale == "channel"
        self.channel_scale: Optional[np.ndarray] = None  # (hidden,), for scale="channel"

    @property
    def row_bytes(self) -> int:
        return self.hidden + (4 if self.scale == "frame" else 0)

    def fit(self, sample: np.ndarray, seed: int = 0) -> None:
        if self.scale == "channel":
            self.channel_scale = (np.abs(self._check(sample)).max(axis=0) / 127.0).astype(np.float32)

    def state(self) -> Dict[str, np.ndarray]:
        if self.scale == "frame":
            return {}
        self._require_trained()
        return {"channel_scale": self.channel_scale}

    def load_state(self, arrays: Dict[str, Any]) -> None:
        if self.scale == "channel":
            scale = np.asarray(arrays["channel_scale"], dtype=np.float32)
            if scale.shape != (self.hidden,):
                raise SvmixError(f"int8 codec: channel scales of shape {scale.shape} do not fit {self.hidden} values")
            self.channel_scale = scale

    def _require_trained(self) -> None:
        if self.channel_scale is None:
            raise SvmixError("int8 codec: per-channel scales not trained (fit it on sample frames, or load them)")

    def encode(self, x: np.ndarray) -> np.ndarray:
        x = self._check(x)
        if self.scale == "channel":
            self._require_trained()
            scale = self.channel_scale[None]
        else:
            scale = (np.abs(x).max(axis=1, keepdims=True) / 127.0).astype(np.float32)
        q = np.rint(x / np.where(scale > 0, scale, 1.0)).clip(-127, 127).astype(np.int8)
        if self.scale == "channel":
            return q.view(np.uint8)
        return np.concatenate([scale.view(np.uint8), q.view(np.uint8)], axis=1)

    def decode(self, rows: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(self._check_rows(rows))
        if self.scale == "channel":
            self._require_trained()
            return rows.view(np.int8).astype(np.float32) * self.channel_scale
        scale = rows[:, :4].copy().view(np.float32)
        return rows[:, 4:].view(np.int8).astype(np.float32) * scale


@CODECS.register("pq")
class ProductQuantizer(FrameCodec):
    name = "pq"
    trained = True
    CENTROIDS = 256

    def __init__(self, hidden: int, subspaces: int = 32):
        super().__init__(hidden)
        if subspaces < 1 or hidden % subspaces:
            raise SvmixError(f"pq codec: hidden size {hidden} is not divisible into {subspaces} subspaces")
        self.subspaces = int(subspaces)
        self.sub_dim = hidden // subspaces
        self.codebooks: Optional[np.ndarray] = None  # (subspaces, 256, sub_dim)
        self.mean: Optional[np.ndarray] = None
        self.std: Optional[np.ndarray] = None

    @property
    def row_bytes(self) -> int:
        return self.subspaces

    def fit(self, sample: np.ndarray, seed: int = 0) -> None:
        from sklearn.cluster import MiniBatchKMeans
        from threadpoolctl import threadpool_limits

        x = self._check(sample)
        if len(x) < self.CENTROIDS:
            raise SvmixError(f"pq codec: training needs at least {self.CENTROIDS} sample vectors, got {len(x)}")
        self.mean, self.std = x.mean(axis=0), x.std(axis=0) + 1e-6
        z = ((x - self.mean) / self.std).reshape(len(x), self.subspaces, self.sub_dim)
        books = []
        with threadpool_limits(1):  # one thread: the same codebooks on every machine, and no spin-waits
            for m in range(self.subspaces):
                km = MiniBatchKMeans(n_clusters=self.CENTROIDS, random_state=(seed + m) % 2 ** 32, n_init=1, batch_size=4096,
                                     max_iter=50)
                books.append(km.fit(z[:, m]).cluster_centers_.astype(np.float32))
        self.codebooks = np.stack(books)

    def state(self) -> Dict[str, np.ndarray]:
        self._require_trained()
        return {"codebooks": self.codebooks, "mean": self.mean, "std": self.std}

    def load_state(self, arrays: Dict[str, Any]) -> None:
        books = np.asarray(arrays["codebooks"], dtype=np.float32)
        if books.shape != (self.subspaces, self.CENTROIDS, self.sub_dim):
            raise SvmixError(f"pq codec: codebooks of shape {books.shape} do not fit {self.subspaces} subspaces "
                             f"of {self.sub_dim} values")
        self.codebooks = books
        self.mean = np.asarray(arrays["mean"], dtype=np.float32)
        self.std = np.asarray(arrays["std"], dtype=np.float32)

    def _require_trained(self) -> None:
        if self.codebooks is None:
            raise SvmixError("pq codec: not trained (fit it on sample frames, or load its codebooks)")

    def encode(self, x: np.ndarray, chunk: int = 4096) -> np.ndarray:
        self._require_trained()
        x = self._check(x)
        codes = np.empty((len(x), self.subspaces), dtype=np.uint8)
        books_sq = (self.codebooks ** 2).sum(axis=-1)  # (M, 256)
        for start in range(0, len(x), chunk):
            z = ((x[start:start + chunk] - self.mean) / self.std).reshape(-1, self.subspaces, self.sub_dim)
            # argmin_c ||z − c||² = argmin_c (||c||² − 2 z·c), per subspace
            dots = np.einsum("nmd,mcd->nmc", z, self.codebooks)
            codes[start:start + chunk] = np.argmin(books_sq[None] - 2.0 * dots, axis=-1)
        return codes

    def decode(self, rows: np.ndarray) -> np.ndarray:
        self._require_trained()
        rows = self._check_rows(rows)
        z = self.codebooks[np.arange(self.subspaces)[None, :], rows]  # (n, M, sub_dim)
        return z.reshape(len(rows), self.hidden) * self.std + self.mean


def build_codec(name: str, hidden: int, **options: Any) -> FrameCodec:
    """The codec registered as ``name`` for vectors of ``hidden`` values."""
    return CODECS.get(name)(hidden, **options)


def distortion(x: np.ndarray, decoded: np.ndarray) -> Dict[str, float]:
    """Relative MSE (‖x − x̂‖² / ‖x‖² over all vectors) and the mean cosine of x̂ to x."""
    x, decoded = np.asarray(x, dtype=np.float64), np.asarray(decoded, dtype=np.float64)
    rel_mse = float(((x - decoded) ** 2).sum() / max((x ** 2).sum(), 1e-30))
    cos = (x * decoded).sum(axis=1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(decoded, axis=1), 1e-30)
    return {"relative_mse": rel_mse, "mean_cosine": float(cos.mean())}


class LayerCodecs:
    """One codec per cached layer (trained codecs learn each layer's statistics separately).

    ``encode`` turns (frames, layers, hidden) float32 into (frames, layers, row_bytes) uint8 rows, the
    rows of a shard; ``decode`` turns shard rows (n, layers, row_bytes) into float32 (layers, n, hidden).
    """

    MIN_FIT_FRAMES = ProductQuantizer.CENTROIDS

    def __init__(self, name: str, hidden: int, num_layers: int, options: Optional[Dict[str, Any]] = None):
        self.name, self.options = name, dict(options or {})
        self.codecs = [build_codec(name, hidden, **self.options) for _ in range(num_layers)]
        self.hidden = int(hidden)

    @property
    def trained(self) -> bool:
        return self.codecs[0].trained

    @property
    def row_bytes(self) -> int:
        """Bytes of one layer's vector."""
        return self.codecs[0].row_bytes

    def fit(self, sample: np.ndarray, seed: int) -> None:
        """Train on (n, layers, hidden) sample frames; layer ``i`` with seed ``seed + 1000 i``."""
        for i, codec in enumerate(self.codecs):
            codec.fit(sample[:, i], seed=(seed + 1000 * i) % 2 ** 32)

    def encode(self, frames: np.ndarray) -> np.ndarray:
        out = np.empty((len(frames), len(self.codecs), self.row_bytes), dtype=np.uint8)
        for i, codec in enumerate(self.codecs):
            out[:, i] = codec.encode(frames[:, i])
        return out

    def decode(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(self.codecs), len(rows), self.hidden), dtype=np.float32)
        for i, codec in enumerate(self.codecs):
            out[i] = codec.decode(rows[:, i])
        return out

    # ---------------------------------------------------------- state file
    def state_arrays(self) -> Dict[str, np.ndarray]:
        """Every layer's state as ``"<layer position>.<name>"`` -> array."""
        return {f"{i}.{k}": np.ascontiguousarray(v) for i, c in enumerate(self.codecs) for k, v in c.state().items()}

    def write_state(self, f: Any) -> List[str]:
        """Write the state arrays to the binary file ``f`` as consecutive ``.npy`` records (byte-identical
        for equal states, unlike a zip archive); returns their names in file order."""
        arrays = self.state_arrays()
        for key in arrays:
            np.lib.format.write_array(f, arrays[key], allow_pickle=False)
        return list(arrays)

    def read_state(self, path: Any, names: List[str]) -> None:
        """Load what :meth:`write_state` wrote to ``path`` (``names``: its returned list)."""
        arrays: Dict[int, Dict[str, np.ndarray]] = {}
        try:
            with open(path, "rb") as f:
                for key in names:
                    layer, _, name = key.partition(".")
                    arrays.setdefault(int(layer), {})[name] = np.lib.format.read_array(f, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise SvmixError(f"{path}: unreadable {self.name} codec state ({e}); rebuild the cache") from None
        for i, codec in enumerate(self.codecs):
            if i not in arrays:
                raise SvmixError(f"{path}: no {self.name} codec state for layer position {i}; rebuild the cache")
            codec.load_state(arrays[i])
