"""Stage 1 augmentation lists: real MUSAN/RIRS_NOISES layouts, synthetic resources, babble, idempotence."""
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from svmix.bin.prepare_augment import main
from svmix.data.audio import load_audio
from svmix.data.augment_resources import KINDS, prepare_augment
from svmix.data.datadir import read_kv


def _wav(path, seconds=0.5):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.1 * np.random.default_rng(0).standard_normal(int(16000 * seconds)), 16000)


def test_real_corpora_layouts(tmp_path):
    musan, rirs = tmp_path / "musan", tmp_path / "RIRS_NOISES"
    for rel in ("noise/free-sound/noise-0001.wav", "noise/sound-bible/noise-0002.wav",
                "music/fma/music-0001.wav", "speech/librivox/speech 0001.wav"):
        _wav(musan / rel)
    for rel in ("smallroom/Room001/Room001-00001.wav", "largeroom/Room002/Room002-00003.wav"):
        _wav(rirs / "simulated_rirs" / rel)
    _wav(rirs / "real_rirs_isotropic_noises" / "RVB2014_type1_rir_largeroom1_far_angla.wav")  # not listed
    counts = prepare_augment(tmp_path / "out", musan=musan, rirs=rirs)
    assert counts == {"noise": 2, "music": 1, "speech": 1, "rir": 2}
    speech = read_kv(tmp_path / "out" / "speech.scp")
    assert list(speech) == ["speech-librivox-speech_0001"]  # ids without spaces
    rir = read_kv(tmp_path / "out" / "rir.scp")
    assert sorted(rir) == ["largeroom-Room002-Room002-00003", "smallroom-Room001-Room001-00001"]
    assert all(p.endswith(".wav") for p in rir.values())


def test_synthetic_resources_cli_and_idempotence(tmp_path, tiny_datadir):
    out = tmp_path / "aug"
    args = ["--out", str(out), "--synthetic", "--num-noises", "3", "--num-music", "2", "--num-rirs", "4",
            "--babble-data", str(tiny_datadir)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lists = {kind: read_kv(out / f"{kind}.scp") for kind in KINDS}
    assert [len(lists[k]) for k in KINDS] == [3, 2, 12, 4]
    assert lists["speech"] == read_kv(tiny_datadir / "wav.scp")
    for kind in ("noise", "music"):
        for path in lists[kind].values():
            wav = load_audio(path)
            assert 5.0 <= len(wav) / 16000 <= 10.0 and np.max(np.abs(wav)) < 1.0
    for path in lists["rir"].values():
        rir = load_audio(path, min_samples=1)
        assert np.argmax(np.abs(rir)) == 0
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert CliRunner().invoke(main, args).exit_code == 0
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    # another seed gives other audio
    other = prepare_augment(tmp_path / "aug2", synthetic=True, num_noises=1, num_music=0, num_rirs=0, seed=1)
    assert other["noise"] == 1 and other["rir"] == 0
    assert not np.array_equal(load_audio(lists["noise"]["synthetic-noise-00000"]),
                              load_audio(read_kv(tmp_path / "aug2" / "noise.scp")["synthetic-noise-00000"]))


def test_nothing_given_writes_empty_lists(tmp_path):
    counts = prepare_augment(tmp_path / "none")
    assert counts == {kind: 0 for kind in KINDS}
    assert all((tmp_path / "none" / f"{kind}.scp").read_text() == "" for kind in KINDS)


def test_bad_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["--out", str(tmp_path / "o"), "--musan", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "is this MUSAN?" in result.output
    result = CliRunner().invoke(main, ["--out", str(tmp_path / "o"), "--rirs", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "is this RIRS_NOISES?" in result.output


@pytest.mark.parametrize("counts, free_mb", [((1, 0, 0), 0.1), ((0, 3, 0), 0.5), ((0, 0, 50), 1.0), ((20, 20, 20), 10)])
def test_synthesis_stops_up_front_when_the_disk_cannot_hold_it(tmp_path, monkeypatch, counts, free_mb):
    import shutil

    free = int(free_mb * 1e6)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 ** 12, 10 ** 12 - free, free))
    noises, music, rirs = counts
    result = CliRunner().invoke(main, ["--out", str(tmp_path / "aug"), "--synthetic", "--num-noises", str(noises),
                                       "--num-music", str(music), "--num-rirs", str(rirs)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "synthesizing augmentation audio needs about" in result.stderr
    assert f"{free / 1e9:.2f} GB free" in result.stderr
    assert not (tmp_path / "aug" / "wav").exists()
