"""Mini corpus: full-size plan (voices, counts, trials) without audio; a reduced build for real."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("espeakng_loader")

from local.make_mini_corpus import (VOICES, MiniCorpusConfig, build_mini_corpus, make_sentence,  # noqa: E402
                                    plan_jobs, plan_trials, planned_utt2spk, split_voices)
from local.trials import pair_counts, sample_trials  # noqa: E402
from svmix.data.datadir import DataDir, read_trials  # noqa: E402
from svmix.data.validate import validate_datadir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(num_train_speakers=3, utts_per_speaker=3, val_utts_per_speaker=1, num_test_speakers=2,
             test_utts_per_speaker=3)


def test_full_size_plan_meets_targets(tmp_path):
    config = MiniCorpusConfig()
    train, test = split_voices(config.num_train_speakers, config.num_test_speakers)
    assert len(train) >= 20 and len(test) >= 8
    assert not set(train) & set(test) and set(train) | set(test) <= set(VOICES)
    assert "male6" not in VOICES and len(set(VOICES)) == len(VOICES)
    jobs = plan_jobs(config, tmp_path)
    for subset, per_spk in (("train", 40), ("test", 20), ("val", 1)):
        utt2spk = planned_utt2spk(jobs, subset)
        counts = np.unique(list(utt2spk.values()), return_counts=True)[1]
        assert counts.min() >= per_spk
    assert set(planned_utt2spk(jobs, "val").values()) == set(train)  # validation never uses test voices
    assert set(planned_utt2spk(jobs, "test").values()) == set(test)
    trials = plan_trials(config, jobs)
    test_trials = trials["test"]
    assert len(test_trials) >= 3000
    assert sum(t.label for t in test_trials) / len(test_trials) >= 0.10
    assert len({(t.enroll, t.test) for t in test_trials}) == len(test_trials)
    utt2spk = planned_utt2spk(jobs, "test")
    assert all(t.label == (utt2spk[t.enroll] == utt2spk[t.test]) for t in test_trials)
    assert all(t.enroll != t.test for t in test_trials)
    assert trials == plan_trials(config, jobs)  # seeded


def test_sample_trials_caps_and_ratio():
    utt2spk = {f"s{s}-u{u}": f"s{s}" for s in range(4) for u in range(3)}
    assert pair_counts(utt2spk) == (12, 54)
    trials = sample_trials(utt2spk, 1000, 0.5, np.random.default_rng(0))  # more than exist: everything
    assert len(trials) == 66 and sum(t.label for t in trials) == 12
    big = {f"s{s}-u{u:03d}": f"s{s}" for s in range(30) for u in range(100)}  # drawn, not enumerated
    trials = sample_trials(big, 2000, 0.3, np.random.default_rng(0))
    assert len(trials) == 2000 and sum(t.label for t in trials) == 600
    assert all(t.label == (big[t.enroll] == big[t.test]) for t in trials)


def test_sentences_vary():
    rng = np.random.default_rng(0)
    assert len({make_sentence(rng, 2) for _ in range(50)}) == 50


def test_reduced_build_valid_deterministic_and_idempotent(tmp_path):
    config = MiniCorpusConfig(seed=3, **SMALL)
    a, b = tmp_path / "a", tmp_path / "b"
    assert build_mini_corpus(a, config, nj=2)
    # same seed, other worker count, through the CLI: identical audio
    args = [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
    subprocess.run([sys.executable, str(ROOT / "local/make_mini_corpus.py"), "--out", str(b), "--seed", "3",
                    "--nj", "1", *args], check=True, capture_output=True)
    for subset in ("train", "val", "test"):
        report = validate_datadir(a / subset, deep=True)
        assert report.ok, [str(p) for p in report.problems]
        wav_a, wav_b = DataDir(a / subset).wav_scp, DataDir(b / subset).wav_scp
        assert list(wav_a) == list(wav_b)
        for utt in wav_a:
            x, sr = sf.read(wav_a[utt], dtype="int16")
            assert sr == 16000 and 2.0 <= len(x) / sr <= 6.0
            np.testing.assert_array_equal(x, sf.read(wav_b[utt], dtype="int16")[0])
        durs = DataDir(a / subset).utt2dur
        assert all(2.0 <= d <= 6.0 for d in durs.values())
    assert len(DataDir(a / "train").spk2utt) == 3
    assert len(DataDir(a / "test").spk2utt) == 2
    assert not set(DataDir(a / "train").spk2utt) & set(DataDir(a / "test").spk2utt)
    kaldi, vox = read_trials(a / "test" / "trials"), read_trials(a / "test" / "trials.voxceleb")
    assert [(t.enroll, t.test, t.label) for t in kaldi] == [(t.enroll, t.test, t.label) for t in vox]
    assert len(read_trials(a / "val" / "trials")) > 0
    # a different seed gives different audio
    train_a = DataDir(a / "train").wav_scp
    c = tmp_path / "c"
    build_mini_corpus(c, MiniCorpusConfig(seed=4, num_train_speakers=1, utts_per_speaker=1, val_utts_per_speaker=0,
                                          num_test_speakers=0), nj=1)
    assert not np.array_equal(sf.read(train_a["Hugo-000"])[0], sf.read(DataDir(c / "train").wav_scp["Hugo-000"])[0])
    # complete output with the same parameters: nothing is redone
    mtime = (a / "train" / "wav.scp").stat().st_mtime_ns
    assert not build_mini_corpus(a, config, nj=2)
    assert (a / "train" / "wav.scp").stat().st_mtime_ns == mtime
