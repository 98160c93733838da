"""Every recipe's options, as its --help lists them: each can be set from the command line (--name value,
--name=value, dashes or underscores) and takes effect, checked with --print-options (the variables
recipe_begin resolved, printed before any work); unknown options and options without a value fail
with one line; the teacher layers follow the teacher; paths resolve against the directory run from."""
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

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
                "teacher_layers": "1,3", "num_trials": "123", "target_ratio": "0.25", "ngpu": "3"}


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
def test_help_defaults_are_what_the_recipe_uses(recipe):
    """The printed variables that --help lists start from their --help default (derived ones excepted)."""
    options = help_options(recipe)
    got = print_options(recipe, "--teacher-layers", "2", "--corpus", str(ROOT)) if recipe == "custom" else \
        print_options(recipe, "--teacher-layers", "2")
    derived = {"teacher", "cache", "teacher_layers", "voxceleb2_wav", "corpus"}  # "default: ..." ones; set above
    for name, default in options.items():
        if name not in derived:
            assert got[name] == default, name


def test_top_run_sh_is_the_mini_recipe():
    assert help_options("top") == help_options("mini")
    assert print_options("top", "--teacher-layers", "2") == print_options("mini", "--teacher-layers", "2")


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
    (["--teacher-layers", "1-4"], "--teacher-layers must be comma-separated layer numbers"),
    (["--teacher-layers", "4,"], "--teacher-layers must be comma-separated layer numbers"),
    (["--students", "no_such_student"], "no_such_student.yaml not found"),
    (["--train-config", "/nonexistent.yaml"], "--train-config /nonexistent.yaml: file not found"),
    (["extra"], "unexpected argument 'extra'"),
    (["--exp", ""], "--exp must not be empty"),
    (["--students="], "--students must not be empty"),
])
@pytest.mark.parametrize("recipe", ["mini", "custom", "voxceleb"])
def test_bad_values_fail_in_one_line_before_any_work(recipe, args, message, tmp_path):
    base = ["--exp", str(tmp_path / "exp"), "--teacher-layers", "2"]
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
    ("mini", [], "4"),
])
def test_teacher_layers_follow_the_teacher(recipe, args, layers):
    got = print_options(recipe, "--corpus", str(ROOT), *args) if recipe == "custom" else print_options(recipe, *args)
    assert got["teacher_layers"] == layers


def test_teacher_layers_follow_the_mini_teacher_config_and_a_local_teacher(tmp_path):
    config = yaml.safe_load((ROOT / "conf/teacher_mini.yaml").read_text())
    config["model"]["num_hidden_layers"] = 6
    (tmp_path / "teacher6.yaml").write_text(yaml.safe_dump(config))
    assert print_options("mini", "--teacher-config", str(tmp_path / "teacher6.yaml"))["teacher_layers"] == "6"
    got = print_options("custom", "--corpus", str(ROOT), "--teacher", "mini",
                        "--teacher-config", str(tmp_path / "teacher6.yaml"))
    assert got["teacher_layers"] == "6" and got["teacher"] == "exp/custom/teacher"
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "wavlm", "num_hidden_layers": 3}')
    assert print_options("custom", "--corpus", str(ROOT), "--teacher", str(hf))["teacher_layers"] == "3"
    proc = run("custom", "--corpus", str(ROOT), "--teacher", "no-such-teacher", "--print-options")
    assert proc.returncode != 0 and "no-such-teacher" in proc.stderr and len(proc.stderr.splitlines()) == 1


@pytest.mark.parametrize("recipe, args", [("mini", ["--teacher-config", "/nonexistent.yaml"]),
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
    values.update(stage="0", stop_stage="-1", nj="1", ngpu="0", teacher_layers="1", exp=str(tmp_path / "exp"),
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
