"""svmix-validate-data reliability: every --fix keeps its own backup, truncated WAVs are found from the
header alone, half-labelled trials and non-UTF-8 list files are reported by file and line, and --fix
changes nothing when it cannot resolve a problem or cannot back up."""
import errno
import shutil
import struct

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from svmix.bin.validate_data import main as validate_cli
from svmix.data.audio import audio_info, load_audio, scan_audio, wav_data_shortfall
from svmix.data.datadir import read_kv
from svmix.data.validate import validate_datadir
from svmix.errors import AudioError
from conftest import one_error_line

LISTS = ("wav.scp", "utt2spk", "spk2utt", "utt2dur", "trials")


@pytest.fixture
def data(tiny_datadir):
    """The tiny data dir with every list file, utt2dur included."""
    wav_scp = read_kv(tiny_datadir / "wav.scp")
    (tiny_datadir / "utt2dur").write_text("".join(f"{utt} {sf.info(path).duration:.3f}\n"
                                                  for utt, path in wav_scp.items()))
    return tiny_datadir


def invoke(*args):
    return CliRunner().invoke(validate_cli, [str(a) for a in args])


def snapshot(data):
    return {p.name: p.read_bytes() for p in sorted(data.iterdir()) if p.is_file()}



def point_at(data, utt, path):
    """Make ``utt`` of ``data``'s wav.scp point at ``path``."""
    lines = (data / "wav.scp").read_text().splitlines()
    lines = [f"{utt} {path}" if line.split()[0] == utt else line for line in lines]
    (data / "wav.scp").write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- backups

def test_every_fix_keeps_its_own_backup(data, tmp_path):
    legacy = data / ".backup" / "wav.scp"  # the layout of earlier versions is left alone
    legacy.parent.mkdir()
    legacy.write_text("legacy backup\n")
    utts = list(read_kv(data / "wav.scp"))
    before = []
    for round_, utt in enumerate(utts[:3], 1):
        point_at(data, utt, tmp_path / f"missing-{round_}.wav")
        before.append(snapshot(data))
        result = invoke(data, "--fix")
        assert result.exit_code == 0, result.output
        backup = data / ".backup" / f"{round_:03d}"
        assert f"(originals in {backup}/)" in result.stdout and "dropped 1 from wav.scp" in result.stdout
        assert utt not in read_kv(data / "wav.scp")
    for round_, lists in enumerate(before, 1):
        backup = data / ".backup" / f"{round_:03d}"
        assert {name: (backup / name).read_bytes() for name in LISTS} == {name: lists[name] for name in LISTS}
    assert legacy.read_text() == "legacy backup\n"
    assert invoke(data).exit_code == 0


