"""Closed configs: resolution records every default, one reader/merge, old configs and checkpoints
still load, the loss registries are separate, and every numeric key is range-checked up front."""
import re
import copy
import inspect
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY_TEACHER_ARCHITECTURE, make_datadir
from svmix.checkpoint import FORMAT, load_model_checkpoint, read_checkpoint
from svmix.errors import SvmixError
from svmix.models import build_model, resolve_model_config
from svmix.models.svmixer import SVMixerEncoder
from svmix.registry import BACKENDS, CLASSIFICATION_LOSSES, ENCODERS, FRONTENDS, KD_LOSSES
from svmix.train.config import (SCHEMA, Choice, Items, Num, apply_overrides, load_train_config, merge, read_yaml,
                                resolve_config)
from svmix.train.augment import DEFAULT_AUGMENT_CONFIG
from svmix.train.optim import OPTIMIZERS, SCHEDULERS, PlateauSchedule, WarmRestartSchedule, build_schedule
from svmix.utils.fileio import torch_save_atomic

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY_MODEL = {"segment_seconds": 1.0, "num_eval_segments": 2, "hidden": 16, "embed_dim": 8,
              "frontend": {"channels": 8}, "encoder": {"name": "svmixer", "num_layers": 2, "group_dim": 8},
              "backend": {"name": "linear"}}
BASE = {"model": TINY_MODEL, "train": {"max_steps": 5, "epochs": 3}}
SECTION_REGISTRIES = {"model.frontend": FRONTENDS, "model.encoder": ENCODERS, "model.backend": BACKENDS, "train.optimizer": OPTIMIZERS,
                      "train.scheduler": SCHEDULERS, "train.aam": CLASSIFICATION_LOSSES, "train.kd": KD_LOSSES}
REQUIRED_VALUES = {"num_layers": 2, "t_0": 100, "t_up": 10, "eta_max": 1e-3}  # parameters without defaults
# entries whose resolution would read a file: give what it would read (a recorded teacher architecture)
GIVEN_VALUES = {"teacher": {"teacher": TINY_TEACHER_ARCHITECTURE}}


def _get(config, key):
    for part in key.split("."):
        config = config[part]
    return config


def base_with(key):
    """BASE, with the registry section of ``key`` switched to an entry that has the parameter."""
    raw = copy.deepcopy(BASE)
    section, _, param = key.rpartition(".")
    if key.startswith("train.optimizer_switch."):
        raw["train"]["optimizer_switch"] = {"at_step": 10, "optimizer": {"name": "sgd", "lr": 0.1}}
    if key.startswith("model.frontend.teacher."):  # inside the recorded teacher architecture
        return apply_overrides(raw, {"model.frontend": {"name": "teacher", **GIVEN_VALUES["teacher"]}})
    registry = SECTION_REGISTRIES.get(section)
    owners = [n for n in registry.names() if param in registry.defaults(n)] if registry is not None else []
    if owners:
        current = _get(resolve_config(raw), section)["name"]
        if param not in registry.defaults(current):
            owner = owners[0]
            required = {p: REQUIRED_VALUES[p] for p, d in registry.defaults(owner).items() if repr(d) == "REQUIRED"}
            raw = apply_overrides(raw, {section: {"name": owner, **required, **GIVEN_VALUES.get(owner, {})}})
            if section == "train.kd":
                raw["train"]["kd"]["layers"] = [1]
    return raw


