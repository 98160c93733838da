"""Offline speech synthesis with libespeak-ng (from the ``espeakng-loader`` wheel) through ctypes.

The library runs in synchronous mode with a synth callback that collects the 22.05 kHz samples;
they are resampled to 16 kHz. Klatt-type voices keep internal state across utterances, so identical
output needs an identical sequence of calls in a fresh process: callers synthesize one speaker per
process (see ``make_mini_corpus``). Voices with random variation (e.g. sandro) draw from espeak-ng's
own generator, which ``synthesize`` reseeds for every utterance.

Generated voice variants (``local/voices.py``) are spoken from a private data directory made by
``make_variant_overlay``: links to the wheel's data, with the generated files in ``voices/!v``, so
``en-us+NAME`` selects them exactly as it selects the wheel's own variants. A missing variant is not
an error in libespeak-ng (it speaks the plain base voice), so callers check their names exist.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from svmix.data.audio import resample
from svmix.errors import SvmixError
from svmix.utils.progress import Progress

AUDIO_OUTPUT_SYNCHRONOUS = 2
# libespeak-ng keeps the data path and the "!v/NAME" variant name in fixed-size buffers.
MAX_DATA_PATH, MAX_VARIANT_NAME = 150, 36
MAX_LISTED_VOICES = 349  # N_VOICES_LIST - 1 of libespeak-ng 1.52 (the wheel's data has 141 languages)
MAX_OVERLAY_VARIANTS = 150
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
PARAM_RATE, PARAM_PITCH, PARAM_RANGE = 1, 3, 4

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakSynthesizer:
    """One libespeak-ng instance per process; ``synthesize`` returns float32 audio at ``sample_rate``."""

    _instance: Optional["EspeakSynthesizer"] = None

    def __init__(self, sample_rate: int = 16000, data_path: Optional[str] = None):
        espeakng_loader = _loader()
        data_path = data_path or espeakng_loader.get_data_path()
        if len(os.fsencode(data_path)) > MAX_DATA_PATH:
            raise SvmixError(f"espeak-ng data path too long for libespeak-ng (> {MAX_DATA_PATH} bytes): {data_path}")
        self.sample_rate = sample_rate
        self.data_path = data_path
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self._lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                           ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.native_rate = self._lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
        if self.native_rate <= 0:
            raise SvmixError("libespeak-ng failed to initialise (espeakng-loader data path unusable)")
        self._chunks: List[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # keep a reference: the library holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls, data_path: Optional[str] = None) -> "EspeakSynthesizer":
        """The process's instance; the first call fixes its data path (the wheel's by default)."""
        if cls._instance is None:
            cls._instance = cls(data_path=data_path)
        elif data_path is not None and cls._instance.data_path != data_path:
            raise SvmixError(f"libespeak-ng already initialised with data path {cls._instance.data_path}, "
                             f"not {data_path}: one data path per process")
        return cls._instance

    def _collect(self, wav, num_samples, events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    def synthesize(self, text: str, voice: str, rate: int = 175, pitch: int = 50, pitch_range: int = 50,
                   seed: int = 0) -> np.ndarray:
        """Speak ``text`` with ``voice`` (e.g. ``en-us+Hugo``); rate in words/minute, pitch/range 0-100."""
        self._lib.espeak_ng_SetRandSeed(seed)
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise SvmixError(f"espeak-ng has no voice '{voice}'")
        for param, value in ((PARAM_RATE, rate), (PARAM_PITCH, pitch), (PARAM_RANGE, pitch_range)):
            self._lib.espeak_SetParameter(param, int(value), 0)
        self._chunks = []
        data = text.encode("utf-8")
        self._lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        if not self._chunks:
            raise SvmixError(f"espeak-ng produced no audio for voice '{voice}' and text '{text}'")
        wav = np.concatenate(self._chunks).astype(np.float32) / 32768.0
        return resample(wav, self.native_rate, self.sample_rate)


def _loader():
    try:
        import espeakng_loader
    except ImportError:
        raise SvmixError("the mini corpus needs the espeakng-loader wheel: pip install espeakng-loader") from None
    return espeakng_loader


def wheel_variant_text(name: str) -> str:
    """The text of one of the wheel's own variant files (``voices/!v/NAME``)."""
    path = Path(_loader().get_data_path()) / "voices" / "!v" / name
    if not path.is_file():
        raise SvmixError(f"espeak-ng has no variant '{name}' ({path})")
    return path.read_text(encoding="utf-8", errors="replace")


