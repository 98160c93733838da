"""svmix-validate-data: check a Kaldi data directory (and its trials)."""
import sys

import click

from svmix.cli import command, in_dir, user_errors
from svmix.data.validate import fix_datadir, validate_datadir


@command("svmix-validate-data")
@click.argument("data_dir", type=in_dir())
@click.option("--fix", is_flag=True, help="Drop bad entries (originals copied to a new DATA_DIR/.backup/NNN/).")
@click.option("--deep", is_flag=True, help="Decode every audio file (finds corrupt, silent, NaN and too-short audio).")
@click.option("--no-audio", is_flag=True, help="Do not look at audio files at all.")
@user_errors
def main(data_dir: str, fix: bool, deep: bool, no_audio: bool) -> None:
    """Check DATA_DIR and report every problem with file and line; exit 1 when any is found."""
    report = validate_datadir(data_dir, check_audio=not no_audio, deep=deep, progress=True)
    for problem in report.problems:
        click.echo(str(problem), err=True)
    if report.ok:
        click.echo(f"{data_dir}: OK ({report.num_utts} utterances, {report.num_trials} trials)")
        return
    if fix:
        fixed = fix_datadir(data_dir, report)
        summary = ", ".join(f"{n} from {name}" for name, n in fixed.dropped.items() if n)
        click.echo(f"{data_dir}: fixed; dropped {summary or 'nothing'} (originals in {fixed.backup}/)")
        return
    click.echo(f"{data_dir}: {len(report.problems)} problem(s) found", err=True)
    sys.exit(1)


if __name__ == "__main__":
    main()
