"""Every recipe's options, as its --help lists them: each can be set from the command line (--name value,
--name=value, dashes or underscores) and takes effect, checked with --print-options (the variables
recipe_begin resolved, printed before any work); unknown options and options without a value fail
with one line; the teacher layers follow the teacher; paths resolve against the directory run from."""
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import max_concurrent

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "top": ROOT / "run.sh",  # the thin wrapper around recipes/mini/run.sh
    "mini": ROOT / "recipes/mini/run.sh",
    "custom": ROOT / "recipes/custom/run.sh",
    "voxceleb": ROOT / "recipes/voxceleb/run.sh",
}
# Values that must be of a kind (the rest get distinct strings). Stages 4-5 keep stage 0's corpus
# checks and stage 3's config checks out of the way, so that every option can be set at once.
TYPED_VALUES = {"stage": "4", "stop_stage": "5", "teacher_mode": "online", "kd": "distilhubert",
                "teacher_layers": "1,3", "num_trials": "123", "target_ratio": "0.25", "ngpu": "3",
                "seeds": "1,2,3", "floor": "false", "train_teacher": "true", "students": "student_a student_b",
                "nokd_students": "student_a", "baselines": "base_a base_b", "test_sets": "set_a set_b",
                "voices_part": "eval", "backends": "asnorm calibration qmf fusion", "lmft": "student_b"}


@pytest.fixture(scope="module")
def hf_teacher(tmp_path_factory):
    """A local HF-layout teacher (config.json only: the recipes read its layer count, nothing more)."""
    path = tmp_path_factory.mktemp("teacher") / "mini_world"
    path.mkdir()
    (path / "config.json").write_text('{"model_type": "wavlm", "num_hidden_layers": 6}')
    return path


def teacher_args(recipe, hf_teacher):
    """The mini recipe's teacher is the shipped one: tests name a local stand-in."""
    return ["--teacher", str(hf_teacher)] if recipe in ("mini", "top") else []


def run(recipe, *args, cwd=ROOT):
    return subprocess.run(["bash", str(RECIPES[recipe]), *args], capture_output=True, text=True, cwd=cwd)


def help_options(recipe):
    """{option name with underscores: default} from the recipe's --help."""
    proc = run(recipe, "--help")
    assert proc.returncode == 0, proc.stderr
    listing = proc.stdout.split("\nOptions (default):\n", 1)[1]
    options = {}
    for line in listing.splitlines():
        name, default = re.match(r"  --(\S+) +(.*)$", line).groups()
        if name != "print-options":  # a flag, not a variable
            options[name.replace("-", "_")] = "" if default == '""' else default
    return options


def printed(proc):
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("=", 1) for line in proc.stdout.splitlines())


def print_options(recipe, *args, cwd=ROOT):
    return printed(run(recipe, *args, "--print-options", cwd=cwd))


def new_value(name, default):
    if name in TYPED_VALUES:
        return TYPED_VALUES[name]
    if re.fullmatch(r"-?\d+", default):
        return str(int(default) + 1)
    if name.endswith("_opts"):
        return f"--{name.replace('_', '-')}-flag 1 --other x"  # values may start with dashes, hold spaces
    return f"set {name}/value"


def spell(name, value, style):
    flag = "--" + (name if "underscores" in style else name.replace("_", "-"))
    return [f"{flag}={value}"] if "equals" in style else [flag, value]


@pytest.mark.parametrize("style", ["dashes", "dashes-equals", "underscores", "underscores-equals"])
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_help_option_can_be_set_and_takes_effect(recipe, style):
    options = help_options(recipe)
    assert {"stage", "stop_stage", "nj", "exp", "teacher", "teacher_layers", "students"} <= set(options)
    values = {name: new_value(name, default) for name, default in options.items()}
    assert all(values[n] != options[n] for n in options)  # every value differs from its default
    args = [a for name, value in values.items() for a in spell(name, value, style)]
    got = print_options(recipe, *args)
    for name, value in values.items():
        if recipe == "voxceleb" and name == "train_opts":  # --kd distilhubert adds its loss
            assert got[name] == f"--override train.kd.name=distilhubert {value}"
        else:
            assert got[name] == value, name


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_help_defaults_are_what_the_recipe_uses(recipe, hf_teacher):
    """The printed variables that --help lists start from their --help default (derived ones excepted)."""
    options = help_options(recipe)
    got = print_options(recipe, "--teacher-layers", "2", "--corpus", str(ROOT)) if recipe == "custom" else \
        print_options(recipe, "--teacher-layers", "2", *teacher_args(recipe, hf_teacher))
    derived = {"teacher", "cache", "teacher_layers", "voxceleb2_wav", "corpus"}  # "default: ..." ones; set above
    for name, default in options.items():
        if name not in derived:
            assert got[name] == default, name


def test_top_run_sh_is_the_mini_recipe(hf_teacher):
    assert help_options("top") == help_options("mini")
    args = ["--teacher-layers", "2", "--teacher", str(hf_teacher)]
    assert print_options("top", *args) == print_options("mini", *args)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_unknown_option_fails_listing_the_known_ones(recipe):
    proc = run(recipe, "--no-such-option", "1")
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "error: unknown option --no-such-option; known options:" in lines[0]
    known = lines[0].split("known options:", 1)[1].split()
    assert known == ["--" + n.replace("_", "-") for n in help_options(recipe)]


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_option_without_a_value_fails(recipe):
    for name in help_options(recipe):
        for flag in ("--" + name, "--" + name.replace("_", "-")):
            proc = run(recipe, "--stage", "4", flag)
            assert proc.returncode == 2, flag
            program = "recipes/mini/run.sh" if recipe == "top" else str(RECIPES[recipe])  # the wrapper's exec
            assert proc.stderr.splitlines() == [f"{program}: error: option {flag} needs a value"], flag