def make_variant_overlay(dest: Path, variants: Dict[str, str]) -> str:
    """A data directory at ``dest`` (which must not exist): symlinks to the wheel's data files, and
    ``variants`` (name -> variant file text) as the only files of ``voices/!v``; returns its path.

    libespeak-ng lists at most ``MAX_LISTED_VOICES`` voices and variants of a data directory; past that
    it silently drops voices (even ``en-us``), so one overlay holds at most ``MAX_OVERLAY_VARIANTS``."""
    if len(variants) > MAX_OVERLAY_VARIANTS:
        raise SvmixError(f"one espeak-ng data overlay holds at most {MAX_OVERLAY_VARIANTS} variants, "
                         f"got {len(variants)}: use make_variant_overlays")
    source = Path(_loader().get_data_path())
    dest = Path(dest)
    dest.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name != "voices":
            (dest / entry.name).symlink_to(entry)
    own = dest / "voices" / "!v"
    own.mkdir(parents=True)
    for name, text in variants.items():
        if len(name) > MAX_VARIANT_NAME or not name or "/" in name or "+" in name:
            raise SvmixError(f"unusable espeak-ng variant name '{name}' (1-{MAX_VARIANT_NAME} chars, no '/' or '+')")
        (own / name).write_text(text, encoding="utf-8")
    return str(dest)


def make_variant_overlays(root: Path, variants: Dict[str, str]) -> Dict[str, str]:
    """Overlays ``root/0``, ``root/1``, ... of at most ``MAX_OVERLAY_VARIANTS`` variants each;
    returns each variant's data path."""
    names = list(variants)
    paths: Dict[str, str] = {}
    for n, start in enumerate(range(0, len(names), MAX_OVERLAY_VARIANTS)):
        chunk = names[start: start + MAX_OVERLAY_VARIANTS]
        path = make_variant_overlay(Path(root) / str(n), {name: variants[name] for name in chunk})
        paths.update((name, path) for name in chunk)
    return paths


def _run_child(func: Callable[[Any], Any], item: Any, conn) -> None:
    try:
        outcome = (True, func(item))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        outcome = (False, e)
    try:
        conn.send(outcome)
    except Exception as e:  # an unpicklable result or exception
        conn.send((False, SvmixError(f"{type(e).__name__}: {e}")))
    conn.close()


def map_in_fresh_processes(func: Callable[[Any], Any], items: Sequence[Any], nj: int, label: Callable[[Any], str],
                           desc: str, unit: str = "it", allow_crash: bool = False) -> List[Any]:
    """``[func(item) for item in items]``, each call in its own newly forked process, ``nj`` at a time.

    Output of a voice then depends only on its own calls (see the module docstring). A process that
    dies without a result (libespeak-ng crashing on a voice) raises an ``SvmixError`` naming
    ``label(item)`` and its exit code, or gives ``None`` in its place with ``allow_crash``; an exception
    in ``func`` is raised again here. Either way the other processes are stopped first."""
    import scipy.signal  # noqa: F401  (resampling: imported once here, not by each process, ~1.5 s CPU each)

    context = multiprocessing.get_context("fork")
    results: List[Any] = [None] * len(items)
    running: Dict[Any, tuple] = {}
    queue = list(enumerate(items))[::-1]
    try:
        with Progress(total=len(items), desc=desc, unit=unit) as bar:
            while queue or running:
                while queue and len(running) < max(1, nj):
                    index, item = queue.pop()
                    receiver, sender = context.Pipe(duplex=False)
                    process = context.Process(target=_run_child, args=(func, item, sender), daemon=True)
                    process.start()
                    sender.close()
                    running[receiver] = (index, item, process)
                for receiver in wait(list(running)):
                    index, item, process = running.pop(receiver)
                    try:
                        ok, value = receiver.recv()
                    except EOFError:
                        ok, value = None, None
                    receiver.close()
                    process.join()
                    if ok is None and not allow_crash:
                        raise SvmixError(f"{label(item)}: synthesis process died (exit code {process.exitcode})")
                    if ok is False:
                        raise value
                    results[index] = value
                    bar.update()
    finally:
        for _, _, process in running.values():
            process.terminate()
            process.join()
    return results
