"""Custom corpora laid out as SRC/<speaker>/**/*.wav|flac -> Kaldi data dirs, split and trials."""
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from local.speaker_folders import main, prepare_speaker_folders, scan_speaker_folders
from svmix.data.datadir import DataDir, read_trials
from svmix.data.validate import validate_datadir
from svmix.errors import SvmixError


def _corpus(root, num_speakers=6, utts=4):
    rng = np.random.default_rng(0)
    for s in range(num_speakers):
        for u in range(utts):
            rel = f"spk {s}/session{u % 2}/take{u}.flac" if s == 0 else f"speaker{s}/utt{u}.wav"
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, 0.1 * rng.standard_normal(4000 + 100 * u), 16000)
    (root / "speaker1" / "notes.txt").write_text("not audio")
    (root / "lonely").mkdir()
    sf.write(root / "lonely" / "only.wav", np.full(4000, 0.1), 16000)
    return root


def test_single_datadir_recursive_flac_and_ids(tmp_path):
    src = _corpus(tmp_path / "src")
    out = tmp_path / "data"
    result = CliRunner().invoke(main, ["--src", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = validate_datadir(out, deep=True)
    assert report.ok, [str(p) for p in report.problems]
    data = DataDir(out)
    assert len(data.wav_scp) == 24 and len(data.spk2utt) == 6  # 'lonely' has fewer than --min-utts 2
    assert "spk_0-session1-take3" in data.wav_scp and data.utt2spk["spk_0-session1-take3"] == "spk_0"
    assert data.wav_scp["spk_0-session1-take3"].endswith(".flac")
    assert all(utt.startswith(spk + "-") for utt, spk in data.utt2spk.items())
    assert abs(data.utt2dur["speaker2-utt3"] - 4300 / 16000) < 1e-3
    assert not (out / "trials").exists()


def test_test_split_by_speaker_with_seeded_trials(tmp_path):
    src = _corpus(tmp_path / "src", num_speakers=8, utts=5)
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    for out in (out_a, out_b):
        prepare_speaker_folders(src, out, test_speakers=3, num_trials=60, target_ratio=0.25, min_utts=2, seed=7)
    train, test = DataDir(out_a / "train"), DataDir(out_a / "test")
    assert len(test.spk2utt) == 3 and len(train.spk2utt) == 5
    assert not set(train.spk2utt) & set(test.spk2utt)
    assert validate_datadir(out_a / "test").ok and validate_datadir(out_a / "train").ok
    trials = read_trials(out_a / "test" / "trials")
    assert len(trials) == 60 and sum(t.label for t in trials) == 15
    assert all(t.label == (test.utt2spk[t.enroll] == test.utt2spk[t.test]) for t in trials)
    assert (out_a / "test" / "trials").read_text() == (out_b / "test" / "trials").read_text()  # seeded
    vox = read_trials(out_a / "test" / "trials.voxceleb")
    assert [(t.enroll, t.test, t.label) for t in vox] == [(t.enroll, t.test, t.label) for t in trials]
    prepare_speaker_folders(src, tmp_path / "c", test_speakers=3, num_trials=60, target_ratio=0.25, seed=8)
    assert (tmp_path / "c" / "test" / "trials").read_text() != (out_a / "test" / "trials").read_text()


def test_trials_without_split_and_bad_inputs(tmp_path):
    src = _corpus(tmp_path / "src")
    prepare_speaker_folders(src, tmp_path / "all", num_trials=40, target_ratio=0.5, min_utts=2)
    assert len(read_trials(tmp_path / "all" / "trials")) == 40
    assert validate_datadir(tmp_path / "all").ok
    with pytest.raises(SvmixError, match="--test-speakers"):
        prepare_speaker_folders(src, tmp_path / "x", test_speakers=6, min_utts=2)
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["--src", str(tmp_path / "empty"), "--out", str(tmp_path / "y")])
    assert result.exit_code == 1 and "no speaker folders" in result.output
    assert len(scan_speaker_folders(src, min_utts=1)) == 7
