"""The recipe driver: option parsing, --help, unknown options, done-markers."""
import random
import subprocess
import time
from pathlib import Path

import pytest

from conftest import max_concurrent

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


# step_pool_* (tools/stage_lib.sh): several steps at once, at most N; a failure stops none of the others.
POOL_SCRIPT = """
set -euo pipefail
. {root}/tools/stage_lib.sh
done_dir={tmp}/done
step() {{ run_step "$1" -- bash -c 'echo "start $0 $(date +%s.%N)" >> {tmp}/trace; sleep "$1";
  echo "end $0 $(date +%s.%N)" >> {tmp}/trace; echo "last line of $0"; exit "$2"' "$1" "$2" "$3"; }}
step_pool_begin {size}
{runs}
step_pool_end || {{ echo "pool failed" >&2; exit 3; }}
echo "after the pool" >&2
"""


def run_pool(tmp_path, size, steps):
    """steps: (name, seconds, exit status); returns (process, {name: (start, end)})."""
    runs = "\n".join(f"step_pool_run {n} {tmp_path}/logs/{n}.log step {n} {s} {rc}" for n, s, rc in steps)
    script = POOL_SCRIPT.format(root=ROOT, tmp=tmp_path, size=size, runs=runs)
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    times = {}
    trace = tmp_path / "trace"
    for line in (trace.read_text().splitlines() if trace.exists() else []):
        what, name, t = line.split()
        times.setdefault(name, [None, None])[what == "end"] = float(t)
    return proc, times


@pytest.mark.parametrize("case", range(4))
def test_step_pool_runs_every_step_at_most_n_at_once_and_names_each_failure(case, tmp_path):
    rng = random.Random(case)
    size = rng.choice([2, 3])
    steps = [(f"s{i}", rng.choice([0.2, 0.5, 0.8]), 1 if rng.random() < 0.3 else 0) for i in range(rng.randint(3, 6))]
    if case == 0:  # at least one failure, early, and one success after it
        steps[0] = ("s0", 0.2, 1)
    proc, times = run_pool(tmp_path, size, steps)
    assert set(times) == {n for n, _, _ in steps}  # every step ran, failed ones too, to its end
    assert all(s is not None and e is not None for s, e in times.values())
    assert max_concurrent(times.values()) <= size
    failed = [n for n, _, rc in steps if rc]
    done = {p.name[:-len(".done")] for p in (tmp_path / "done").glob("*.done")}
    assert done == {n for n, _, rc in steps if not rc}  # markers for what finished, none for failures
    if failed:
        assert proc.returncode == 3 and "after the pool" not in proc.stderr
        for n in failed:
            assert f"FAILED {n}; the end of {tmp_path}/logs/{n}.log:" in proc.stderr
            assert f"    last line of {n}" in proc.stderr
        assert f"{len(failed)} step(s) failed" in proc.stderr
    else:
        assert proc.returncode == 0 and "after the pool" in proc.stderr
    for n, _, _ in steps:
        assert f"last line of {n}" in (tmp_path / "logs" / f"{n}.log").read_text()


def test_step_pool_of_one_runs_in_the_foreground_and_stops_at_a_failure(tmp_path):
    proc, times = run_pool(tmp_path, 1, [("a", 0.1, 0), ("b", 0.1, 1), ("c", 0.1, 0)])
    assert set(times) == {"a", "b"} and proc.returncode != 0  # set -e: the first failure ends the script
    assert "last line of a" in proc.stdout and not (tmp_path / "logs").exists()  # output on the terminal
    assert max_concurrent(times.values()) == 1
