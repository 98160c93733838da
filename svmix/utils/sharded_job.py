"""Resumable sharded jobs: the one engine behind teacher caching (stage 2) and extraction (stage 4).

A job turns a *plan* into ``num_units`` independent units of work inside an output directory.
The plan is a JSON object saying what the output depends on. Callers supply only the work
("do these units") and the merge.

    job = ShardedJob(out, plan, num_units, JobLayout("plan.json", "shards", "shard-{:05d}", ".bin"),
                     tool="svmix-cache-teacher")
    result = job.run(work, merge, finished=..., before_work=..., nj=4)

*Units.* Unit ``i`` is published atomically: first its data file ``UNIT_DIR/NAME.SUFFIX``, then
its done-marker ``UNIT_DIR/NAME.json``. The marker records the data file's size, its ``crc32``
(cheap, checked on every rerun), its ``sha256`` (for ``--verify``) and whatever the work adds. It is
written through :meth:`ShardedJob.publish`. A unit counts as done when its marker exists and its
data file has the recorded size.

*Resume.* A rerun with an equal plan keeps the done units. Before anything else it checks the size
and crc32 of each done unit of its own rank, and redoes a unit that fails the check (warning naming
the file). With another plan, ``on_other_plan`` decides: ``"refuse"`` raises naming the differing
keys, ``"restart"`` clears the units. Plan keys in ``ignore`` are not part of the identity (e.g. a
teacher's path). Keys in ``sticky`` are not either, but on resume the stored value wins. So a resumed
extraction keeps the batch size it started with, and its bytes do not depend on where it was stopped.

*Launch.* Under torchrun (:func:`svmix.train.distributed.launch_env`) unit ``i`` belongs to rank
``i % world``. Within a process the rank's units are split over ``nj`` spawned local processes
(``mine[k::nj]``). Ranks need no process group and may even run one after another.

*Finish.* After its work, each process checks under the directory guard
(:func:`svmix.utils.locking.directory_guard`) whether the output is ``finished`` or every unit is
done. The last one to finish runs ``merge``; the others return None.

*Concurrency.* The whole run holds the output lock (:func:`svmix.utils.locking.output_lock`):
another run on the same directory refuses, naming this one. The ranks of one torchrun launch
share the lock.

*Failure.* If the run fails in a single process and no unit is published, it removes the plan file
and unit directory it created. A rerun then starts clean, and nothing an earlier successful run
published is touched. Published units are kept, so the rerun resumes from them.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import zlib
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, TypeVar

from svmix.errors import SvmixError
from svmix.utils.fileio import atomic_path, read_json, sha256_file, write_json
from svmix.utils.locking import directory_guard, output_lock
from svmix.utils.logging import get_logger, logging_to, setup_logging

_log = get_logger("job")
R = TypeVar("R")


@contextlib.contextmanager
def naming_file(path: os.PathLike) -> Iterator[None]:
    """Give an OS error raised while writing ``path`` the file's name, if it has none.

    A full disk then reads ``[Errno 28] No space left on device: '<path>'``."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from None


@dataclass(frozen=True)
class JobLayout:
    """Where a job keeps its plan and units, relative to the output directory."""

    plan_file: str          # e.g. "plan.json"
    unit_dir: str           # e.g. "shards"
    unit_name: str          # a format string for the unit index, e.g. "shard-{:05d}"
    data_suffix: str        # e.g. ".bin"


@dataclass(frozen=True)
class Worker:
    """Where a call of the work function runs: local process ``index`` of ``nj`` on rank ``rank`` of
    ``world``; ``slot`` numbers the workers of one host (progress-bar row, GPU choice)."""

    rank: int = 0
    world: int = 1
    index: int = 0
    nj: int = 1
    slot: int = 0


class UnitFile:
    """The data file of a unit being published: ``write`` bytes, fill ``info`` for the marker."""

    def __init__(self, f: Any):
        self._f = f
        self._crc = 0
        self._sha = hashlib.sha256()
        self.bytes = 0
        self.info: Dict[str, Any] = {}

    def write(self, data: bytes) -> None:
        self._f.write(data)
        self._crc = zlib.crc32(data, self._crc)
        self._sha.update(data)
        self.bytes += len(data)

    def tell(self) -> int:
        return self.bytes


def file_crc32(path: os.PathLike, block: int = 1 << 20) -> int:
    crc = 0
    with open(path, "rb") as f:
        for data in iter(lambda: f.read(block), b""):
            crc = zlib.crc32(data, crc)
    return crc


