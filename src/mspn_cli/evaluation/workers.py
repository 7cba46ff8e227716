"""Local worker processes for `eval-coco --workers N`: one shard each.

Each worker receives its `EvalJob` (with the `RunSettings`) as a JSON file, never as a
command line rebuilt from options, and runs `python -m mspn_cli.cli.eval_worker JOB`.
Its output goes to a log file next to its shard; its exit code says how it ended.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, List, Optional, Sequence

from mspn_cli.evaluation.job import EvalJob

__all__ = ["Worker", "WORKER_MODULE", "start_workers", "wait_workers", "stop_workers", "last_log_line"]

WORKER_MODULE = "mspn_cli.cli.eval_worker"


@dataclass
class Worker:
    job: EvalJob
    job_path: Path
    log_path: Path
    process: Optional[subprocess.Popen] = None
    log: Optional[IO] = None
    returncode: Optional[int] = None

    @property
    def label(self) -> str:
        index, count = self.job.shard or (0, 1)
        return f"{index}/{count}"

    def remove_files(self) -> None:
        for path in (self.job_path, self.log_path):
            path.unlink(missing_ok=True)


def _files_for(shard_path: Path) -> tuple:
    return shard_path.with_suffix(".job.json"), shard_path.with_suffix(".log")


def start_workers(jobs: Sequence[EvalJob]) -> List[Worker]:
    """One process per job, started at once; each job's JSON and log sit next to its shard file."""
    from mspn_cli.io.writers import write_json_atomic

    workers = []
    try:
        for job in jobs:
            job_path, log_path = _files_for(Path(job.results))
            write_json_atomic(job_path, job.to_dict(), indent=2)
            worker = Worker(job, job_path, log_path, log=open(log_path, "w"))
            workers.append(worker)
            worker.process = subprocess.Popen(
                [sys.executable, "-m", WORKER_MODULE, str(job_path)],
                stdin=subprocess.DEVNULL, stdout=worker.log, stderr=subprocess.STDOUT,
            )
    except BaseException:
        stop_workers(workers)
        raise
    return workers


def wait_workers(workers: Sequence[Worker]) -> List[Worker]:
    """Wait for every worker; the ones that failed (exit code other than 0 or 1). Interrupted: all are stopped."""
    from mspn_cli.errors import EXIT_OK, EXIT_PARTIAL

    try:
        for worker in workers:
            assert worker.process is not None
            worker.returncode = worker.process.wait()
            worker.log.close()
    except BaseException:
        stop_workers(workers)
        raise
    return [w for w in workers if w.returncode not in (EXIT_OK, EXIT_PARTIAL)]


def stop_workers(workers: Sequence[Worker]) -> None:
    """SIGTERM to the workers still running (each keeps its checkpoint), then wait for them."""
    for worker in workers:
        if worker.process is not None and worker.process.poll() is None:
            worker.process.terminate()
    for worker in workers:
        if worker.process is not None:
            worker.returncode = worker.process.wait()
        if worker.log is not None:
            worker.log.close()


def last_log_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"