@pytest.mark.parametrize("args, message", [
    (["--stage", "one"], "--stage must be an integer, got 'one'"),
    (["--stop-stage="], "--stop-stage must be an integer, got ''"),
    (["--nj", "0"], "--nj must be at least 1, got 0"),
    (["--nj", "2.5"], "--nj must be an integer, got '2.5'"),
    (["--ngpu", "-1"], "--ngpu must be at least 0, got -1"),
    (["--train-nj", "0"], "--train-nj must be at least 1, got 0"),
    (["--train-nj", "two"], "--train-nj must be an integer, got 'two'"),
    (["--train-nj", "2", "--ngpu", "2"], "--train-nj 2 with --ngpu 2: each training takes every GPU"),
    (["--teacher-layers", "1-4"], "--teacher-layers must be comma-separated layer numbers"),
    (["--teacher-layers", "4,"], "--teacher-layers must be comma-separated layer numbers"),
    (["--students", "no_such_student"], "no_such_student.yaml not found"),
    (["--train-config", "/nonexistent.yaml"], "--train-config /nonexistent.yaml: file not found"),
    (["extra"], "unexpected argument 'extra'"),
    (["--exp", ""], "--exp must not be empty"),
    (["--students="], "--students must not be empty"),
    (["--seeds", "1,x"], "--seeds must be comma-separated non-negative integers"),
    (["--seeds", "01"], "without leading zeros"),
    (["--seeds", "-1"], "--seeds must be comma-separated"),
    (["--seeds", "2,1,2"], "--seeds lists a seed twice: '2,1,2'"),
    (["--seeds="], "--seeds must not be empty"),
    (["--floor", "yes"], "--floor must be true or false, got 'yes'"),
    (["--students", "a/b"], "--students: 'a/b' is not a plain name"),
    (["--nokd-students", "no_such_student"], "--students: "),
    (["--baselines", "no_such_baseline"], "--baselines: "),
    (["--students", "svmixer_mini", "--baselines", "svmixer_mini"], "two systems are named 'svmixer_mini'"),
    (["--students", "floor"], "two systems are named 'floor'"),
])
@pytest.mark.parametrize("recipe", ["mini", "custom", "voxceleb"])
def test_bad_values_fail_in_one_line_before_any_work(recipe, args, message, tmp_path, hf_teacher):
    base = ["--exp", str(tmp_path / "exp"), "--teacher-layers", "2", *teacher_args(recipe, hf_teacher)]
    if recipe == "custom":
        base += ["--corpus", str(tmp_path)]
    proc = run(recipe, *base, *args)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and message in proc.stderr and ": error: " in proc.stderr
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize("args, message", [
    ([], "--corpus DIR is required"),
    (["--corpus", "/nonexistent/speakers"], "--corpus /nonexistent/speakers: directory not found"),
    (["--corpus", str(ROOT), "--num-trials", "0"], "--num-trials must be at least 1, got 0"),
    (["--corpus", str(ROOT), "--test-speakers", "x"], "--test-speakers must be an integer"),
])
def test_custom_recipe_checks_its_own_options(args, message, tmp_path):
    proc = run("custom", "--exp", str(tmp_path / "exp"), *args)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize("args, message", [
    (["--test-sets", "test a/b"], "--test-sets: 'a/b' is not a plain name"),
    (["--test-sets", "test test"], "--test-sets lists 'test' twice"),
    (["--test-sets="], "--test-sets must not be empty"),
    (["--train-teacher", "yes"], "--train-teacher must be true or false, got 'yes'"),
    (["--backends", "asnorm plda"], "--backends: 'plda' is not one of asnorm calibration qmf fusion"),
    (["--backends", "calibration", "--test-sets", "test val"], "--backends: the development set"),
    (["--backends", "calibration", "--test-sets", "test val_clean"], "the development set data/mini_world/val_clean is a test set"),
    (["--lmft", "nosuch"], "--lmft: 'nosuch' is not a trained system of this run (one of: svmixer_mini_fbank transformer_mini_fbank)"),
    (["--lmft", "svmixer_mini_fbank svmixer_mini_fbank"], "two systems are named 'svmixer_mini_fbank_lmft'"),
    (["--lmft", "svmixer_mini_fbank", "--lmft-config", "nosuch.yaml"], "--lmft-config nosuch.yaml: file not found"),
])
def test_mini_recipe_checks_its_own_options(args, message, tmp_path, hf_teacher):
    proc = run("mini", "--exp", str(tmp_path / "exp"), "--teacher", str(hf_teacher), *args)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert not (tmp_path / "exp").exists()


