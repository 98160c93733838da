"""On-disk layout of the teacher feature cache (stage 2), shared by the writer and the reader.

    CACHE_DIR/plan.json              what is being built (teacher, layers, dtype, shard -> utterances)
    CACHE_DIR/shards/shard-NNNNN.bin frames of the shard's utterances back to back, each (frames, layers, hidden)
    CACHE_DIR/shards/shard-NNNNN.json done-marker: per-utterance row offsets, byte size, crc32, sha256
    CACHE_DIR/manifest.json          written last: everything a reader needs, plus per-shard checksums
                                     (crc32, checked on every rerun; sha256, checked by --verify)

Rows are frames: teacher frame j of an utterance covers samples [320 j, 320 j + 400), like the
student frontend, so a waveform crop starting at sample 320 k maps to rows k, k+1, ... A shard's
``.bin`` is a C-ordered array of shape (rows, layers, hidden), readable with ``np.memmap``.
"""
from __future__ import annotations

FORMAT = "svmix-teacher-cache"
VERSION = 1
DTYPES = ("float16", "float32")
MANIFEST = "manifest.json"
PLAN = "plan.json"
SHARD_DIR = "shards"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"

