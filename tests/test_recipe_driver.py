"""The recipe driver: option parsing, --help, unknown options, done-markers."""
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(args, **kw):
    return subprocess.run(["bash", str(ROOT / "run.sh"), *args], capture_output=True, text=True, cwd=ROOT, **kw)


def test_unknown_option_is_an_error_naming_it():
    proc = run(["--bogus", "1"])
    assert proc.returncode != 0
    assert "unknown option --bogus" in proc.stderr
    assert "--stop-stage" in proc.stderr  # lists the known ones


def test_help_lists_stages_0_to_6():
    proc = run(["--help"])
    assert proc.returncode == 0
    for n in range(7):
        assert f"\n  {n}  " in proc.stdout
    assert "--stop-stage" in proc.stdout


def test_run_step_skips_when_inputs_unchanged_and_reruns_when_changed(tmp_path):
    script = f"""
set -euo pipefail
. {ROOT}/tools/stage_lib.sh
done_dir={tmp_path}/done
commands_log={tmp_path}/commands.log
run_step demo {tmp_path}/input -- bash -c 'echo ran >> {tmp_path}/count'
"""
    (tmp_path / "input").write_text("a")
    for _ in range(2):
        subprocess.run(["bash", "-c", script], check=True, capture_output=True)
    assert (tmp_path / "count").read_text().count("ran") == 1
    time.sleep(1.1)
    (tmp_path / "input").write_text("changed")
    proc = subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True)
    assert "run  demo" in proc.stderr
    assert (tmp_path / "count").read_text().count("ran") == 2
    assert "bash -c" in (tmp_path / "commands.log").read_text()


def test_failed_step_writes_no_marker(tmp_path):
    script = f"""
. {ROOT}/tools/stage_lib.sh
done_dir={tmp_path}/done
run_step broken -- false
"""
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert proc.returncode != 0
    assert not (tmp_path / "done" / "broken.done").exists()
    assert "FAILED broken" in proc.stderr


def test_stop_stage_underscore_spelling_is_accepted(tmp_path):
    proc = run(["--stop_stage", "-1", "--stage", "0", "--exp", str(tmp_path / "exp")])
    assert proc.returncode == 0, proc.stderr
    assert "stages 0..-1" in (tmp_path / "exp" / "run.log").read_text()


def test_explicit_stage_redoes_its_steps_and_moves_finished_output_aside(tmp_path):
    def script(given):
        return f"""
set -euo pipefail
. {ROOT}/tools/stage_lib.sh
done_dir={tmp_path}/done
stage=3; stop_stage=6; svmix_given_options="{given}"
if in_stage 3; then
  run_step --fresh {tmp_path}/expdir train -- bash -c 'mkdir -p {tmp_path}/expdir && echo x >> {tmp_path}/expdir/log'
fi
"""
    subprocess.run(["bash", "-c", script("")], check=True, capture_output=True)
    subprocess.run(["bash", "-c", script("")], check=True, capture_output=True)  # default stage: skipped
    assert (tmp_path / "expdir" / "log").read_text() == "x\n"
    proc = subprocess.run(["bash", "-c", script(" stage")], check=True, capture_output=True, text=True)
    assert "redo train" in proc.stderr
    assert (tmp_path / "expdir" / "log").read_text() == "x\n"  # a fresh directory
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("expdir.")]
    assert len(aside) == 1 and (aside[0] / "log").read_text() == "x\n"  # the old run is kept
