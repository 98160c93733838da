"""svmix-train: distil a teacher into a student speaker model (stage 3)."""
from typing import Optional, Tuple

import click

from svmix.cli import DEVICE, OVERRIDE, InPath, OutPath, TeacherSpec, command, in_dir, in_file, user_errors


@command("svmix-train")
@click.option("--config", "config_path", required=True, type=in_file(),
              help="Training YAML (model: / model_config: and train: sections).")
@click.option("--data", "data_dir", required=True, type=in_dir(),
              help="Training data: a Kaldi data dir, or a dir of audio shards (shard.list, from svmix-make-shards).")
@click.option("--exp", "exp_dir", required=True, type=OutPath("dir"),
              help="Experiment dir; training resumes automatically when it has a checkpoint.")
@click.option("--teacher-cache", type=in_dir(), help="Teacher feature cache (stage 2).")
@click.option("--teacher", type=TeacherSpec(),
              help="Teacher spec (torchaudio bundle, HF directory or svmix teacher checkpoint): "
                   "run online on the clean crops, or, with --teacher-cache, check the cache was built by it.")
@click.option("--val-data", type=in_dir(), help="Held-out data dir with a labelled trials file.")
@click.option("--augment-dir", type=in_dir(), help="Augmentation lists (stage 1).")
@click.option("--model-config", type=in_file(),
              help="Model YAML; same as --override model_config=PATH.")
@click.option("--device", type=DEVICE, help="cpu, cuda or cuda:N (default: cuda:LOCAL_RANK when available).")
@click.option("--max-steps", type=click.IntRange(min=1), help="Override train.max_steps.")
@click.option("--override", "overrides", multiple=True, type=OVERRIDE, metavar="KEY.SUB=VALUE",
              help="Config override, YAML-parsed value; repeatable (e.g. train.batch_size=64).")
@click.option("--init-from", type=InPath("any"),
              help="Continue from this trained student (experiment dir or checkpoint), e.g. large-margin "
                   "fine-tuning with conf/lmft_mini.yaml; a new EXP_DIR starts from its weights.")
@click.option("--kd-data", type=in_dir(),
              help="Unlabelled audio to distil on too (a Kaldi data dir; its speakers are not read): needs "
                   "train.kd_unlabelled, e.g. --override 'train.kd_unlabelled={lambda: 1.0}'.")
@click.option("--kd-teacher-cache", type=in_dir(),
              help="The teacher cache of --kd-data, built by the --teacher-cache's teacher "
                   "(without --teacher-cache: the online --teacher gives its targets).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@user_errors
def main(config_path: str, data_dir: str, exp_dir: str, teacher_cache: Optional[str], teacher: Optional[str],
         val_data: Optional[str], augment_dir: Optional[str], model_config: Optional[str], device: Optional[str],
         max_steps: Optional[int], overrides: Tuple[str, ...], init_from: Optional[str], kd_data: Optional[str],
         kd_teacher_cache: Optional[str], no_progress: bool) -> None:
    """Train (or resume) EXP_DIR; writes EXP_DIR/model.pt. Multi-process: torchrun --nproc_per_node N
    -m svmix.bin.train ... (NCCL on GPUs, gloo on CPU)."""
    from svmix.train.config import load_train_config
    from svmix.train.trainer import train

    if max_steps is not None:  # range-checked with the rest of the config, before any work
        overrides = (*overrides, f"train.max_steps={max_steps}")
    config = load_train_config(config_path, overrides, model_config)
    out = train(config, data_dir, exp_dir, teacher_cache=teacher_cache, teacher=teacher, val_data=val_data,
                augment_dir=augment_dir, device=device, progress=not no_progress, init_from=init_from,
                kd_data=kd_data, kd_teacher_cache=kd_teacher_cache)
    click.echo(str(out))


if __name__ == "__main__":
    main()
