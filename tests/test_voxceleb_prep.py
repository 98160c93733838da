"""VoxCeleb preparation on tiny fake trees: VoxCeleb1 + O/E/H trials, VoxCeleb2 wav and m4a (ffmpeg) paths."""
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from local.voxceleb import cli, find_ffmpeg, prepare_voxceleb1, prepare_voxceleb2
from svmix.data.datadir import DataDir, read_trials
from svmix.data.validate import validate_datadir
from svmix.errors import SvmixError

SPEAKERS = {"id10270": ["x6uYqmx31kE", "8jEAjG6SegY"], "id10271": ["1gtz-CUIygI"], "id10272": ["abc", "d-e_f"]}


def _fake_tree(root, suffix="wav"):
    utts = []
    for s, (spk, videos) in enumerate(SPEAKERS.items()):
        for video in videos:
            for n in (1, 2):
                path = root / spk / video / f"{n:05d}.{suffix}"
                path.parent.mkdir(parents=True, exist_ok=True)
                wav = 0.1 * np.sin(2 * np.pi * (100 + 50 * s) * np.arange(8000 + 800 * n) / 16000)
                sf.write(path, wav, 16000, format="WAV", subtype="PCM_16")
                utts.append(f"{spk}/{video}/{n:05d}")
    return utts


def _write_lists(folder, utts):
    lists = {"veri_test2.txt": utts[:6], "list_test_all2.txt": utts, "list_test_hard2.txt": utts[4:]}
    for name, chosen in lists.items():
        with open(folder / name, "w") as f:
            for a, b in zip(chosen, chosen[1:]):
                f.write(f"{int(a.split('/')[0] == b.split('/')[0])} {a}.wav {b}.wav\n")
    return {k: len(v) - 1 for k, v in zip("oeh", lists.values())}


def test_voxceleb1_with_trial_lists(tmp_path):
    src = tmp_path / "voxceleb1"
    utts = _fake_tree(src / "wav")
    expected = _write_lists(src, utts)
    out = tmp_path / "data" / "voxceleb1"
    result = CliRunner().invoke(cli, ["vox1", "--src", str(src), "--out", str(out), "--nj", "2"])
    assert result.exit_code == 0, result.output
    report = validate_datadir(out, deep=True)
    assert report.ok, [str(p) for p in report.problems]
    data = DataDir(out)
    assert sorted(data.wav_scp) == sorted(utts)
    assert data.utt2spk["id10272/d-e_f/00002"] == "id10272"
    assert abs(data.utt2dur["id10270/x6uYqmx31kE/00001"] - 0.55) < 1e-3
    for name, count in expected.items():
        kaldi = read_trials(out / f"trials_{name}")
        vox = read_trials(out / f"trials_{name}.voxceleb")
        assert len(kaldi) == count
        assert [(t.enroll, t.test, t.label) for t in kaldi] == [(t.enroll, t.test, t.label) for t in vox]
        assert all(t.enroll in data.wav_scp and t.test in data.wav_scp for t in kaldi)
        assert (out / f"trials_{name}").read_text().split("\n")[0].split()[2] in ("target", "nontarget")
        assert (out / f"trials_{name}.voxceleb").read_text()[0] in "01"
    assert (out / "trials").read_text() == (out / "trials_o").read_text()
    assert sum(t.label for t in read_trials(out / "trials_e")) > 0


def test_voxceleb1_split_parts_missing_list_and_bad_trial(tmp_path):
    dev, test = tmp_path / "vox1_dev", tmp_path / "vox1_test"
    utts = _fake_tree(dev / "wav")
    (test / "wav").mkdir(parents=True)
    shutil.move(str(dev / "wav" / "id10272"), str(test / "wav" / "id10272"))  # a separate "test" part
    lists = tmp_path / "lists"
    lists.mkdir()
    _write_lists(lists, utts)
    (lists / "list_test_hard2.txt").unlink()
    out = tmp_path / "v1"
    prepare_voxceleb1([dev, test], out, trials_dir=lists)
    assert len(DataDir(out).wav_scp) == len(utts)
    assert (out / "trials_o").is_file() and (out / "trials_e").is_file() and not (out / "trials_h").exists()
    with pytest.raises(SvmixError, match=r"list_test_all2.txt:\d+: utterance 'id10272/"):
        prepare_voxceleb1([dev], tmp_path / "v1b", trials_dir=lists, lists="e")
    with open(lists / "veri_test2.txt", "a") as f:
        f.write("yes id10270/x6uYqmx31kE/00001.wav\n")
    with pytest.raises(SvmixError, match=r"veri_test2.txt:6: expected"):
        prepare_voxceleb1([dev, test], tmp_path / "v1c", trials_dir=lists, lists="o")