def in_range(rule, value):
    """The test's own reading of a Num rule's declared range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    if rule.kind is int and not isinstance(value, int):
        return False
    low_ok = value > rule.lo if rule.lo_open else value >= rule.lo
    high_ok = value < rule.hi if rule.hi_open else value <= rule.hi
    return low_ok and high_ok


NUMERIC_KEYS = sorted(k for k, r in SCHEMA.items() if isinstance(r, Num))
PROBES = [-1, 0, -0.5, 10 ** 12, 1e30, 2.5, float("nan"), float("inf"), "abc", "1e-3", True, [1]]
NUMERIC_CASES = [(k, v) for k in NUMERIC_KEYS for v in PROBES]


@pytest.mark.parametrize("key,value", NUMERIC_CASES, ids=[f"{k}={v!r}" for k, v in NUMERIC_CASES])
def test_every_numeric_key_is_range_checked(key, value):
    rule = SCHEMA[key]
    raw = apply_overrides(base_with(key), {key: value})
    if in_range(rule, value) or (isinstance(value, str) and value in rule.words):
        assert _get(resolve_config(raw), key) == value
        return
    with pytest.raises(SvmixError) as info:
        resolve_config(raw)
    message = str(info.value)
    assert message == f"{key}={value!r}: must be {rule.describe()}"  # key, value and the allowed range


LIST_KEYS = sorted(k for k, r in SCHEMA.items() if isinstance(r, Items))


def _bad_lists(rule):
    """Empty, wrong length, descending ranges, out-of-range or ill-typed items, not a list at all."""
    item = rule.item
    numeric = isinstance(item, Num)
    if isinstance(item, Items):  # a list of rows: rows of the wrong length or with bad values are bad too
        row = [item.item.lo] * item.length
        return [[], [row[:-1]], [row + row[:1]], [["abc"] * item.length], "abc", [row[0]], {"a": 1}] + \
            ([] if rule.null else [None])
    good = (item.lo if not item.lo_open else (item.lo + item.hi) / 2) if numeric else item.options[0]
    n = rule.length or 1
    cases = [[], ["abc"] * n, "abc", {"a": 1}, [True] * n]
    if rule.length:
        cases.append([good] * (rule.length + 1))
    if rule.ascending:
        cases.append([item.hi, item.lo])
    if numeric:
        cases += [[item.hi * 10 + 1] * n, [-(10 ** 12)] * n, [float("nan")] * n]
    if not rule.null:
        cases.append(None)
    return cases


LIST_CASES = [(k, v) for k in LIST_KEYS for v in _bad_lists(SCHEMA[k])]


@pytest.mark.parametrize("key,value", LIST_CASES, ids=[f"{k}={v!r}" for k, v in LIST_CASES])
def test_list_keys_reject_bad_lists(key, value):
    with pytest.raises(SvmixError) as info:
        resolve_config(apply_overrides(base_with(key), {key: value}))
    assert str(info.value).startswith(f"{key}={value!r}: must be ") and "\n" not in str(info.value)


CHOICE_KEYS = sorted(k for k, r in SCHEMA.items() if isinstance(r, Choice))


def _bad_choices(rule):
    """Unknown words, the empty string, an option in other case or padded, non-strings, null if not allowed."""
    first = rule.options[0]
    cases = ["nope", "", first.upper() if first.upper() != first else first.lower(), f" {first}", 3, True,
             [first], {"a": 1}]
    return cases + ([] if rule.null else [None])


CHOICE_CASES = [(k, v) for k in CHOICE_KEYS for v in _bad_choices(SCHEMA[k])]


@pytest.mark.parametrize("key,value", CHOICE_CASES, ids=[f"{k}={v!r}" for k, v in CHOICE_CASES])
def test_every_choice_key_rejects_what_is_not_one_of_its_options(key, value):
    with pytest.raises(SvmixError) as info:
        resolve_config(apply_overrides(base_with(key), {key: value}))
    assert str(info.value) == f"{key}={value!r}: must be {SCHEMA[key].describe()}"


@pytest.mark.parametrize("key,value", [("train.amp", "yes"), ("train.amp", 1), ("model.encoder.lgm_mode", "both"),
                                       ("train.augment.types", ["reverb", "echo"]), ("train.early_stopping", 3),
                                       ("train.optimizer_switch.optimizer.lr", -1.0), ("train.kd", "last_mse")])
def test_other_keys_are_type_checked(key, value):
    raw = apply_overrides(base_with(key), {key: value})
    with pytest.raises(SvmixError, match=key.replace(".", r"\.")):
        resolve_config(raw)


@pytest.mark.parametrize("registry_section", sorted(SECTION_REGISTRIES))
def test_every_registry_parameter_has_a_declared_range(registry_section):
    registry = SECTION_REGISTRIES[registry_section]
    for name in registry.names():
        required = {p: REQUIRED_VALUES[p] for p, d in registry.defaults(name).items() if repr(d) == "REQUIRED"}
        raw = apply_overrides(BASE, {registry_section: {"name": name, **required, **GIVEN_VALUES.get(name, {})}})
        if registry_section == "train.kd":
            raw["train"]["kd"]["layers"] = [1]
        resolved = resolve_config(raw)  # validates every key: an undeclared one is an "unknown key" error
        assert set(_get(resolved, registry_section)) >= set(registry.defaults(name))


TEACHER_PARAMS = "model.frontend.teacher.params"


def test_every_teacher_architecture_key_the_hf_reader_writes_has_a_schema_rule():
    """A teacher frontend records the torchaudio builder arguments that svmix.teachers.hf_format derives
    from config.json; the schema declares them by hand, so the two lists are checked against each other
    for every model type and feature extractor (a key added to the reader alone broke teacher + backend
    training before)."""
    from svmix.teachers.hf_format import FEATURE_EXTRACTORS, HF_DEFAULTS, HF_MODEL_TYPES
    from svmix.train.config import validate

    produced = set()
    for model_type in HF_MODEL_TYPES.names():
        for extractor in FEATURE_EXTRACTORS:
            _, params = HF_MODEL_TYPES.get(model_type)({**HF_DEFAULTS, "svmix_feature_extractor": extractor})
            validate({"params": params}, prefix="model.frontend.teacher.")   # unknown key or bad value: error
            produced |= set(params)
    declared = {k[len(TEACHER_PARAMS) + 1:] for k in SCHEMA if k.startswith(TEACHER_PARAMS + ".")}
    assert declared == produced, f"declared only: {sorted(declared - produced)}; produced only: {sorted(produced - declared)}"


def test_bad_numbers_are_rejected_before_any_work(tmp_path):
    from svmix.train.trainer import train

    data = make_datadir(tmp_path / "d", num_speakers=2, utts_per_speaker=2, seconds=(1.0, 1.2))
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump(BASE))
    # train.batch_size=-3 used to hang the trainer; now the CLI fails at once, in one line
    exp = tmp_path / "exp_cli"
    proc = subprocess.run([sys.executable, "-m", "svmix.bin.train", "--config", str(conf), "--data", str(data),
                           "--exp", str(exp), "--no-progress", "--override", "train.batch_size=-3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert ": error: train.batch_size=-3: must be an integer in [1, 1000000]" in proc.stderr
    assert not exp.exists()
    # --max-steps -1 used to publish an untrained model.pt; the config layer rejects it too
    for max_steps in (-1, 0, 2.5, "3"):
        with pytest.raises(SvmixError, match=rf"train\.max_steps={max_steps!r}: must be an integer in \[1, "):
            train(load_train_config(conf), data, tmp_path / "exp_api", max_steps=max_steps, progress=False)
        with pytest.raises(SvmixError, match=r"train\.max_steps="):
            load_train_config(conf, {"train.max_steps": max_steps})
    assert not (tmp_path / "exp_api").exists()


# ---------------------------------------------------------------- closed resolution
def test_a_changed_constructor_default_is_recorded_where_it_was_used(tmp_path, monkeypatch, one_thread):
    """Acceptance: change a constructor default, train from a copy of the shipped config that leaves
    the key unset, and the experiment's config.yaml and checkpoint record the value actually used."""
    from svmix.train.trainer import train

    model_yaml = read_yaml(CONF / "model" / "svmixer_mini.yaml", "model config")
    del model_yaml["model"]["encoder"]["token_expansion"]  # the default applies
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "svmixer_mini.yaml").write_text(yaml.safe_dump(model_yaml))
    train_yaml = read_yaml(CONF / "train_mini.yaml", "training config")
    (tmp_path / "train_mini.yaml").write_text(yaml.safe_dump(train_yaml))

    init = SVMixerEncoder.__init__
    with_defaults = [p.name for p in inspect.signature(init).parameters.values() if p.default is not p.empty]
    defaults = dict(zip(with_defaults, init.__defaults__))
    assert defaults["token_expansion"] == 4
    defaults["token_expansion"] = 2
    monkeypatch.setattr(init, "__defaults__", tuple(defaults.values()))
    monkeypatch.setattr(PlateauSchedule.__init__, "__defaults__", (0.5, 5, 0.25, 1e-6))  # threshold, min_lr

    data = make_datadir(tmp_path / "d", num_speakers=3, utts_per_speaker=2, seconds=(3.1, 3.4))
    config = load_train_config(tmp_path / "train_mini.yaml", ["train.kd.name=null", "train.batch_size=2",
                                                              "train.max_steps=1", "train.num_workers=0"])
    exp = tmp_path / "exp"
    out = train(config, data, exp, progress=False)
    monkeypatch.undo()  # today's defaults are back; the experiment must not depend on them

    saved = yaml.safe_load((exp / "config.yaml").read_text())
    assert saved["model"]["encoder"]["token_expansion"] == 2
    assert saved["train"]["scheduler"] == {"name": "plateau", "factor": 0.5, "patience": 2, "threshold": 0.25,
                                           "min_lr": 1e-6}
    assert saved["train"]["kd"]["name"] is None and saved["train"]["augment"]["babble_sources"] == [4, 7]
    ckpt = read_checkpoint(out)
    assert ckpt["config"]["encoder"]["token_expansion"] == 2 and ckpt["train_config"]["scheduler"]["threshold"] == 0.25
    state = torch.load(exp / "checkpoints" / "last.pt", weights_only=False)
    assert state["config"] == saved
    model, _ = load_model_checkpoint(out)  # rebuilt from the recorded value, not today's default
    mlp = model.encoder.blocks[0].token_mixing.global_mlp[0]
    assert mlp.out_features == 2 * model.seq_len
    assert load_train_config(exp / "config.yaml") == saved  # a resolved config resolves to itself


