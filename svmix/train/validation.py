"""Validation EER during training: the evaluation's segment scoring (mean cosine over segment pairs) on a
held-out data dir's labelled ``trials``, with ``num_segments`` segments per utterance (a one-pass
model, ``SpeakerModel.one_pass``, embeds each utterance whole, as extraction does)."""
from __future__ import annotations

import os
from typing import Dict, Optional

import numpy as np
import torch

from svmix.data.audio import load_audio
from svmix.data.datadir import DataDir
from svmix.errors import SvmixError
from svmix.inference.embedder import embed_stream
from svmix.inference.segments import evaluation_inputs, segment_pair_score
from svmix.metrics import compute_eer


class _ModelEmbedder:
    """A training model seen as a segment embedder: (B, S) numpy segments → (B, D) numpy."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.model, self.device = model, device
        self.one_pass = bool(getattr(model, "one_pass", False))

    def __call__(self, segments: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model(torch.from_numpy(segments).to(self.device)).float().cpu().numpy()


class Validator:
    def __init__(self, data_dir: os.PathLike, num_segments: int, batch_size: int = 32, preload: bool = False):
        data = DataDir(data_dir)
        trials = data.trials
        if not trials:
            raise SvmixError(f"{data_dir}: validation data needs a trials file")
        if any(t.label is None for t in trials):
            raise SvmixError(f"{data.file('trials')}: validation trials must be labelled")
        wav_scp = data.wav_scp
        self.utts = sorted({t.enroll for t in trials} | {t.test for t in trials})
        for utt in self.utts:
            if utt not in wav_scp:
                raise SvmixError(f"{data.file('trials')}: utterance '{utt}' is not in {data.file('wav.scp')}")
        self.paths = {u: wav_scp[u] for u in self.utts}
        self.trials = trials
        self.labels = np.array([t.label for t in trials])
        self.num_segments, self.batch_size = num_segments, batch_size
        self.audio: Optional[Dict[str, np.ndarray]] = None
        if preload:
            self.audio = {u: self._load(u) for u in self.utts}

    def _load(self, utt: str) -> np.ndarray:
        if self.audio is not None:
            return self.audio[utt]
        return load_audio(self.paths[utt], utt)

    def embeddings(self, model: torch.nn.Module, device: torch.device) -> Dict[str, np.ndarray]:
        """(num_segments, D) embeddings per utterance; ``model`` must be in eval mode."""
        seg, one_pass = int(model.segment_samples), bool(getattr(model, "one_pass", False))
        items = ((u, *evaluation_inputs(self._load(u), seg, self.num_segments, one_pass)) for u in self.utts)
        return dict(embed_stream(_ModelEmbedder(model, device), items, self.batch_size))

    def __call__(self, model: torch.nn.Module, device: torch.device) -> float:
        """Validation EER in percent."""
        was_training = model.training
        model.eval()
        try:
            emb = self.embeddings(model, device)
        finally:
            model.train(was_training)
        scores = np.array([segment_pair_score(emb[t.enroll], emb[t.test]) for t in self.trials])
        return float(compute_eer(scores, self.labels))
