"""Data directories: reading, writing, trials formats, validation and --fix."""
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from svmix.data.audio import load_audio
from svmix.data.datadir import DataDir, Trial, read_trials, write_trials, read_kv
from svmix.data.validate import validate_datadir
from svmix.errors import AudioError, SvmixError


def test_roundtrip_and_spk2utt(tiny_datadir):
    d = DataDir(tiny_datadir)
    assert len(d.wav_scp) == 12
    assert set(d.spk2utt) == {"spk00", "spk01", "spk02", "spk03"}
    assert all(len(v) == 3 for v in d.spk2utt.values())
    assert d.trials and sum(t.label for t in d.trials) == 4 * 3  # 3 target pairs per speaker


@pytest.mark.parametrize("fmt", ["kaldi", "voxceleb"])
def test_trials_formats_autodetected(tmp_path, fmt):
    trials = [Trial("a", "b", 1), Trial("a", "c", 0), Trial("b", "c", 0)]
    write_trials(tmp_path / "t", trials, fmt)
    first = (tmp_path / "t").read_text().splitlines()[0]
    assert first == ("a b target" if fmt == "kaldi" else "1 a b")
    back = read_trials(tmp_path / "t")
    assert [(t.enroll, t.test, t.label) for t in back] == [("a", "b", 1), ("a", "c", 0), ("b", "c", 0)]


def test_unlabelled_trials_and_bad_line(tmp_path):
    (tmp_path / "t").write_text("a b\nx y z w\n")
    with pytest.raises(SvmixError, match=r"t:2"):
        read_trials(tmp_path / "t")
    problems = []
    trials = read_trials(tmp_path / "t", problems=problems)
    assert trials[0].label is None and len(problems) == 1


def test_validation_reports_every_problem_with_file_and_line(tiny_datadir):
    wav_scp = (tiny_datadir / "wav.scp").read_text().splitlines()
    first_utt, first_path = wav_scp[0].split()
    wav_scp[1] = wav_scp[1].split()[0] + " /nonexistent/missing.wav"
    wav_scp.append(f"{first_utt} {first_path}")  # duplicate key
    (tiny_datadir / "wav.scp").write_text("\n".join(wav_scp) + "\n")
    with open(tiny_datadir / "trials", "a") as f:
        f.write("spk00-utt00 ghost-utt nontarget\n")
    n_trial_lines = len((tiny_datadir / "trials").read_text().splitlines())

    proc = subprocess.run([sys.executable, "-m", "svmix.bin.validate_data", str(tiny_datadir)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    err = proc.stderr
    assert f"wav.scp:2: utterance '{wav_scp[1].split()[0]}'" in err and "not found" in err
    assert f"wav.scp:{len(wav_scp)}: duplicate key '{first_utt}' (first on line 1)" in err
    assert f"trials:{n_trial_lines}: test id 'ghost-utt' is not in wav.scp" in err


def test_fix_drops_bad_entries_and_keeps_backup(tiny_datadir):
    lines = (tiny_datadir / "wav.scp").read_text().splitlines()
    bad_utt = lines[0].split()[0]
    lines[0] = f"{bad_utt} /nonexistent.wav"
    (tiny_datadir / "wav.scp").write_text("\n".join(lines) + "\n")
    proc = subprocess.run([sys.executable, "-m", "svmix.bin.validate_data", "--fix", str(tiny_datadir)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "dropped 1 from wav.scp" in proc.stdout
    assert bad_utt not in read_kv(tiny_datadir / "wav.scp")
    assert bad_utt not in read_kv(tiny_datadir / "utt2spk")
    assert all(bad_utt not in (t.enroll, t.test) for t in read_trials(tiny_datadir / "trials"))
    assert (tiny_datadir / ".backup" / "001" / "wav.scp").read_text().startswith(f"{bad_utt} /nonexistent.wav")
    assert f"originals in {tiny_datadir / '.backup' / '001'}/" in proc.stdout
    assert validate_datadir(tiny_datadir).ok


def test_load_audio_resamples_and_downmixes(tmp_path):
    t = np.arange(8000) / 8000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t) * 0.5], axis=1) * 0.5
    sf.write(tmp_path / "x.wav", stereo, 8000)
    wav = load_audio(tmp_path / "x.wav", "utt1")
    assert wav.dtype == np.float32 and wav.ndim == 1 and len(wav) == 16000
    assert abs(np.abs(wav).max() - 0.375) < 0.01


@pytest.mark.parametrize("kind,message", [
    ("missing", "audio file not found"), ("corrupt", "cannot read audio"), ("empty", "audio is empty"),
    ("silent", "all silence"), ("short", "too short"), ("nan", "NaN or Inf"),
])
def test_load_audio_errors_name_the_utterance(tmp_path, kind, message):
    path = tmp_path / f"{kind}.wav"
    if kind == "corrupt":
        path.write_bytes(b"RIFF\x00\x00garbage" * 10)
    elif kind == "empty":
        sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    elif kind == "silent":
        sf.write(path, np.zeros(16000, dtype=np.float32), 16000)
    elif kind == "short":
        sf.write(path, np.full(100, 0.1, dtype=np.float32), 16000)
    elif kind == "nan":
        sf.write(path, np.full(1000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=message) as info:
        load_audio(path, "bad-utt")
    assert "bad-utt" in str(info.value) and "\n" not in str(info.value)
