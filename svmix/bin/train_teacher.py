"""svmix-train-teacher: stage 1 of the mini recipe, train a small WavLM teacher (HF layout)."""
from typing import Optional

import click

from svmix.cli import user_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="Training data dir (wav.scp, utt2spk).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Teacher directory (config.json + model.safetensors, Hugging Face layout).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML overriding the defaults (conf/teacher_mini.yaml).")
@click.option("--max-minutes", type=float, default=6.0, show_default=True,
              help="Safety cap on training time; stopping early is logged.")
@click.option("--seed", type=int, default=None, help="Overrides the config's seed.")
@click.option("--steps", type=int, default=None, help="Overrides train.steps.")
@click.option("--trials-data", type=click.Path(file_okay=False),
              help="Data dir with trials: write OUT/eval.json with the teacher's own EER.")
@user_errors
def main(data_dir: str, out_dir: str, config_path: Optional[str], max_minutes: float, seed: Optional[int],
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
