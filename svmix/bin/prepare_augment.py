"""svmix-prepare-augment: stage 1, write noise/music/speech/rir lists for training augmentation."""
from pathlib import Path
from typing import Optional

import click

from svmix.cli import SEED, OutPath, command, in_dir, user_errors
from svmix.data.augment_resources import prepare_augment
from svmix.utils.logging import setup_logging

_DIR = in_dir()
CLIPS = click.IntRange(0, 100_000)  # synthetic clips of one kind


@command("svmix-prepare-augment")
@click.option("--out", required=True, type=OutPath("dir"), help="Output directory (e.g. data/augment).")
@click.option("--musan", type=_DIR, help="MUSAN root (noise/, music/, speech/).")
@click.option("--rirs", type=_DIR, help="RIRS_NOISES root (simulated_rirs/*/*/*.wav).")
@click.option("--babble-data", type=_DIR, help="Data dir whose wav.scp supplies babble speech (speech.scp).")
@click.option("--synthetic", is_flag=True, help="Synthesize noise, music-like tones and RIRs for kinds not given.")
@click.option("--num-noises", default=200, show_default=True, type=CLIPS, help="Synthetic noise clips.")
@click.option("--num-music", default=100, show_default=True, type=CLIPS, help="Synthetic music-like clips.")
@click.option("--num-rirs", default=200, show_default=True, type=CLIPS, help="Synthetic room impulse responses.")
@click.option("--seed", default=0, show_default=True, type=SEED)
@user_errors
def main(out: str, musan: Optional[str], rirs: Optional[str], babble_data: Optional[str], synthetic: bool,
         num_noises: int, num_music: int, num_rirs: int, seed: int) -> None:
    """Write OUT/noise.scp, music.scp, speech.scp and rir.scp (`<id> <path>`); idempotent."""
    setup_logging()
    counts = prepare_augment(Path(out), musan=musan, rirs=rirs, babble_data=babble_data, synthetic=synthetic,
                             num_noises=num_noises, num_music=num_music, num_rirs=num_rirs, seed=seed)
    click.echo(f"{out}: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))


if __name__ == "__main__":
    main()
