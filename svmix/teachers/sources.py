"""Where a teacher comes from (``--teacher SPEC``): torchaudio bundle, HF directory or svmix checkpoint.

Each source in the ``TEACHERS`` registry answers three questions about a spec: does it name me
(``matches``), what identifies its weights (``fingerprint``, cheap enough to check a cache against),
and how to build the frozen :class:`SSLTeacher` (``load``), which implements
:class:`svmix.teachers.protocol.Teacher`.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Dict, Tuple

import torch

from svmix.errors import SvmixError
from svmix.registry import TEACHERS
from svmix.teachers.hf_format import load_hf_teacher, load_state_strict, weights_file
from svmix.teachers.model import SSLTeacher, build_torchaudio_model
from svmix.teachers.protocol import Teacher, check_teacher
from svmix.utils.fileio import sha256_file, torch_save_atomic

TORCHAUDIO_BUNDLES = ("WAVLM_BASE", "WAVLM_BASE_PLUS", "WAVLM_LARGE", "HUBERT_BASE", "HUBERT_LARGE",
                      "WAV2VEC2_BASE", "WAV2VEC2_LARGE_LV60K")

_file_hashes: Dict[Tuple[str, int, int], str] = {}


def _hash_files(*paths: Path) -> str:
    """sha256 over the files' hashes, memoised per (path, size, mtime) so repeated checks are free."""
    h = hashlib.sha256()
    for path in paths:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _file_hashes:
            _file_hashes[key] = sha256_file(path)
        h.update(_file_hashes[key].encode())
    return h.hexdigest()


@TEACHERS.register("torchaudio")
class TorchaudioBundle:
    """A torchaudio pipeline bundle name; weights are downloaded by torchaudio (online only)."""

    @staticmethod
    def matches(spec: str) -> bool:
        return spec in TORCHAUDIO_BUNDLES and not os.path.exists(spec)

    @staticmethod
    def fingerprint(spec: str) -> str:
        return f"torchaudio:{spec}"

    @staticmethod
    def load(spec: str) -> SSLTeacher:
        import torchaudio.pipelines

        bundle = getattr(torchaudio.pipelines, spec)
        try:
            model = bundle.get_model()
        except Exception as e:  # no network, interrupted download, ...
            raise SvmixError(f"teacher {spec}: torchaudio could not fetch the weights "
                             f"({' '.join(str(e).split())[:200]}); use a local Hugging Face directory offline") from None
        model = getattr(model, "model", model)  # unwrap torchaudio's waveform-normalising wrapper
        arch = "wavlm" if bundle._model_type == "WavLM" else "wav2vec2"
        params = {k: v for k, v in bundle._params.items() if k != "aux_num_out"}
        return SSLTeacher(model, arch, params, normalize_waveform=bool(bundle._normalize_waveform),
                          normalize_eps=1e-5, spec=spec, fingerprint=TorchaudioBundle.fingerprint(spec))


@TEACHERS.register("huggingface")
class HuggingFaceDirectory:
    """A local directory with config.json + model.safetensors or pytorch_model.bin."""

    @staticmethod
    def matches(spec: str) -> bool:
        return os.path.isdir(spec)

    @staticmethod
    def fingerprint(spec: str) -> str:
        directory = Path(spec)
        if not (directory / "config.json").is_file():
            raise SvmixError(f"{directory}: not a Hugging Face model directory (no config.json)")
        return "sha256:" + _hash_files(directory / "config.json", weights_file(directory))

    @staticmethod
    def load(spec: str) -> SSLTeacher:
        return load_hf_teacher(Path(spec), spec=spec, fingerprint=HuggingFaceDirectory.fingerprint(spec))


@TEACHERS.register("svmix")
class SvmixTeacherCheckpoint:
    """A file written by :func:`save_teacher` (torchaudio parameters + state dict)."""

    @staticmethod
    def matches(spec: str) -> bool:
        return os.path.isfile(spec)

    @staticmethod
    def fingerprint(spec: str) -> str:
        return "sha256:" + _hash_files(Path(spec))

    @staticmethod
    def load(spec: str) -> SSLTeacher:
        try:
            ckpt = torch.load(spec, map_location="cpu", weights_only=True)
        except Exception as e:
            raise SvmixError(f"{spec}: cannot read teacher checkpoint ({' '.join(str(e).split())[:200]})") from None
        if not isinstance(ckpt, dict) or ckpt.get("svmix_teacher") != 1:
            raise SvmixError(f"{spec}: not an svmix teacher checkpoint (written by svmix.teachers.save_teacher)")
        model = build_torchaudio_model(ckpt["arch"], ckpt["params"], ckpt["feat_proj_layer_norm"])
        load_state_strict(model, ckpt["state_dict"], spec)
        return SSLTeacher(model, ckpt["arch"], ckpt["params"], normalize_waveform=ckpt["normalize_waveform"],
                          normalize_eps=ckpt["normalize_eps"], feat_proj_layer_norm=ckpt["feat_proj_layer_norm"],
                          spec=spec, fingerprint=SvmixTeacherCheckpoint.fingerprint(spec))


def teacher_source(spec: os.PathLike) -> type:
    spec = str(spec)
    for name in TEACHERS.names():
        source = TEACHERS.get(name)
        if source.matches(spec):
            return source
    raise SvmixError(f"teacher '{spec}': neither a torchaudio bundle ({', '.join(TORCHAUDIO_BUNDLES)}) "
                     "nor an existing Hugging Face model directory or svmix teacher checkpoint")


def teacher_fingerprint(spec: os.PathLike) -> str:
    """What identifies a teacher's weights (bundle name or sha256 of its files), without loading it."""
    return teacher_source(spec).fingerprint(str(spec))


def load_teacher(spec: os.PathLike, device: str = "cpu") -> Teacher:
    """Load a frozen teacher in eval mode, checked against the :class:`Teacher` interface
    (docs/conventions.md §Teacher specification)."""
    return check_teacher(teacher_source(spec).load(str(spec)), f"teacher '{spec}'").to(device)


def save_teacher(teacher: SSLTeacher, path: os.PathLike) -> None:
    """Save as an svmix teacher checkpoint (loadable by :func:`load_teacher`)."""
    torch_save_atomic(teacher.checkpoint(), path)
