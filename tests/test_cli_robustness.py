"""Systematic CLI robustness: every console script, every option, every class of bad value.

The scripts come from the installed ``console_scripts`` entry points (checked against setup.cfg), the
options from each click command's declared parameters, and the bad values from the declarations
(tests/cli_cases.py): missing, empty, wrong type, negative, zero, huge, NaN/inf, a path that is a
directory, a file, missing, below a regular file or without permission. Each case takes a valid
baseline command line of its script (tiny inputs made once per session), replaces one parameter by
the bad value, and must fail while the options are parsed, before the command body starts: exit code 1,
exactly one line on stderr, ``svmix-<tool>: error: ...`` naming the parameter, no traceback, nothing
on stdout, and no file created, removed or modified in the session's tree (inputs and the baselines'
earlier outputs).
"""
import configparser
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Dict, List, Tuple

import click
import pytest
import torch
import yaml
from click.testing import CliRunner

import cli_cases
from cli_cases import NO_VALUE, OMIT, Case
from conftest import ROOT, make_datadir
from svmix.cli import IntList
from test_cache import tiny_wavlm_dir

SCRIPTS: Dict[str, click.Command] = {
    ep.name: ep.load() for ep in entry_points(group="console_scripts")
    if ep.dist is not None and ep.dist.name == "svmix"}
BIN = Path(sys.executable).parent

TINY_STUDENT = {"segment_seconds": 1.0, "num_eval_segments": 2, "hidden": 16, "embed_dim": 8,
                "frontend": {"channels": 8}, "encoder": {"name": "svmixer", "num_layers": 1, "group_dim": 8},
                "backend": {"name": "linear"}}
TINY_STUDENT_TRAIN = {"batch_size": 2, "max_steps": 2, "log_every": 1, "val_every": 2, "checkpoint_every": 2,
                      "val_segments": 1, "keep_best": 1, "average": 1, "num_workers": 0, "seed": 1,
                      "preload_audio": False}
TINY_TEACHER = {"seed": 1, "model": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                     "intermediate_size": 32, "conv_dim": [8] * 7, "num_conv_pos_embeddings": 8,
                                     "num_conv_pos_embedding_groups": 2},
                "train": {"steps": 1, "batch_size": 2, "crop_seconds": 1.0, "warmup_steps": 1, "log_every": 1}}