def test_resolution_is_closed_and_idempotent():
    for name in ("train_mini", "train_paper", "train_released"):
        config = load_train_config(CONF / f"{name}.yaml")
        assert resolve_config(config) == config
        assert yaml.safe_load(yaml.safe_dump(config)) == config  # plain YAML (no tuples)
        train = config["train"]
        assert set(train["optimizer"]) >= {"betas", "eps", "amsgrad"}
        assert set(train["augment"]) == set(DEFAULT_AUGMENT_CONFIG)
        model = config["model"]
        assert model["frontend"]["name"] == "conv"  # old configs without a frontend name: the conv frontend
        assert set(model["frontend"]) - {"name"} == set(FRONTENDS.defaults("conv")) == {"channels", "kernels",
                                                                                       "strides", "dropout"}
        assert set(model["backend"]) - {"name"} == set(BACKENDS.defaults(model["backend"]["name"]))
        assert set(model["encoder"]) - {"name"} == set(ENCODERS.defaults(model["encoder"]["name"]))


def test_a_section_naming_another_entry_does_not_inherit_the_default_entrys_parameters():
    released = load_train_config(CONF / "train_released.yaml")["train"]
    assert set(released["scheduler"]) == {"name", "t_0", "t_up", "eta_max", "t_mult", "gamma"}
    assert isinstance(build_schedule(released), WarmRestartSchedule)  # inherited 'factor' was a TypeError
    sgd = resolve_config(apply_overrides(BASE, {"train.optimizer": {"name": "sgd", "lr": 0.1}}))["train"]["optimizer"]
    assert sgd["weight_decay"] == 0 and sgd["momentum"] == 0  # SGD's defaults, not AdamW's recipe values
    same = resolve_config(apply_overrides(BASE, {"train.optimizer": {"lr": 0.1}}))["train"]["optimizer"]
    assert same["name"] == "adamw" and same["weight_decay"] == 2e-5  # same entry: merged with the default


