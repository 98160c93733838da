"""svmix-train-teacher: train a small WavLM teacher (HF layout).

Two objectives: speaker classification on DATA's voices (the mini corpus teacher,
svmix/teachers/mini.py), or, with --pretrain, masked prediction of k-means targets on a pretraining
pool (svmix/teachers/pretrain.py), which is how the shipped mini-world teacher was made.
"""
from typing import Optional

from pathlib import Path

import click

from svmix.cli import SEED, FiniteFloat, OutPath, command, in_dir, in_file, user_errors


# config key -> the option that overrides it: read here, and written back into the reproducing command
OVERRIDE_OPTIONS = {"seed": "--seed", "train.steps": "--steps"}


@command("svmix-train-teacher")
@click.option("--data", "data_dir", required=True, type=in_dir(),
              help="Training data dir (wav.scp, utt2spk).")
@click.option("--out", "out_dir", required=True, type=OutPath("dir"),
              help="Teacher directory (config.json + model.safetensors, Hugging Face layout).")
@click.option("--config", "config_path", type=in_file(),
              help="YAML overriding the defaults (conf/teacher_mini.yaml; with --pretrain "
                   "conf/teacher_pretrain.yaml).")
@click.option("--pretrain", is_flag=True,
              help="Pretrain on DATA as a pool (masked prediction of k-means targets), resumable: "
                   "rerunning after an interruption continues from OUT/pretrain_state.pt.")
@click.option("--max-minutes", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Fail (saving nothing) if training takes longer than this; off by default. "
                   "A time limit never shortens training.")
@click.option("--seed", type=SEED, default=None, help="Overrides the config's seed.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Overrides train.steps.")
@click.option("--trials-data", type=in_dir(),
              help="Data dir with trials: write OUT/eval.json with the teacher's own EER.")
@user_errors
def main(data_dir: str, out_dir: str, config_path: Optional[str], pretrain: bool, max_minutes: Optional[float], seed: Optional[int],
         steps: Optional[int], trials_data: Optional[str]) -> None:
    """Train a teacher on DATA and save it to OUT."""
    from svmix.teachers.mini import load_config, train_mini_teacher
    from svmix.utils.logging import setup_logging

    setup_logging()
    given = click.get_current_context().params
    overrides = {key: given[option.lstrip("-")] for key, option in OVERRIDE_OPTIONS.items()
                 if given[option.lstrip("-")] is not None}
    if pretrain:
        _pretrain(data_dir, out_dir, config_path, overrides, max_minutes, trials_data)
        return
    config = load_config(config_path, overrides)
    summary = train_mini_teacher(data_dir, out_dir, config, max_minutes=max_minutes, trials_data=trials_data)
    message = f"{out_dir}: mini teacher trained ({summary['steps_done']} steps"
    if "eval" in summary:
        message += f", EER {summary['eval']['eer']:.2f}% on {trials_data}"
    click.echo(message + ")")


def _pretrain(data_dir: str, out_dir: str, config_path: Optional[str], overrides: dict,
              max_minutes: Optional[float], trials_data: Optional[str]) -> None:
    import shlex

    from svmix.teachers.pretrain import pretrain_teacher
    from svmix.train.config import apply_overrides, read_yaml
    from svmix.utils.logging import setup_logging

    if trials_data is not None:
        raise click.UsageError("--trials-data applies to the speaker-classification teacher; a pretrained "
                               "teacher is measured with a trained backend (see docs/mini-world.md)")
    config = read_yaml(config_path, "teacher pretraining config") if config_path else {}
    config = apply_overrides(config, overrides)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    setup_logging(Path(out_dir) / "pretrain.log")
    words = ["svmix-train-teacher", "--pretrain", "--data", data_dir, "--out", out_dir]
    words += ["--config", config_path] if config_path else []
    words += [w for key, value in overrides.items() for w in (OVERRIDE_OPTIONS[key], str(value))]
    command = " ".join(shlex.quote(str(w)) for w in words)  # the command that reproduces this teacher
    summary = pretrain_teacher(data_dir, out_dir, config, max_minutes=max_minutes, command=command)
    click.echo(f"{out_dir}: teacher pretrained ({summary['steps']} steps, {summary['parameters'] / 1e6:.2f}M parameters)")


if __name__ == "__main__":
    main()