class World:
    """Tiny inputs for every script (made once per session), path placeholders and a tree snapshot."""

    def __init__(self, root: Path):
        from svmix.cache import CacheSettings, build_cache
        from svmix.inference.extract import extract_embeddings, list_inputs
        from svmix.scoring.pipeline import score_file
        from svmix.train.config import load_train_config
        from svmix.train.trainer import train

        self.root = root
        self.data = make_datadir(root / "corpus", num_speakers=2, utts_per_speaker=2, seconds=(1.1, 1.5))
        self.teacher = tiny_wavlm_dir(root / "teacher", hidden=16, channels=8)
        self.cache = build_cache(self.teacher, self.data, root / "cache", CacheSettings(layers=[1, 2]),
                                 progress=False)
        self.train_yaml = root / "train.yaml"
        self.train_yaml.write_text(yaml.safe_dump({"model": TINY_STUDENT, "train": TINY_STUDENT_TRAIN}))
        self.teacher_yaml = root / "teacher.yaml"
        self.teacher_yaml.write_text(yaml.safe_dump(TINY_TEACHER))
        self.exp = root / "exp"
        train(load_train_config(self.train_yaml), self.data, self.exp, teacher_cache=self.cache,
              val_data=self.data, progress=False)
        self.emb = root / "exp" / "emb_test"
        extract_embeddings(self.exp, list_inputs(data=self.data), self.emb, num_workers=0, progress=False)
        self.scores = root / "scores"
        score_file(self.data / "trials", self.emb / "xvector.scp", self.scores)
        self.system = root / "system"  # a system of the recipe layout: one run per seed
        self.system.mkdir()
        (self.system / "seed0").symlink_to(self.exp)
        self.commands = root / "commands.log"
        self.commands.write_text("svmix-train ...\n")
        self.out = root / "out"  # the baselines' outputs
        scratch = root / "scratch"
        (scratch / "a_dir").mkdir(parents=True)
        (scratch / "a_file").write_text("not what any tool wants\n")
        self.placeholders = {
            cli_cases.DIR: scratch / "a_dir", cli_cases.FILE: scratch / "a_file",
            cli_cases.MISSING: scratch / "no-such-dir" / "no-such-file",
            cli_cases.BELOW_FILE: scratch / "a_file" / "below"}
        if cli_cases.PERMISSIONS:
            for name, mode, is_dir in (("unreadable_file", 0, False), ("unreadable_dir", 0, True),
                                       ("readonly_dir", 0o500, True)):
                path = scratch / name
                path.mkdir() if is_dir else path.write_text("x\n")
                path.chmod(mode)
            self.placeholders.update({cli_cases.UNREADABLE_FILE: scratch / "unreadable_file",
                                      cli_cases.UNREADABLE_DIR: scratch / "unreadable_dir",
                                      cli_cases.IN_READONLY_DIR: scratch / "readonly_dir" / "out"})

    def baseline(self, script: str) -> Dict[str, object]:
        """A valid invocation of ``script``: parameter name → value, list of values or True (a flag)."""
        d, out = self.data, self.out
        return {
            "svmix-validate-data": {"data_dir": d},
            "svmix-make-shards": {"data_dir": d, "out_dir": out / "shards", "utts_per_shard": 2, "seed": 1,
                                  "no_progress": True},
            "svmix-prepare-augment": {"out": out / "augment", "synthetic": True, "num_noises": 2, "num_music": 1,
                                      "num_rirs": 2, "seed": 3},
            "svmix-train-teacher": {"data_dir": d, "out_dir": out / "teacher", "config_path": self.teacher_yaml,
                                    "max_minutes": 2, "seed": 2, "steps": 1, "trials_data": d},
            "svmix-cache-teacher": {"teacher_spec": self.teacher, "data_dir": d, "layers": "1-2",
                                    "out_dir": out / "cache", "dtype": "float32", "nj": 1, "device": "cpu",
                                    "chunk_seconds": 30, "chunk_context_seconds": 2, "shard_mb": 1,
                                    "int8_scale": "frame", "pq_bytes": 16, "fit_frames": 300, "fit_seed": 1},
            "svmix-train": {"config_path": self.train_yaml, "data_dir": d, "exp_dir": out / "exp",
                            "teacher_cache": self.cache, "teacher": self.teacher, "val_data": d,
                            "device": "cpu", "max_steps": 1, "overrides": ["train.val_every=1"],
                            "no_progress": True},
            "svmix-average": {"exp_dir": self.exp, "num": 1, "out": out / "average.pt"},
            "svmix-extract": {"model": self.exp, "data": d, "out": out / "emb", "runtime": "torch",
                              "precision": "float32", "batch_size": 4, "num_workers": 0, "device": "cpu",
                              "num_threads": 1, "nj": 1,
                              "chunk_size": 2},
            "svmix-score": {"trials": d / "trials", "scp": self.emb / "xvector.scp", "output": out / "scores",
                            "cohort_scp": self.emb / "xvector.scp", "cohort_utt2spk": d / "utt2spk",
                            "top_n": 2, "mean_from": self.emb / "xvector.scp", "chunk_size": 3,
                            "metrics_json": out / "score_metrics.json", "utt2spk": d / "utt2spk", "bootstrap": 20},
            "svmix-metrics": {"score_paths": [self.scores], "trials": d / "trials", "json_path": out / "metrics.json",
                              "labels": ["tiny"], "utt2spk": d / "utt2spk", "bootstrap": 20},
            "svmix-calibrate": {"scores": [self.scores], "trials": d / "trials", "out": out / "cal.json",
                                "quality": self.emb, "p_target": 0.05, "operating_point": "far", "far": 0.25},
            "svmix-plot": {"histogram": out / "hist.png", "scores": self.scores, "trials": d / "trials",
                           "threshold": "eer", "p_target": 0.1, "title": "tiny"},  # 4 utterances: too few for t-SNE
            "svmix-profile": {"config_paths": [self.train_yaml, self.train_yaml], "seconds": 1,
                              "max_encoder_param_diff": 0.05, "max_encoder_ratio": 1.0},
            "svmix-export": {"model_path": self.exp, "fmt": "torchscript", "out": out / "model.ts", "opset": 17,
                             "onnx_exporter": "legacy", "quantize": "none"},
            "svmix-floor": {"data_dir": d, "out_dir": out / "floor", "nj": 1, "keep_c0": True},
            "svmix-report": {"systems": [self.system], "seeds": "0", "test_dirs": [d], "trials_names": ["trials"],
                             "floor_dir": self.exp, "teacher": self.teacher, "notes": [f"{d.name}=clean"],
                             "commands": self.commands, "out": out / "RESULTS.md"},
        }[script]

    def resolve(self, value: str) -> str:
        return str(self.placeholders.get(value, value))

    def snapshot(self) -> Dict[str, Tuple[bool, int, int]]:
        """Every path below the root: is-dir, size and mtime (ns)."""
        out = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in dirnames + filenames:
                st = os.lstat(os.path.join(dirpath, name))
                out[os.path.relpath(os.path.join(dirpath, name), self.root)] = (
                    os.path.isdir(os.path.join(dirpath, name)), st.st_size, st.st_mtime_ns)
        return out


