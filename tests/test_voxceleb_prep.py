"""VoxCeleb preparation on tiny fake trees: VoxCeleb1 + O/E/H trials, VoxCeleb2 wav and m4a (ffmpeg) paths."""
import os
import re
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


# ----------------------------------------------------------------------------- VoxSRC-23, VCMix, VOiCES

def _wav(path, seconds=0.5, f0=150.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.1 * np.sin(2 * np.pi * f0 * np.arange(int(16000 * seconds)) / 16000), 16000, subtype="PCM_16")


def test_vcmix_list_mixes_its_segments_with_voxceleb1(tmp_path):
    from local.voxceleb import prepare_list_set

    vox1 = tmp_path / "voxceleb1"
    utts = _fake_tree(vox1 / "wav")
    vcmix = tmp_path / "vcmix"
    for name in ("abcde_00", "abcde_01", "fghij_00"):
        _wav(vcmix / "voxconverse_test_SV" / f"{name}.wav")
    (vcmix / "vcmix_test.txt").write_text(
        f"1 voxconverse_test_SV/abcde_00.wav voxconverse_test_SV/abcde_01.wav\n"
        f"0 voxconverse_test_SV/abcde_00.wav voxconverse_test_SV/fghij_00.wav\n"
        f"1 {utts[0]}.wav {utts[1]}.wav\n0 {utts[0]}.wav voxconverse_test_SV/fghij_00.wav\n")
    out = tmp_path / "data/vcmix"
    result = CliRunner().invoke(cli, ["list", "--name", "vcmix", "--src", str(vcmix), "--audio", str(vox1),
                                      "--out", str(out), "--nj", "1"])
    assert result.exit_code == 0, result.output
    assert validate_datadir(out, deep=True).ok
    data = DataDir(out)
    assert sorted(data.wav_scp) == sorted(["voxconverse_test_SV/abcde_00", "voxconverse_test_SV/abcde_01",
                                           "voxconverse_test_SV/fghij_00", utts[0], utts[1]])
    trials = read_trials(out / "trials")
    assert [(t.enroll, t.label) for t in trials] == [("voxconverse_test_SV/abcde_00", 1),
                                                     ("voxconverse_test_SV/abcde_00", 0), (utts[0], 1), (utts[0], 0)]
    # speakers: the groups target trials link (the list names none)
    spk = data.utt2spk
    assert spk["voxconverse_test_SV/abcde_00"] == spk["voxconverse_test_SV/abcde_01"] != spk["voxconverse_test_SV/fghij_00"]
    assert spk[utts[0]] == spk[utts[1]] != spk["voxconverse_test_SV/abcde_00"]
    assert len(set(spk.values())) == 3


def test_voxsrc23_list_found_below_the_folder_and_names_resolved_by_path(tmp_path):
    from local.voxceleb import prepare_list_set

    src = tmp_path / "voxsrc23"
    for name in ("a/1", "a/2", "b/1"):
        _wav(src / "data" / f"{name}.wav")
    (src / "lists").mkdir()
    (src / "lists/VoxSRC2023_val.txt").write_text("1 ../data/a/1.wav ../data/a/2.wav\n0 ../data/a/1.wav ../data/b/1.wav\n")
    with pytest.raises(SvmixError, match=r"VoxSRC2023_val.txt:1: audio '../data/a/1.wav' not found"):
        prepare_list_set("voxsrc23", src, tmp_path / "bad")  # ids must be paths below a root, not outside
    (src / "lists/VoxSRC2023_val.txt").write_text("1 a/1.wav a/2.wav\n0 a/1.wav b/1\n")
    prepare_list_set("voxsrc23", src, tmp_path / "out", audio=[src / "data"], nj=1)
    assert sorted(DataDir(tmp_path / "out").wav_scp) == ["a/1", "a/2", "b/1"]
    assert [t.label for t in read_trials(tmp_path / "out/trials")] == [1, 0]


@pytest.mark.parametrize("text, message", [
    ("1 a.wav\n", r"VoxSRC2023_val.txt:1: expected '1\|0 <enroll>.wav <test>.wav'"),
    ("2 a.wav a.wav\n", r":1: expected"),
    ("1 a.wav missing.wav\n", r":1: audio 'missing.wav' not found below .*expected the VoxSRC-23 validation folder"),
    ("1 a.wav a.wav\n", "only targets"),
    ("\n", "no trials"),
])
def test_list_set_errors_name_file_and_line(tmp_path, text, message):
    from local.voxceleb import prepare_list_set

    src = tmp_path / "voxsrc23"
    _wav(src / "a.wav")
    (src / "VoxSRC2023_val.txt").write_text(text)
    with pytest.raises(SvmixError, match=message):
        prepare_list_set("voxsrc23", src, tmp_path / "out")
    assert not (tmp_path / "out/trials").exists()


