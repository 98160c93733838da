"""Offline speech synthesis with libespeak-ng (from the ``espeakng-loader`` wheel) through ctypes.

The library runs in synchronous mode with a synth callback that collects the 22.05 kHz samples;
they are resampled to 16 kHz. Klatt-type voices keep internal state across utterances, so identical
output needs an identical sequence of calls in a fresh process: callers synthesize one speaker per
process (see ``make_mini_corpus``). Voices with random variation (e.g. sandro) draw from espeak-ng's
own generator, which ``synthesize`` reseeds for every utterance.
"""
from __future__ import annotations

import ctypes
from typing import List, Optional

import numpy as np

from svmix.data.audio import resample
from svmix.errors import SvmixError

AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
PARAM_RATE, PARAM_PITCH, PARAM_RANGE = 1, 3, 4

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakSynthesizer:
    """One libespeak-ng instance per process; ``synthesize`` returns float32 audio at ``sample_rate``."""

    _instance: Optional["EspeakSynthesizer"] = None

    def __init__(self, sample_rate: int = 16000):
        try:
            import espeakng_loader
        except ImportError:
            raise SvmixError("the mini corpus needs the espeakng-loader wheel: pip install espeakng-loader") from None
        self.sample_rate = sample_rate
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self._lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                           ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.native_rate = self._lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if self.native_rate <= 0:
            raise SvmixError("libespeak-ng failed to initialise (espeakng-loader data path unusable)")
        self._chunks: List[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # keep a reference: the library holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> "EspeakSynthesizer":
        if cls._instance is None:
            cls._instance = cls()
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