def option_word(param: click.Parameter) -> str:
    return max(param.opts, key=len)


def command_line(cmd: click.Command, values: Dict[str, object]) -> List[str]:
    argv: List[str] = []
    for param in cmd.params:
        if param.name not in values:
            continue
        value = values[param.name]
        words = [str(v) for v in (value if isinstance(value, list) else [value])]
        if isinstance(param, click.Argument):
            argv += words
        elif value is True:
            argv.append(option_word(param))
        else:
            argv += [w for v in words for w in (option_word(param), v)]
    return argv


def mutated(world: World, script: str, param: click.Parameter, case: Case) -> List[str]:
    """The baseline of ``script`` with ``param`` replaced by the bad value of ``case``."""
    cmd = SCRIPTS[script]
    values = dict(world.baseline(script))
    values.pop(param.name, None)
    if case.value is OMIT:
        return command_line(cmd, values)
    if case.value is NO_VALUE:
        return command_line(cmd, values) + [option_word(param)]
    if isinstance(param, click.Option) and param.is_flag:
        return command_line(cmd, values) + [option_word(param) + case.value]
    values[param.name] = world.resolve(case.value)
    return command_line(cmd, values)


def table() -> List[Tuple[str, str, Case]]:
    return [(script, param.name, case) for script, cmd in sorted(SCRIPTS.items())
            for param in cmd.params for case in cli_cases.cases(param)]


CASES = table()


def param_of(script: str, name: str) -> click.Parameter:
    return next(p for p in SCRIPTS[script].params if p.name == name)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    w = World(tmp_path_factory.mktemp("cli_robustness"))
    yield w
    torch.set_num_threads(threads)
    for path in w.placeholders.values():  # let pytest clean up the permission cases
        if path.exists() and not path.is_symlink():
            path.chmod(0o700)


# ----------------------------------------------------------------------------- coverage