def test_voxceleb2_converted_wav_tree(tmp_path):
    src = tmp_path / "vox2"
    utts = _fake_tree(src / "dev" / "wav")
    out = tmp_path / "data" / "voxceleb2_dev"
    prepare_voxceleb2(src, out)
    assert validate_datadir(out).ok
    assert sorted(DataDir(out).wav_scp) == sorted(utts)
    assert len(DataDir(out).spk2utt) == 3


def _fake_ffmpeg(bin_dir):
    """An 'ffmpeg' that copies its input (our fake m4a files hold wav data) to its last argument."""
    bin_dir.mkdir()
    script = bin_dir / "ffmpeg"
    script.write_text(f"#!{sys.executable}\nimport shutil, sys\na = sys.argv\n"
                      "shutil.copy(a[a.index('-i') + 1], a[-1])\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_voxceleb2_m4a_conversion_pipeline(tmp_path, monkeypatch):
    src = tmp_path / "vox2"
    utts = _fake_tree(src / "dev" / "aac", suffix="m4a")
    _fake_ffmpeg(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    out, wav_dir = tmp_path / "data" / "voxceleb2_dev", tmp_path / "vox2_wav"
    result = CliRunner().invoke(cli, ["vox2", "--src", str(src), "--out", str(out), "--wav-dir", str(wav_dir),
                                      "--nj", "3"])
    assert result.exit_code == 0, result.output
    wav_scp = DataDir(out).wav_scp
    assert sorted(wav_scp) == sorted(utts)
    assert all(p.startswith(str(wav_dir)) and p.endswith(".wav") for p in wav_scp.values())
    assert validate_datadir(out, deep=True).ok
    assert not list(wav_dir.rglob(".*.tmp.wav"))
    # resumable: converted files are not converted again
    mtimes = {p: p.stat().st_mtime_ns for p in wav_dir.rglob("*.wav")}
    prepare_voxceleb2(src, out, wav_dir)
    assert mtimes == {p: p.stat().st_mtime_ns for p in wav_dir.rglob("*.wav")}


def test_voxceleb2_without_ffmpeg_is_a_clear_one_line_error(tmp_path, monkeypatch):
    src = tmp_path / "vox2"
    _fake_tree(src / "dev" / "aac", suffix="m4a")
    (tmp_path / "empty_bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty_bin"))
    with pytest.raises(SvmixError, match="install ffmpeg"):
        find_ffmpeg()
    result = CliRunner().invoke(cli, ["vox2", "--src", str(src), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "ffmpeg not found" in lines[0] and "install ffmpeg" in lines[0]


def test_voxceleb2_no_files_found(tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(SvmixError, match="no VoxCeleb2 files found"):
        prepare_voxceleb2(tmp_path / "nothing", tmp_path / "o")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_voxceleb2_real_m4a(tmp_path):
    src = tmp_path / "vox2"
    utts = _fake_tree(src / "dev" / "aac", suffix="wav")
    for utt in utts:
        wav = src / "dev" / "aac" / f"{utt}.wav"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(wav), "-c:a", "aac",
                        str(wav.with_suffix(".m4a"))], check=True)
        wav.unlink()
    out = tmp_path / "data"
    prepare_voxceleb2(src, out, tmp_path / "wav", nj=2)
    assert validate_datadir(out, deep=True).ok
    assert sf.info(DataDir(out).wav_scp[utts[0]]).samplerate == 16000
