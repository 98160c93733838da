"""svmix-export: ONNX / TorchScript segment embedders that match the PyTorch model."""
import json
import sys

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


# ----------------------------------------------------------------------------- torch.export, dynamo ONNX, int8

def _speech_like(checkpoint, batch):
    """Reference embeddings of the export check's speech-like segments (harmonics under an envelope)."""
    model, _ = load_model_checkpoint(checkpoint)
    wav = exporter.check_segments(model, batch)
    with torch.inference_mode():
        return wav.numpy(), model(wav).numpy()


def _assert_metadata(metadata, precision="float32"):
    assert metadata["sample_rate"] == "16000" and metadata["segment_samples"] == "16000"
    assert metadata["segment_seconds"] == "1.0" and metadata["embed_dim"] == "8"
    assert metadata["num_eval_segments"] == str(json.loads(metadata["svmix_config"])["num_eval_segments"])
    assert "mean cosine" in metadata["segment_rule"] and metadata["precision"] == precision
    assert metadata["one_pass"] == "false"


def test_pt2_export_matches_pytorch(checkpoint, tmp_path):
    from svmix.export import load_exported_program

    out = tmp_path / "model.pt2"
    summary = export_model(checkpoint, "pt2", out)
    assert summary["max_abs_diff"] <= 1e-4 and summary["format"] == "pt2"
    module, metadata = load_exported_program(out)
    _assert_metadata(metadata)
    for batch in (1, 5):  # dynamic batch (exported with 2)
        config, wav, expected = _reference(checkpoint, batch)
        with torch.inference_mode():
            got = module(torch.from_numpy(wav)).numpy()
        assert got.shape == (batch, 8) and np.abs(got - expected).max() <= 1e-4
    assert json.loads(metadata["svmix_config"]) == config
    wav, expected = _speech_like(checkpoint, 4)
    with torch.inference_mode():
        assert np.abs(module(torch.from_numpy(wav)).numpy() - expected).max() <= 1e-4


def test_pt2_runtime_in_extract_and_load_model_matches_the_reference(checkpoint, tmp_path):
    """svmix-extract --runtime pt2 and svmix.load_model(runtime="pt2") run the exported program."""
    import kaldiio
    import soundfile as sf

    import svmix
    from svmix.bin.extract import main as extract_cli
    from svmix.inference.segments import segment_waveform

    model_dir = tmp_path / "exp"
    model_dir.mkdir()
    (model_dir / "model.pt").write_bytes(checkpoint.read_bytes())
    export_model(model_dir, "pt2", model_dir / "model.pt2")  # the default place: next to the checkpoint
    reference, _ = load_model_checkpoint(model_dir)
    rng = np.random.default_rng(0)
    wavs = {"a": (0.1 * rng.standard_normal(int(2.7 * 16000))).astype(np.float32),
            "b": (0.1 * rng.standard_normal(9000)).astype(np.float32)}
    (tmp_path / "wav").mkdir()
    for utt, wav in wavs.items():
        sf.write(tmp_path / "wav" / f"{utt}.wav", wav, 16000, subtype="FLOAT")
    result = CliRunner().invoke(extract_cli, ["--model", str(model_dir), "--wav-dir", str(tmp_path / "wav"),
                                              "--out", str(tmp_path / "out"), "--runtime", "pt2",
                                              "--num-workers", "0"])
    assert result.exit_code == 0, result.output
    stored = dict(kaldiio.load_scp(str(tmp_path / "out" / "xvector.scp")))
    api = svmix.load_model(model_dir, runtime="pt2", pt2=model_dir / "model.pt2")
    for utt, wav in wavs.items():
        segments = segment_waveform(wav, reference.segment_samples, reference.num_eval_segments)
        with torch.inference_mode():
            expected = reference(torch.from_numpy(segments)).numpy()
        assert np.abs(stored[utt] - expected).max() <= 1e-4
        assert np.abs(api.embed(wav, segments=True) - expected).max() <= 1e-4
    with pytest.raises(SvmixError, match="--pt2 is only used with --runtime pt2"):
        svmix.load_model(model_dir, pt2=model_dir / "model.pt2")
    with pytest.raises(SvmixError, match="the pt2 runtime runs float32 exports only"):
        svmix.load_model(model_dir, runtime="pt2", precision="int8")
    with pytest.raises(SvmixError, match="model.pt2: torch.export model not found"):
        svmix.load_model(checkpoint, runtime="pt2")