def test_a_set_without_its_list_says_what_layout_it_expects(tmp_path):
    (tmp_path / "vcmix").mkdir()
    result = CliRunner().invoke(cli, ["list", "--name", "vcmix", "--src", str(tmp_path / "vcmix"), "--out",
                                      str(tmp_path / "o")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1
    assert "no vcmix_test.txt" in lines[0] and "expected the VCMix folder" in lines[0] and "--audio VOXCELEB1" in lines[0]


def _voices_tree(root, part="dev"):
    names = {"m1": "Lab41-SRI-VOiCES-rm1-none-sp0083-ch003054-sg0005-mc01-stu-clo-dg110",
             "t1": "Lab41-SRI-VOiCES-rm2-babb-sp0083-ch003054-sg0006-mc02-stu-far-dg080",
             "t2": "Lab41-SRI-VOiCES-rm2-musi-sp0101-ch012345-sg0001-mc03-stu-mid-dg020",
             "m2": "Lab41-SRI-VOiCES-rm1-none-sp0101-ch012345-sg0002-mc01-stu-clo-dg110"}
    for n in names.values():
        _wav(root / "Speaker_Recognition" / f"sid_{part}" / f"{n}.wav")
    lists = root / "Speaker_Recognition" / f"sid_{part}_lists_and_keys"
    lists.mkdir(parents=True)
    (lists / f"{part}-enroll.lst").write_text(f"1 sid_{part}/{names['m1']}.wav\n2 sid_{part}/{names['m2']}.wav\n")
    (lists / f"{part}-trial-keys.lst").write_text(
        f"1 sid_{part}/{names['t1']}.wav tgt\n1 sid_{part}/{names['t2']}.wav imp\n2 sid_{part}/{names['t2']}.wav tgt\n")
    return names, lists


def test_voices_enrolment_and_keys(tmp_path):
    names, _ = _voices_tree(tmp_path / "VOiCES")
    out = tmp_path / "data/voices"
    result = CliRunner().invoke(cli, ["voices", "--src", str(tmp_path / "VOiCES"), "--out", str(out), "--nj", "1"])
    assert result.exit_code == 0, result.output
    assert validate_datadir(out, deep=True).ok
    trials = read_trials(out / "trials")
    assert [(t.enroll, t.test, t.label) for t in trials] == [
        (f"sid_dev/{names['m1']}", f"sid_dev/{names['t1']}", 1), (f"sid_dev/{names['m1']}", f"sid_dev/{names['t2']}", 0),
        (f"sid_dev/{names['m2']}", f"sid_dev/{names['t2']}", 1)]
    spk = DataDir(out).utt2spk
    assert len(set(spk.values())) == 2 and spk[f"sid_dev/{names['m1']}"] == spk[f"sid_dev/{names['t1']}"]


@pytest.mark.parametrize("file, text, message", [
    ("dev-enroll.lst", "1\n", r"dev-enroll.lst:1: expected '<model> <file>'"),
    ("dev-enroll.lst", "1 sid_dev/x.wav\n", r"dev-enroll.lst:1: audio 'sid_dev/x.wav' not found"),
    ("dev-trial-keys.lst", "1 sid_dev/x.wav maybe\n", r"dev-trial-keys.lst:1: expected '<model> <test file> tgt\|imp'"),
    ("dev-trial-keys.lst", "9 sid_dev/x.wav tgt\n", r"dev-trial-keys.lst:1: model '9' is not in"),
])
def test_voices_errors_name_file_and_line(tmp_path, file, text, message):
    from local.voxceleb import prepare_voices

    _, lists = _voices_tree(tmp_path / "VOiCES")
    (lists / file).write_text(text)
    with pytest.raises(SvmixError, match=message):
        prepare_voices(tmp_path / "VOiCES", tmp_path / "out")
    with pytest.raises(SvmixError, match="no eval-enroll.lst found .*expected the VOiCES 2019 challenge release"):
        prepare_voices(tmp_path / "VOiCES", tmp_path / "out", part="eval")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["voxsrc23", "dev-enroll.lst", "dev-trial-keys.lst"])
def test_a_list_that_is_not_utf8_is_a_one_line_error_naming_its_line(tmp_path, kind, seed):
    """Generated cases: a byte that is not UTF-8 on a random line of each list kind."""
    from local.voxceleb import prepare_list_set, prepare_voices

    rng = np.random.default_rng(seed)
    if kind == "voxsrc23":
        src = tmp_path / "voxsrc23"
        _wav(src / "a.wav")
        _wav(src / "b.wav")
        path, lines = src / "VoxSRC2023_val.txt", ["1 a.wav a.wav", "0 a.wav b.wav", "1 b.wav b.wav"]
        run = lambda: prepare_list_set("voxsrc23", src, tmp_path / "out")  # noqa: E731
    else:
        _, lists = _voices_tree(tmp_path / "VOiCES")
        path = lists / kind
        lines = path.read_text().splitlines()
        run = lambda: prepare_voices(tmp_path / "VOiCES", tmp_path / "out")  # noqa: E731
    bad = int(rng.integers(len(lines)))
    data = [line.encode() for line in lines]
    cut = int(rng.integers(len(data[bad]) + 1))
    data[bad] = data[bad][:cut] + bytes([int(rng.integers(0x80, 0x100))]) + data[bad][cut:]
    path.write_bytes(b"\n".join(data) + b"\n")
    with pytest.raises(SvmixError, match=rf"{re.escape(path.name)}:{bad + 1}: not UTF-8 text"):
        run()
    assert not (tmp_path / "out/trials").exists()