def test_mini_recipe_without_the_shipped_teacher_says_how_to_train_one(tmp_path):
    """Before stage 2 reads it, the teacher must exist; the error names --train-teacher."""
    proc = run("mini", "--exp", str(tmp_path / "exp"), "--teacher", str(tmp_path / "missing"))
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert f"--teacher {tmp_path}/missing: not found" in proc.stderr and "--train-teacher true" in proc.stderr
    assert not (tmp_path / "exp").exists()
    # Stages that do not read the teacher run without it (the layers given).
    proc = run("mini", "--exp", str(tmp_path / "exp"), "--teacher", str(tmp_path / "missing"),
               "--teacher-layers", "6", "--stage", "4", "--stop-stage", "4", "--print-options")
    assert proc.returncode == 0, proc.stderr


def test_mini_recipe_default_teacher_is_the_shipped_one_or_the_pretrained_one():
    proc = run("mini", "--teacher-layers", "2", "--stop-stage", "1", "--print-options")
    assert printed(proc)["teacher"] == f"{ROOT}/teachers/mini_world" and printed(proc)["data"] == "data/mini_world"
    got = print_options("mini", "--train-teacher", "true")
    assert got["teacher"] == "exp/teacher" and got["teacher_layers"] == "6"  # conf/teacher_pretrain.yaml: 6 layers
    assert got["test_sets"] == "test test_noisy" and got["test_root"] == "data/mini_world" and got["seeds"] == "0"


@pytest.mark.parametrize("args, message", [(["--kd", "kl"], "--kd must be mse or distilhubert, got 'kl'"),
                                           (["--teacher-mode", "live"], "--teacher-mode must be cache or online")])
def test_voxceleb_choices_must_be_known(args, message):
    proc = run("voxceleb", "--teacher-layers", "2", *args)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1 and message in proc.stderr


# The teacher layers follow the teacher unless given (resolved from the teacher's configuration).
@pytest.mark.parametrize("recipe, args, layers", [
    ("custom", [], "12"),                                                # WavLM Base+
    ("custom", ["--teacher", "mini"], "4"),                              # conf/teacher_mini.yaml
    ("custom", ["--teacher", "mini", "--teacher-layers", "2"], "2"),
    ("custom", ["--teacher", "WAVLM_LARGE"], "24"),
    ("voxceleb", [], "24"),
    ("voxceleb", ["--kd", "distilhubert"], "8,16,24"),
    ("voxceleb", ["--kd", "distilhubert", "--teacher", "HUBERT_BASE"], "4,8,12"),   # DistilHuBERT's own
    ("voxceleb", ["--teacher", "WAVLM_BASE_PLUS", "--teacher-layers", "6"], "6"),
    ("mini", ["--train-teacher", "true"], "6"),                          # conf/teacher_pretrain.yaml
    ("mini", ["--train-teacher", "true", "--teacher-layers", "2"], "2"),
])
def test_teacher_layers_follow_the_teacher(recipe, args, layers):
    got = print_options(recipe, "--corpus", str(ROOT), *args) if recipe == "custom" else print_options(recipe, *args)
    assert got["teacher_layers"] == layers


def test_teacher_layers_follow_the_mini_teacher_config_and_a_local_teacher(tmp_path):
    pretrain = yaml.safe_load((ROOT / "conf/teacher_pretrain.yaml").read_text())
    pretrain["model"] = {"num_hidden_layers": 3}
    (tmp_path / "pretrain3.yaml").write_text(yaml.safe_dump(pretrain))
    got = print_options("mini", "--train-teacher", "true", "--teacher-config", str(tmp_path / "pretrain3.yaml"))
    assert got["teacher_layers"] == "3" and got["teacher"] == "exp/teacher"
    config = yaml.safe_load((ROOT / "conf/teacher_mini.yaml").read_text())
    config["model"]["num_hidden_layers"] = 6
    (tmp_path / "teacher6.yaml").write_text(yaml.safe_dump(config))
    got = print_options("custom", "--corpus", str(ROOT), "--teacher", "mini",
                        "--teacher-config", str(tmp_path / "teacher6.yaml"))
    assert got["teacher_layers"] == "6" and got["teacher"] == "exp/custom/teacher"
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "wavlm", "num_hidden_layers": 3}')
    assert print_options("custom", "--corpus", str(ROOT), "--teacher", str(hf))["teacher_layers"] == "3"
    assert print_options("mini", "--teacher", str(hf))["teacher_layers"] == "3"  # the shipped teacher's way
    proc = run("custom", "--corpus", str(ROOT), "--teacher", "no-such-teacher", "--print-options")
    assert proc.returncode != 0 and "no-such-teacher" in proc.stderr and len(proc.stderr.splitlines()) == 1


@pytest.mark.parametrize("recipe, args", [("mini", ["--train-teacher", "true", "--teacher-config", "/nonexistent.yaml"]),
                                          ("custom", ["--corpus", str(ROOT), "--teacher", "mini",
                                                      "--teacher-config", "/nonexistent.yaml"])])
def test_a_missing_mini_teacher_config_fails_in_one_line(recipe, args, tmp_path):
    proc = run(recipe, "--exp", str(tmp_path / "exp"), *args)
    assert proc.returncode != 0 and proc.stderr.splitlines() == [
        "teacher_layers.py: error: /nonexistent.yaml: teacher config not found"]
    assert not (tmp_path / "exp").exists()


def test_the_teacher_layers_are_passed_to_caching_and_to_distillation():
    text = (ROOT / "tools/recipe_stages.sh").read_text()
    assert '--layers "$teacher_layers"' in text and '--override "train.kd.layers=[$teacher_layers]"' in text
    for recipe in ("mini", "custom", "voxceleb"):  # stated once: no recipe hard-codes the KD layers
        assert "kd.layers" not in RECIPES[recipe].read_text()


