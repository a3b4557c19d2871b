"""Running a grid: jobs from the store, executed inline or by local worker processes.

Every worker runs the same loop: claim a runnable job, do it, publish its artifact, repeat;
wait while other workers hold the remaining jobs; stop when every job of the grid is done or
failed. A distillation checkpoints into ``<store>/checkpoints/<key>/``, so a worker killed in
the middle of one is resumed from its last checkpoint by whoever claims the job next.

Executors:

* ``inline`` — one worker, this process (debugging; what the tests use most);
* ``local`` — ``workers`` processes (default: one per CUDA device when several are present,
  else one), each pinned to one GPU or given ``cpu_count // workers`` CPU threads;
* ``slurm`` — ``workers`` Slurm jobs submitted as one job array through ``submitit``, each
  running the worker loop with its GPU request and time limit. A worker that hits its time
  limit or is preempted is checkpointed by submitit and requeued; since all state lives in the
  store (and in distillation checkpoints), the requeued worker simply carries on.
  ``cluster="local"`` runs the same code path with submitit's local executor (tests, laptops).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robustdd.bench.grid import GridSpec, Job, expand
from robustdd.bench.store import ClaimedJob, ResultStore, worker_id
from robustdd.progress import progress_bar
from robustdd.runtime import write_json_atomic

__all__ = ["EXECUTORS", "run_grid", "run_job", "worker_loop"]

EXECUTORS = ("inline", "local", "slurm")
HEARTBEAT_SECONDS = 30.0
POLL_SECONDS = 1.0


def run_job(store: ResultStore, job: ClaimedJob, *, device: str = "auto",
            progress: bool = False) -> None:
    """Do one claimed job and publish its artifact (or mark it failed with the reason)."""
    if store.adopt_existing(job.key):
        return
    start = time.perf_counter()
    try:
        staging = store.staging_path(job.key)
        if job.kind == "distill":
            _distill(store, job, staging, device, progress)
        elif job.kind == "evaluate":
            _evaluate(store, job, staging, device, progress)
        elif job.kind == "transfer":
            _transfer(store, job, staging, device, progress)
        else:
            raise ValueError(f"unknown job kind {job.kind!r}")
    except Exception as exc:  # a job's failure is recorded, the grid goes on
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        store.fail(job.key, detail.splitlines()[-1][:500])
        shutil.rmtree(store.staging_path(job.key), ignore_errors=True)
        return
    store.commit_artifact(job.key, staging, time.perf_counter() - start)
    shutil.rmtree(store.root / "checkpoints" / job.key, ignore_errors=True)


def _distill(store: ResultStore, job: ClaimedJob, staging: Path, device: str,
             progress: bool) -> None:
    from robustdd.distill import distill

    s = job.spec
    syn = distill(s["method"], s["dataset"], s["ipc"], seed=s["seed"], profile=s["profile"],
                  device=device, arch=s.get("arch"), progress=progress,
                  checkpoint_dir=store.root / "checkpoints" / job.key, checkpoint_every=10,
                  **s["settings"])
    syn.meta["bench"] = {"key": job.key, "label": s["label"]}
    syn.save(staging / "set")


def _evaluate(store: ResultStore, job: ClaimedJob, staging: Path, device: str,
              progress: bool) -> None:
    from robustdd.distilled import DistilledSet
    from robustdd.evaluate import evaluate

    s = job.spec
    ev = s["evaluation"]
    syn = DistilledSet.load(store.verified_artifact(s["distill"]) / "set")
    record = evaluate(syn, profile=s["profile"], seed=s["seed"], device=device,
                      attacks=ev["attacks"] if ev["attacks"] else [], shift=ev["shift"],
                      curves=ev["curves"], parallel=ev.get("parallel", False),
                      progress=progress, **ev["protocol"])
    # Reports group by "method": the grid's label (e.g. rome-faithful) is what tells entries
    # apart; the registered method name stays in "bench" and in the set's meta.
    record["bench"] = {"key": job.key, "distill_key": s["distill"], "label": s["label"],
                       "method": s["method"]}
    record["method"] = s["label"]
    write_json_atomic(staging / "record.json", record)


def _transfer(store: ResultStore, job: ClaimedJob, staging: Path, device: str,
              progress: bool) -> None:
    from robustdd.distilled import DistilledSet
    from robustdd.evaluate.transfer import transfer_evaluation

    s, t = job.spec, job.spec["transfer"]
    victims = {label: DistilledSet.load(store.verified_artifact(key) / "set")
               for label, key in s["victims"].items()}
    record = transfer_evaluation(victims, adversarial_surrogate=t["adversarial_surrogate"],
                                 profile=s["profile"], attacks=t["attacks"], seed=s["seed"],
                                 device=device, progress=progress, **t["protocol"])
    record["bench"] = {"key": job.key, "ipc": s["ipc"]}
    write_json_atomic(staging / "transfer.json", record)


class _Heartbeat:
    """Refreshes a claimed job's heartbeat from a background thread while it runs."""

    def __init__(self, store: ResultStore, key: str, worker: str):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(store, key, worker),
                                        daemon=True)

    def _run(self, store: ResultStore, key: str, worker: str) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            # A missed beat only risks a reclaim after the lease.
            with contextlib.suppress(Exception):
                store.heartbeat(key, worker)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def worker_loop(store_root: str | Path, keys: Sequence[str], *, device: str = "auto",
                progress: bool = False, threads: int | None = None,
                run: str | None = None) -> int:
    """Work on ``keys`` until all are done or failed; returns how many jobs this worker did.
    ``run`` tags the worker id, so a run can tell the jobs it finished from others'."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    store = ResultStore(store_root)
    me = worker_id(run)
    done = 0
    counts = store.status_counts(keys)
    with progress_bar(len(keys), "grid jobs", progress) as advance:
        advance(counts["done"] + counts["failed"])
        while True:
            job = store.claim(me, keys)
            if job is None:
                counts = store.status_counts(keys)
                if counts["pending"] == 0 and counts["running"] == 0:
                    return done
                time.sleep(POLL_SECONDS)  # others hold the remaining jobs (or their deps)
                continue
            with _Heartbeat(store, job.key, me):
                run_job(store, job, device=device, progress=progress)
            done += 1
            advance(1)


def _local_workers(store_root: Path, keys: list[str], workers: int, device: str,
                   run: str) -> None:
    """Run ``workers`` worker processes (tagged ``run``) to completion."""
    ctx = multiprocessing.get_context("spawn")
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count() if device in ("auto", "cuda") else 0
    except Exception:
        gpus = 0
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = []
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        for w in range(workers):
            if gpus > 1:
                os.environ["CUDA_VISIBLE_DEVICES"] = str(w % gpus)
            p = ctx.Process(target=worker_loop, args=(str(store_root), keys),
                            kwargs={"device": device, "threads": threads, "run": run})
            p.start()
            procs.append(p)
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved
    for p in procs:
        p.join()


class SlurmWorker:
    """The worker loop as a requeueable submitit job (``submitit.helpers.Checkpointable``:
    on timeout or preemption it is resubmitted with the same arguments and resumes from the
    store)."""

    def __init__(self, store_root: str, keys: list[str], device: str, run: str):
        self.args = (store_root, keys, device, run)

    def __call__(self) -> int:
        store_root, keys, device, run = self.args
        return worker_loop(store_root, keys, device=device, run=run)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def _slurm_workers(store_root: Path, keys: list[str], workers: int, device: str, run: str,
                   slurm: dict[str, Any]) -> None:
    """Submit ``workers`` worker jobs as one array and wait for them."""
    import submitit

    cluster = slurm.get("cluster") or None
    if cluster is None and shutil.which("sbatch") is None:
        raise RuntimeError("no Slurm here (sbatch is not on PATH): use --executor local, or "
                           "--cluster local to run the Slurm code path on this machine")
    executor = submitit.AutoExecutor(folder=store_root / "submitit", cluster=cluster)
    executor.update_parameters(
        name="robustdd-bench", timeout_min=int(slurm.get("timeout_min", 24 * 60)),
        gpus_per_node=int(slurm.get("gpus_per_node", 0)),
        cpus_per_task=int(slurm.get("cpus_per_task", 1)),
        slurm_array_parallelism=workers, slurm_partition=slurm.get("partition"),
        slurm_additional_parameters=slurm.get("additional", {}))
    with executor.batch():
        jobs = [executor.submit(SlurmWorker(str(store_root), keys, device, run))
                for _ in range(workers)]
    for job in jobs:
        job.result()  # raises with the worker's traceback if one crashed


def default_workers(device: str = "auto") -> int:
    """One worker per CUDA device when several are present, else one."""
    try:
        import torch

        n = torch.cuda.device_count() if device in ("auto", "cuda") else 0
    except Exception:
        n = 0
    return n if n > 1 else 1


def run_grid(grid: GridSpec, store_root: str | Path, *, executor: str = "inline",
             workers: int | None = None, device: str = "auto", progress: bool = False,
             slurm: dict[str, Any] | None = None) -> dict[str, Any]:
    """Register the grid's jobs in the store, run what is missing, return a summary:
    ``completed`` (done by this run), ``skipped`` (already done), ``failed``, ``pending``.

    ``slurm`` (for ``executor="slurm"``): ``cluster`` (None: Slurm; ``"local"``: submitit's
    local executor), ``partition``, ``timeout_min``, ``gpus_per_node``, ``cpus_per_task``,
    ``additional`` (extra sbatch parameters)."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; known: {', '.join(EXECUTORS)}")
    jobs: list[Job] = expand(grid)
    keys = [j.key for j in jobs]
    store = ResultStore(store_root)
    store.register(jobs)
    store.retry_failed(keys)  # a rerun gives failed jobs another try
    damaged = store.reset_damaged(keys)  # and redoes jobs whose artifact was lost or altered
    for key in damaged:
        warnings.warn(f"{store.artifact_path(key)}: artifact missing or altered; set aside, "
                      "the job runs again", RuntimeWarning, stacklevel=2)
    start = time.perf_counter()
    run = uuid.uuid4().hex[:12]
    if executor == "inline":
        worker_loop(store_root, keys, device=device, progress=progress, run=run)
    elif executor == "local":
        _local_workers(Path(store_root), keys, workers or default_workers(device), device, run)
    else:
        _slurm_workers(Path(store_root).absolute(), keys, workers or 1, device, run,
                       dict(slurm or {}))
    after = store.status_counts(keys)
    wanted = set(keys)
    completed = sum(1 for j in store.jobs("done")
                    if j["key"] in wanted and str(j["worker"]).endswith(f"/{run}"))
    # skipped: done by an earlier run or by another worker at the same time
    return {"grid": grid.name, "store": str(store_root), "jobs": len(keys),
            "completed": completed, "skipped": after["done"] - completed,
            "failed": after["failed"], "pending": after["pending"] + after["running"],
            "seconds": round(time.perf_counter() - start, 3), "executor": executor,
            "redone_damaged": len(damaged)}
