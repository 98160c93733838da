"""svmix-profile: per-layer and per-part parameters and GMACs against the table in docs/method.md §Layer sizes."""
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from svmix.bin.profile import main
from svmix.errors import SvmixError
from svmix.profiling import compare_profiles, encoder_mismatch, profile_encoder_layer, profile_model

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
    (["--encoder", "svmixer", "--config", __file__], "exactly one of"),
    (["--encoder", "nope"], "'nope' is not one of"),  # rejected while parsing the options
    (["--config", "/nonexistent/model.yaml"], "/nonexistent/model.yaml: file not found"),
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


# ----------------------------------------------------------------------------- pairs of models

MATCHED = (CONF / "transformer_mini.yaml", CONF / "svmixer_mini.yaml")        # the default recipe's students
WIDE = (CONF / "transformer_mini_wide.yaml", CONF / "svmixer_mini_wide.yaml")  # the paper's regime


def model_section(path):
    return yaml.safe_load(path.read_text())["model"]


@pytest.fixture(scope="module")
def pair_ratios():
    """compare_profiles(Transformer, SV-Mixer) of the shipped pairs, read from the real config files."""
    return {name: compare_profiles(*(profile_model(model_section(p)) for p in pair))
            for name, pair in (("matched", MATCHED), ("wide", WIDE))}


@pytest.mark.parametrize("pair", [MATCHED, WIDE], ids=["matched", "wide"])
def test_shipped_pairs_differ_only_in_the_encoder(pair):
    transformer, svmixer = map(model_section, pair)
    assert (transformer.pop("encoder")["name"], svmixer.pop("encoder")["name"]) == ("transformer", "svmixer")
    assert transformer == svmixer


def test_shipped_matched_pair_has_encoder_params_within_5_percent(pair_ratios):
    ratios = pair_ratios["matched"]
    assert abs(ratios["encoder"]["params"] - 1) <= 0.05
    assert encoder_mismatch(ratios, max_param_diff=0.05) is None
    assert ratios["frontend"] == ratios["backend"] == {"params": 1.0, "gmacs": 1.0, "gmacs_with_attention": 1.0}


def test_shipped_wide_pair_is_in_the_papers_regime(pair_ratios):
    encoder = pair_ratios["wide"]["encoder"]
    assert encoder["params"] <= 0.6 and encoder["gmacs"] <= 0.6  # GMACs without the attention products
    assert encoder["gmacs_with_attention"] < encoder["gmacs"]
    assert encoder_mismatch(pair_ratios["wide"], max_ratio=0.6) is None


# The studies' Table I students (recipes/mini_studies): each includes svmixer_mini.yaml and replaces its
# encoder; the encoder parameters stated in its header comment, within 10% of the Transformer's.
STUDY_STUDENTS = {"mlpmixer_mini": 576_368, "cyclemlp_mini": 595_200, "convmixer_mini": 537_344}


@pytest.mark.parametrize("name", sorted(STUDY_STUDENTS))
def test_study_students_are_cost_matched_to_the_transformer(name):
    from svmix.yaml_config import read_model_config

    student = read_model_config(CONF / f"{name}.yaml")
    transformer = model_section(MATCHED[0])
    assert {k: v for k, v in student.items() if k != "encoder"} == \
        {k: v for k, v in transformer.items() if k != "encoder"}  # only the encoder differs
    a, b = profile_model(transformer), profile_model(student)
    assert b["parts"]["encoder"]["params"] == STUDY_STUDENTS[name]
    assert f"{STUDY_STUDENTS[name]:,}" in (CONF / f"{name}.yaml").read_text()
    ratios = compare_profiles(a, b)
    assert encoder_mismatch(ratios, max_param_diff=0.10) is None
    assert ratios["frontend"] == ratios["backend"] == {"params": 1.0, "gmacs": 1.0, "gmacs_with_attention": 1.0}


