"""Python API: load a trained student, embed audio, score pairs (the CLIs use the same code).

    import svmix
    model = svmix.load_model("exp/svmixer_mini")          # experiment dir or checkpoint file
    emb = model.embed("enroll.wav")                       # 1-D, L2-normalised, model.embed_dim values
    segs = model.embed(waveform_16k, segments=True)       # (10, D) segment embeddings (docs/method.md §Evaluation)
    score = model.score("enroll.wav", "test.wav")         # mean cosine over all segment pairs
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from svmix.data.audio import SAMPLE_RATE, check_waveform, load_audio
from svmix.inference.embedder import embed_utterances, load_embedder, num_segments
from svmix.inference.segments import mean_embedding, segment_pair_score

Audio = Union[str, os.PathLike, np.ndarray, torch.Tensor]


class SpeakerEmbeddingModel:
    """A trained student behind a segment embedder (PyTorch fast path, or ONNX)."""

    def __init__(self, embedder: Any, batch_size: int = 32):
        self.embedder = embedder
        self.batch_size = batch_size

    @property
    def config(self) -> Dict[str, Any]:
        return self.embedder.config

    @property
    def embed_dim(self) -> int:
        return int(self.embedder.embed_dim)

    @property
    def num_segments(self) -> int:
        return num_segments(self.embedder)

    def waveform(self, audio: Audio, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """``audio`` as a 1-D float32 16 kHz array: a file path, or a 1-D / (channels, N) waveform.

        Arrays pass the same checks as files in the CLIs (:func:`svmix.data.audio.check_waveform`):
        a bad one raises ``SvmixError`` with the message ``svmix-extract`` gives for such a file."""
        if isinstance(audio, (str, os.PathLike)):
            return load_audio(audio)
        wav = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
        return check_waveform(wav.T if wav.ndim == 2 else wav, sample_rate, "waveform")

    def embed(self, audio: Audio, segments: bool = False, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """The utterance embedding (normalised mean of normalised segment embeddings), or with
        ``segments`` the (num_segments, D) segment embeddings."""
        embeddings = embed_utterances(self.embedder, [self.waveform(audio, sample_rate)], self.batch_size)[0]
        return embeddings if segments else mean_embedding(embeddings)

    def _segment_embeddings(self, x: Audio) -> np.ndarray:
        """Embeddings as given (arrays whose last dimension is ``embed_dim``), else embed the audio."""
        if not isinstance(x, (str, os.PathLike)) and np.ndim(x) in (1, 2) and np.shape(x)[-1] == self.embed_dim:
            return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        return self.embed(x, segments=True)

    def score(self, a: Audio, b: Audio) -> float:
        """Cosine score with the model's segment rule: the mean over all segment pairs.

        ``a`` and ``b`` are paths, 16 kHz waveforms, or embeddings (1-D or (segments, D))."""
        return segment_pair_score(self._segment_embeddings(a), self._segment_embeddings(b))


def load_model(path: Union[str, os.PathLike], device: str = "cpu", runtime: str = "torch",
               onnx: Optional[Union[str, os.PathLike]] = None, batch_size: int = 32,
               precision: str = "float32") -> SpeakerEmbeddingModel:
    """Load a checkpoint or experiment dir for embedding and scoring (``runtime`` torch or onnx).

    ``precision="int8"`` (opt-in, CPU): with the torch runtime the SV-Mixer blocks run int8 GEMMs
    (int8 weights per output channel, activations quantised per call); with the onnx runtime
    ``onnx`` must be an int8 export (``svmix-export --format onnx --quantize int8``). Embeddings
    then differ slightly from float32 (README.md, Deployment)."""
    return SpeakerEmbeddingModel(load_embedder(path, runtime, onnx, device, precision=precision), batch_size)
