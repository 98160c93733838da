"""Students on filterbanks: the ``fbank_projected`` frontend (mean-normalised log-mel frames stacked to
the teacher's 20 ms grid and projected to H) and its distillation from a teacher cache."""
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from conftest import ROOT, make_datadir, one_error_line
from svmix.checkpoint import load_model_checkpoint
from svmix.models import build_model, resolve_model_config
from svmix.profiling import profile_model
from svmix.registry import FRONTENDS
from svmix.yaml_config import read_model_config
from test_cache import tiny_wavlm_dir

CONF = ROOT / "conf" / "model"


def frontend(**params):
    return FRONTENDS.build(FRONTENDS.resolve({"name": "fbank_projected", **params}, "model.frontend"), hidden=16)


@pytest.mark.parametrize("stack", [1, 2, 3])
def test_projection_sees_mean_normalised_filterbanks_stacked_in_time_order(stack):
    torch.manual_seed(0)
    module = frontend(stack=stack).eval()
    seen = []
    module.feature_projection.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    wav = 0.1 * torch.randn(2, 16000)
    wav[1] += 0.2 * torch.sin(torch.arange(16000) / 5.0)
    out = module(wav)
    fb = module.fbank(wav)
    fb = fb - fb.mean(dim=1, keepdim=True)
    frames = module.num_frames(16000)
    assert out.shape == (2, frames, 16) and frames == fb.shape[1] // stack
    stacked = seen[0]
    for t in (0, frames // 2, frames - 1):
        for j in range(stack):
            assert torch.equal(stacked[:, t, 80 * j:80 * (j + 1)], fb[:, stack * t + j])
    assert module.hop == 160 * stack and module.receptive_field == 400 + 160 * (stack - 1)


def test_mean_norm_removes_a_fixed_per_band_offset_and_can_be_turned_off():
    """A fixed channel (a constant per mel band added to every log energy) leaves the normalised
    frames unchanged; without mean_norm the projection's per-frame LayerNorm does not remove it."""
    g = torch.Generator().manual_seed(1)
    wav = 0.1 * torch.randn(1, 24000, generator=g)
    offset = torch.linspace(-2.0, 3.0, 80)
    for mean_norm, unchanged in ((True, True), (False, False)):
        module = frontend(mean_norm=mean_norm).eval()
        base = module(wav)
        original = module.fbank.forward
        module.fbank.forward = lambda w: original(w) + offset
        shifted = module(wav)
        module.fbank.forward = original
        assert torch.allclose(base, shifted, atol=1e-4) is unchanged


@pytest.mark.parametrize("seconds", [0.3, 1.0, 2.99, 3.0, 4.37])
def test_num_frames_is_the_output_length(seconds):
    module = frontend().eval()
    n = int(seconds * 16000)
    assert module(torch.zeros(1, n) + 0.01 * torch.randn(1, n)).shape[1] == module.num_frames(n)


@pytest.mark.parametrize("key,value", [("stack", 0), ("stack", 9), ("stack", 1.5), ("mean_norm", "yes"),
                                       ("num_mel_bins", 0), ("dropout", 1.0)])
def test_out_of_range_options_are_one_line_errors_before_training(tmp_path, key, value):
    model = {"hidden": 16, "frontend": {"name": "fbank_projected", key: value}}
    (tmp_path / "d").mkdir(), (tmp_path / "cache").mkdir()  # empty: the config is checked first
    result, exp = _train(tmp_path, tmp_path / "d", tmp_path / "cache", model)
    one_error_line(result, f"model.frontend.{key}")
    assert not exp.exists()
    with pytest.raises(ValueError, match="stack must be at least 1"):
        frontend(stack=0)


@pytest.mark.parametrize("encoder", ["svmixer", "transformer"])
def test_shipped_fbank_students_differ_from_the_waveform_students_only_in_the_frontend(encoder):
    fbank = resolve_model_config(read_model_config(CONF / f"{encoder}_mini_fbank.yaml"))
    wave = resolve_model_config(read_model_config(CONF / f"{encoder}_mini.yaml"))
    assert fbank["frontend"] == {"name": "fbank_projected", "num_mel_bins": 80, "stack": 2, "mean_norm": True,
                                 "dropout": 0.1}
    assert {k: v for k, v in fbank.items() if k != "frontend"} == {k: v for k, v in wave.items() if k != "frontend"}
    model = build_model(fbank)
    assert model.seq_len == 149 and model.frontend.hop == 320  # the teacher's frame grid for a 3 s segment
    parts = profile_model(fbank, 3.0)["parts"]
    assert parts["frontend"]["params"] == 20928  # LayerNorm(160) + Linear(160 -> 128)
    assert parts["encoder"] == profile_model(wave, 3.0)["parts"]["encoder"]


def _train(tmp_path, data, cache, model, *extra):
    from svmix.bin.train import main

    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump({"model": model}))
    exp = tmp_path / "exp"
    args = ["--config", str(ROOT / "conf" / "train_mini.yaml"), "--model-config", str(path), "--data", str(data),
            "--exp", str(exp), "--teacher-cache", str(cache), "--no-progress",
            "--override", "train.batch_size=2", "--override", "train.max_steps=2",
            "--override", "train.num_workers=0", "--override", "train.log_every=1", *extra]
    return CliRunner().invoke(main, args), exp


