"""Trial lists: the most trials a set of utterances gives at a target ratio, exact counts or a one-line
error naming that maximum (speaker-folder corpora, the custom recipe's stage 0), a warning when the
lenient sampler (the mini corpus) produces fewer than asked."""
import itertools
import logging

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from local.speaker_folders import DEFAULT_TEST_TRIALS, main, prepare_speaker_folders
from local.trials import check_trials_possible, max_trials, pair_counts, sample_trials, split_count
from svmix.data.datadir import read_trials
from svmix.errors import SvmixError


def _utt2spk(sizes):
    return {f"s{s}-u{u:03d}": f"s{s}" for s, n in enumerate(sizes) for u in range(n)}


def _brute_max(utt2spk, ratio):
    """The largest count whose split fits the available pairs, by trying every count."""
    have_t, have_n = pair_counts(utt2spk)
    fits = [n for n in range(have_t + have_n + 1) if split_count(n, ratio)[0] <= have_t
            and split_count(n, ratio)[1] <= have_n]
    return max(fits)


CASES = [(sizes, ratio) for sizes in ([12] * 8, [2, 2], [1, 1, 1], [5], [3, 1, 7, 2], [4] * 6)
         for ratio in (0.0, 0.1, 0.25, 0.5, 0.9, 1.0)]


@pytest.mark.parametrize("sizes, ratio", CASES)
def test_max_trials_is_the_largest_count_that_fits(sizes, ratio):
    utt2spk = _utt2spk(sizes)
    most = max_trials(utt2spk, ratio)
    assert most == _brute_max(utt2spk, ratio)
    if most:
        trials = sample_trials(utt2spk, most, ratio, np.random.default_rng(0), strict=True)
        assert len(trials) == most and sum(t.label for t in trials) == split_count(most, ratio)[0]
        assert len({(t.enroll, t.test) for t in trials}) == most
    with pytest.raises(SvmixError, match=f"at most {most} trials at this ratio"):
        sample_trials(utt2spk, most + 1, ratio, np.random.default_rng(0), strict=True, where="here")


def test_the_issue_case_8_speakers_of_12_utterances():
    """10000 asked of 96 utterances (4,560 pairs, 528 target): at ratio 0.5 at most 1,057 (528 target,
    529 non-target: round(528.5) is 528)."""
    utt2spk = _utt2spk([12] * 8)
    assert pair_counts(utt2spk) == (528, 4032)
    with pytest.raises(SvmixError) as err:
        check_trials_possible(utt2spk, 10000, 0.5, "data/test/trials", " (hint)")
    assert str(err.value) == ("data/test/trials: 10000 trials at target ratio 0.5 need 5000 target and 5000 "
                              "non-target pairs, but 8 speakers with 96 utterances give 528 target and 4032 "
                              "non-target pairs: at most 1057 trials at this ratio (hint)")


@pytest.fixture
def svmix_warnings():
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("svmix")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


# Too few pairs overall (fewer trials), or too few target pairs (the ratio is not met).
@pytest.mark.parametrize("sizes, ratio, asked", [([12] * 8, 0.5, 10000), ([3, 3], 0.5, 14), ([2] * 20, 0.5, 100)])
def test_lenient_sampling_says_what_it_produced(sizes, ratio, asked, svmix_warnings):
    utt2spk = _utt2spk(sizes)
    trials = sample_trials(utt2spk, asked, ratio, np.random.default_rng(0), where="val")
    assert (len(trials), sum(t.label for t in trials)) != (asked, split_count(asked, ratio)[0])
    (record,) = svmix_warnings
    message = record.getMessage()
    want_target = split_count(asked, ratio)[0]
    assert message.startswith(f"val: asked for {asked} trials ({want_target} target), produced {len(trials)} "
                              f"({sum(t.label for t in trials)} target)")
    assert f"at most {max_trials(utt2spk, ratio)} trials" in message


def test_lenient_sampling_is_silent_when_it_can_give_what_was_asked(svmix_warnings):
    trials = sample_trials(_utt2spk([12] * 8), 1000, 0.5, np.random.default_rng(0))
    assert len(trials) == 1000 and sum(t.label for t in trials) == 500 and svmix_warnings == []


@pytest.mark.parametrize("ratio, count", [(-0.1, 10), (1.5, 10), (0.5, -1)])
def test_bad_requests_are_errors(ratio, count):
    with pytest.raises(SvmixError):
        check_trials_possible(_utt2spk([3, 3]), count, ratio, "x")


def _folders(root, speakers, utts):
    rng = np.random.default_rng(0)
    for s, u in itertools.product(range(speakers), range(utts)):
        path = root / f"spk{s:02d}" / f"u{u:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, 0.1 * rng.standard_normal(800), 16000)
    return root


@pytest.mark.parametrize("num_trials", [1058, 4560, 10000])
def test_speaker_folders_too_many_trials_fail_before_writing(tmp_path, num_trials):
    src = _folders(tmp_path / "src", 12, 12)
    result = CliRunner().invoke(main, ["--src", str(src), "--out", str(tmp_path / "data"), "--test-speakers", "8",
                                       "--num-trials", str(num_trials)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "at most 1057 trials at this ratio" in lines[0]
    assert str(tmp_path / "data" / "test" / "trials") in lines[0] and "--test-speakers" in lines[0]
    assert not (tmp_path / "data").exists()  # nothing written, not even the training set


def test_speaker_folders_exact_count_and_default_cap(tmp_path, svmix_warnings):
    src = _folders(tmp_path / "src", 12, 12)
    prepare_speaker_folders(src, tmp_path / "exact", test_speakers=8, num_trials=1057, target_ratio=0.5, min_utts=2)
    trials = read_trials(tmp_path / "exact" / "test" / "trials")
    assert len(trials) == 1057 and sum(t.label for t in trials) == 528
    assert svmix_warnings == []
    prepare_speaker_folders(src, tmp_path / "default", test_speakers=8, target_ratio=0.5, min_utts=2)
    trials = read_trials(tmp_path / "default" / "test" / "trials")
    assert len(trials) == 1057 and sum(t.label for t in trials) == 528  # the ratio holds
    (record,) = svmix_warnings
    assert f"1057 trials, not the default {DEFAULT_TEST_TRIALS}" in record.getMessage()


def test_speaker_folders_default_when_no_trial_is_possible(tmp_path):
    src = _folders(tmp_path / "src", 4, 1)  # one utterance per speaker: no target pair
    with pytest.raises(SvmixError, match="0 target and 1 non-target pairs; trials need both"):
        prepare_speaker_folders(src, tmp_path / "data", test_speakers=2, min_utts=1)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("args", [["--num-trials", "-5"], ["--target-ratio", "1.5"], ["--test-speakers", "-1"],
                                  ["--min-utts", "0"]])
def test_speaker_folders_range_checks_options(tmp_path, args):
    src = _folders(tmp_path / "src", 3, 2)
    result = CliRunner().invoke(main, ["--src", str(src), "--out", str(tmp_path / "data"), *args])
    assert result.exit_code == 2 and "Invalid value" in result.output
    assert not (tmp_path / "data").exists()