def test_one_reader_one_merge_and_dotted_overrides(tmp_path):
    conf = tmp_path / "t.yaml"
    conf.write_text(yaml.safe_dump(BASE))
    config = load_train_config(conf, ["train.batch_size=64", "train.optimizer.lr=0.5", "model.encoder.lgm=false"])
    assert config["train"]["batch_size"] == 64 and config["train"]["optimizer"]["lr"] == 0.5
    assert config["model"]["encoder"]["lgm"] is False
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}, "d": 4}) == {"a": {"b": 1, "c": 3}, "d": 4}
    for text, message in (("a: [1\n", "not valid YAML"), ("- 1\n", "must be a YAML mapping")):
        conf.write_text(text)
        with pytest.raises(SvmixError, match=message):
            load_train_config(conf)
    with pytest.raises(SvmixError, match="training config not found"):
        load_train_config(tmp_path / "missing.yaml")
    from svmix.teachers.mini import load_config  # the mini teacher reads through the same reader

    conf.write_text("train: [1\n")
    with pytest.raises(SvmixError, match="not valid YAML"):
        load_config(conf)


def test_model_configs_include_a_base_and_change_only_what_differs(tmp_path):
    from svmix.yaml_config import read_model_config

    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"model": TINY_MODEL}))
    (tmp_path / "deeper.yaml").write_text("model_config: base.yaml\nmodel:\n  encoder: {num_layers: 4}\n")
    (tmp_path / "linear_deeper.yaml").write_text(  # nested, and a backend that names another entry
        "model_config: deeper.yaml\nmodel:\n  backend: {name: ecapa, channels: 16}\n")
    deeper = read_model_config(tmp_path / "deeper.yaml")
    assert deeper == {**TINY_MODEL, "encoder": {**TINY_MODEL["encoder"], "num_layers": 4}}
    nested = read_model_config(tmp_path / "linear_deeper.yaml")
    assert nested["encoder"]["num_layers"] == 4 and nested["backend"] == {"name": "ecapa", "channels": 16}
    train = tmp_path / "train.yaml"  # a training config includes the derived file as any model config
    train.write_text(yaml.safe_dump({"model_config": "linear_deeper.yaml", "train": {"max_steps": 2}}))
    resolved = load_train_config(train)["model"]
    assert resolved == resolve_model_config(nested) and resolved["backend"]["scale"] == 4  # ECAPA's own default
    # A renamed registry mapping replaces the base's instead of merging its arguments in.
    assert merge({"b": {"name": "ecapa", "channels": 8}}, {"b": {"name": "linear"}}) == {"b": {"name": "linear"}}
    assert merge({"b": {"name": "ecapa", "channels": 8}}, {"b": {"channels": 4}}) == {"b": {"name": "ecapa", "channels": 4}}


