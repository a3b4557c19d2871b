"""The benchmark runner: grid files, the result store, executors and store reports."""

from robustdd.bench.grid import GridError, GridSpec, Job, expand, load_grid
from robustdd.bench.runner import EXECUTORS, run_grid
from robustdd.bench.store import ResultStore

__all__ = ["EXECUTORS", "GridError", "GridSpec", "Job", "ResultStore", "expand", "load_grid",
           "run_grid", "store_records"]


def store_records(store: ResultStore) -> list[dict]:
    """The evaluation records of every finished evaluate job, checksums verified."""
    import json

    records = []
    for job in store.jobs("done"):
        if job["kind"] == "evaluate":
            path = store.verified_artifact(job["key"]) / "record.json"
            records.append(json.loads(path.read_text()))
    return records
