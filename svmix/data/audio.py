"""Audio reading: 16 kHz mono float32, with one-line errors that name the utterance and the file."""
from __future__ import annotations

import os
import stat
import struct
from typing import Dict, Mapping, Optional, Set, Tuple

import numpy as np

from svmix.errors import AudioError
from svmix.utils.logging import get_logger
from svmix.utils.progress import track

SAMPLE_RATE = 16000
MIN_SAMPLES = 400  # one frame of the conv frontend (receptive field)

_log = get_logger("audio")
_resample_noted: Set[Tuple[int, int]] = set()


def _name(utt_id: Optional[str], path: os.PathLike) -> str:
    return f"utterance '{utt_id}' ({path})" if utt_id else str(path)


def wav_data_shortfall(path: os.PathLike) -> Optional[Tuple[int, int]]:
    """``(promised, present)`` sample bytes of a RIFF/WAVE file whose ``data`` chunk is cut short,
    else None (complete files, other formats, streamed WAVs with an unknown size).

    libsndfile silently reads a truncated WAV as a shorter one; this compares the header with the
    file size instead, reading only the chunk headers.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None
        endian = "<" if head[:4] == b"RIFF" else ">"
        size = os.fstat(f.fileno()).st_size
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack(endian + "4sI", f.read(8))
            if chunk_id == b"data":
                present = size - pos - 8
                streamed = chunk_size in (0, 0xFFFFFFFF)  # written to a pipe: size never filled in
                return None if streamed or present >= chunk_size else (chunk_size, present)
            pos += 8 + chunk_size + (chunk_size & 1)
    return None


def _check_complete(path: os.PathLike, name: str) -> None:
    """Raise :class:`AudioError` when ``path`` is a WAV whose header promises more samples than it holds."""
    try:
        shortfall = wav_data_shortfall(path)
    except OSError as e:
        raise AudioError(f"{name}: cannot read audio ({e.strerror or e})") from None
    if shortfall is not None:
        promised, present = shortfall
        raise AudioError(f"{name}: truncated audio: the WAV header promises {promised} bytes of samples, "
                         f"the file holds {present}")


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    if orig_sr == target_sr:
        return wav
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(orig_sr, target_sr)
    return resample_poly(wav, target_sr // g, orig_sr // g).astype(np.float32)


def load_audio(
    path: os.PathLike,
    utt_id: Optional[str] = None,
    sample_rate: int = SAMPLE_RATE,
    min_samples: int = MIN_SAMPLES,
    allow_silent: bool = False,
) -> np.ndarray:
    """Read ``path`` as a 1-D float32 array at ``sample_rate``.

    Multi-channel audio is down-mixed and other rates are resampled (noted once per rate).
    Raises :class:`AudioError` for missing, unreadable, truncated, empty, too short, non-finite or
    (unless ``allow_silent``) all-zero audio.
    """
    import soundfile as sf

    name = _name(utt_id, path)
    if not os.path.exists(path):
        raise AudioError(f"{name}: audio file not found")
    _check_complete(path, name)
    try:
        wav, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for corrupt files
        raise AudioError(f"{name}: cannot read audio ({' '.join(str(e).split())})") from None
    return check_waveform(wav, sr, name, sample_rate, min_samples, allow_silent)


def check_length(num_samples: int, name: str, min_samples: int = MIN_SAMPLES) -> None:
    """Raise :class:`AudioError` for audio of ``num_samples`` (at 16 kHz) that is empty or too short."""
    if num_samples == 0:
        raise AudioError(f"{name}: audio is empty")
    if num_samples < min_samples:
        raise AudioError(f"{name}: audio too short ({num_samples} samples at 16 kHz, need at least {min_samples})")


def check_waveform(wav: np.ndarray, sr: int, name: str, sample_rate: int = SAMPLE_RATE,
                   min_samples: int = MIN_SAMPLES, allow_silent: bool = False) -> np.ndarray:
    """The one validation of input audio, for files (:func:`load_audio`) and arrays (the Python API).

    ``wav`` is (samples,) or (samples, channels) at ``sr``. Returns it down-mixed and resampled to
    1-D float32 at ``sample_rate``. Raises :class:`AudioError`, prefixed with ``name``, for other
    shapes, non-numeric, empty, non-finite, too short or (unless ``allow_silent``) all-zero audio."""
    wav = np.asarray(wav)
    if wav.ndim not in (1, 2) or not (np.issubdtype(wav.dtype, np.floating) or np.issubdtype(wav.dtype, np.integer)):
        raise AudioError(f"{name}: expected a 1-D or (channels, samples) waveform of numbers, got shape "
                         f"{tuple(wav.shape)} of {wav.dtype}")
    if wav.size == 0:
        raise AudioError(f"{name}: audio is empty")
    if wav.ndim == 2:
        wav = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    wav = wav.astype(np.float32, copy=False)
    if not np.isfinite(wav).all():
        raise AudioError(f"{name}: audio contains NaN or Inf samples")
    if sr != sample_rate:
        if (sr, sample_rate) not in _resample_noted:
            _resample_noted.add((sr, sample_rate))
            _log.warning("resampling %d Hz audio to %d Hz (first seen: %s)", sr, sample_rate, name)
        wav = resample(wav, sr, sample_rate)
    check_length(len(wav), name, min_samples)
    if not allow_silent and not np.any(wav):
        raise AudioError(f"{name}: audio is all silence (every sample is zero)")
    return np.ascontiguousarray(wav, dtype=np.float32)


_PLAIN_WAV_FORMATS = (1, 3, 0xFFFE)  # PCM, IEEE float, extensible: frames = data bytes / block align


def plain_wav_info(path: os.PathLike) -> Optional[Tuple[int, int, int, int]]:
    """``(frames, sample rate, data bytes promised, data bytes present)`` of an uncompressed RIFF WAV, from its chunk
    headers in one open; None for anything else (other formats, streamed or odd headers), which
    :func:`audio_info` then hands to libsndfile."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        size = os.fstat(f.fileno()).st_size
        pos, fmt = 12, None
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"fmt " and chunk_size >= 16:
                tag, channels, rate, _, block_align = struct.unpack("<HHIIH", f.read(14))
                fmt = (tag, channels, rate, block_align)
            elif chunk_id == b"data":
                if fmt is None or fmt[0] not in _PLAIN_WAV_FORMATS or not fmt[2] or not fmt[3] \
                        or chunk_size in (0, 0xFFFFFFFF):
                    return None
                return chunk_size // fmt[3], fmt[2], chunk_size, min(chunk_size, size - pos - 8)
            pos += 8 + chunk_size + (chunk_size & 1)
    return None