@pytest.mark.parametrize("recipe", ["mini", "custom", "voxceleb"])
def test_paths_resolve_against_the_directory_run_from(recipe, tmp_path):
    """Outputs and relative option values are relative to the working directory, conf/ to the repository."""
    extra = ["--corpus", "speakers"] if recipe == "custom" else []
    (tmp_path / "speakers").mkdir()
    proc = run(recipe, *extra, "--teacher-layers", "2", "--stop-stage", "-1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = print_options(recipe, *extra, "--teacher-layers", "2", cwd=tmp_path)
    assert not Path(got["exp"]).is_absolute() and (tmp_path / got["exp"] / "run.log").is_file()
    assert not Path(got["train_data"]).is_absolute()
    assert Path(got["train_config"]).is_file() and Path(got["model_conf_dir"]).is_dir()


def test_top_run_sh_writes_to_the_repository_top_from_anywhere(tmp_path):
    name = f"exp-test-{uuid.uuid4().hex[:8]}"
    try:
        proc = run("top", "--exp", name, "--teacher-layers", "2", "--stop-stage", "-1", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert (ROOT / name / "run.log").is_file() and not (tmp_path / name).exists()
    finally:
        shutil.rmtree(ROOT / name, ignore_errors=True)


# recipe_begin checks what the shared stages need.
def _stage_variables():
    out = subprocess.run(["bash", "-c", f'. {ROOT}/tools/recipe_stages.sh; echo $svmix_stage_variables'],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def _toy_recipe(tmp_path, omit=None, extra=""):
    """A recipe that sets every shared-stage variable but ``omit`` (neither defined nor an option)."""
    values = {v: f"{tmp_path}/{v}" for v in _stage_variables()}
    values.update(stage="0", stop_stage="-1", seeds="0", test_sets="test", trials_names="trials", students="s1", nj="1", ngpu="0", teacher_layers="1", exp=str(tmp_path / "exp"),
                  cache=str(tmp_path / "cache"))
    values.pop(omit, None)
    lines = [f"{k}='{v}'" for k, v in values.items()]
    script = "\n".join(["set -euo pipefail", *lines, f'recipe_options="{" ".join(values)} {extra}"',
                        f". {ROOT}/tools/stage_lib.sh", f'. {ROOT}/tools/parse_options.sh "$@"',
                        f". {ROOT}/tools/recipe_stages.sh", 'recipe_begin "$@"', "echo began"])
    path = tmp_path / "toy.sh"
    path.write_text(script)
    return path


def test_recipe_begin_accepts_a_complete_recipe(tmp_path):
    proc = subprocess.run(["bash", str(_toy_recipe(tmp_path))], capture_output=True, text=True)
    assert proc.returncode == 0 and "began" in proc.stdout, proc.stderr


@pytest.mark.parametrize("variable", _stage_variables())
def test_recipe_begin_names_a_missing_stage_variable(variable, tmp_path):
    proc = subprocess.run(["bash", str(_toy_recipe(tmp_path, omit=variable))], capture_output=True, text=True)
    assert proc.returncode == 2 and "began" not in proc.stdout
    assert proc.stderr.splitlines() == [
        f"{tmp_path}/toy.sh: error: the recipe does not set ${variable} (the shared stages in "
        "tools/recipe_stages.sh need it)"]
    assert not (tmp_path / "exp").exists()


def test_recipe_options_naming_an_undefined_variable_is_an_error(tmp_path):
    proc = subprocess.run(["bash", str(_toy_recipe(tmp_path, extra="\n  typo_variable"))],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "recipe_options lists 'typo_variable', which the recipe does not define" in proc.stderr


@pytest.mark.parametrize("separator", [" ", "\n  ", "\n", "\t", "  \n\t "])
def test_option_lists_may_be_split_anyhow(separator, tmp_path):
    """The bug behind issue 14: the last name on a line of recipe_options was unknown."""
    names = ["first", "end_of_line", "next_line", "last"]
    script = tmp_path / "toy.sh"
    script.write_text("\n".join(["set -euo pipefail", *[f"{n}=default" for n in names],
                                 f'recipe_options="{separator.join(names)}"', f". {ROOT}/tools/stage_lib.sh",
                                 f'. {ROOT}/tools/parse_options.sh "$@"',
                                 'for n in $recipe_options; do echo "$n=${!n}"; done']))
    args = [a for n in names for a in (f"--{n.replace('_', '-')}", f"v {n}")]
    proc = subprocess.run(["bash", str(script), *args], capture_output=True, text=True)
    assert printed(proc) == {n: f"v {n}" for n in names}


# Every stage with the tools replaced by shell functions that record their arguments (BASH_ENV is
# sourced by every non-interactive bash): each option's value must reach the commands, as one argument.
TOOLS = ["python", "torchrun", "svmix-validate-data", "svmix-prepare-augment", "svmix-train-teacher",
         "svmix-cache-teacher", "svmix-train", "svmix-extract", "svmix-floor", "svmix-score", "svmix-metrics",
         "svmix-export", "svmix-report", "svmix-plot", "svmix-calibrate"]
STUBS = r"""
_record() {
  local IFS=$'\x1f'; printf '%s\n' "$*" >> "$SVMIX_TEST_COMMANDS"
  if [ "$1" = svmix-report ]; then while [ $# -gt 1 ]; do [ "$1" = --out ] && echo "# RESULTS" > "$2"; shift; done; fi
}
""" + "".join(f'{tool}() {{ _record {tool} "$@"; }}\n' for tool in TOOLS)
# Options that steer the run instead of being passed on; checked below by what they change.
CONTROL = {"stage", "stop_stage", "teacher_mode", "kd", "train_teacher", "train_nj"}


def stubbed_run(recipe, tmp_path, values, stubs=STUBS):
    """The recipe with ``values`` as options, its tools replaced by ``stubs`` that record their command
    lines: the process and the file of recorded commands."""
    (tmp_path / "stubs.sh").write_text(stubs)
    log = tmp_path / "commands"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BASH_ENV": str(tmp_path / "stubs.sh"),
           "SVMIX_TEST_COMMANDS": str(log)}
    args = [a for name, value in values.items() for a in (f"--{name.replace('_', '-')}", value)]
    proc = subprocess.run(["bash", str(RECIPES[recipe]), *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env)
    return proc, log


def recorded_run(recipe, tmp_path, values, stubs=STUBS):
    proc, log = stubbed_run(recipe, tmp_path, values, stubs)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return [line.split("\x1f") for line in log.read_text().splitlines()]


# (recipe, values of its own, options that the values make unused); "HF" is a local teacher.
VARIANTS = [
    ("mini", {"train_teacher": "true"}, set()),  # pretrained here into --teacher, on the pool
    ("mini", {"train_teacher": "false", "teacher": "HF"}, {"teacher_config", "teacher_opts"}),  # a given teacher
    ("custom", {"teacher": "mini"}, {"teacher"}),  # the mini teacher is trained into $exp/teacher
    ("custom", {}, {"teacher_config", "teacher_opts"}),  # a given teacher: nothing to train
    ("voxceleb", {"teacher_mode": "online", "kd": "distilhubert"}, set()),
]


# Options whose words name systems, test sets or seeds: checked below by the commands they make.
LISTS = {"students", "nokd_students", "baselines", "seeds", "test_sets", "floor", "backends", "lmft"}


@pytest.mark.parametrize("recipe, own, unused", VARIANTS)
def test_every_option_reaches_the_commands(recipe, own, unused, tmp_path, hf_teacher):
    models = tmp_path / "model confs"
    models.mkdir()
    for name in ("student one", "student_two", "base_line"):
        (models / f"{name}.yaml").write_text("{}")
    (tmp_path / "train config.yaml").write_text("{}")
    (tmp_path / "my corpus").mkdir()
    values = {}
    for i, (name, default) in enumerate(help_options(recipe).items()):
        values[name] = (str(1000 + i) if re.fullmatch(r"-?\d+", default) else
                        f"--{name.replace('_', '-')}-flag {i}" if name.endswith("_opts") else
                        f"{tmp_path}/value of {name}")
    values.update(stage="0", stop_stage="6", ngpu="4", train_nj="1", teacher_layers="3,5", students="student_two",
                  nokd_students="student_two", baselines="base_line", seeds="7,3", floor="true",
                  model_conf_dir=str(models), train_config=str(tmp_path / "train config.yaml"))
    if recipe == "mini":
        values.update(test_sets="test set_b", backends="asnorm calibration qmf", lmft="student_two")
        Path(values["lmft_config"]).write_text("{}")
    if recipe == "custom":
        values.update(corpus=str(tmp_path / "my corpus"), target_ratio="0.375", num_trials="777")
    if recipe == "voxceleb":  # two of the other test sets present, VCMix missing
        values.update(voices_part="eval")
        for name in ("voxsrc23", "voices"):
            Path(values[name]).mkdir()
    values.update({k: str(hf_teacher) if v == "HF" else v for k, v in own.items()})
    commands = recorded_run(recipe, tmp_path, values)
    tools = [c[0] for c in commands]
    for name, value in values.items():
        if name in CONTROL | unused | LISTS:
            continue
        if name.endswith("_opts"):  # word-split on purpose: its words, in order
            assert any(value.replace(" ", "\x1f") in "\x1f".join(c) for c in commands), name
        else:
            assert any(value in arg for c in commands for arg in c), name
    assert tools[0] == "python" or tools[0].startswith("svmix-")  # stage 0 ran first
    assert "torchrun" in tools and any(c[:4] == ["torchrun", "--standalone", "--nproc_per_node", "4"]
                                       for c in commands)
    assert any("train.kd.layers=[3,5]" in c for c in commands)
    exp = values["exp"]
    # Each system once per seed, into $exp/<system>/seed<k>, with train.seed=k.
    trains = {(c[c.index("--exp") + 1], c[c.index("--model-config") + 1]): c for c in commands
              if c[0] == "torchrun" and "--init-from" not in c}
    systems = {"student_two": "student_two", "student_two_nokd": "student_two", "base_line": "base_line"}
    assert set(trains) == {(f"{exp}/{s}/seed{k}", f"{models}/{conf}.yaml") for s, conf in systems.items()
                           for k in (7, 3)}
    for (run, _), c in trains.items():
        k = run.rsplit("seed", 1)[1]
        assert f"train.seed={k}" in c
        distils = "base_line" not in run
        assert ("train.kd.layers=[3,5]" in c) == distils
        assert ("train.kd.lambda=0" in c) == (not run.startswith(f"{exp}/student_two/"))
        assert ("train.kd.name=null" in c) == (not distils)
        if not distils:  # no teacher at all
            assert "--teacher" not in c and "--teacher-cache" not in c
        elif recipe == "voxceleb":  # online teacher: no caching, the teacher runs in training
            assert "--teacher" in c and "--teacher-cache" not in c and "train.kd.name=distilhubert" in c
        else:
            assert "--teacher-cache" in c
    # --lmft (mini): each seed of the system fine-tuned from that seed, after it, with --lmft-config.
    lmfts = {c[c.index("--exp") + 1]: (i, c) for i, c in enumerate(commands) if "--init-from" in c}
    assert set(lmfts) == ({f"{exp}/student_two_lmft/seed{k}" for k in (7, 3)} if recipe == "mini" else set())
    for run, (i, c) in lmfts.items():
        k = run.rsplit("seed", 1)[1]
        base = f"{exp}/student_two/seed{k}"
        assert c[:4] == ["torchrun", "--standalone", "--nproc_per_node", "4"] and f"train.seed={k}" in c
        assert c[c.index("--init-from") + 1] == base and c[c.index("--config") + 1] == values["lmft_config"]
        assert "--teacher-cache" not in c and "--model-config" not in c
        assert i > next(j for j, b in enumerate(commands) if "--exp" in b and b[b.index("--exp") + 1] == base)
    if recipe == "mini":
        systems["student_two_lmft"] = "student_two"
    if recipe == "voxceleb":
        assert "svmix-cache-teacher" not in tools
    else:
        assert "svmix-cache-teacher" in tools
        assert ("svmix-train-teacher" in tools) == (values.get("train_teacher") == "true" or values["teacher"] == "mini")
        cache = next(c for c in commands if c[0] == "svmix-cache-teacher")
        assert cache[cache.index("--layers") + 1] == "3,5"
    # Every system and seed, and the floor, extracted and scored on every test set with its utt2spk.
    test_root, test_sets = {"mini": (values["data"], ["test", "set_b"]), "custom": (values["data"], ["test"]),
                            "voxceleb": (values["data"], ["voxceleb1", "voxsrc23", "voices"])}[recipe]
    trials = ["trials_o", "trials_e", "trials_h"] if recipe == "voxceleb" else ["trials"]
    trials_of = {s: trials for s in test_sets}
    if recipe == "voxceleb":
        trials_of.update(voxsrc23=["trials"], voices=["trials"])
        preps = {c[2]: c for c in commands if c[0] == "python" and c[1].endswith("local/voxceleb.py")}
        assert set(preps) == {"vox1", "vox2", "list", "voices"}
        assert preps["list"][preps["list"].index("--name") + 1] == "voxsrc23"
        assert preps["list"][preps["list"].index("--audio") + 1] == values["voxceleb1"]
        assert preps["voices"][preps["voices"].index("--part") + 1] == "eval"
        report = next(c for c in commands if c[0] == "svmix-report")
        assert [report[i + 1] for i, w in enumerate(report) if w == "--trials-of"] == ["voxsrc23=trials", "voices=trials"]
        missing = [report[i + 1] for i, w in enumerate(report) if w == "--missing"]
        assert len(missing) == 1 and missing[0].startswith(f"vcmix=corpus folder '{values['vcmix']}' not found")
    runs = [f"{exp}/{s}/seed{k}" for s in systems for k in (7, 3)]
    extracts = {(c[c.index("--model") + 1], c[c.index("--data") + 1]) for c in commands if c[0] == "svmix-extract"}
    # --backends: the development sets too, the clean test's own (val_clean) and val for the others
    dev_of = {"test": "val_clean", "set_b": "val"} if recipe == "mini" else {}
    assert extracts == {(r, f"{test_root}/{t}") for r in runs for t in test_sets} | {
        (r, f"{values['data']}/{d}") for r in runs for d in dev_of.values()}
    if recipe == "mini":  # calibration and QMF fitted on each development set's trials, per system and seed
        fits = [c for c in commands if c[0] == "svmix-calibrate" and "--apply" not in c]
        assert sorted((c[c.index("--out") + 1], c[c.index("--trials") + 1]) for c in fits) == sorted(
            (f"{r}/{kind}_{d}.json", f"{values['data']}/{d}/trials") for r in runs for d in dev_of.values()
            for kind in ("calibration", "qmf"))
        applied = [c for c in commands if c[0] == "svmix-score" and "--calibration" in c]
        assert len(applied) == 2 * len(runs) * len(test_sets)
        normed = [c for c in commands if c[0] == "svmix-score" and "--norm" in c]
        assert len(normed) == len(runs) * len(test_sets)
        for c in applied + normed:
            test_set = Path(c[c.index("--trials") + 1]).parent.name
            run = str(Path(c[c.index("--embeddings") + 1]).parent.parent)
            used = c[c.index("--calibration") + 1] if "--calibration" in c else c[c.index("--cohort") + 1]
            assert used in {f"{run}/{kind}_{dev_of[test_set]}.json" for kind in ("calibration", "qmf")} | {
                f"{run}/emb_dev_{dev_of[test_set]}/xvector.scp"}, (test_set, used)
    floors = [c for c in commands if c[0] == "svmix-floor"]
    assert floors == [["svmix-floor", "--data", f"{test_root}/{t}", "--out", f"{exp}/floor/emb_{t}"] for t in test_sets]
    scores = {c[c.index("--metrics-json") + 1]: c for c in commands if c[0] == "svmix-score"
              and "--norm" not in c and "--calibration" not in c and "--metrics-json" in c}
    assert set(scores) == {f"{r}/metrics_{t}_{n}.json" for r in runs + [f"{exp}/floor"] for t in test_sets
                           for n in trials_of[t]}
    for path, c in scores.items():
        assert c[c.index("--utt2spk") + 1] == f"{test_root}/{path.rsplit('metrics_', 1)[1].split('_trials')[0]}/utt2spk"
    plots = [c for c in commands if c[0] == "svmix-metrics"]
    assert len(plots) == sum(len(trials_of[t]) for t in test_sets)
    pictures = [c for c in commands if c[0] == "svmix-plot"]  # of every system's first seed, 7
    assert {c[c.index("--tsne") + 1] for c in pictures if "--tsne" in c} == {
        f"{exp}/tsne_{s}_seed7_{t}.png" for s in systems for t in test_sets}
    assert {c[c.index("--histogram") + 1] for c in pictures if "--histogram" in c} == {
        f"{exp}/hist_{s}_seed7_{t}_{n}.png" for s in systems for t in test_sets for n in trials_of[t]}
    assert all(c.count("--scores") == len(runs) + 1 and "seed7" in " ".join(c) for c in plots)  # seeds overlaid
    exports = {c[c.index("--model") + 1] for c in commands if c[0] == "svmix-export"}
    assert exports == {f"{exp}/student_two/seed{k}" for k in (7, 3)}  # the distilled students
    report = next(c for c in commands if c[0] == "svmix-report")
    assert report[report.index("--seeds") + 1] == "7,3"
    assert [report[i + 1] for i, w in enumerate(report) if w == "--system"] == [f"{exp}/{s}" for s in systems]
    assert [report[i + 1] for i, w in enumerate(report) if w == "--test-data"] == [f"{test_root}/{t}" for t in test_sets]
    assert report[report.index("--floor") + 1] == f"{exp}/floor"


# local/teacher_layers.py: the default --teacher-layers.
def teacher_layers_cli(*args):
    return subprocess.run(["python", str(ROOT / "local/teacher_layers.py"), *args], capture_output=True, text=True)


@pytest.mark.parametrize("model, layers", [({"num_hidden_layers": 6}, "6"), ({"hidden_size": 128}, "4"), ({}, "4")])
def test_mini_config_layers_stated_or_the_mini_default(model, layers, tmp_path):
    """Read as text when stated, else through svmix.teachers.mini (its default: 4 layers)."""
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"model": model} if model else {"seed": 1}))
    proc = teacher_layers_cli("--mini-config", str(tmp_path / "t.yaml"))
    assert proc.returncode == 0 and proc.stdout.strip() == layers, proc.stderr


@pytest.mark.parametrize("text, message", [(": : bad", "cannot parse"), ("[1, 2]", "must be a YAML mapping")])
def test_bad_mini_configs_fail_in_one_line(text, message, tmp_path):
    (tmp_path / "t.yaml").write_text(text)
    proc = teacher_layers_cli("--mini-config", str(tmp_path / "t.yaml"))
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith("teacher_layers.py: error: ") and message in proc.stderr


@pytest.mark.parametrize("config, layers", [('{"model_type": "wavlm", "num_hidden_layers": 5}', "5"),
                                            ('{"model_type": "hubert"}', "12")])  # HF's default
def test_hf_directory_layers(config, layers, tmp_path):
    (tmp_path / "config.json").write_text(config)
    proc = teacher_layers_cli("--teacher", str(tmp_path))
    assert proc.returncode == 0 and proc.stdout.strip() == layers, proc.stderr


@pytest.mark.parametrize("args", [[], ["--teacher", "WAVLM_BASE", "--mini-config", "x.yaml"],
                                  ["--teacher", "WAVLM_BASE", "--split", "13"], ["--teacher", "/no/such/dir"]])
def test_teacher_layers_bad_requests_fail_in_one_line(args):
    proc = teacher_layers_cli(*args)
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1 and "error: " in proc.stderr


@pytest.mark.parametrize("num_layers, parts, expected", [(24, 3, [8, 16, 24]), (12, 3, [4, 8, 12]), (4, 1, [4]),
                                                         (5, 2, [2, 5]), (3, 3, [1, 2, 3])])
def test_evenly_spaced_layers(num_layers, parts, expected):
    from local.teacher_layers import evenly_spaced

    assert evenly_spaced(num_layers, parts) == expected


# The recorded tools, but python runs too (helpers the stages call, e.g. reading a model config).
REAL_PYTHON_STUBS = STUBS.replace('python() { _record python "$@"; }',
                                  f'python() {{ _record python "$@"; "{sys.executable}" "$@"; }}')


def model_confs(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    return models


def test_teacher_plus_backend_freezes_the_recipes_teacher(tmp_path, hf_teacher):
    """A baseline whose frontend is the teacher is trained on the recipe's teacher (the shipped one,
    a given one, or the pretrained one), not on the path its config names; other systems are not."""
    models = model_confs(tmp_path)
    (models / "tb.yaml").write_text("model:\n  frontend: {name: teacher, path: somewhere/else}\n")
    (models / "plain.yaml").write_text("model:\n  frontend: {channels: 8}\n")
    commands = recorded_run("mini", tmp_path, {"stage": "3", "stop_stage": "3", "teacher": str(hf_teacher),
                                               "students": "plain", "baselines": "tb",
                                               "model_conf_dir": str(models)}, stubs=REAL_PYTHON_STUBS)
    trains = {words[words.index("--exp") + 1]: words for words in commands if words[0] == "svmix-train"}
    assert set(trains) == {"exp/plain/seed0", "exp/tb/seed0"}
    assert f"model.frontend.path={hf_teacher}" in trains["exp/tb/seed0"]
    assert not any(a.startswith("model.frontend.path=") for a in trains["exp/plain/seed0"])


def test_stage_6_exports_a_one_pass_student_as_pt2_and_the_others_as_onnx_and_torchscript(tmp_path, hf_teacher):
    models = model_confs(tmp_path)
    (models / "seg.yaml").write_text("model:\n  encoder: {name: svmixer, num_layers: 2}\n")
    (models / "whole.yaml").write_text("model:\n  num_eval_segments: 1\n  encoder: {name: svmixer_anylen, num_layers: 2}\n")
    commands = recorded_run("mini", tmp_path, {"stage": "6", "stop_stage": "6", "teacher": str(hf_teacher),
                                               "teacher_layers": "6", "students": "seg whole", "seeds": "0,2",
                                               "model_conf_dir": str(models)}, stubs=REAL_PYTHON_STUBS)
    exports = sorted((words[words.index("--model") + 1], words[words.index("--format") + 1],
                      words[words.index("--out") + 1]) for words in commands if words[0] == "svmix-export")
    assert exports == sorted([(f"exp/seg/seed{k}", "onnx", f"exp/seg/seed{k}/model.onnx") for k in (0, 2)]
                             + [(f"exp/seg/seed{k}", "torchscript", f"exp/seg/seed{k}/model.ts") for k in (0, 2)]
                             + [(f"exp/whole/seed{k}", "pt2", f"exp/whole/seed{k}/model.pt2") for k in (0, 2)])


def test_stage_3_trains_train_nj_systems_at_once_and_fine_tunes_each_after_its_system(tmp_path, hf_teacher):
    stubs = STUBS + r"""
svmix-train() {
  local exp="" prev="" a
  for a in "$@"; do [ "$prev" = --exp ] && exp="$a"; prev="$a"; done
  echo "start $exp $(date +%s.%N)" >> "$SVMIX_TEST_COMMANDS.times"; sleep 0.5
  echo "end $exp $(date +%s.%N)" >> "$SVMIX_TEST_COMMANDS.times"; mkdir -p "$exp"; : > "$exp/model.pt"
}
"""
    models = tmp_path / "models"
    models.mkdir()
    for name in ("a", "b"):
        (models / f"{name}.yaml").write_text("{}")
    (tmp_path / "train.yaml").write_text("{}")
    (tmp_path / "lmft.yaml").write_text("{}")
    exp = tmp_path / "exp"
    recorded_run("mini", tmp_path, {"stage": "3", "stop_stage": "3", "teacher": str(hf_teacher), "exp": str(exp),
                                    "teacher_layers": "6",
                                    "students": "a b", "seeds": "0,1", "lmft": "a", "train_nj": "2",
                                    "model_conf_dir": str(models), "train_config": str(tmp_path / "train.yaml"),
                                    "lmft_config": str(tmp_path / "lmft.yaml")}, stubs=stubs)
    times = {}
    for line in (tmp_path / "commands.times").read_text().splitlines():
        what, run, t = line.split()
        times.setdefault(run[len(str(exp)) + 1:], {})[what] = float(t)
    base = {f"{s}/seed{k}" for s in ("a", "b") for k in (0, 1)}
    assert set(times) == base | {"a_lmft/seed0", "a_lmft/seed1"}
    assert max_concurrent((t["start"], t["end"]) for t in times.values()) == 2  # two at a time, never more
    for k in (0, 1):
        assert times[f"a_lmft/seed{k}"]["start"] > times[f"a/seed{k}"]["end"]
    assert {p.name for p in (exp / "logs").iterdir()} == {f"train_{s}_seed{k}.log" for s in ("a", "b") for k in (0, 1)} \
        | {"lmft_a_seed0.log", "lmft_a_seed1.log"}


@pytest.mark.parametrize("text, message", [
    ("model:\n  encoder: {name: nope}\n", "unknown encoder 'nope'"),
    ("model: [not, a, mapping]\n", "bad.yaml"),
    ("model_config: no_such_base.yaml\n", "no_such_base.yaml"),
])
def test_a_bad_model_config_stops_stage_6_in_one_line_naming_the_file(text, message, tmp_path, hf_teacher):
    models = model_confs(tmp_path)
    (models / "bad.yaml").write_text(text)
    proc, log = stubbed_run("mini", tmp_path, {"stage": "6", "stop_stage": "6", "teacher": str(hf_teacher),
                                               "teacher_layers": "6", "students": "bad",
                                               "model_conf_dir": str(models)}, stubs=REAL_PYTHON_STUBS)
    assert proc.returncode != 0
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "bad.yaml" in line]
    assert errors and message in errors[0] and "Traceback" not in proc.stderr, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not log.exists() or not any(line.startswith("svmix-export")
                                       for line in log.read_text().splitlines())
