"""The benchmark runner: grid files, the result store, executors and store reports."""

from pathlib import Path

from robustdd.bench.export import export_records
from robustdd.bench.grid import GridError, GridSpec, Job, expand, load_grid
from robustdd.bench.runner import EXECUTORS, run_grid
from robustdd.bench.store import ResultStore

__all__ = ["EXECUTORS", "GridError", "GridSpec", "Job", "ResultStore", "expand",
           "export_records", "load_grid", "run_grid", "store_records", "store_report"]


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
    jobs at the largest IPC (ROME reports IPC 50), for the dataset and profile of the first
    such job. Several seeds are combined: the heatmap shows each cell's mean over them, Table 2
    mean ± std. Two finished transfer jobs of one seed (e.g. two transfer configurations in one
    store) are refused."""
    import json
    from statistics import fmean

    from robustdd.evaluate.transfer import (
        ADVERSARIAL_SURROGATE,
        transfer_metrics,
        transfer_pair_metrics,
    )
    from robustdd.report.seeds import combine_metrics

    jobs = [j for j in store.jobs("done") if j["kind"] == "transfer"]
    if not jobs:
        return None, None
    top = max(j["spec"]["ipc"] for j in jobs)
    first = next(j["spec"] for j in jobs if j["spec"]["ipc"] == top)
    cell = (first["dataset"], first["profile"], top)
    by_seed: dict[int, dict] = {}
    for j in jobs:
        s = j["spec"]
        if (s["dataset"], s["profile"], s["ipc"]) != cell:
            continue
        if s["seed"] in by_seed:
            raise ValueError(f"{store.root}: two finished transfer jobs for {cell[0]}, "
                             f"{cell[1]} profile, IPC {top}, seed {s['seed']} (different "
                             "transfer settings); report them from separate stores")
        by_seed[s["seed"]] = json.loads((store.verified_artifact(j["key"]) / "transfer.json")
                                        .read_text())
    seeds = sorted(by_seed)
    docs = [by_seed[s] for s in seeds]
    values: dict[str, dict[str, dict[str, list[float]]]] = {}  # mode → surrogate → victim
    for doc in docs:
        for mode, block in transfer_metrics(doc, metric="I-RR").items():
            for s, row in block.items():
                for v, x in row.items():
                    seen = values.setdefault(mode, {}).setdefault(s, {}).setdefault(v, [])
                    if isinstance(x, int | float):
                        seen.append(x)
    matrix = {mode: {s: {v: fmean(xs) if xs else None for v, xs in row.items()}
                     for s, row in block.items()}
              for mode, block in values.items()}
    entries = None
    with_adv = [(s, d) for s, d in zip(seeds, docs, strict=True)
                if ADVERSARIAL_SURROGATE in d["accuracy"]]
    if with_adv:
        victims = list(dict.fromkeys(v for _, d in with_adv for v in d["victims"]))
        entries = []
        for victim in victims:
            have = [(s, d) for s, d in with_adv if victim in d["victims"]]
            per_seed = [transfer_pair_metrics(d, ADVERSARIAL_SURROGATE, victim) for _, d in have]
            entries.append((cell[0], victim, per_seed[0] if len(per_seed) == 1 else
                            combine_metrics(per_seed, [s for s, _ in have])))
    return matrix, entries
