"""The benchmark runner: grid files, the result store, executors and store reports."""

from pathlib import Path

from robustdd.bench.grid import GridError, GridSpec, Job, expand, load_grid
from robustdd.bench.runner import EXECUTORS, run_grid
from robustdd.bench.store import ResultStore

__all__ = ["EXECUTORS", "GridError", "GridSpec", "Job", "ResultStore", "expand", "load_grid",
           "run_grid", "store_records", "store_report"]


def store_records(store: ResultStore) -> list[dict]:
    """The evaluation records of every finished evaluate job, checksums verified."""
    import json

    records = []
    for job in store.jobs("done"):
        if job["kind"] == "evaluate":
            path = store.verified_artifact(job["key"]) / "record.json"
            records.append(json.loads(path.read_text()))
    return records


def store_report(store: ResultStore, out: str | Path) -> tuple[Path, int]:
    """Write the report of every finished evaluation in ``store`` into ``out``: the tables
    and figures of :func:`robustdd.report.write_report`, a PNG grid of each distilled set and
    ``index.html``. Returns (the page, the number of records)."""
    from robustdd.distilled import DistilledSet
    from robustdd.grid import save_grid
    from robustdd.report import write_report
    from robustdd.report.html import write_html_report

    records = store_records(store)
    if not records:
        raise ValueError(f"{store.root}: no finished evaluations to report yet")
    out = Path(out)
    matrix, entries = _transfer_inputs(store)
    written = write_report(records, out, transfer_matrix=matrix, transfer_entries=entries)
    grids = []
    for job in store.jobs("done"):
        if job["kind"] != "distill":
            continue
        s = job["spec"]
        syn = DistilledSet.load(store.verified_artifact(job["key"]) / "set")
        name = f"{s['label']}-{s['dataset']}-ipc{s['ipc']}-s{s['seed']}"
        png = save_grid(syn, out / "grids" / f"{name}.png", max_per_class=10,
                        scale=max(1, 64 // syn.image_size))
        grids.append((f"{s['label']}, {s['dataset']}, IPC {s['ipc']}, seed {s['seed']}", png))
    written["grids"] = [p for _, p in grids]
    summary = (f"{len(records)} evaluation records and {len(grids)} distilled sets from the "
               f"result store {store.root}.")
    page = write_html_report(out, written, title="robustdd benchmark report", summary=summary,
                             sample_grids=grids)
    return page, len(records)


def _transfer_inputs(store: ResultStore) -> tuple[dict | None, list | None]:
    """The heatmap matrix (I-RR) and Table 2 transfer entries of the store's finished transfer
    jobs at the largest IPC (ROME reports IPC 50). Several seeds (of one dataset) are combined:
    the heatmap shows each cell's mean over them, Table 2 mean ± std."""
    import json
    from statistics import fmean

    from robustdd.evaluate.transfer import (
        ADVERSARIAL_SURROGATE,
        transfer_metrics,
        transfer_pair_metrics,
    )
    from robustdd.report.seeds import combine_over_seeds

    docs = [json.loads((store.verified_artifact(j["key"]) / "transfer.json").read_text())
            for j in store.jobs("done") if j["kind"] == "transfer"]
    if not docs:
        return None, None
    top = max(d["bench"]["ipc"] for d in docs)
    docs = [d for d in docs if d["bench"]["ipc"] == top]
    dataset = docs[0]["test_set"]["dataset"]
    docs = [d for d in docs if d["test_set"]["dataset"] == dataset]
    matrices = [transfer_metrics(d, metric="I-RR") for d in docs]

    def cell_mean(mode: str, surrogate: str, victim: str) -> float | None:
        values = [m[mode][surrogate][victim] for m in matrices
                  if isinstance(m.get(mode, {}).get(surrogate, {}).get(victim), int | float)]
        return fmean(values) if values else None

    matrix = {mode: {s: {v: cell_mean(mode, s, v) for v in cells} for s, cells in block.items()}
              for mode, block in matrices[0].items()}
    entries = None
    with_adv = [d for d in docs if ADVERSARIAL_SURROGATE in d["accuracy"]]
    if with_adv:
        victims = list(dict.fromkeys(v for d in with_adv for v in d["victims"]))
        entries = [(dataset, victim, combine_over_seeds(
                        [transfer_pair_metrics(d, ADVERSARIAL_SURROGATE, victim)
                         for d in with_adv if victim in d["victims"]]))
                   for victim in victims]
    return matrix, entries