def audio_info(path: os.PathLike, utt_id: Optional[str] = None) -> Tuple[int, int]:
    """Return (frames, sample_rate) from the header, without decoding; a WAV whose header promises
    more samples than the file holds is an :class:`AudioError`. Uncompressed WAVs are read by
    :func:`plain_wav_info` (one open, a few small reads: the audio scan of a million files), others by
    libsndfile."""
    import soundfile as sf

    name = _name(utt_id, path)
    try:
        plain = plain_wav_info(path)
    except (OSError, struct.error):
        plain = None  # let libsndfile report it
    if plain is not None:
        frames, rate, promised, present = plain
        if present < promised:
            raise AudioError(f"{name}: truncated audio: the WAV header promises {promised} bytes of samples, "
                             f"the file holds {present}")
        return frames, rate
    try:
        info = sf.info(path)
    except Exception as e:
        raise AudioError(f"{name}: cannot read audio header ({' '.join(str(e).split())})") from None
    _check_complete(path, name)
    return info.frames, info.samplerate


_SCAN_CACHE_HEADER = "# svmix audio scan v1: samples_at_16k size mtime_ns path\n"


def scan_cache_path(data_dir: os.PathLike, kind: str = "audio-scan", suffix: str = ".tsv") -> str:
    """The audio-scan cache of a data directory (shared by svmix-validate-data and training): a file
    in ``$SVMIX_CACHE_DIR`` (default ``$XDG_CACHE_HOME/svmix`` or ``~/.cache/svmix``), named by a hash
    of the directory's absolute path, so a read-only data directory is never written to. ``kind``
    names another cache of the same directory (``shard-scan``: the index of a shard list)."""
    import hashlib

    root = os.environ.get("SVMIX_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "svmix")
    name = hashlib.sha256(os.path.abspath(data_dir).encode("utf-8", "surrogateescape")).hexdigest()[:20]
    return os.path.join(root, kind, f"{name}{suffix}")


def read_scan_cache(path: os.PathLike) -> Dict[str, Tuple[int, int, int]]:
    """``absolute audio path -> (size, mtime_ns, samples at 16 kHz)`` from a scan cache; an absent,
    foreign or damaged cache is empty (it is only ever a shortcut)."""
    entries: Dict[str, Tuple[int, int, int]] = {}
    try:
        with open(path, encoding="utf-8") as f:
            if f.readline() != _SCAN_CACHE_HEADER:
                return {}
            for line in f:
                parts = line.rstrip("\n").split("\t", 3)
                if len(parts) != 4:
                    return {}  # cut short or edited: rescan everything rather than trust it
                entries[parts[3]] = (int(parts[1]), int(parts[2]), int(parts[0]))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return entries


def write_scan_cache(path: os.PathLike, entries: Mapping[str, Tuple[int, int, int]]) -> None:
    from svmix.utils.fileio import atomic_open

    with atomic_open(path) as f:
        f.write(_SCAN_CACHE_HEADER)
        f.writelines(f"{samples}\t{size}\t{mtime}\t{p}\n" for p, (size, mtime, samples) in entries.items())


def scan_audio(utts: Mapping[str, str], progress: bool = False, desc: str = "checking audio",
               cache: Optional[os.PathLike] = None) -> Tuple[Dict[str, int], Dict[str, str]]:
    """Check every file's header without decoding, before long work: ``(utt -> samples at 16 kHz,
    utt -> problem)``. Finds missing, unreadable, truncated (WAV), empty and too short files.

    With ``cache`` (a file), a good file's result is kept there keyed by its absolute path, size and
    modification time, and reused while both are unchanged: a restart then costs one ``stat`` per file
    instead of opening it (minutes at a million files on a network filesystem). The cache is
    rewritten atomically when anything was rescanned; failing to write it is only a warning."""
    known = read_scan_cache(cache) if cache is not None else {}
    updated = False
    good, bad = {}, {}
    for utt, path in track(utts.items(), desc=desc, unit="file", enabled=progress, leave=False):
        try:
            try:
                st = os.stat(path)
            except OSError:
                st = None
            if st is None or not stat.S_ISREG(st.st_mode):
                raise AudioError(f"{_name(utt, path)}: audio file not found")
            key = os.path.abspath(path) if cache is not None else path
            hit = known.get(key)
            if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
                samples = hit[2]
            else:
                frames, rate = audio_info(path, utt)
                samples = frames * SAMPLE_RATE // rate
                if cache is not None:
                    known[key] = (st.st_size, st.st_mtime_ns, samples)
                    updated = True
            check_length(samples, _name(utt, path))
        except AudioError as e:
            bad[utt] = str(e)
            continue
        good[utt] = samples
    if updated:
        try:
            write_scan_cache(cache, known)
        except OSError as e:
            _log.warning("%s", e)
    return good, bad


def write_wav(path: os.PathLike, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM atomically; a failed write (e.g. a full disk) is a one-line error naming ``path``."""
    import soundfile as sf

    from svmix.utils.fileio import WriteError, atomic_path

    with atomic_path(path) as tmp:
        try:
            sf.write(tmp, np.asarray(wav, dtype=np.float32), sample_rate, subtype="PCM_16", format="WAV")
        except sf.LibsndfileError as e:  # libsndfile reports a full disk as its own error type
            raise WriteError(path, OSError(None, f"libsndfile: {' '.join(str(e).split())} (disk full?)")) from None
