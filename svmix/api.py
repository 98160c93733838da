"""Python API: load a trained student, embed audio, score pairs (the CLIs use the same code).

    import svmix
    model = svmix.load_model("exp/svmixer_mini")          # experiment dir or checkpoint file
    emb = model.embed("enroll.wav")                       # 1-D, L2-normalised, model.embed_dim values
    segs = model.embed(waveform_16k, segments=True)       # (10, D) segment embeddings (docs/method.md §Evaluation);
                                                          # (1, D) for a one-pass model (model.one_pass)
    score = model.score("enroll.wav", "test.wav")         # mean cosine over all segment pairs

    model = svmix.load_model("exp/svmixer_mini", calibration="exp/svmixer_mini/calibration.json")
    result = model.verify("enroll.wav", "test.wav")      # Verification(llr, accept, threshold, operating_point)

``verify`` gives the same LLR as ``svmix-score --calibration`` for that trial, and accepts where the
LLR exceeds the threshold of the operating point stored in the calibration file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch

from svmix.calibration import Calibration, embedding_norm, trial_quality, utterance_quality
from svmix.data.audio import SAMPLE_RATE, check_waveform, load_audio
from svmix.errors import SvmixError
from svmix.inference.embedder import embed_utterances, load_embedder, num_segments
from svmix.inference.segments import mean_embedding, segment_pair_score

Audio = Union[str, os.PathLike, np.ndarray, torch.Tensor]


@dataclass(frozen=True)
class Verification:
    """The outcome of :meth:`SpeakerEmbeddingModel.verify`."""

    llr: float              # calibrated log-likelihood ratio (natural log)
    accept: bool            # llr > threshold
    threshold: float        # the LLR threshold of the calibration's operating point
    operating_point: str    # which one, in words


class SpeakerEmbeddingModel:
    """A trained student behind a segment embedder (PyTorch fast path, or ONNX), with an optional
    score calibration (:class:`svmix.calibration.Calibration`) for :meth:`verify`."""

    def __init__(self, embedder: Any, batch_size: int = 32, calibration: Optional[Calibration] = None):
        self.embedder = embedder
        self.batch_size = batch_size
        if calibration is not None and calibration.num_systems != 1:
            raise SvmixError(f"a calibration fusing {calibration.num_systems} systems cannot calibrate one model")
        self.calibration = calibration

    @property
    def config(self) -> Dict[str, Any]:
        return self.embedder.config

    @property
    def embed_dim(self) -> int:
        return int(self.embedder.embed_dim)

    @property
    def num_segments(self) -> int:
        return num_segments(self.embedder)

    @property
    def one_pass(self) -> bool:
        """True when the model embeds a whole utterance in one pass instead of evaluation segments."""
        return bool(self.embedder.one_pass)

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

    def _trial_side(self, x: Audio, sample_rate: int) -> Tuple[np.ndarray, Optional[Tuple[float, float]]]:
        """Segment embeddings and, for audio, (duration in seconds, embedding norm) as svmix-extract stores them."""
        if not isinstance(x, (str, os.PathLike)) and np.ndim(x) in (1, 2) and np.shape(x)[-1] == self.embed_dim:
            return self._segment_embeddings(x), None
        wav = self.waveform(x, sample_rate)
        segments = embed_utterances(self.embedder, [wav], self.batch_size)[0]
        return segments, (round(len(wav) / SAMPLE_RATE, 3), float(f"{embedding_norm(segments):.6g}"))

    def verify(self, a: Audio, b: Audio, sample_rate: int = SAMPLE_RATE) -> Verification:
        """Calibrated LLR of the trial (``a``, ``b``) and the accept/reject decision at the operating
        point stored in the calibration (given to :func:`load_model`). ``a`` and ``b`` are as for
        :meth:`score`; a quality-aware calibration needs audio (paths or waveforms), not embeddings.
        Quality measures are rounded as in ``quality.tsv``, so the LLR equals ``svmix-score
        --calibration``'s for the same trial (to a few 1e-6: six written decimals, batch-dependent float32 bits)."""
        cal = self.calibration
        if cal is None:
            raise SvmixError("verify needs a calibration: svmix.load_model(..., calibration=CAL.json) "
                             "(fit one with svmix-calibrate)")
        (ea, qa), (eb, qb) = self._trial_side(a, sample_rate), self._trial_side(b, sample_rate)
        quality = None
        if cal.quality_measures:
            if qa is None or qb is None:
                raise SvmixError(f"this calibration uses quality measures ({', '.join(cal.quality_measures)}): "
                                 "give audio (paths or waveforms), not embeddings")
            sides = [utterance_quality(np.array([q[0]]), np.array([q[1]]), cal.quality_measures) for q in (qa, qb)]
            quality = trial_quality(*sides)
        llr = float(cal.apply(np.array([_scored_as_svmix_score(ea, eb)]), quality)[0])
        return Verification(llr, bool(cal.decide(llr)), cal.llr_threshold, cal.describe_operating_point())


def _scored_as_svmix_score(a: np.ndarray, b: np.ndarray) -> float:
    """The segment-pair cosine computed by svmix-score's own code (its float32 scoring vectors), so
    that calibrated LLRs from :meth:`SpeakerEmbeddingModel.verify` and from the CLI agree."""
    from svmix.scoring.cosine import cosine_scores, scoring_vectors
    from svmix.scoring.embeddings import as_embeddings

    if np.ndim(a) != np.ndim(b):  # one side 1-D, the other segments: as segment matrices
        a, b = np.atleast_2d(a), np.atleast_2d(b)
    vectors = scoring_vectors(as_embeddings({"a": np.asarray(a, np.float32), "b": np.asarray(b, np.float32)}))
    return float(cosine_scores(vectors, np.array([0]), np.array([1]))[0])


def load_model(path: Union[str, os.PathLike], device: str = "cpu", runtime: str = "torch",
               onnx: Optional[Union[str, os.PathLike]] = None, batch_size: int = 32,
               calibration: Optional[Union[str, os.PathLike]] = None,
               precision: str = "float32", pt2: Optional[Union[str, os.PathLike]] = None) -> SpeakerEmbeddingModel:
    """Load a checkpoint or experiment dir for embedding and scoring (``runtime`` torch, onnx with
    the ONNX file ``onnx``, or pt2 with the torch.export program ``pt2``; each defaults to
    ``model.onnx`` / ``model.pt2`` next to the checkpoint); ``calibration`` (an ``svmix-calibrate``
    file) enables :meth:`SpeakerEmbeddingModel.verify`.

    ``precision="int8"`` (opt-in, CPU): with the torch runtime the SV-Mixer blocks run int8 GEMMs
    (int8 weights per output channel, activations quantised per call); with the onnx runtime
    ``onnx`` must be an int8 export (``svmix-export --format onnx --quantize int8``). Embeddings
    then differ slightly from float32 (README.md, Deployment)."""
    cal = Calibration.load(calibration) if calibration is not None else None
    return SpeakerEmbeddingModel(load_embedder(path, runtime, onnx, device, precision=precision, pt2=pt2),
                                 batch_size, cal)
