"""The Python API: svmix.load_model(path).embed / .score with the segment rule of docs/method.md §Evaluation."""
import numpy as np
import pytest
import torch

import svmix
from svmix.data.audio import load_audio
from svmix.errors import SvmixError
from svmix.inference.segments import mean_embedding, segment_pair_score, segment_waveform
from test_extract import make_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from conftest import make_datadir

    root = tmp_path_factory.mktemp("api")
    ckpt = make_checkpoint(root / "exp" / "model.pt")
    make_datadir(root, num_speakers=2, utts_per_speaker=1, seconds=(2.0, 5.0), seed=7, trials=False)
    wavs = sorted((root / "wav").glob("*.wav"))
    return ckpt, wavs


def plain_forward(ckpt, wav):
    """Reference: the checkpoint's model on its 10 evaluation segments, without the inference path."""
    from svmix.checkpoint import load_model_checkpoint

    model, _ = load_model_checkpoint(ckpt)
    with torch.no_grad():
        return model(torch.from_numpy(segment_waveform(wav, 48000, 10))).numpy()


def test_embed_paths_and_waveforms(setup):
    ckpt, (wav_a, _) = setup
    model = svmix.load_model(ckpt.parent)
    assert model.embed_dim == model.config["embed_dim"] == 16 and model.num_segments == 10
    x = load_audio(wav_a)
    ref = plain_forward(ckpt, x)
    segs = model.embed(str(wav_a), segments=True)
    assert segs.shape == (10, 16)
    np.testing.assert_allclose(segs, ref, atol=1e-5)
    emb = model.embed(wav_a)
    assert emb.shape == (16,) and np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(emb, mean_embedding(ref), atol=1e-5)
    for audio in (x, torch.from_numpy(x), torch.from_numpy(x)[None], np.stack([x, x])):
        np.testing.assert_allclose(model.embed(audio), emb, atol=1e-5)


def test_score_uses_segment_pair_rule(setup):
    ckpt, (wav_a, wav_b) = setup
    model = svmix.load_model(ckpt)
    ref_a, ref_b = plain_forward(ckpt, load_audio(wav_a)), plain_forward(ckpt, load_audio(wav_b))
    expected = segment_pair_score(ref_a, ref_b)
    assert model.score(wav_a, wav_b) == pytest.approx(expected, abs=1e-5)
    assert model.score(ref_a, str(wav_b)) == pytest.approx(expected, abs=1e-5)
    assert model.score(torch.from_numpy(ref_a), ref_b) == pytest.approx(expected, abs=1e-5)
    ea, eb = model.embed(wav_a), model.embed(wav_b)
    assert model.score(ea, eb) == pytest.approx(float(ea @ eb), abs=1e-5)
    assert model.score(wav_a, wav_a) > model.score(wav_a, wav_b) - 1e-9


def test_bad_inputs_are_user_errors(setup, tmp_path):
    ckpt, _ = setup
    model = svmix.load_model(ckpt)
    with pytest.raises(SvmixError, match="not found"):
        model.embed(tmp_path / "missing.wav")
    with pytest.raises(SvmixError, match="waveform"):
        model.embed(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(SvmixError, match="not found"):
        svmix.load_model(tmp_path / "nothing.pt")
