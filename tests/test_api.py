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


def bad_waveform(kind: str) -> np.ndarray:
    """Generated bad input audio: (samples,) or (channels, samples) float32."""
    rng = np.random.default_rng(abs(hash(kind)) % 1000)
    voice = (0.1 * rng.standard_normal(24000)).astype(np.float32)
    if kind == "zeros_100":  # the case: under the 400-sample minimum
        return np.zeros(100, np.float32)
    if kind.startswith("noise_"):
        return voice[:int(kind.split("_")[1])]
    if kind == "empty":
        return voice[:0]
    if kind in ("nan", "inf", "neg_inf"):
        voice[int(rng.integers(len(voice)))] = {"nan": np.nan, "inf": np.inf, "neg_inf": -np.inf}[kind]
        return voice
    if kind == "silent":
        return np.zeros(24000, np.float32)
    if kind == "stereo_short":
        return np.stack([voice[:300], voice[:300]])
    raise ValueError(kind)


BAD_KINDS = ["zeros_100", "noise_1", "noise_399", "empty", "nan", "inf", "neg_inf", "silent", "stereo_short"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_api_and_cli_reject_the_same_bad_audio_with_the_same_message(setup, tmp_path, kind):
    import soundfile as sf
    from click.testing import CliRunner

    from svmix.bin.extract import main as extract_cli

    ckpt, _ = setup
    wav = bad_waveform(kind)
    path = tmp_path / f"{kind}.wav"
    sf.write(path, wav.T, 16000, subtype="FLOAT")
    (tmp_path / "wav.scp").write_text(f"bad-utt {path}\n")
    result = CliRunner().invoke(extract_cli, ["--model", str(ckpt), "--wav-scp", str(tmp_path / "wav.scp"),
                                              "--out", str(tmp_path / "emb"), "--num-workers", "0"])
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.exit_code == 1 and len(errors) == 1, result.output

    model = svmix.load_model(ckpt)
    with pytest.raises(SvmixError) as info:
        model.embed(wav)
    assert str(info.value).startswith("waveform: ")
    problem = str(info.value)[len("waveform: "):]
    # the CLI names the utterance and file, then the same problem (the header scan adds a hint after it)
    named = f"utterance 'bad-utt' ({path}): {problem}"
    assert errors[0].endswith(named) or f"{named}; " in errors[0], (errors[0], problem)
    for audio in (torch.from_numpy(wav), path):
        with pytest.raises(SvmixError) as info:
            model.embed(audio)
        assert str(info.value) == f"{'waveform' if audio is not path else path}: {problem}"
    with pytest.raises(SvmixError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        model.score(wav, path)


@pytest.mark.parametrize("wav", [np.zeros((2, 3, 400), np.float32), np.zeros((), np.float32),
                                 np.array(["a"] * 400), np.ones(400, bool)], ids=["3d", "scalar", "str", "bool"])
def test_api_rejects_arrays_that_are_no_waveform(setup, wav):
    model = svmix.load_model(setup[0])
    with pytest.raises(SvmixError, match=r"^waveform: expected a 1-D or \(channels, samples\) waveform of numbers"):
        model.embed(wav)
