"""svmix-train-teacher: stage 1 of the mini recipe, train a small WavLM teacher (HF layout)."""
from typing import Optional

import click

from svmix.cli import SEED, FiniteFloat, OutPath, command, in_dir, in_file, user_errors


@command("svmix-train-teacher")
@click.option("--data", "data_dir", required=True, type=in_dir(),
              help="Training data dir (wav.scp, utt2spk).")
@click.option("--out", "out_dir", required=True, type=OutPath("dir"),
              help="Teacher directory (config.json + model.safetensors, Hugging Face layout).")
@click.option("--config", "config_path", type=in_file(),
              help="YAML overriding the defaults (conf/teacher_mini.yaml).")
@click.option("--max-minutes", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Fail (saving nothing) if training takes longer than this; off by default. "
                   "A time limit never shortens training.")
@click.option("--seed", type=SEED, default=None, help="Overrides the config's seed.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Overrides train.steps.")
@click.option("--trials-data", type=in_dir(),
              help="Data dir with trials: write OUT/eval.json with the teacher's own EER.")
@user_errors
def main(data_dir: str, out_dir: str, config_path: Optional[str], max_minutes: Optional[float], seed: Optional[int],
         steps: Optional[int], trials_data: Optional[str]) -> None:
    """Train the mini teacher on DATA's speakers and save it to OUT."""
    from svmix.teachers.mini import load_config, train_mini_teacher
    from svmix.utils.logging import setup_logging

    setup_logging()
    overrides = {key: value for key, value in (("seed", seed), ("train.steps", steps)) if value is not None}
    config = load_config(config_path, overrides)
    summary = train_mini_teacher(data_dir, out_dir, config, max_minutes=max_minutes, trials_data=trials_data)
    message = f"{out_dir}: mini teacher trained ({summary['steps_done']} steps"
    if "eval" in summary:
        message += f", EER {summary['eval']['eer']:.2f}% on {trials_data}"
    click.echo(message + ")")


if __name__ == "__main__":
    main()
