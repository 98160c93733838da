"""Teacher-cache frame codecs: round trips, error bounds, sizes, training, bad input."""
import numpy as np
import pytest

from svmix.cache.codecs import CODECS, build_codec, distortion
from svmix.errors import SvmixError


def teacher_like(rng, n, hidden, clusters=64):
    """Vectors with the structure of SSL frames: a few directions shared by many frames, plus noise
    and one large-magnitude dimension."""
    centers = rng.standard_normal((clusters, hidden)) * 2.0
    x = centers[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, hidden))
    x[:, 3] *= 20.0
    return x.astype(np.float32)


@pytest.mark.parametrize("name", ["float16", "int8"])
@pytest.mark.parametrize("hidden", [1, 7, 256])
def test_untrained_codecs_round_trip_within_their_bound(name, hidden):
    rng = np.random.default_rng(0)
    x = teacher_like(rng, 500, hidden, clusters=8) if hidden > 3 else rng.standard_normal((500, hidden)).astype(np.float32)
    x[0] = 0.0  # an all-zero vector survives too
    codec = build_codec(name, hidden)
    rows = codec.encode(x)
    assert rows.dtype == np.uint8 and rows.shape == (500, codec.row_bytes)
    y = codec.decode(rows)
    assert y.dtype == np.float32 and y.shape == x.shape and np.all(y[0] == 0)
    if name == "float16":
        assert np.array_equal(y, x.astype(np.float16).astype(np.float32))
    else:
        bound = np.abs(x).max(axis=1, keepdims=True) / 127.0 / 2.0
        assert np.all(np.abs(y - x) <= bound * (1 + 1e-5) + 1e-12)


def test_sizes_against_float16():
    for hidden, subspaces in ((1024, 32), (256, 16)):
        f16 = build_codec("float16", hidden).row_bytes
        assert f16 / build_codec("int8", hidden).row_bytes > 1.9
        assert f16 / build_codec("pq", hidden, subspaces=subspaces).row_bytes >= 30


def test_product_quantizer_keeps_teacher_like_frames_close_and_is_seeded():
    rng = np.random.default_rng(1)
    frames = teacher_like(rng, 4000, 64)
    train, test = frames[:3000], frames[3000:]  # held-out frames of the same "teacher"
    pq = build_codec("pq", 64, subspaces=8)
    pq.fit(train, seed=3)
    d = distortion(test, pq.decode(pq.encode(test)))
    assert d["mean_cosine"] > 0.95 and d["relative_mse"] < 0.1
    again = build_codec("pq", 64, subspaces=8)
    again.fit(train, seed=3)
    assert np.array_equal(again.codebooks, pq.codebooks)
    # Codebooks saved and loaded decode identically.
    loaded = build_codec("pq", 64, subspaces=8)
    loaded.load_state(pq.state())
    rows = pq.encode(test)
    assert np.array_equal(loaded.decode(rows), pq.decode(rows))


def test_encode_picks_the_nearest_centroid():
    rng = np.random.default_rng(2)
    pq = build_codec("pq", 8, subspaces=2)
    frames = teacher_like(rng, 1050, 8, clusters=16)
    pq.fit(frames[:1000], seed=0)
    x = frames[1000:]
    z = ((x - pq.mean) / pq.std).reshape(50, 2, 4)
    brute = np.stack([np.argmin(((z[:, m, None, :] - pq.codebooks[m][None]) ** 2).sum(-1), axis=1)
                      for m in range(2)], axis=1)
    assert np.array_equal(pq.encode(x), brute.astype(np.uint8))


def test_distortion_figures():
    x = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert distortion(x, x) == {"relative_mse": 0.0, "mean_cosine": pytest.approx(1.0)}
    assert distortion(x, -x)["mean_cosine"] == pytest.approx(-1.0)


@pytest.mark.parametrize("make, call, message", [
    (lambda: build_codec("pq", 10, subspaces=3), None, "not divisible"),
    (lambda: build_codec("pq", 10, subspaces=0), None, "not divisible"),
    (lambda: build_codec("int8", 0), None, "positive"),
    (lambda: build_codec("zstd", 8), None, "unknown cache codec 'zstd'"),
    (lambda: build_codec("pq", 8, subspaces=2), lambda c: c.encode(np.zeros((2, 8))), "not trained"),
    (lambda: build_codec("pq", 8, subspaces=2), lambda c: c.fit(np.zeros((10, 8))), "at least 256"),
    (lambda: build_codec("int8", 8), lambda c: c.encode(np.zeros((2, 9))), r"expected \(n, 8\)"),
    (lambda: build_codec("int8", 8), lambda c: c.decode(np.zeros((2, 12), np.int8)), "uint8 rows"),
    (lambda: build_codec("float16", 8), lambda c: c.decode(np.zeros((2, 15), np.uint8)), "uint8 rows"),
    (lambda: build_codec("pq", 8, subspaces=2),
     lambda c: c.load_state({"codebooks": np.zeros((2, 256, 3)), "mean": 0, "std": 1}), "do not fit"),
])
def test_bad_input_is_a_one_line_error(make, call, message):
    with pytest.raises(SvmixError, match=message):
        codec = make()
        call(codec)


def test_every_registered_codec_round_trips():
    rng = np.random.default_rng(4)
    x = teacher_like(rng, 1000, 32)
    for name in CODECS.names():
        codec = build_codec(name, 32, **({"subspaces": 4} if name == "pq" else {}))
        if codec.trained:
            codec.fit(x)
        assert distortion(x, codec.decode(codec.encode(x)))["mean_cosine"] > 0.9
