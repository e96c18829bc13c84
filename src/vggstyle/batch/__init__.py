"""stylize_batch(): many content x style pairs (or clips), on this machine or on a Dask cluster, resumable.

Data flows one way: jobs are listed and checked (plan.py; cheap, no torch), the ones whose output
already exists with the same parameters are skipped (outdir.py), a runner (work.py for this
machine, cluster.py for a Dask cluster) turns the others into outcomes (output bytes, losses,
timings), and outdir.py writes each outcome atomically and appends its row to OUTDIR/results.csv
as it arrives. Only this process writes files, so a cluster needs no shared filesystem, and a
crash or Ctrl-C leaves finished outputs that a rerun skips. What the facade and the runners share
(Job, Task) is in jobs.py, below them all.

The "same parameters" test is a hash of the result-changing options and of the bytes of
both inputs, stored in the output PNG's 'vggstyle' metadata as ``batch_hash``.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config import StyleConfig
from .jobs import IMAGE_SUFFIXES, VIDEO_SUFFIXES, Job, Task, is_video
from .outdir import RESULT_COLUMNS, RESULTS_NAME, JobResult, already_done, job_hash, prepare_outdir, record
from .plan import as_jobs, check_jobs, expand_paths, jobs_from_pairs, jobs_from_paths

__all__ = ["IMAGE_SUFFIXES", "RESULT_COLUMNS", "RESULTS_NAME", "VIDEO_SUFFIXES", "Job", "JobResult", "check_jobs",
           "expand_paths", "is_video", "jobs_from_pairs", "jobs_from_paths", "stylize_batch"]


def stylize_batch(jobs, outdir, config: StyleConfig | None = None, *, scheduler: str | None = None,
                  on_result: Callable[[JobResult], None] | None = None, force: bool = False,
                  devices=("auto",), resources: dict | None = None, retries: int = 2,
                  max_in_flight: int | None = None) -> list[JobResult]:
    """Run every job, skipping those already done; return one JobResult per job.

    jobs: Jobs, (content, style) pairs or dicts {content, style, output?, **StyleConfig fields}.
    outdir: outputs as {content-stem}__{style-stem}.png, and results.csv (one row per finished job).
    scheduler: a Dask scheduler address (tcp://host:port): one task per job on the cluster, with
    ``resources`` (e.g. {"GPU": 1}) and ``retries``; otherwise this machine, one job at a time per
    entry of ``devices``. on_result: called with each JobResult as it arrives (skipped ones too).
    A failing job is recorded and the others go on. Ctrl-C (KeyboardInterrupt) stops the running
    jobs, keeps what is finished and propagates; calling again continues.
    """
    base = config or StyleConfig()
    jobs = as_jobs(jobs)
    check_jobs(jobs, base)
    outdir = prepare_outdir(outdir)
    on_result = on_result or (lambda result: None)
    results, tasks, digests = [], [], {}
    for job in jobs:
        job_config = job.config(base)
        task = Task(job, job_config, job_hash(job, job_config, digests))
        if not force and already_done(outdir / job.output, task.hash):
            results.append(JobResult(job, "skipped", outdir / job.output))
            on_result(results[-1])
        else:
            tasks.append(task)
    for task, outcome in _runner(scheduler, devices, resources, retries, max_in_flight)(tasks):
        results.append(record(task, outcome, outdir))
        on_result(results[-1])
    return results


def _runner(scheduler, devices, resources, retries, max_in_flight):
    if scheduler:
        from .cluster import DaskRunner
        return DaskRunner(scheduler, resources=resources, retries=retries, max_in_flight=max_in_flight)
    from .work import LocalRunner
    return LocalRunner(devices)