class ShardedJob:
    """A resumable job of ``num_units`` units in ``out`` (see the module docstring). Picklable, so
    spawned local workers get it as their first argument."""

    def __init__(self, out: os.PathLike, plan: Dict[str, Any], num_units: int, layout: JobLayout, *,
                 tool: str, what: str = "results", on_other_plan: str = "restart",
                 ignore: Sequence[str] = (), sticky: Sequence[str] = (),
                 differences: Optional[Callable[[Dict[str, Any], Dict[str, Any]], List[str]]] = None,
                 log_file: Optional[os.PathLike] = None):
        """``log_file``: where this process (once it holds the output) and its local workers log."""
        if on_other_plan not in ("restart", "refuse"):
            raise ValueError(f"on_other_plan must be 'restart' or 'refuse', not {on_other_plan!r}")
        self.out = Path(out)
        self.plan = dict(plan)
        self.num_units = int(num_units)
        self.layout = layout
        self.tool, self.what, self.on_other_plan = tool, what, on_other_plan
        self.ignore, self.sticky = tuple(ignore), tuple(sticky)
        self._differences = differences
        self.log_file = None if log_file is None else str(log_file)
        self.resumed: Set[int] = set()  # units done when this run started
        self._other_plan: List[str] = []
        self.complete_at_start = False  # run() found the output finished and did nothing

    # ------------------------------------------------------------------ paths and state
    @property
    def plan_path(self) -> Path:
        return self.out / self.layout.plan_file

    @property
    def unit_dir(self) -> Path:
        return self.out / self.layout.unit_dir

    def unit_path(self, i: int, suffix: str) -> Path:
        return self.unit_dir / f"{self.layout.unit_name.format(i)}{suffix}"

    def data_path(self, i: int) -> Path:
        return self.unit_path(i, self.layout.data_suffix)

    def marker_path(self, i: int) -> Path:
        return self.unit_path(i, ".json")

    def marker(self, i: int) -> Optional[Dict[str, Any]]:
        """Unit ``i``'s done-marker, or None when the unit still has to be (re)done."""
        path, data = self.marker_path(i), self.data_path(i)
        if not path.is_file() or not data.is_file():
            return None
        try:
            info = read_json(path)
        except SvmixError:  # a marker is written atomically; an unreadable one was damaged later
            return None
        if not isinstance(info, dict) or info.get("bytes") != data.stat().st_size:
            return None
        return info

    def done(self, i: int) -> bool:
        return self.marker(i) is not None

    def done_units(self) -> Set[int]:
        return {i for i in range(self.num_units) if self.done(i)}

    def problem(self, i: int) -> Optional[str]:
        """Why done unit ``i``'s data does not match its marker (size, then crc32 or, for markers
        without one, sha256); None when it matches or the unit is not done."""
        path, data = self.marker_path(i), self.data_path(i)
        if not path.is_file():
            return None
        if self.marker(i) is None:
            return f"{data}: missing or not of the size its done-marker records"
        info = read_json(path)
        if "crc32" in info:
            ok = file_crc32(data) == info["crc32"]
        else:
            ok = "sha256" in info and sha256_file(data) == info["sha256"]
        return None if ok else f"{data}: checksum differs from its done-marker (corrupt)"

    @staticmethod
    def units_of(rank: int, world: int, num_units: int) -> List[int]:
        return [i for i in range(num_units) if i % world == rank]

    # ------------------------------------------------------------------ publishing
    @contextlib.contextmanager
    def publish(self, i: int) -> Iterator[UnitFile]:
        """Write unit ``i``: the block writes the data through the yielded :class:`UnitFile` and
        fills its ``info``; on success the data file, then the marker, are published atomically."""
        data = self.data_path(i)
        for stale in self.unit_dir.glob(f".{data.name}.*.tmp"):  # left by a killed run
            stale.unlink()
        with naming_file(data):
            with atomic_path(data) as tmp:
                with open(tmp, "wb") as f:
                    unit = UnitFile(f)
                    yield unit
        info = {**unit.info, "bytes": unit.bytes, "crc32": unit._crc, "sha256": unit._sha.hexdigest()}
        with naming_file(self.marker_path(i)):
            write_json(self.marker_path(i), info)

    # ------------------------------------------------------------------ plan
    def differences(self, old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
        """Plan keys that make ``old`` other work than ``new`` (without ``ignore`` and ``sticky``)."""
        if self._differences is not None:
            keys = self._differences(old, new)
        else:
            keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return [k for k in keys if k not in self.ignore and k not in self.sticky]

    def _prepare(self, rank: int, world: int) -> bool:
        """Compare with the stored plan: refuse, or say whether to start over (True) or resume, in
        which case the sticky keys are taken from it and this rank's corrupt units are dropped."""
        prior = read_json(self.plan_path) if self.plan_path.is_file() else None
        if prior is None:
            return False
        differs = self.differences(prior, self.plan)
        if differs:
            if self.on_other_plan == "refuse":
                raise SvmixError(f"{self.out}: holds {self.what} with other settings (differs in "
                                 f"{', '.join(differs)}); remove it or choose another --out")
            self._other_plan = differs
            return True
        for key in self.sticky:
            if key in prior and prior[key] != self.plan.get(key):
                _log.info("resuming with %s=%s as started (not %s), for identical results", key, prior[key],
                          self.plan.get(key))
                self.plan[key] = prior[key]
        for i in self.units_of(rank, world, self.num_units):
            problem = self.problem(i)
            if problem is not None:
                _log.warning("%s; redoing it", problem)
                self.marker_path(i).unlink(missing_ok=True)
                self.data_path(i).unlink(missing_ok=True)
        return False

    def _write_plan(self, restart: bool) -> None:
        """Store the plan (clearing old units on a restart)."""
        if restart:
            _log.warning("%s holds unfinished %s of other inputs/options (differs in %s); starting over",
                         self.out, self.what, ", ".join(self._other_plan))
            shutil.rmtree(self.unit_dir, ignore_errors=True)
        self.unit_dir.mkdir(parents=True, exist_ok=True)
        if restart or not self.plan_path.is_file() or read_json(self.plan_path) != self.plan:
            with naming_file(self.plan_path):
                write_json(self.plan_path, self.plan)

    def _clean_up_failed_start(self) -> None:
        """After a failure with nothing published: remove the plan and unit dir this run created."""
        if self.done_units():
            _log.info("%s: kept %d finished unit(s) for resuming", self.out, len(self.done_units()))
            return
        self.plan_path.unlink(missing_ok=True)
        shutil.rmtree(self.unit_dir, ignore_errors=True)  # this run's: it created the plan

    # ------------------------------------------------------------------ running
    def run(self, work: Callable[["ShardedJob", List[int], Worker], None], merge: Callable[["ShardedJob"], R], *,
            finished: Optional[Callable[["ShardedJob"], Optional[R]]] = None,
            before_work: Optional[Callable[["ShardedJob"], None]] = None, nj: int = 1) -> Optional[R]:
        """Run the job (see the module docstring) and return ``merge``'s result, ``finished``'s when
        the output was complete already, or None on a rank that was not the last to finish.

        ``work(job, units, worker)`` does the given units (publishing each with ``job.publish``); it
        must be picklable when ``nj > 1``. ``finished(job)`` returns the result of a complete output
        (or None). ``before_work(job)`` runs before anything is written (free-space checks)."""
        from svmix.train.distributed import launch_env

        env = launch_env()
        if nj < 1:
            raise SvmixError(f"--nj must be at least 1, got {nj}")
        # The log file only once the output is this run's: a refused run must not write into another's.
        with output_lock(self.out, self.tool), logging_to(self.log_file):
            created = False
            try:
                with directory_guard(self.out):
                    restart = self._prepare(env.rank, env.world_size)
                    if finished is not None:
                        result = finished(self)
                        if result is not None:
                            self.complete_at_start = True
                            return result
                    if before_work is not None:
                        before_work(self)
                    created = restart or not self.plan_path.is_file()
                    self._write_plan(restart)
                    self.resumed = self.done_units()
                mine = [i for i in self.units_of(env.rank, env.world_size, self.num_units) if i not in self.resumed]
                if self.resumed:
                    _log.info("resuming: %d of %d units are done", len(self.resumed), self.num_units)
                self._launch(work, mine, env.rank, env.world_size, env.local_rank, nj)
            except BaseException:
                if created and env.world_size == 1:
                    with directory_guard(self.out):
                        self._clean_up_failed_start()
                raise
            with directory_guard(self.out):
                result = finished(self) if finished is not None else None
                if result is not None:
                    return result
                if len(self.done_units()) < self.num_units:
                    _log.info("rank %d/%d done; the last one to finish merges", env.rank + 1, env.world_size)
                    return None
                return merge(self)

    def _launch(self, work: Callable, mine: List[int], rank: int, world: int, local_rank: int, nj: int) -> None:
        nj = max(1, min(nj, len(mine)))
        if not mine:
            return
        if nj == 1:
            work(self, mine, Worker(rank, world, 0, 1, local_rank))
            return
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=nj, mp_context=get_context("spawn"), initializer=setup_logging,
                                 initargs=(self.log_file,)) as pool:
            futures = [pool.submit(work, self, mine[k::nj], Worker(rank, world, k, nj, local_rank * nj + k))
                       for k in range(nj)]
            errors = []
            for fut in futures:
                try:
                    fut.result()
                except BaseException as e:  # let every worker finish its own units first
                    errors.append(e)
        if errors:
            raise errors[0]