@pytest.mark.parametrize("files, message", [
    ({"a.yaml": "model_config: b.yaml\n", "b.yaml": "model_config: a.yaml\n"}, "include each other: a.yaml -> b.yaml -> a.yaml"),
    ({"a.yaml": "model_config: a.yaml\n"}, "include each other"),
    ({"a.yaml": "model_config: missing.yaml\n"}, "model config 'missing.yaml' not found"),
    ({"a.yaml": "model_config: b.yaml\ntrain: {max_steps: 1}\n", "b.yaml": "model: {}\n"}, "unknown top-level key 'train'"),
    ({"a.yaml": "model_config: b.yaml\nmodel: [1]\n", "b.yaml": "model: {}\n"}, "'model:' must be a mapping"),
    ({"a.yaml": "model: 3\n"}, "'model:' must be a mapping"),
])
def test_bad_model_config_includes_are_one_line_errors(tmp_path, files, message):
    from svmix.yaml_config import read_model_config

    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(SvmixError, match=re.escape(message)) as info:
        read_model_config(tmp_path / "a.yaml")
    assert "\n" not in str(info.value)


def test_yaml_config_does_not_import_torch():
    """The recipes read model configs at every training step: that must stay quick."""
    code = "import sys, svmix.yaml_config; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("key,value", [("train.steps", 0), ("train.steps", -5), ("train.batch_size", 1),
                                       ("train.lr", "fast"), ("seed", -1), ("model.hidden_size", 10 ** 12),
                                       ("train.noise_snr", [25.0, 5.0])])