def test_fbank_student_distils_from_a_teacher_cache_frame_for_frame(tmp_path, one_thread):
    from svmix.cache import CacheSettings, build_cache

    data = make_datadir(tmp_path / "d", num_speakers=2, utts_per_speaker=2, seconds=(3.2, 3.6), trials=False)
    cache = build_cache(tiny_wavlm_dir(tmp_path / "teacher"), data, tmp_path / "cache",
                        CacheSettings(layers=[2], dtype="float32"), progress=False)
    model = {"hidden": 16, "embed_dim": 8, "segment_seconds": 3.0, "frontend": {"name": "fbank_projected"},
             "encoder": {"name": "svmixer", "num_layers": 1, "group_dim": 8}, "backend": {"name": "linear"}}
    result, exp = _train(tmp_path, data, cache, model)
    assert result.exit_code == 0, (result.output, result.exception)
    records = [yaml.safe_load(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    kd = [r["kd"] for r in records if r["type"] == "train"]
    assert len(kd) == 2 and all(np.isfinite(v) and v > 0 for v in kd)
    _, ckpt = load_model_checkpoint(exp)
    assert ckpt["config"]["frontend"]["stack"] == 2
    assert yaml.safe_load((exp / "config.yaml").read_text())["train"]["kd"]["layers"] == [2]

    (tmp_path / "exp").rename(tmp_path / "exp_stack2")
    result, _ = _train(tmp_path, data, cache, {**model, "frontend": {"name": "fbank_projected", "stack": 1}})
    assert "frame shift (160 samples) differs from the teacher's (320)" in one_error_line(result)
    result, _ = _train(tmp_path, data, cache, model, "--override", "train.init_frontend_from_teacher=true")
    assert "no waveform convolutions" in one_error_line(result, "fbank_projected")


@pytest.mark.parametrize("seconds", [0.5, 1.0, 3.0, 2.345])
def test_onnx_operators_give_the_same_filterbanks(seconds):
    """Index framing and the DFT as a matrix product compute what unfold + rfft compute (generated
    inputs: noise, a tone with a DC offset, near-silence)."""
    from svmix.models.fbank import FbankFrontend, use_onnx_operators

    g = torch.Generator().manual_seed(int(seconds * 1000))
    n = int(seconds * 16000)
    wav = torch.stack([0.1 * torch.randn(n, generator=g),
                       0.2 + 0.3 * torch.sin(torch.arange(n) / 3.3),
                       1e-4 * torch.randn(n, generator=g)])
    module = FbankFrontend(80)
    reference = module(wav)
    assert use_onnx_operators(module) is module and module.dft_basis.shape == (400, 2 * 257)
    assert torch.allclose(module(wav), reference, atol=2e-3, rtol=0), (module(wav) - reference).abs().max()


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_fbank_students_export_to_onnx_with_parity(tmp_path, quantize, one_thread):
    """ONNX export of a filterbank student: the TorchScript-based exporter has no rfft and mis-shapes
    unfold, so the export uses :func:`use_onnx_operators`; int8 keeps the filterbanks in float."""
    import onnx
    from svmix.checkpoint import save_model
    from svmix.export.exporter import export_model

    torch.manual_seed(0)
    model = build_model({"hidden": 16, "embed_dim": 8, "segment_seconds": 1.0,
                         "frontend": {"name": "fbank_projected"},
                         "encoder": {"name": "svmixer", "num_layers": 1, "group_dim": 8},
                         "backend": {"name": "linear"}}).eval()
    save_model(tmp_path / "model.pt", model)
    out = tmp_path / f"model_{quantize}.onnx"
    summary = export_model(tmp_path / "model.pt", "onnx", out, quantize=quantize)
    assert out.exists() and summary["min_cosine"] >= (0.99 if quantize == "int8" else 0.99999)
    nodes = onnx.load(str(out)).graph.node
    assert not any(node.op_type == "DFT" for node in nodes)
    if quantize == "int8":
        quantized = {node.name for node in nodes if node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")}
        assert quantized and not any(name.startswith("/frontend/fbank/") for name in quantized)
