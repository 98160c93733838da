"""svmix-profile: per-layer and per-part parameters and GMACs against the spec §2 table."""
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from svmix.bin.profile import main
from svmix.errors import SvmixError
from svmix.profiling import profile_encoder_layer, profile_model

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"


def close(value, expected, rel=0.005):
    return abs(value - expected) <= rel * expected


@pytest.mark.parametrize("name,params,gmacs", [("svmixer", 3_745_969, 0.632), ("mlpmixer", 8_576_177, 1.432),
                                               ("transformer", 8_399_872, 1.2499)])
def test_layer_profiles_match_spec(name, params, gmacs):
    result = profile_encoder_layer(name, hidden=1024, seq_len=149, group_dim=128)
    assert result["params"] == params
    assert close(result["gmacs"], gmacs)
    assert sum(part["params"] for part in result["parts"].values()) == params
    assert abs(sum(part["gmacs"] for part in result["parts"].values()) - result["gmacs"]) < 1e-9


def test_svmixer_parts_and_transformer_attention_products():
    svmixer = profile_encoder_layer("svmixer", 1024, 149, 128)["parts"]
    assert close(svmixer["token_mixing"]["gmacs"], 0.1834) and close(svmixer["channel_mixing"]["gmacs"], 0.4487)
    transformer = profile_encoder_layer("transformer", 1024, 149, 128)
    assert close(transformer["attention_gmacs"], 0.0455)  # QKᵀ and AV, not in "gmacs"
    assert "group_dim" not in transformer  # ignored by encoders without groups
    assert "attention_gmacs" not in profile_encoder_layer("mlpmixer", 1024, 149, 128)
    with pytest.raises(SvmixError, match="unknown encoder"):
        profile_encoder_layer("nope")


def test_cli_encoder_table_and_json():
    runner = CliRunner()
    table = runner.invoke(main, ["--encoder", "svmixer", "--hidden", "1024", "--seq-len", "149", "--group-dim", "128"])
    assert table.exit_code == 0, table.output
    assert "3,745,969" in table.output and "3.75" in table.output and "0.632" in table.output
    out = runner.invoke(main, ["--encoder", "transformer", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["params"] == 8_399_872 and round(result["gmacs"], 2) == 1.25
    assert round(result["parts"]["attention"]["attention_gmacs"] * 1000, 1) == 45.5


def test_cli_config_reports_parts_and_layers(tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["--config", str(CONF / "svmixer_mini.yaml"), "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    parts = result["parts"]
    assert set(parts) == {"frontend", "encoder", "backend"}
    assert result["params"] == sum(p["params"] for p in parts.values())
    assert abs(result["gmacs"] - sum(p["gmacs"] for p in parts.values())) < 1e-9
    layers = parts["encoder"]["layers"]
    assert len(layers) == 4 and len({layer["params"] for layer in layers}) == 1
    # A bare model config (no 'model:' key) works too, and the text output has one row per layer.
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump(yaml.safe_load((CONF / "svmixer_mini.yaml").read_text())["model"]))
    text = runner.invoke(main, ["--config", str(bare)])
    assert text.exit_code == 0, text.output
    assert all(f"layer {i}" in text.output for i in (1, 2, 3, 4)) and "backend" in text.output


def test_whole_paper_model_per_part():
    result = profile_model(yaml.safe_load((CONF / "svmixer_paper.yaml").read_text())["model"])
    assert result["frames"] == 149
    encoder = result["parts"]["encoder"]
    assert encoder["params"] == 5 * 3_745_969 + 2048
    assert all(close(layer["gmacs"], 0.632) for layer in encoder["layers"])
    assert result["parts"]["frontend"]["params"] + encoder["params"] == 23_458_677


@pytest.mark.parametrize("args,message", [
    ([], "exactly one of"),
    (["--encoder", "svmixer", "--config", "x.yaml"], "exactly one of"),
    (["--encoder", "nope"], "unknown encoder 'nope'"),
    (["--config", "/nonexistent/model.yaml"], "model config not found"),
])
def test_cli_user_errors(args, message):
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 1
    assert message in out.output and "Traceback" not in out.output


def test_cli_bad_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    out = CliRunner().invoke(main, ["--config", str(bad)])
    assert out.exit_code == 1 and "not valid YAML" in out.output
    (tmp_path / "list.yaml").write_text("- 1\n")
    out = CliRunner().invoke(main, ["--config", str(tmp_path / "list.yaml")])
    assert out.exit_code == 1 and "mapping" in out.output
