"""On-disk layout of the teacher feature cache (stage 2), shared by the writer and the reader.

    CACHE_DIR/plan.json              what is being built (teacher, layers, dtype, shard -> utterances)
    CACHE_DIR/shards/shard-NNNNN.bin frames of the shard's utterances back to back, each (frames, layers, hidden)
    CACHE_DIR/shards/shard-NNNNN.json done-marker: per-utterance row offsets, byte size, crc32, sha256
    CACHE_DIR/shards/codec.bin       trained codecs only (pq, int8 per-channel): each layer's codec state
    CACHE_DIR/shards/codec.json      what codec.bin holds (codec spec, array names, size, sha256)
    CACHE_DIR/manifest.json          written last: everything a reader needs, plus per-shard checksums
                                     (crc32, checked on every rerun; sha256, checked by --verify)

Rows are frames: teacher frame j of an utterance covers samples [320 j, 320 j + 400), like the
student frontend, so a waveform crop starting at sample 320 k maps to rows k, k+1, ... A shard's
``.bin`` is a C-ordered uint8 array of shape (rows, layers, row_bytes), readable with ``np.memmap``:
each layer's vector encoded by the cache's codec (:mod:`svmix.cache.codecs`; ``dtype`` names it).
For float16 and float32 this is the plain (rows, layers, hidden) array of that dtype, the layout of
caches written before the other codecs existed, which therefore still load.
"""
from __future__ import annotations

FORMAT = "svmix-teacher-cache"
VERSION = 1
CODEC_STATE = "codec.bin"
CODEC_INFO = "codec.json"
MANIFEST = "manifest.json"
PLAN = "plan.json"
SHARD_DIR = "shards"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"