def test_every_console_script_is_installed_and_covered(world):
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    declared = {line.split("=")[0].strip() for line in cfg["options.entry_points"]["console_scripts"].splitlines()
                if line.strip()}
    assert set(SCRIPTS) == declared
    for script in SCRIPTS:
        assert SCRIPTS[script].name == script  # messages are prefixed with the script's own name
        world.baseline(script)  # raises KeyError for a script without a baseline


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_option_has_declared_bad_value_classes(script):
    cmd = SCRIPTS[script]
    found = {p.name: cli_cases.problems(p) for p in cmd.params}
    assert {name: problem for name, problem in found.items() if problem} == {}
    assert all(cli_cases.cases(p) for p in cmd.params)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_baseline_parses(world, script):
    """The mutated cases fail because of their one bad value: the baseline itself parses."""
    cmd = SCRIPTS[script]
    values = world.baseline(script)
    assert set(values) <= {p.name for p in cmd.params}
    with cmd.make_context(script, command_line(cmd, values)) as ctx:
        assert all(ctx.params[name] is not None for name in values)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_baseline_runs(world, script, one_thread):
    result = CliRunner().invoke(SCRIPTS[script], command_line(SCRIPTS[script], world.baseline(script)))
    assert result.exit_code == 0, (result.output, result.exception)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_is_unchanged(script):
    result = CliRunner().invoke(SCRIPTS[script], ["--help"])
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout.startswith(f"Usage: {script} [OPTIONS]")
    assert all(option_word(p) in result.stdout for p in SCRIPTS[script].params if isinstance(p, click.Option))


# ----------------------------------------------------------------------------- bad values

def assert_rejected_up_front(script: str, param: click.Parameter, exit_code: int, stdout: str, stderr: str) -> None:
    lines = stderr.splitlines()
    assert exit_code == 1, stderr
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: "), stderr
    assert "Traceback" not in stderr and stdout == ""
    names = param.opts if isinstance(param, click.Option) else [param.human_readable_name]
    assert any(name in lines[0] for name in names), lines[0]


@pytest.mark.parametrize("script, name, case", CASES, ids=[f"{s}:{n}:{c.label}" for s, n, c in CASES])
def test_bad_value_is_one_line_error_before_work(world, script, name, case, monkeypatch):
    param = param_of(script, name)
    argv = mutated(world, script, param, case)

    def body(**kwargs):
        raise AssertionError(f"{script} started work with {name}={kwargs.get(name)!r}")

    monkeypatch.setattr(SCRIPTS[script], "callback", body)
    before = world.snapshot()
    result = CliRunner().invoke(SCRIPTS[script], argv)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert_rejected_up_front(script, param, result.exit_code, result.stdout, result.stderr)
    assert world.snapshot() == before


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_unknown_option_is_one_line_error(world, script):
    argv = command_line(SCRIPTS[script], world.baseline(script)) + ["--no-such-option", "1"]
    before = world.snapshot()
    result = CliRunner().invoke(SCRIPTS[script], argv)
    assert result.exit_code == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"{script}: error: ") and "--no-such-option" in result.stderr
    assert world.snapshot() == before


SUBPROCESS_CASES = [("svmix-train", "max_steps", "negative"), ("svmix-cache-teacher", "layers", "wrong-type"),
                    ("svmix-score", "output", "is-a-dir"), ("svmix-validate-data", "data_dir", "omitted")]


def test_installed_scripts_fail_like_the_in_process_runs(world):
    """The real console scripts (fresh interpreters, run side by side) give the same exit code and
    stderr line as the in-process runs, and change no file."""
    by_key = {(s, n, c.label): c for s, n, c in CASES}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = []
    before = world.snapshot()
    for script, name, label in SUBPROCESS_CASES:
        argv = mutated(world, script, param_of(script, name), by_key[script, name, label])
        proc = subprocess.Popen([str(BIN / script), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        runs.append((script, name, argv, proc))
    for script, name, argv, proc in runs:
        stdout, stderr = proc.communicate(timeout=180)
        assert_rejected_up_front(script, param_of(script, name), proc.returncode, stdout, stderr)
        in_process = CliRunner().invoke(SCRIPTS[script], argv)
        assert (in_process.exit_code, in_process.stderr) == (proc.returncode, stderr)
    assert world.snapshot() == before


# ----------------------------------------------------------------------------- parameter types

@pytest.mark.parametrize("text, expected", [("1,2,5-7", [1, 2, 5, 6, 7]), ("8", [8]), (" 0 , 3 - 4 ", [0, 3, 4]),
                                            ("24,12", [24, 12])])
def test_int_list_parses_lists_and_ranges(text, expected):
    assert IntList(min=0).convert(text, None, None) == expected
