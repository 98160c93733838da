"""The trivial floor of docs/method.md §Baselines: cosine scoring of mean MFCC vectors.

Each utterance becomes the mean over its frames of 20 Kaldi-style MFCCs (torchaudio's
``compliance.kaldi.mfcc``: 25 ms frames every 10 ms at 16 kHz, 40 mel bins, no dither), with c0
(the log-energy-like coefficient, which only says how loud a recording is) dropped unless asked
for. No training, no model: any system that does not beat this has learnt nothing about speakers.
The embeddings are written as svmix-extract writes them (one 1-D vector per utterance), so
``svmix-score --embeddings OUT/xvector.scp`` scores them like any system's.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from svmix.data.audio import SAMPLE_RATE, load_audio
from svmix.data.datadir import DataDir
from svmix.inference.extract import ARK, SCP, write_xvectors
from svmix.utils.fileio import write_json
from svmix.utils.locking import output_lock
from svmix.utils.logging import get_logger

NUM_CEPS = 20
NUM_MEL_BINS = 40
FRAME_LENGTH_MS, FRAME_SHIFT_MS = 25.0, 10.0
FLOOR_JSON = "floor.json"

_log = get_logger("floor")


def mean_mfcc(wav: np.ndarray, keep_c0: bool = False) -> np.ndarray:
    """(NUM_CEPS,) or, without c0, (NUM_CEPS - 1,) float32 mean MFCC of a 1-D 16 kHz waveform."""
    from torchaudio.compliance.kaldi import mfcc

    with torch.no_grad():
        frames = mfcc(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))[None], num_ceps=NUM_CEPS,
                      num_mel_bins=NUM_MEL_BINS, frame_length=FRAME_LENGTH_MS, frame_shift=FRAME_SHIFT_MS,
                      sample_frequency=float(SAMPLE_RATE), dither=0.0)
    frames = frames if keep_c0 else frames[:, 1:]
    return frames.double().mean(dim=0).float().numpy()


def _embed(item: Tuple[str, str, bool]) -> Tuple[str, np.ndarray, float]:
    utt, path, keep_c0 = item
    torch.set_num_threads(1)
    wav = load_audio(path, utt)  # AudioError (an SvmixError) names the utterance and file
    return utt, mean_mfcc(wav, keep_c0), len(wav) / SAMPLE_RATE


def floor_embeddings(data_dir: os.PathLike, out_dir: os.PathLike, nj: int = 1, keep_c0: bool = False) -> Dict[str, Any]:
    """Mean-MFCC embeddings of every utterance of ``data_dir`` into ``out_dir`` (xvector.ark/.scp and
    floor.json, which says what was computed); returns floor.json's content."""
    start = time.time()
    utts = DataDir(data_dir).wav_scp
    out = Path(out_dir)
    items = [(utt, path, keep_c0) for utt, path in utts.items()]
    with output_lock(out, "svmix-floor"):
        out.mkdir(parents=True, exist_ok=True)
        (out / FLOOR_JSON).unlink(missing_ok=True)  # the directory is complete when floor.json exists
        seconds: List[float] = []

        def embeddings():
            if nj == 1:
                results = map(_embed, items)
            else:
                pool = ProcessPoolExecutor(max_workers=nj)
                results = pool.map(_embed, items, chunksize=max(1, len(items) // (4 * nj)))
            try:
                for utt, embedding, duration in results:
                    seconds.append(duration)
                    yield utt, embedding
            finally:
                if nj > 1:
                    pool.shutdown(cancel_futures=True)

        count = write_xvectors(out, embeddings())
        summary = {
            "method": "cosine of mean MFCCs (trivial floor)",
            "features": "torchaudio.compliance.kaldi.mfcc", "num_ceps": NUM_CEPS, "num_mel_bins": NUM_MEL_BINS,
            "frame_length_ms": FRAME_LENGTH_MS, "frame_shift_ms": FRAME_SHIFT_MS, "sample_rate": SAMPLE_RATE,
            "dither": 0.0, "keep_c0": keep_c0, "embed_dim": NUM_CEPS if keep_c0 else NUM_CEPS - 1,
            "pooling": "mean over all frames of the utterance", "data": str(data_dir), "num_utts": count,
            "audio_seconds": round(sum(seconds), 3), "wall_seconds": round(time.time() - start, 3),
            "embeddings": str((out / SCP).resolve()), "ark": str((out / ARK).resolve()),
        }
        write_json(out / FLOOR_JSON, summary)
    _log.info("wrote %d mean-MFCC embeddings to %s", count, out / SCP)
    return summary
