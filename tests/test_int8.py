"""The int8 CPU path: int8 SV-Mixer blocks (svmix.models.fast.int8) through the API and svmix-extract."""
import copy

import kaldiio
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import svmix
from svmix.bin.extract import main as extract_cli
from svmix.checkpoint import save_model
from svmix.errors import SvmixError
from svmix.models import build_model
from svmix.models.fast import prepare_for_inference, uses_fast_path
from svmix.models.fast.int8 import Int8SVMixerBlock
from conftest import make_datadir

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = {"hidden": 32, "embed_dim": 16, "segment_seconds": 1.0, "frontend": {"channels": 16},
        "encoder": {"name": "svmixer", "num_layers": 2, "group_dim": 8},
        "backend": {"name": "ecapa", "channels": 16, "se_bottleneck": 8, "pooled_channels": 48,
                    "attention_bottleneck": 8}}
ENCODERS = {
    "parallel LGM, MSM": {},
    "sequential LGM": {"lgm_mode": "sequential"},
    "no MSM (GCM alone)": {"msm": False},
    "vanilla MLP-Mixer": {"lgm": False, "msm": False, "gcm": False},
}


def _model(encoder_overrides, seed=0):
    torch.manual_seed(seed)
    config = copy.deepcopy(BASE)
    config["encoder"].update(encoder_overrides)
    return build_model(config).eval()


def _speech(n, batch, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    wavs = [0.05 * sum(np.sin(2 * np.pi * (110 + 40 * i) * k * t) / k for k in range(1, 7))
            * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t + i)) + 0.003 * rng.standard_normal(n) for i in range(batch)]
    return torch.from_numpy(np.stack(wavs).astype(np.float32))


def _cosines(a, b):
    return torch.nn.functional.cosine_similarity(a, b, dim=1)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_int8_blocks_stay_close_to_float(encoder):
    reference = _model(ENCODERS[encoder])
    int8 = prepare_for_inference(copy.deepcopy(reference), "int8")
    blocks = list(int8.encoder.blocks)
    assert all(isinstance(b, Int8SVMixerBlock) for b in blocks) and uses_fast_path(int8)
    quantised = [m for m in int8.modules() if type(m).__module__.startswith("torch.ao.nn.quantized.dynamic")]
    assert not quantised  # the int8 Linears are held outside the module tree: state_dict keys unchanged
    assert set(int8.state_dict()) == set(reference.state_dict())
    wav = torch.cat([_speech(reference.segment_samples, 3), 0.1 * torch.randn(2, reference.segment_samples)])
    with torch.inference_mode():
        expected, got = reference(wav), int8(wav)
    assert got.shape == expected.shape
    assert _cosines(got, expected).min() >= 0.99, _cosines(got, expected)
    assert (got - expected).abs().max() > 1e-5  # the GEMMs really ran in int8


def test_int8_rejects_export_and_training():
    model = prepare_for_inference(_model({}), "int8")
    block = model.encoder.blocks[0]
    x = torch.randn(model.encoder.seq_len, 1, 32)
    block.train()
    with pytest.raises(RuntimeError, match="inference only"):
        block(x)
    with pytest.raises(ValueError, match="precision must be one of"):
        prepare_for_inference(_model({}), "int4")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    save_model(root / "exp" / "model.pt", _model({}))
    data = make_datadir(root, num_speakers=2, utts_per_speaker=2, seconds=(1.5, 3.0), seed=1, trials=False)
    return root / "exp", data


def test_load_model_int8(experiment):
    exp, data = experiment
    wav = str(next((data.parent / "wav").glob("*.wav")))
    float_model = svmix.load_model(exp)
    int8_model = svmix.load_model(exp, precision="int8")
    assert any(isinstance(m, Int8SVMixerBlock) for m in int8_model.embedder.model.modules())
    a, b = float_model.embed(wav), int8_model.embed(wav)
    assert a.shape == b.shape and float(a @ b) >= 0.99 and not np.allclose(a, b, atol=1e-6)
    assert int8_model.score(wav, wav) == pytest.approx(float_model.score(wav, wav), abs=0.02)
    with pytest.raises(SvmixError, match="precision must be one of"):
        svmix.load_model(exp, precision="fp16")


def test_extract_cli_int8(experiment, tmp_path):
    exp, data = experiment
    runner = CliRunner()
    args = ["--model", str(exp), "--data", str(data), "--num-workers", "0"]
    for precision in ("float32", "int8"):
        result = runner.invoke(extract_cli, args + ["--out", str(tmp_path / precision), "--precision", precision])
        assert result.exit_code == 0, result.output
    a = dict(kaldiio.load_scp(str(tmp_path / "float32" / "xvector.scp")))
    b = dict(kaldiio.load_scp(str(tmp_path / "int8" / "xvector.scp")))
    assert list(a) == list(b)
    for utt in a:
        x, y = a[utt], b[utt]
        cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
        assert cos.min() >= 0.99 and not np.allclose(x, y, atol=1e-6)
