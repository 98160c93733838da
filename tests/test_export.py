"""svmix-export: ONNX / TorchScript segment embedders that match the PyTorch model."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from svmix.bin.export import main as export_cli
from svmix.checkpoint import load_model_checkpoint, save_model
from svmix.errors import SvmixError
from svmix.export import exporter, export_model, load_torchscript
from svmix.inference.onnx_runtime import OnnxSegmentEmbedder
from svmix.models import build_model

TINY = {"hidden": 32, "embed_dim": 8, "segment_seconds": 1.0, "frontend": {"channels": 16},
        "encoder": {"name": "svmixer", "num_layers": 2, "group_dim": 8},
        "backend": {"name": "ecapa", "channels": 16, "se_bottleneck": 8, "pooled_channels": 48,
                    "attention_bottleneck": 8}}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so the backend really runs in eval mode
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_model(path, model)
    return path


def _reference(checkpoint, batch):
    """Reference (not fast-path) PyTorch embeddings of random segments."""
    model, _ = load_model_checkpoint(checkpoint)
    wav = 0.1 * torch.randn(batch, model.segment_samples, generator=torch.Generator().manual_seed(batch))
    with torch.inference_mode():
        return model.config, wav.numpy(), model(wav).numpy()


def test_onnx_export_matches_pytorch(checkpoint, tmp_path):
    out = tmp_path / "model.onnx"
    summary = export_model(checkpoint, "onnx", out)
    assert summary["max_abs_diff"] <= 1e-4 and summary["opset"] == 17

    import onnx
    proto = onnx.load(str(out))
    assert proto.opset_import[0].version == 17
    assert [i.name for i in proto.graph.input] == ["waveform"]
    assert [o.name for o in proto.graph.output] == ["embedding"]

    embedder = OnnxSegmentEmbedder(out, num_threads=1)
    for batch in (1, 4):  # the batch axis is dynamic (traced with 2)
        config, wav, expected = _reference(checkpoint, batch)
        got = embedder(wav)
        assert got.shape == (batch, 8)
        assert np.abs(got - expected).max() <= 1e-4
    assert embedder.config == config
    assert embedder.segment_samples == 16000 and embedder.embed_dim == 8
    with pytest.raises(ValueError, match="segments of shape"):
        embedder(np.zeros((2, 100), np.float32))


def test_torchscript_export_matches_pytorch(checkpoint, tmp_path):
    out = tmp_path / "model.ts"
    export_model(checkpoint, "torchscript", out)
    module, config = load_torchscript(out)
    for batch in (1, 3):
        ref_config, wav, expected = _reference(checkpoint, batch)
        with torch.inference_mode():
            got = module(torch.from_numpy(wav)).numpy()
        assert np.abs(got - expected).max() <= 1e-4
    assert config == ref_config


def test_failed_parity_check_writes_nothing(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(exporter, "PARITY_TOLERANCE", -1.0)
    out = tmp_path / "bad.ts"
    with pytest.raises(SvmixError, match="differs from PyTorch"):
        export_model(checkpoint, "torchscript", out)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_cli_exports_and_reports(checkpoint, tmp_path):
    out = tmp_path / "cli.ts"
    result = CliRunner().invoke(export_cli, ["--model", str(checkpoint.parent), "--format", "torchscript",
                                             "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "max abs difference" in result.output and out.is_file()
    assert json.loads(json.dumps(load_torchscript(out)[1]))["hidden"] == 32


@pytest.mark.parametrize("args, message", [
    (["--model", "{tmp}/missing.pt", "--format", "onnx", "--out", "{tmp}/x.onnx"], "missing.pt: file or directory not found"),
    (["--model", "{tmp}", "--format", "onnx", "--out", "{tmp}/x.onnx"], "has no model.pt"),
    (["--model", "{tmp}/junk.pt", "--format", "onnx", "--out", "{tmp}/x.onnx"], "cannot read checkpoint"),
    (["--model", "{ckpt}", "--format", "onnx", "--opset", "3", "--out", "{tmp}/x.onnx"], "'--opset': 3 is not in the range"),
])
def test_cli_bad_input_is_one_line_error(checkpoint, tmp_path, args, message):
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    args = [a.format(tmp=tmp_path, ckpt=checkpoint) for a in args]
    result = CliRunner().invoke(export_cli, args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0]
    assert message in result.output
    assert not (tmp_path / "x.onnx").exists()


def test_cli_rejects_unknown_format(checkpoint, tmp_path):
    result = CliRunner().invoke(export_cli, ["--model", str(checkpoint), "--format", "tflite",
                                             "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "tflite" in result.stderr and len(result.stderr.splitlines()) == 1