def test_fix_that_cannot_back_up_changes_nothing(tiny_datadir, tmp_path, monkeypatch):
    point_at(tiny_datadir, list(read_kv(tiny_datadir / "wav.scp"))[0], tmp_path / "missing.wav")
    before = snapshot(tiny_datadir)

    def no_space(src, dst, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copy2", no_space)
    error = one_error_line(invoke(tiny_datadir, "--fix"))
    assert "cannot back up" in error and "No space left on device" in error and "nothing was changed" in error
    assert snapshot(tiny_datadir) == before
    assert list((tiny_datadir / ".backup").iterdir()) == []


def test_fix_that_cannot_write_names_the_file_and_keeps_the_backup(data, tmp_path, monkeypatch):
    tiny_datadir = data
    import os

    point_at(tiny_datadir, list(read_kv(tiny_datadir / "wav.scp"))[0], tmp_path / "missing.wav")
    before = snapshot(tiny_datadir)

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    error = one_error_line(invoke(tiny_datadir, "--fix"))
    assert f"{tiny_datadir / 'wav.scp'}: cannot write (No space left on device)" in error
    assert snapshot(tiny_datadir) == before
    assert snapshot(tiny_datadir / ".backup" / "001") == {name: before[name] for name in LISTS}


# ----------------------------------------------------------------------------- truncated WAVs

def write_truncated(path, present, subtype="PCM_16", channels=1, promised=96_000):
    """A WAV whose header promises ``promised`` bytes of samples of which only ``present`` are there."""
    width = {"PCM_16": 2, "PCM_24": 3, "FLOAT": 4}[subtype] * channels
    wav = 0.1 * np.random.default_rng(0).standard_normal((promised // width, channels))
    sf.write(path, wav, 16000, subtype=subtype)
    data = path.read_bytes()
    start = data.index(b"data") + 8
    assert struct.unpack("<I", data[start - 4:start])[0] == promised
    path.write_bytes(data[:start + present])


TRUNCATIONS = [(present, "PCM_16", 1) for present in (0, 1, 1000, 95_999)] + [
    (1000, "PCM_24", 1), (1000, "FLOAT", 1), (50_000, "PCM_16", 2)]


@pytest.mark.parametrize("present, subtype, channels", TRUNCATIONS)
def test_truncated_wav_is_found_by_every_reader(tiny_datadir, tmp_path, present, subtype, channels):
    path = tmp_path / "cut.wav"
    write_truncated(path, present, subtype, channels)
    message = f"truncated audio: the WAV header promises 96000 bytes of samples, the file holds {present}"
    assert wav_data_shortfall(path) == (96_000, present)
    for read in (lambda: audio_info(path, "cut-utt"), lambda: load_audio(path, "cut-utt")):
        with pytest.raises(AudioError, match=f"utterance 'cut-utt' .*{message}"):
            read()
    assert "truncated audio" in scan_audio({"cut-utt": str(path)})[1]["cut-utt"]

    utt = list(read_kv(tiny_datadir / "wav.scp"))[4]
    point_at(tiny_datadir, utt, path)
    for deep in ((), ("--deep",)):  # the header check needs no decoding
        result = invoke(tiny_datadir, *deep)
        assert result.exit_code == 1, result.output
        problems = [line for line in result.stderr.splitlines() if "wav.scp:" in line]
        assert problems == [f"{tiny_datadir / 'wav.scp'}:5: utterance '{utt}' ({path}): {message}"]


def complete_wav(path, kind):
    """Valid WAVs the header check must accept."""
    wav = 0.1 * np.random.default_rng(1).standard_normal(16001)  # odd: 8-bit data needs a pad byte
    if kind == "list_chunk_after_data":
        sf.write(path, wav, 16000, subtype="PCM_16")
        data = path.read_bytes() + b"LIST" + struct.pack("<I", 4) + b"INFO"
        path.write_bytes(data[:4] + struct.pack("<I", len(data) - 8) + data[8:])
    elif kind == "odd_size_8bit":
        sf.write(path, wav, 16000, subtype="PCM_U8")
    elif kind == "streamed":  # written to a pipe: sizes left as 0xFFFFFFFF
        sf.write(path, wav, 16000, subtype="PCM_16")
        data = bytearray(path.read_bytes())
        start = data.index(b"data") + 4
        data[start:start + 4] = b"\xff\xff\xff\xff"
        path.write_bytes(bytes(data))
    elif kind == "flac":
        sf.write(path, wav, 16000, format="FLAC")
    elif kind == "stereo_float":
        sf.write(path, np.stack([wav, wav], 1), 16000, subtype="FLOAT")


@pytest.mark.parametrize("kind", ["list_chunk_after_data", "odd_size_8bit", "streamed", "flac", "stereo_float"])
def test_complete_audio_passes_the_header_check(tmp_path, kind):
    path = tmp_path / ("a.flac" if kind == "flac" else "a.wav")
    complete_wav(path, kind)
    assert wav_data_shortfall(path) is None
    frames, rate = audio_info(path, "u")
    assert rate == 16000 and frames > 16000 - 2
    assert len(load_audio(path, "u")) > 16000 - 2


# ----------------------------------------------------------------------------- half-labelled trials

@pytest.mark.parametrize("odd_line", [1, 2, 10, "last"])
def test_half_labelled_trials_are_reported_and_not_fixed(tiny_datadir, odd_line):
    trials = tiny_datadir / "trials"
    lines = trials.read_text().splitlines()
    index = len(lines) - 1 if odd_line == "last" else odd_line - 1
    lines[index] = " ".join(lines[index].split()[:2])
    trials.write_text("\n".join(lines) + "\n")
    offending = 2 if index == 0 else index + 1
    expected = f"{trials}:{offending}: {'labelled' if index == 0 else 'unlabelled'} trial, but the first trial (line 1)"
    result = invoke(tiny_datadir, "--no-audio")
    assert result.exit_code == 1 and expected in result.stderr and "1 problem(s) found" in result.stderr
    assert not validate_datadir(tiny_datadir, check_audio=False).ok
    before = snapshot(tiny_datadir)
    error = one_error_line(invoke(tiny_datadir, "--no-audio", "--fix"))
    assert expected in error and "--fix cannot resolve this; nothing was changed" in error
    assert snapshot(tiny_datadir) == before and not (tiny_datadir / ".backup").exists()


# ----------------------------------------------------------------------------- non-UTF-8 lists

@pytest.mark.parametrize("name", LISTS)
@pytest.mark.parametrize("bad, byte", [(b"\xe9", "0xe9"), (b"\xff\xfe", "0xff"), (b"\xc3", "0xc3")],
                         ids=["latin-1", "bom-like", "cut-multibyte"])
@pytest.mark.parametrize("fix", [False, True])
def test_non_utf8_list_file_is_a_one_line_error_naming_file_and_line(data, name, bad, byte, fix):
    tiny_datadir = data
    path = tiny_datadir / name
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2][:3] + bad + lines[2][3:]
    path.write_bytes(b"\n".join(lines))
    before = snapshot(tiny_datadir)
    error = one_error_line(invoke(tiny_datadir, "--no-audio", *(["--fix"] if fix else [])))
    assert f"{path}:3: not UTF-8 text (byte {byte} at character 4)" in error
    assert snapshot(tiny_datadir) == before