def test_mini_teacher_config_is_range_checked(tmp_path, key, value):
    from svmix.teachers.mini import load_config

    with pytest.raises(SvmixError, match=rf"{key.replace('.', '[.]')}=.*: must be"):
        load_config(None, {key: value})


# ---------------------------------------------------------------- old configs and checkpoints
OLD_MODEL = {"sample_rate": 16000, **TINY_MODEL}  # open: no frontend/encoder/backend defaults written


def test_old_style_checkpoint_loads(tmp_path):
    torch.manual_seed(0)
    model = build_model(OLD_MODEL)
    old = {"format": FORMAT, "svmix_version": "0.1", "config": OLD_MODEL,
           "state_dict": {k: v.clone() for k, v in model.state_dict().items()},
           "train_config": {"kd": {"type": "last_mse", "layers": [1], "lambda": 1.0}}, "step": 3}
    torch_save_atomic(old, tmp_path / "model.pt")
    loaded, ckpt = load_model_checkpoint(tmp_path)
    assert ckpt["config"] == resolve_model_config(TINY_MODEL) and "sample_rate" not in ckpt["config"]
    assert ckpt["train_config"]["kd"] == {"name": "last_mse", "layers": [1], "lambda": 1.0}
    wav = torch.randn(2, 16000)
    torch.testing.assert_close(loaded(wav), model.eval()(wav), rtol=0, atol=0)


def test_old_style_experiment_resumes_exactly(tmp_path, one_thread):
    """An experiment written before closed configs (config.yaml and last.pt with open configs,
    ``kd.type``, ``model.sample_rate``) resumes, and ends bit-identical to an uninterrupted run."""
    from svmix.train.trainer import train

    data = make_datadir(tmp_path / "d", num_speakers=3, utts_per_speaker=2, seconds=(1.1, 1.6))
    old_train = {"max_steps": 3, "batch_size": 2, "num_workers": 0, "val_every": 2, "log_every": 1,
                 "kd": {"type": None}, "optimizer": {"name": "adamw", "lr": 1e-3}}
    old_config = {"model": OLD_MODEL, "train": old_train}
    straight = train(resolve_config(old_config), data, tmp_path / "a", progress=False)
    resumed_exp = tmp_path / "b"
    train(resolve_config(old_config), data, resumed_exp, max_steps=2, progress=False)
    # rewrite the experiment as the old code wrote it: open configs and old key names
    (resumed_exp / "config.yaml").write_text(yaml.safe_dump(old_config))
    state_path = resumed_exp / "checkpoints" / "last.pt"
    state = torch.load(state_path, weights_only=False)
    state["config"] = {"model": OLD_MODEL, "train": {**state["config"]["train"], "kd": {"type": None, "layers": None}}}
    state["optimizer_config"] = {"name": "adamw", "lr": 1e-3, "weight_decay": 2e-5}
    torch_save_atomic(state, state_path)
    old_exp_config = load_train_config(resumed_exp / "config.yaml")  # the old exp dir's config loads
    resumed = train(old_exp_config, data, resumed_exp, progress=False)
    a, b = read_checkpoint(straight), read_checkpoint(resumed)
    assert a["step"] == b["step"] == 3 and a["config"] == b["config"]
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key


