"""The evaluation segmentation and scoring rule (docs/method.md §Evaluation)."""
import numpy as np
import pytest

from svmix.inference.segments import (distinct_segments, mean_embedding, segment_pair_score, segment_starts,
                                      segment_waveform)

S, N_SEG = 48000, 10


def test_short_utterance_is_wrap_padded_and_repeated():
    wav = np.arange(1, 20001, dtype=np.float32)  # 1.25 s
    segs = segment_waveform(wav, S, N_SEG)
    assert segs.shape == (N_SEG, S) and segs.dtype == np.float32
    expected = np.concatenate([wav, wav, wav[:8000]])  # repeat the waveform until 48,000 samples
    for row in segs:
        np.testing.assert_array_equal(row, expected)


def test_exactly_one_segment_long_is_used_as_is():
    wav = np.random.default_rng(0).standard_normal(S).astype(np.float32)
    segs = segment_waveform(wav, S, N_SEG)
    assert all(np.array_equal(row, wav) for row in segs)


def test_long_utterance_uses_linspace_starts():
    wav = np.arange(100000, dtype=np.float32)
    starts = [0, 5777, 11555, 17333, 23111, 28888, 34666, 40444, 46222, 52000]  # int(linspace(0, N-S, 10))
    assert segment_starts(len(wav), S, N_SEG).tolist() == starts
    segs = segment_waveform(wav, S, N_SEG)
    assert segs.shape == (N_SEG, S)
    for row, start in zip(segs, starts):
        np.testing.assert_array_equal(row, wav[start:start + S])


@pytest.mark.parametrize("n", [400, 30000, 48000, 48005, 100000])
def test_distinct_segments_rebuild_the_segments(n):
    wav = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    unique, index = distinct_segments(wav, S, N_SEG)
    np.testing.assert_array_equal(unique[index], segment_waveform(wav, S, N_SEG))
    assert len(unique) == len(set(segment_starts(n, S, N_SEG).tolist()))
    if n <= S:
        assert len(unique) == 1


def test_segment_pair_score_is_mean_of_all_pair_cosines():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((10, 8)), rng.standard_normal((7, 8))
    cos = [x @ y / np.linalg.norm(x) / np.linalg.norm(y) for x in a for y in b]
    assert segment_pair_score(a, b) == pytest.approx(np.mean(cos), abs=1e-12)
    assert segment_pair_score(3 * a, 0.5 * b) == pytest.approx(np.mean(cos), abs=1e-12)
    x, y = a[0], b[0]
    assert segment_pair_score(x, y) == pytest.approx(x @ y / np.linalg.norm(x) / np.linalg.norm(y))
    assert segment_pair_score(a[:1], a[:1]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        segment_pair_score(a, rng.standard_normal((3, 5)))


def test_mean_embedding_is_normalised_mean_of_normalised_rows():
    rows = np.array([[3.0, 0.0], [0.0, 0.5]])
    np.testing.assert_allclose(mean_embedding(rows), [2 ** -0.5, 2 ** -0.5], rtol=1e-6)
