"""Mini world: voice generator output, the shipped voice list's splits and sizes, a tiny real build."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("espeakng_loader")

from local.espeak_synth import (MAX_OVERLAY_VARIANTS, make_variant_overlay, make_variant_overlays,  # noqa: E402
                                map_in_fresh_processes, wheel_variant_text)
from local.make_mini_world import (DEFAULT_VOICES, SPLITS, MiniWorldConfig, build_mini_world,  # noqa: E402
                                   load_voices, plan_jobs, plan_trials, split_voices)
from local import make_mini_world  # noqa: E402
from local.make_mini_corpus import planned_utt2spk  # noqa: E402
from local.voices import (BASE_VARIANTS, COPIED_KEYWORDS, NUM_FORMANTS, UNSTABLE_BASES, WRITTEN_KEYWORDS,  # noqa: E402
                          base_voice, definitions_digest, generate_candidates, parse_variant)
from svmix.data.datadir import DataDir, read_trials  # noqa: E402
from svmix.data.validate import validate_datadir  # noqa: E402
from svmix.errors import SvmixError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(num_test_speakers=2, test_utts_per_speaker=2, num_test_trials=6, num_val_speakers=2,
            val_utts_per_speaker=2, num_val_trials=2, num_train_speakers=2, utts_per_speaker=2,
            pool_utts_per_speaker=1)


def write_voice_list(path, voices, seed=0, candidates=0):
    path.write_text(json.dumps({"generator_seed": seed, "candidates": candidates, "kept": [v.name for v in voices],
                                "digest": definitions_digest(voices)}))
    return path


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_generated_variant_files_are_valid(seed):
    voices = generate_candidates(seed, 3 * len(BASE_VARIANTS))
    assert len({v.name for v in voices}) == len(voices) and len({v.text for v in voices}) == len(voices)
    assert {v.base for v in voices} == set(BASE_VARIANTS)
    for voice in voices:
        lines = voice.text.splitlines()
        assert lines[:2] == ["language variant", f"name {voice.name}"]
        formants = []
        for line in lines[2:]:
            key, *values = line.split()
            numbers = [int(v) for v in values]
            if key in WRITTEN_KEYWORDS:
                low_n, high_n, low, high = WRITTEN_KEYWORDS[key]
                assert low_n <= len(numbers) <= high_n and all(low <= x <= high for x in numbers), line
            else:
                assert key in COPIED_KEYWORDS, line
            if key == "formant":
                formants.append(numbers[0])
                assert 5 <= numbers[1] <= 400 and 0 <= numbers[2] <= 300 and 20 <= numbers[3] <= 400
            if key == "pitch":
                assert 40 <= numbers[0] < numbers[1]
        assert sorted(formants) == list(range(NUM_FORMANTS))
        assert parse_variant(voice.text)["pitch"] == dict(voice.settings)["pitch"]
        low, high = voice.rates
        assert 100 <= low < voice.rate < high <= 240
    assert generate_candidates(seed, 5) == voices[:5]  # a candidate depends only on seed and index


def _speak_in_fresh_process(data_path, names):
    """Audio of one sentence per ``en-us+NAME`` voice (plain ``en-us`` for ""), from one new process."""
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]);"
            "from local.espeak_synth import EspeakSynthesizer as S; s = S.get(sys.argv[2] or None);"
            "np.save(sys.stdout.buffer, np.stack([np.pad(s.synthesize('the brown dog opened the gate',"
            " 'en-us' + ('+' + n if n else '')), (0, 64000))[:64000] for n in sys.argv[3:]]))")
    result = subprocess.run([sys.executable, "-c", code, str(ROOT), data_path, *names], check=True,
                            capture_output=True)
    import io
    return np.load(io.BytesIO(result.stdout))


def test_generated_variants_are_spoken(tmp_path):
    """libespeak-ng silently ignores a variant it cannot find, so check each one changes the audio."""
    voices = [base_voice("Hugo")] + generate_candidates(7, 2)
    assert voices[0].text == wheel_variant_text("Hugo")
    paths = make_variant_overlays(tmp_path / "overlay", {v.name: v.text for v in voices})
    assert len(set(paths.values())) == 1
    plain, *spoken = _speak_in_fresh_process(paths[voices[0].name], ["", *(v.name for v in voices)])
    for i, audio in enumerate(spoken):
        assert not np.array_equal(audio, plain)
        assert not any(np.array_equal(audio, other) for other in spoken[i + 1:])


@pytest.mark.parametrize("names", [[""], ["a/b"], ["a+b"], ["x" * 40]])
def test_overlay_rejects_unusable_names(tmp_path, names):
    with pytest.raises(SvmixError, match="variant name"):
        make_variant_overlay(tmp_path / "o", {n: "language variant\n" for n in names})


def test_overlays_split_large_sets(tmp_path):
    variants = {f"v{i}": "language variant\n" for i in range(MAX_OVERLAY_VARIANTS + 3)}
    with pytest.raises(SvmixError, match="at most"):
        make_variant_overlay(tmp_path / "one", variants)
    paths = make_variant_overlays(tmp_path / "many", variants)
    assert len(set(paths.values())) == 2 and set(paths) == set(variants)
    for name, path in paths.items():
        assert (Path(path) / "voices" / "!v" / name).is_file()


def test_shipped_voice_list_splits_and_sizes(tmp_path):
    voices, info = load_voices(DEFAULT_VOICES)
    assert len(voices) >= 200 and len({v.name for v in voices}) == len(voices)
    assert info["measured"]["kept"] == len(voices)
    assert not [v.name for v in voices if v.base in UNSTABLE_BASES and not v.verbatim]  # they crash the library
    config = MiniWorldConfig()
    splits = split_voices(voices, config, info["generator_seed"])
    names = {split: {v.name for v in splits[split]} for split in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            assert not names[a] & names[b], (a, b)
    assert set().union(*names.values()) == {v.name for v in voices}
    assert len(names["test"]) >= 40 and len(names["val"]) == config.num_val_speakers
    assert len(names["train"]) == config.num_train_speakers and len(names["pool"]) >= 40
    jobs = plan_jobs(splits, config, tmp_path, {v.name: "unused" for v in voices}, ("test", "val", "train", "pool"))
    for split, per_spk in (("test", 20), ("val", 10), ("train", 24), ("pool", 40)):
        utt2spk = planned_utt2spk(jobs, split)
        assert set(utt2spk.values()) == names[split]
        assert min(np.unique(list(utt2spk.values()), return_counts=True)[1]) == per_spk
    trials = plan_trials(jobs, config)
    test_utt2spk = planned_utt2spk(jobs, "test")
    assert len(trials["test"]) >= 20000 and trials["test_noisy"] == trials["test"]
    assert all(t.label == (test_utt2spk[t.enroll] == test_utt2spk[t.test]) for t in trials["test"])
    assert sum(t.label for t in trials["test"]) == round(config.num_test_trials * config.target_ratio)


def test_split_sizes_are_checked():
    voices = [base_voice(b) for b in BASE_VARIANTS[:6]]
    with pytest.raises(SvmixError, match="only 6 distinct voices"):
        split_voices(voices, MiniWorldConfig(num_test_speakers=3, num_val_speakers=2, num_train_speakers=2), 0)
    with pytest.raises(SvmixError, match="pretraining pool"):
        split_voices(voices, MiniWorldConfig(num_test_speakers=2, num_val_speakers=2, num_train_speakers=1,
                                             num_pool_speakers=2), 0)


@pytest.mark.parametrize("change", ["digest", "unknown", "missing-key", "no-file"])
def test_bad_voice_lists_fail_in_one_line(tmp_path, change):
    voices = [base_voice("Hugo")] + generate_candidates(0, 2)
    path = write_voice_list(tmp_path / "voices.json", voices, candidates=2)
    info = json.loads(path.read_text())
    if change == "digest":
        info["digest"] = "0" * 16
    elif change == "unknown":
        info["kept"].append("g000x0009")  # index 9 is not among 2 candidates
    elif change == "missing-key":
        del info["kept"]
    path.write_text(json.dumps(info))
    if change == "no-file":
        path.unlink()
    with pytest.raises(SvmixError):
        load_voices(path)
    result = subprocess.run([sys.executable, str(ROOT / "local/make_mini_world.py"), "--out", str(tmp_path / "w"),
                             "--voices", str(path)], capture_output=True, text=True)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("make_mini_world.py: error: ") and str(path) in lines[0]
    assert not (tmp_path / "w" / "train").exists()


def _audio(datadir: Path):
    return {utt: sf.read(path, dtype="int16")[0] for utt, path in DataDir(datadir).wav_scp.items()}


def test_tiny_build_counts_disjoint_deterministic(tmp_path):
    voices = [base_voice(b) for b in ("Hugo", "klatt4", "Annie")] + generate_candidates(0, 5)
    voice_list = write_voice_list(tmp_path / "voices.json", voices, candidates=5)
    a, b = tmp_path / "a", tmp_path / "b"
    assert build_mini_world(a, MiniWorldConfig(seed=3, **TINY), nj=2, with_pool=True, voices_file=voice_list) == \
        ["main", "pool"]
    assert build_mini_world(b, MiniWorldConfig(seed=3, **TINY), nj=1, voices_file=voice_list) == ["main"]
    assert build_mini_world(b, MiniWorldConfig(seed=3, **TINY), nj=1, with_pool=True, voices_file=voice_list) == \
        ["pool"]  # the pool on its own, later: the same as built together
    speakers = {}
    for subset in ("train", "val", "val_clean", "test", "test_noisy", "pool"):
        report = validate_datadir(a / subset, deep=True)
        assert report.ok, [str(p) for p in report.problems]
        speakers[subset] = set(DataDir(a / subset).spk2utt)
        for name in ("utt2spk", "spk2utt", "utt2dur"):
            assert (a / subset / name).read_bytes() == (b / subset / name).read_bytes()
        audio_a, audio_b = _audio(a / subset), _audio(b / subset)
        assert list(audio_a) == list(audio_b)
        for utt in audio_a:
            np.testing.assert_array_equal(audio_a[utt], audio_b[utt])
            assert 2.0 <= len(audio_a[utt]) / 16000 <= 6.0
    assert {k: len(v) for k, v in speakers.items()} == {"train": 2, "val": 2, "val_clean": 2, "test": 2,
                                                        "test_noisy": 2, "pool": 2}
    assert speakers["test"] == speakers["test_noisy"] and speakers["val"] == speakers["val_clean"]
    groups = [speakers[s] for s in ("train", "val", "test", "pool")]
    assert len(set().union(*groups)) == sum(len(g) for g in groups) == len(voices)
    for subset in ("val", "val_clean", "test", "test_noisy"):
        assert (a / subset / "trials").read_bytes() == (b / subset / "trials").read_bytes()
    for clean_set, noisy_set in (("test", "test_noisy"), ("val_clean", "val")):
        assert read_trials(a / clean_set / "trials") == read_trials(a / noisy_set / "trials")
        assert (a / clean_set / "utt2dur").read_bytes() == (a / noisy_set / "utt2dur").read_bytes()
        clean, noisy = _audio(a / clean_set), _audio(a / noisy_set)
        assert list(clean) == list(noisy) and not any(np.array_equal(clean[u], noisy[u]) for u in clean)
    # complete: nothing is redone
    mtime = (a / "train" / "wav.scp").stat().st_mtime_ns
    assert build_mini_world(a, MiniWorldConfig(seed=3, **TINY), nj=2, with_pool=True, voices_file=voice_list) == []
    assert (a / "train" / "wav.scp").stat().st_mtime_ns == mtime
    # another seed: same speakers, other audio
    c = tmp_path / "c"
    build_mini_world(c, MiniWorldConfig(seed=4, **TINY), nj=2, voices_file=voice_list)
    assert set(DataDir(c / "train").spk2utt) == speakers["train"] and not (c / "pool").exists()
    other = _audio(c / "train")
    assert list(other) == list(_audio(a / "train"))
    assert not any(np.array_equal(other[u], audio) for u, audio in _audio(a / "train").items())
    # no session channels: the same sentences and durations; the pool was clean all along
    d = tmp_path / "d"
    build_mini_world(d, MiniWorldConfig(seed=3, channel_db=0.0, **TINY), nj=2, with_pool=True, voices_file=voice_list)
    for subset in ("train", "val", "test", "test_noisy"):
        assert (d / subset / "utt2dur").read_bytes() == (a / subset / "utt2dur").read_bytes()
        plain, coloured = _audio(d / subset), _audio(a / subset)
        assert not any(np.array_equal(plain[u], coloured[u]) for u in plain)
    plain, coloured = _audio(d / "pool"), _audio(a / "pool")
    assert all(np.array_equal(plain[u], coloured[u]) for u in plain)


def test_clean_copy_leaves_the_noisy_audio_unchanged(tmp_path, monkeypatch):
    """Writing val_clean draws nothing from the speaker's streams: without it, val is the same audio."""
    voices = [base_voice(b) for b in ("Hugo", "klatt4")] + generate_candidates(0, 4)
    voice_list = write_voice_list(tmp_path / "voices.json", voices, candidates=4)
    config = MiniWorldConfig(seed=5, **TINY)
    build_mini_world(tmp_path / "both", config, nj=2, voices_file=voice_list)
    outputs = dict(make_mini_world.OUTPUTS)
    outputs["val"] = {"noisy": "val"}
    outputs["test"] = {"noisy": "test_noisy"}
    monkeypatch.setattr(make_mini_world, "OUTPUTS", outputs)
    build_mini_world(tmp_path / "noisy", config, nj=2, voices_file=voice_list)
    assert not (tmp_path / "noisy" / "val_clean").exists() and not (tmp_path / "noisy" / "test").exists()
    for subset in ("train", "val", "test_noisy"):
        both, noisy = _audio(tmp_path / "both" / subset), _audio(tmp_path / "noisy" / subset)
        assert list(both) == list(noisy) and all(np.array_equal(both[u], noisy[u]) for u in both)


def _square_or_fail(x):
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # dies without a result, as on a libespeak-ng crash
    if x == 4:
        os._exit(7)
    if x == 5:
        raise SvmixError("item five is bad")
    return x * x, os.getpid()


@pytest.mark.parametrize("nj", [1, 3])
def test_fresh_processes_keep_order_and_report_crashes(nj):
    out = map_in_fresh_processes(_square_or_fail, [0, 1, 2, 6], nj, str, desc="t")
    assert [r[0] for r in out] == [0, 1, 4, 36]
    assert len({r[1] for r in out} | {os.getpid()}) == 5  # one new process per item
    for bad, message in ((3, "item 3: synthesis process died"), (4, r"item 4: .*exit code 7"), (5, "item five")):
        with pytest.raises(SvmixError, match=message):
            map_in_fresh_processes(_square_or_fail, [0, bad, 1], nj, lambda x: f"item {x}", desc="t")
    out = map_in_fresh_processes(_square_or_fail, [3, 2, 4], nj, str, desc="t", allow_crash=True)
    assert out[0] is None and out[1][0] == 4 and out[2] is None