@pytest.mark.parametrize("rate", [8000, 22050, 44100, "16k", None])
def test_sample_rate_other_than_16000_is_an_error(rate):
    assert "sample_rate" not in resolve_model_config({"sample_rate": 16000})
    with pytest.raises(SvmixError, match=r"model\.sample_rate=.*16000 Hz audio only"):
        resolve_config(apply_overrides(BASE, {"model.sample_rate": rate}))


def test_shipped_configs_use_kd_name_and_no_sample_rate():
    for path in sorted(CONF.rglob("*.yaml")):
        raw = read_yaml(path, "config")
        assert "type" not in (raw.get("train", {}).get("kd") or {}), path
        assert "sample_rate" not in raw.get("model", {}), path


# ---------------------------------------------------------------- loss registries
def test_kd_type_is_the_old_spelling_of_kd_name():
    old = resolve_config(apply_overrides(BASE, {"train.kd": {"type": "distilhubert", "layers": [1, 2]}}))
    new = resolve_config(apply_overrides(BASE, {"train.kd": {"name": "distilhubert", "layers": [1, 2]}}))
    assert old == new and new["train"]["kd"]["cos_weight"] == 1.0 and "type" not in new["train"]["kd"]
    with pytest.raises(SvmixError, match="both 'name'"):
        resolve_config(apply_overrides(BASE, {"train.kd": {"type": "distilhubert", "name": "last_mse"}}))


@pytest.mark.parametrize("key,name,registry", [
    ("train.kd", "aam_topk", KD_LOSSES), ("train.aam", "last_mse", CLASSIFICATION_LOSSES),
    ("train.aam", "distilhubert", CLASSIFICATION_LOSSES), ("train.kd", "nope", KD_LOSSES),
    ("model.encoder", "ecapa", ENCODERS), ("model.backend", "svmixer", BACKENDS),
    ("train.optimizer", "plateau", OPTIMIZERS), ("train.scheduler", "adamw", SCHEDULERS)])
def test_an_entry_of_the_wrong_kind_names_the_key_and_the_valid_names(key, name, registry):
    with pytest.raises(SvmixError) as info:
        resolve_config(apply_overrides(BASE, {f"{key}.name": name}))
    message = str(info.value)
    assert message.startswith(f"{key}.name: unknown {registry.kind} '{name}'; known: ") and "\n" not in message
    assert message.endswith(", ".join(registry.names()))


@pytest.mark.parametrize("key,param", [("train.kd", "margin"), ("train.aam", "cos_weight"),
                                       ("model.encoder", "num_heads"), ("train.scheduler", "t_0")])
def test_a_parameter_of_another_entry_is_an_unknown_key(key, param):
    with pytest.raises(SvmixError, match=rf"{key.replace('.', '[.]')}: unknown key '{param}'"):
        resolve_config(apply_overrides(BASE, {f"{key}.{param}": 1}))


@pytest.mark.parametrize("args,option,key,message", [
    (["--steps", "0"], "--steps", {"train.steps": 0}, "train.steps=0: must be an integer in [1, "),
    (["--seed", "-1"], "--seed", {"seed": -1}, "seed=-1: must be an integer in [0, ")])
def test_train_teacher_range_checks_in_the_cli_and_in_the_config(tmp_path, args, option, key, message):
    """The CLI rejects the value while parsing its options; the config layer rejects the same value
    for Python callers."""
    from click.testing import CliRunner

    from svmix.bin.train_teacher import main
    from svmix.teachers.mini import load_config

    result = CliRunner().invoke(main, ["--data", str(tmp_path), "--out", str(tmp_path / "t"), *args])
    assert result.exit_code == 1 and f"'{option}'" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    with pytest.raises(SvmixError, match=re.escape(message)):
        load_config(None, key)
    assert not (tmp_path / "t").exists()