def test_encoder_mismatch_messages():
    def ratios(params, gmacs):
        return {"encoder": {"params": params, "gmacs": gmacs, "gmacs_with_attention": gmacs}}

    assert encoder_mismatch(ratios(1.05, 0.5), max_param_diff=0.05) is None
    assert encoder_mismatch(ratios(0.95, 0.5), max_param_diff=0.05) is None
    assert "B/A = 1.060 (allowed 0.950 to 1.050)" in encoder_mismatch(ratios(1.06, 1.0), max_param_diff=0.05)
    assert "B/A = 0.940" in encoder_mismatch(ratios(0.94, 1.0), max_param_diff=0.05)
    assert encoder_mismatch(ratios(0.6, 0.6), max_ratio=0.6) is None
    assert encoder_mismatch(ratios(0.5, 0.61), max_ratio=0.6) == "encoder GMACs B/A = 0.610 exceeds 0.6"
    assert encoder_mismatch(ratios(0.61, 0.5), max_ratio=0.6) == "encoder params B/A = 0.610 exceeds 0.6"
    assert "undefined" in encoder_mismatch(ratios(None, 1.0), max_param_diff=0.05)
    assert encoder_mismatch(ratios(3.0, 3.0)) is None  # no check asked for


def tiny_student(path, encoder, hidden=32):
    path.write_text(yaml.safe_dump({"model": {"segment_seconds": 1.0, "hidden": hidden, "embed_dim": 8,
                                              "frontend": {"channels": 8}, "encoder": encoder,
                                              "backend": {"name": "linear"}}}))
    return str(path)


def test_cli_pair_table_json_and_checks(tmp_path):
    runner = CliRunner()
    matched = [w for path in MATCHED for w in ("--model-config", str(path))]
    out = runner.invoke(main, [*matched, "--max-encoder-param-diff", "0.05"])
    assert out.exit_code == 0, out.output
    assert f"model A {MATCHED[0]}" in out.output and f"model B {MATCHED[1]}" in out.output
    ratio_rows = {line.split()[0]: line.split() for line in out.output.splitlines()[-4:]}
    assert set(ratio_rows) == {"frontend", "encoder", "backend", "total"}
    assert ratio_rows["frontend"][3] == ratio_rows["backend"][3] == "1.000"
    assert abs(float(ratio_rows["encoder"][3]) - 1) <= 0.05
    # A tiny Transformer (A) against a tiny SV-Mixer (B) with far more parameters.
    a = tiny_student(tmp_path / "a.yaml", {"name": "transformer", "num_layers": 1, "num_heads": 2, "ffn_dim": 64})
    b = tiny_student(tmp_path / "b.yaml", {"name": "svmixer", "num_layers": 1, "group_dim": 8})
    result = json.loads(runner.invoke(main, ["--config", a, "--config", b, "--json"]).output)
    assert result["a"]["config"] == a and result["b"]["encoder"] == "svmixer"
    encoder = result["ratios"]["encoder"]
    assert encoder["params"] == result["b"]["parts"]["encoder"]["params"] / result["a"]["parts"]["encoder"]["params"]
    assert encoder["params"] > 2 and encoder["gmacs_with_attention"] < encoder["gmacs"]
    out = runner.invoke(main, ["--config", a, "--config", b, "--max-encoder-param-diff", "0.05"])
    assert out.exit_code == 1 and "B/A ratios" in out.stdout  # the tables, then one error line
    assert len(out.stderr.splitlines()) == 1 and "Traceback" not in out.output
    assert out.stderr.startswith(f"svmix-profile: error: {b} vs {a}: encoder params differ by more than 0.05: "
                                 f"B/A = {encoder['params']:.3f}")
    out = runner.invoke(main, ["--config", b, "--config", a, "--max-encoder-ratio",
                                str(max(1 / encoder["params"], 1 / encoder["gmacs"]) + 0.01)])
    assert out.exit_code == 0, out.output
    out = runner.invoke(main, ["--config", a, "--config", b, "--max-encoder-ratio", "0.6"])
    assert out.exit_code == 1 and f"encoder params B/A = {encoder['params']:.3f} exceeds 0.6" in out.stderr


@pytest.mark.parametrize("args,message", [
    (["--config", __file__] * 3, "--config was given 3 times"),
    (["--config", __file__, "--max-encoder-param-diff", "0.05"], "compare two models"),
    (["--encoder", "svmixer", "--max-encoder-ratio", "0.6"], "compare two models"),
])
def test_cli_pair_usage_errors(args, message):
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 1 and message in out.stderr and len(out.stderr.splitlines()) == 1, out.output