def test_pt2_loader_rejects_foreign_files(tmp_path):
    from svmix.export import load_exported_program

    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not an archive")
    with pytest.raises(SvmixError, match="junk.pt2: cannot load torch.export program"):
        load_exported_program(junk)


def test_onnx_metadata_names_the_segment_rule(checkpoint, tmp_path):
    out = tmp_path / "model.onnx"
    export_model(checkpoint, "onnx", out)
    import onnx
    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    _assert_metadata(metadata)
    assert metadata["exporter"] == "torch.onnx.export (legacy)"


def test_onnx_dynamo_export_matches_pytorch(checkpoint, tmp_path):
    pytest.importorskip("onnxscript")
    out = tmp_path / "dynamo.onnx"
    summary = export_model(checkpoint, "onnx", out, opset=18, onnx_exporter="dynamo")
    assert summary["max_abs_diff"] <= 1e-4 and summary["onnx_exporter"] == "dynamo"
    embedder = OnnxSegmentEmbedder(out, num_threads=1)
    for batch in (1, 4):
        _, wav, expected = _reference(checkpoint, batch)
        assert np.abs(embedder(wav) - expected).max() <= 1e-4
    wav, expected = _speech_like(checkpoint, 3)
    assert np.abs(embedder(wav) - expected).max() <= 1e-4
    import onnx
    proto = onnx.load(str(out))
    assert proto.opset_import[0].version >= 18
    _assert_metadata({p.key: p.value for p in proto.metadata_props})


def test_dynamo_exporter_needs_onnxscript_and_opset_18(checkpoint, tmp_path, monkeypatch):
    with pytest.raises(SvmixError, match="opset 18 or later, not --opset 17"):
        export_model(checkpoint, "onnx", tmp_path / "x.onnx", opset=17, onnx_exporter="dynamo")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(SvmixError, match="needs the onnxscript package"):
        export_model(checkpoint, "onnx", tmp_path / "x.onnx", opset=18, onnx_exporter="dynamo")
    assert not (tmp_path / "x.onnx").exists()


def test_onnx_int8_export_loads_through_the_api(checkpoint, tmp_path):
    import onnx

    import svmix
    out = tmp_path / "int8.onnx"
    summary = export_model(checkpoint, "onnx", out, quantize="int8")
    assert summary["precision"] == "int8" and summary["min_cosine"] >= exporter.INT8_MIN_COSINE
    proto = onnx.load(str(out))
    ops = {node.op_type for node in proto.graph.node}
    assert {"MatMulInteger", "ConvInteger"} & ops, ops  # GEMMs really run in int8
    _assert_metadata({p.key: p.value for p in proto.metadata_props}, precision="int8")
    wav, expected = _speech_like(checkpoint, 4)
    got = OnnxSegmentEmbedder(out, num_threads=1)(wav)
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.99 and np.abs(got - expected).max() > 1e-6  # close, but not the float model

    model = svmix.load_model(checkpoint, runtime="onnx", onnx=out, precision="int8")
    assert model.embedder.precision == "int8"
    with pytest.raises(SvmixError, match="int8.onnx: ONNX model has int8 weights, not the float32"):
        svmix.load_model(checkpoint, runtime="onnx", onnx=out)


def test_quantize_is_for_onnx_only(checkpoint, tmp_path):
    with pytest.raises(SvmixError, match="--quantize int8 is for --format onnx"):
        export_model(checkpoint, "pt2", tmp_path / "x.pt2", quantize="int8")
    result = CliRunner().invoke(export_cli, ["--model", str(checkpoint), "--format", "torchscript",
                                             "--quantize", "int8", "--out", str(tmp_path / "x.ts")])
    assert result.exit_code == 1 and "--quantize int8 is for --format onnx" in result.output
    assert not (tmp_path / "x.ts").exists()


def test_cli_exports_int8_onnx(checkpoint, tmp_path):
    out = tmp_path / "cli.onnx"
    result = CliRunner().invoke(export_cli, ["--model", str(checkpoint), "--format", "onnx", "--quantize", "int8",
                                             "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "onnx int8 embedder" in result.output and "min cosine" in result.output
    assert OnnxSegmentEmbedder(out).precision == "int8"
