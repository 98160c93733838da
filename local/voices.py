"""Procedural espeak-ng voices: variant files derived from the allowed base variants.

A generated voice starts from one allowed base variant (``make_mini_corpus.VOICES``) and changes
what shapes a voice in espeak-ng's variant format:

- ``formant N FREQ HEIGHT WIDTH`` (percent of the language default, N = 0..8): every formant
  frequency is scaled by one vocal-tract factor (shorter tract: higher formants), then each of
  F1..F5 is jittered a little (capped, see ``generate_voice``); heights and widths are scaled
  independently;
- ``pitch BASE RANGE`` (Hz): base and range scaled around the base variant's;
- ``tone F1 A1 F2 A2 F3 A3 F4 A4``: a random spectral tilt (equaliser points, amplitudes 0..255);
- ``flutter``, ``roughness``, ``breath``/``breathw`` (aspiration noise per formant) and ``voicing``;
- a speaking-rate centre (words/minute), applied per utterance by the synthesizer call.

Other lines of the base file (``klatt N``, ``echo``, ``stress*``, ``consonants``, ...) are kept.
Everything is drawn from ``numpy.random.default_rng([seed, index])``: one candidate depends only on
the generator seed and its own index.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

from local.espeak_synth import wheel_variant_text
from local.make_mini_corpus import VOICES as BASE_VARIANTS
from svmix.errors import SvmixError

Settings = Tuple[Tuple[str, Tuple[int, ...]], ...]

NUM_FORMANTS = 9
DEFAULT_FORMANT = (100, 100, 100)
DEFAULT_PITCH = (82, 118)  # espeak-ng's default male pitch base and range (Hz)
#: keyword -> (min count, max count, min value, max value) for the lines the generator writes.
WRITTEN_KEYWORDS: Dict[str, Tuple[int, int, int, int]] = {
    "formant": (4, 5, -3000, 3000),  # index, frequency %, height %, width % [, frequency offset Hz]
    "pitch": (2, 2, 20, 600),
    "tone": (8, 8, 0, 8000),
    "flutter": (1, 1, 0, 100),
    "roughness": (1, 1, 0, 7),
    "breath": (8, 8, 0, 60),
    "breathw": (8, 8, 30, 255),
    "voicing": (1, 1, 10, 200),
}
#: lines of a base variant that are not the generator's and are copied verbatim
COPIED_KEYWORDS = ("klatt", "echo", "consonants", "stressAdd", "stressAmp", "stressLength", "intonation")
RATE_RANGE = (135, 215)  # words/minute of a voice's rate centre
#: bases whose generated voices crash libespeak-ng (segmentation fault) on some sentences: every crash
#: seen (g000x0201, g000x0369, g000x0397, g000x0593) was on Lee. Screening never keeps them.
UNSTABLE_BASES = ("Lee",)


@dataclass(frozen=True)
class VoiceDefinition:
    """One candidate speaker: its variant file (``text``) and its speaking-rate centre."""
    name: str
    base: str
    rate: int
    settings: Settings
    verbatim: str = ""  # a base variant's own file text (then ``settings`` is empty)

    @property
    def text(self) -> str:
        if self.verbatim:
            return self.verbatim
        lines = ["language variant", f"name {self.name}"]
        lines += [" ".join([key, *map(str, values)]) for key, values in self.settings]
        return "\n".join(lines) + "\n"

    @property
    def rates(self) -> Tuple[int, int]:
        """Per-utterance speaking rates are drawn from [low, high): +-8% around the centre."""
        return int(round(self.rate * 0.92)), int(round(self.rate * 1.08)) + 1


def parse_variant(text: str) -> Dict[str, Tuple[int, ...]]:
    """Numeric lines of an espeak-ng variant file; formants keyed ``formant N`` (values after N)."""
    out: Dict[str, Tuple[int, ...]] = {}
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 2 or words[0] in ("name", "language", "gender"):
            continue
        try:
            values = tuple(int(w) for w in words[1:])
        except ValueError:
            continue
        key = f"formant {values[0]}" if words[0] == "formant" and values else words[0]
        out[key] = values[1:] if words[0] == "formant" else values
    return out


def base_settings(base: str) -> Dict[str, Tuple[int, ...]]:
    """The numeric settings of an allowed base variant (a fresh dict)."""
    if base not in BASE_VARIANTS:
        raise SvmixError(f"'{base}' is not an allowed base variant ({', '.join(BASE_VARIANTS)})")
    return dict(_wheel_settings(base))


@functools.lru_cache(maxsize=None)
def _wheel_settings(base: str) -> Dict[str, Tuple[int, ...]]:
    return parse_variant(wheel_variant_text(base))


def _clip(x: float, low: int, high: int) -> int:
    return int(min(max(round(x), low), high))


def generate_voice(seed: int, index: int, base: str) -> VoiceDefinition:
    """Candidate ``index`` of generator ``seed`` on top of ``base`` (see the module docstring)."""
    rng = np.random.default_rng([seed, index])
    settings = base_settings(base)
    out: List[Tuple[str, Tuple[int, ...]]] = []
    tract = float(np.exp(rng.uniform(np.log(0.84), np.log(1.2))))  # formant scale, shared by all formants
    for k in range(NUM_FORMANTS):
        given = tuple(settings.get(f"formant {k}", ()))
        values = (given + DEFAULT_FORMANT[len(given):])[:3] if len(given) < 3 else given[:3]
        freq, height, width = (v if v > 0 else 100 for v in values)
        extra = given[3:4]  # optional frequency offset in Hz, kept as is
        jitter = float(np.exp(rng.normal(0, 0.04))) if 1 <= k <= 5 else 1.0
        height_scale, width_scale = np.exp(rng.normal(0, 0.15)), np.exp(rng.normal(0, 0.2))
        # a base height of 0 switches a formant off; keep that part of the base voice's character
        new_height = 0 if values[1] == 0 else _clip(height * height_scale, 5, 300)
        # a precaution against out-of-range formants: at most 250% (F0-F3) / 150% (F4-F8), or the base
        # variant's own value (a few generated voices still crash libespeak-ng; screening drops them)
        top = max(freq, 250 if k <= 3 else 150)
        out.append(("formant", (k, _clip(freq * tract * jitter, min(freq, 20), top), new_height,
                                _clip(width * width_scale, 20, 400), *extra)))
    pitch_base, pitch_top = (tuple(settings.get("pitch", ())) + DEFAULT_PITCH)[:2]
    pitch_scale = float(np.exp(rng.uniform(np.log(0.72), np.log(1.35))))
    new_base = _clip(pitch_base * pitch_scale, 40, 400)
    span = max(pitch_top - pitch_base, 10) * float(np.exp(rng.normal(0, 0.25)))
    out.append(("pitch", (new_base, _clip(new_base + span, new_base + 8, 600))))
    amps = rng.integers(40, 256, size=4)
    out.append(("tone", (300, int(amps[0]), 1200, int(amps[1]), 2500, int(amps[2]), 4500, int(amps[3]))))
    out.append(("flutter", (int(rng.integers(0, 61)),)))
    out.append(("roughness", (int(rng.choice(4, p=[0.55, 0.25, 0.12, 0.08])),)))
    if rng.random() < 0.3:
        breath = rng.integers(0, 25, size=8) * (rng.random(8) < 0.6)
        out.append(("breath", tuple(int(b) for b in breath)))
        out.append(("breathw", tuple(int(w) for w in rng.integers(60, 256, size=8))))
    voicing = settings.get("voicing", (100,))[0] if settings.get("voicing") else 100
    out.append(("voicing", (_clip(voicing * rng.uniform(0.8, 1.2), 10, 200),)))
    for key in COPIED_KEYWORDS:
        if settings.get(key):
            out.append((key, settings[key]))
    rate = int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1))
    return VoiceDefinition(f"g{seed % 1000:03d}x{index:04d}", base, rate, tuple(out))


def base_voice(base: str) -> VoiceDefinition:
    """An allowed base variant itself as a candidate (its own file, the mini corpus's rate centre)."""
    base_settings(base)  # validates the name
    return VoiceDefinition(f"b-{base}", base, 175, (), verbatim=wheel_variant_text(base))


def generate_candidates(seed: int, count: int) -> List[VoiceDefinition]:
    """``count`` generated voices, their bases cycling through the allowed base variants."""
    return [generate_voice(seed, i, BASE_VARIANTS[i % len(BASE_VARIANTS)]) for i in range(count)]


def definitions_digest(voices: List[VoiceDefinition]) -> str:
    """Fingerprint of voice definitions (names, rates, variant texts) to detect generator drift."""
    h = hashlib.sha256()
    for v in voices:
        h.update(f"{v.name}\t{v.rate}\n{v.text}\0".encode())
    return h.hexdigest()[:16]
