"""The ``robustdd`` command (Typer)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from robustdd.errors import RobustDDError

if TYPE_CHECKING:
    from robustdd.bench import ResultStore

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Adversarially robust dataset distillation: distill, evaluate, attack.")
data_app = typer.Typer(no_args_is_help=True, help="List and prepare datasets.")
app.add_typer(data_app, name="data")
bench_app = typer.Typer(no_args_is_help=True,
                        help="Run grids of methods × datasets × IPCs × seeds into a result store.")
app.add_typer(bench_app, name="bench")
console = Console()
err_console = Console(stderr=True)


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs; values are parsed as YAML scalars (``200`` → int, ``true`` → bool)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise typer.BadParameter(f"expected key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise typer.BadParameter(f"{pair!r}: the value is not valid YAML ({exc})") from None
    return out


def refuse_existing(path: Path, overwrite: bool, *, folder: bool = False) -> None:
    """Raise before any work when ``path`` exists (for a ``folder``: and is not empty) and
    ``overwrite`` was not given, so that neither an earlier result nor the new one is lost."""
    empty_folder = folder and path.is_dir() and not any(path.iterdir())
    if path.exists() and not empty_folder and not overwrite:
        raise typer.BadParameter(f"{path} already exists; pass --overwrite to replace it "
                                 "(or choose another path)")
    if not folder and path.is_dir():
        raise typer.BadParameter(f"{path} is a directory, not a file")


@app.command()
def demo(out: Path = typer.Option(Path("results/demo"), help="Folder for sets and records."),
         device: str = typer.Option("auto", help="auto, cpu or cuda[:N]."),
         seed: int = typer.Option(0, help="Seed of distillation and evaluation.")) -> None:
    """Distill the embedded digits dataset with random and DM, evaluate clean and PGD accuracy."""
    from robustdd.demo import run_demo
    from robustdd.report import records_table

    records = run_demo(out, device=device, seed=seed)
    console.print(records_table(records, "robustdd demo: digits, IPC 10"))
    console.print(f"records and distilled sets written to {out}/")


@app.command("distill")
def distill_cmd(
    method: str = typer.Argument(..., help="Method name (random, dm, ...)."),
    dataset: str = typer.Argument(..., help="Dataset name or image-folder path."),
    ipc: int = typer.Option(10, help="Images per class."),
    seed: int = typer.Option(0),
    profile: str = typer.Option("small", help="smoke, small or paper."),
    out: Path = typer.Option(..., help="Folder to write the distilled set to."),
    arch: str | None = typer.Option(None, help="Distillation network (default: dataset's)."),
    device: str = typer.Option("auto"),
    root: Path | None = typer.Option(None, help="Data root (default $ROBUSTDD_DATA)."),
    set_: list[str] | None = typer.Option(None, "--set", help="Method override key=value."),
    variant: str | None = typer.Option(
        None, help="Method variant, e.g. paper or faithful for rome (same as --set variant=)."),
    checkpoint_dir: Path | None = typer.Option(
        None, help="Save progress here; rerunning the same command resumes from it."),
    checkpoint_every: int = typer.Option(100, help="Iterations between checkpoints."),
    overwrite: bool = typer.Option(False, help="Replace a distilled set already at OUT."),
) -> None:
    """Distill DATASET into IPC images per class and save the set."""
    from robustdd.distill import distill
    from robustdd.distilled import check_replaceable

    refuse_existing(out, overwrite, folder=True)
    check_replaceable(out)  # before the work: only an empty folder or a set can be replaced
    overrides = parse_overrides(set_)
    if variant is not None:
        overrides["variant"] = variant
    syn = distill(method, dataset, ipc, seed=seed, profile=profile, device=device,
                  root=str(root) if root else None, arch=arch, progress=True,
                  checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                  **overrides)
    syn.save(out)
    console.print(f"{method} {syn.dataset} IPC {ipc}: {len(syn)} images in "
                  f"{syn.meta['distill_seconds']:.1f} s → {out}")


@app.command("evaluate")
def evaluate_cmd(
    distilled: Path = typer.Argument(..., help="Folder of a saved distilled set."),
    profile: str = typer.Option("small"),
    seed: int = typer.Option(0),
    out: Path | None = typer.Option(None, help="Where to write the JSON record."),
    models: int | None = typer.Option(None, help="Number of evaluation models K."),
    device: str = typer.Option("auto"),
    root: Path | None = typer.Option(None, help="Data root (default $ROBUSTDD_DATA)."),
    set_: list[str] | None = typer.Option(None, "--set", help="Protocol override key=value."),
    suite: str | None = typer.Option(None, help="Attack suite: beard, beard-query, guard, "
                                                "guard-no-aa, quick, beard-legacy, or none "
                                                "(clean accuracy only; default: FGSM + PGD, "
                                                "both modes)."),
    shift: bool = typer.Option(False, help="Also run the distribution-shift tests."),
    curves: bool = typer.Option(False, help="Also measure PGD accuracy vs eps and steps."),
    parallel: bool = typer.Option(False, help="Train the K models stacked (faster on a GPU)."),
    overwrite: bool = typer.Option(False, help="Replace a record already at the output path."),
) -> None:
    """Train K models on a distilled set; report clean and attacked accuracy.

    The record goes to OUT, by default <set>-eval-<profile>-s<seed>[-<suite>].json beside the
    set; an existing record is kept unless --overwrite is given."""
    from robustdd.distilled import DistilledSet
    from robustdd.evaluate import evaluate
    from robustdd.report import records_table
    from robustdd.runtime import write_json_atomic

    suffix = f"-{suite}" if suite else ""
    out = out or distilled.with_name(f"{distilled.name}-eval-{profile}-s{seed}{suffix}.json")
    refuse_existing(out, overwrite)
    syn = DistilledSet.load(distilled)
    overrides = parse_overrides(set_)
    if models is not None:
        overrides["num_models"] = models
    record = evaluate(syn, profile=profile, seed=seed, device=device,
                      root=str(root) if root else None, progress=True, attacks=suite,
                      shift=shift, curves=curves, parallel=parallel, **overrides)
    write_json_atomic(out, record)
    console.print(records_table([record]))
    for k, model in enumerate(record["models"]):
        for warning in model["warnings"]:
            err_console.print(f"[yellow]warning[/yellow] (model {k}): {warning}")
    console.print(f"record written to {out}")


@app.command()
def show(distilled: Path = typer.Argument(..., help="Folder of a saved distilled set."),
         out: Path | None = typer.Option(None, help="PNG path (default: <set>/grid.png)."),
         per_class: int = typer.Option(10, help="At most this many images per class."),
         decoded: bool = typer.Option(False, help="Show the decoded training images."),
         scale: int = typer.Option(2, help="Pixel upscaling factor.")) -> None:
    """Write a PNG grid of a distilled set (one row per class)."""
    from robustdd.distilled import DistilledSet
    from robustdd.grid import save_grid

    syn = DistilledSet.load(distilled)
    path = save_grid(syn, out or distilled / "grid.png", max_per_class=per_class,
                     decoded=decoded, scale=scale)
    console.print(f"wrote {path}")


@app.command("import")
def import_cmd(
    kind: str = typer.Argument(..., help="dc (DC/DSA/DM {'data': [...]} .pt) or mtt."),
    path: Path = typer.Argument(..., help="The reference file (mtt: images_best.pt)."),
    dataset: str = typer.Option(..., help="Dataset the set was distilled from."),
    out: Path = typer.Option(..., help="Folder for the converted set."),
    method: str | None = typer.Option(None, help="Method name to record."),
    overwrite: bool = typer.Option(False, help="Replace a distilled set already at OUT."),
) -> None:
    """Convert a reference-format distilled set (normalised space) to a robustdd set."""
    from robustdd.distilled import check_replaceable, import_dc, import_mtt

    refuse_existing(out, overwrite, folder=True)
    check_replaceable(out)

    if kind == "dc":
        syn = import_dc(path, dataset, method=method or "dc")
    elif kind == "mtt":
        syn = import_mtt(path, dataset=dataset, method=method or "mtt")
    else:
        raise typer.BadParameter(f"unknown format {kind!r}; known: dc, mtt")
    syn.save(out)
    console.print(f"imported {len(syn)} images ({syn.method}, {syn.dataset}, IPC {syn.ipc}) "
                  f"→ {out}")


@app.command("metrics")
def metrics_cmd(
    records: list[Path] = typer.Argument(
        ..., exists=True, dir_okay=False,
        help="JSON files: evaluation record(s), or {'records': [{ipc, mode, attack, accuracy, "
             "time}, ...]}."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the metrics JSON."),
    crei_weight: float = typer.Option(0.5, help="Weight w of RR/I-RR in CREI/I-CREI (0 to 1)."),
    t0_rule: str = typer.Option("same-mode", help="Clean time T0: same-mode or min."),
    exclude: list[str] | None = typer.Option(
        None, help="Attack to leave out (name; name-T: targeted only). Repeatable."),
    overwrite: bool = typer.Option(False, help="Replace a file already at --output."),
) -> None:
    """BEARD/ROME robustness metrics (RR, I-RR, AE, CREI, I-CREI) per IPC and pooled."""
    from robustdd.metrics import MODES, compute_metrics, load_metrics_input, metrics_table

    if output is not None:
        refuse_existing(output, overwrite)

    try:
        result = compute_metrics(load_metrics_input(records), crei_weight=crei_weight,
                                 t0_rule=t0_rule, exclude=exclude or ())
    except RobustDDError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    for mode in MODES:
        if mode in result:
            console.print(metrics_table(result, mode))
            blocks = [(f"IPC {ipc}", b) for ipc, b in result[mode]["ipc"].items()]
            for where, block in [*blocks, ("pooled", result[mode]["pooled"])]:
                for note in block["notes"]:
                    console.print(f"  {mode} {where}: {note}")
    if output is not None:
        import time

        from robustdd import __version__
        from robustdd.data.checksums import file_digest
        from robustdd.runtime import write_json_atomic

        # AE depends on the machine the inputs were timed on: name the inputs exactly
        provenance = {
            "format": "robustdd.metrics", "format_version": 1, "robustdd_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "inputs": [{"path": str(p), "sha256": file_digest(p)} for p in records]}
        write_json_atomic(output, {**provenance, **result})
        console.print(f"metrics written to {output}")


@app.command("transfer")
def transfer_cmd(
    victims: list[Path] = typer.Argument(..., help="Folders of saved distilled sets (victims)."),
    surrogate: list[Path] | None = typer.Option(
        None, help="Surrogate set folder (repeatable; default: the victims themselves)."),
    adversarial: bool = typer.Option(True, help="Add a surrogate adversarially trained on "
                                                "the full real training data."),
    profile: str = typer.Option("small"),
    seed: int = typer.Option(0),
    suite: str | None = typer.Option(None, help="Attack suite (default: BEARD's transfer list)."),
    out: Path = typer.Option(..., help="Where to write the robustdd.transfer JSON record."),
    device: str = typer.Option("auto"),
    root: Path | None = typer.Option(None, help="Data root (default $ROBUSTDD_DATA)."),
    set_: list[str] | None = typer.Option(None, "--set", help="Protocol override key=value."),
    overwrite: bool = typer.Option(False, help="Replace a record already at OUT."),
) -> None:
    """Transfer-attack matrix: surrogates x victims (ROME Table 2 / Figure 3)."""
    from robustdd.evaluate.transfer import transfer_evaluation, transfer_metrics
    from robustdd.metrics import MODES
    from robustdd.runtime import write_json_atomic

    refuse_existing(out, overwrite)

    record = transfer_evaluation(
        _named_sets(victims), surrogates=_named_sets(surrogate) if surrogate else None,
        adversarial_surrogate=adversarial, profile=profile, seed=seed, attacks=suite,
        device=device, root=str(root) if root else None, progress=True,
        **parse_overrides(set_))
    write_json_atomic(out, record)
    irr = transfer_metrics(record, metric="I-RR")
    for mode in MODES:
        if mode not in irr:
            continue
        victims_ = list(next(iter(irr[mode].values())))
        table = Table(title=f"I-RR, {mode} (rows: surrogate, columns: victim)")
        for col in ("surrogate", *victims_):
            table.add_column(col)
        for s_name, row in irr[mode].items():
            table.add_row(s_name, *[f"{row[v]:.2f}" for v in victims_])
        console.print(table)
    console.print(f"record written to {out}")


def _named_sets(folders: list[Path]) -> dict[str, Any]:
    """Load sets keyed by method name (folder name where two sets share a method)."""
    from robustdd.distilled import DistilledSet

    sets = [DistilledSet.load(f) for f in folders]
    methods = [s.method for s in sets]
    return {(s.method if methods.count(s.method) == 1 else f.name): s
            for f, s in zip(folders, sets, strict=True)}


@app.command("report")
def report_cmd(
    records: list[Path] = typer.Argument(
        ..., exists=True, dir_okay=False,
        help="Evaluation record JSON files (from `robustdd evaluate`), any methods and IPCs."),
    out: Path = typer.Option(..., help="Folder for the tables, figures and RobustBench JSON."),
    format_: list[str] | None = typer.Option(
        None, "--format", help="Table format: md, csv or tex. Repeatable (default: all three)."),
    transfer: Path | None = typer.Option(
        None, exists=True, dir_okay=False,
        help="A `robustdd transfer` record: adds the heatmap and Table 2's transfer column."),
) -> None:
    """Paper-style report: ROME Table 1/2 layouts, accuracy table, curves, RobustBench entries."""
    from robustdd.evaluate.transfer import (
        ADVERSARIAL_SURROGATE,
        load_transfer_record,
        transfer_metrics,
        transfer_pair_metrics,
    )
    from robustdd.report import load_records, write_report

    matrix = entries = None
    if transfer is not None:
        doc = load_transfer_record(transfer)
        matrix = transfer_metrics(doc, metric="I-RR")
        if ADVERSARIAL_SURROGATE in doc["accuracy"]:
            entries = [(doc["test_set"]["dataset"], victim,
                        transfer_pair_metrics(doc, ADVERSARIAL_SURROGATE, victim))
                       for victim in doc["victims"]]
    written = write_report(load_records(records), out,
                           formats=tuple(format_ or ("md", "csv", "tex")),
                           transfer_matrix=matrix, transfer_entries=entries)
    for name, paths in written.items():
        for path in paths:
            console.print(f"{name}: {path}", soft_wrap=True, markup=False, highlight=False)
    console.print(f"report written to {out}/", soft_wrap=True, markup=False, highlight=False)


@data_app.command("list")
def data_list(root: Path | None = typer.Option(None, help="Data root.")) -> None:
    """Show the registered datasets and whether they are available."""
    from robustdd.data.prepare import list_datasets

    table = Table(title="datasets")
    for col in ("name", "classes", "shape", "available", "source", "folder"):
        table.add_column(col, overflow="fold")
    for row in list_datasets(root):
        shape = "×".join(str(v) for v in row["shape"])
        status = "yes" if row["available"] else (row["problem"] or "no")
        table.add_row(row["name"], str(row["classes"]), shape, status, str(row["source"] or "–"),
                      str(row["folder"] or "–"))
    console.print(table)


@data_app.command("prepare")
def data_prepare(name: str = typer.Argument(...),
                 root: Path | None = typer.Option(None, help="Data root.")) -> None:
    """Download the official archive, verify its checksum, convert to the cache format."""
    from robustdd.data.prepare import prepare_dataset

    folder = prepare_dataset(name, root)
    console.print(f"{name} ready in {folder}" if folder else f"{name} needs no preparation")


@bench_app.command("run")
def bench_run(
    grid: Path = typer.Argument(..., help="Grid file (YAML), e.g. presets/smoke.yaml."),
    store: Path = typer.Option(..., help="Result store directory (created if missing)."),
    executor: str = typer.Option("inline", help="inline, local (processes) or slurm."),
    workers: int | None = typer.Option(None, help="Workers (local: one per GPU; slurm: 1)."),
    device: str = typer.Option("auto"),
    cluster: str | None = typer.Option(None, help="slurm executor: 'local' runs the Slurm "
                                       "path with submitit's local executor."),
    partition: str | None = typer.Option(None, help="Slurm partition."),
    timeout_min: int = typer.Option(24 * 60, help="Slurm time limit per worker (minutes); "
                                    "workers are requeued and resume when it is reached."),
    gpus_per_node: int = typer.Option(0, help="GPUs per Slurm worker."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run every job of GRID that the store does not hold yet (resumable, safe to rerun)."""
    import json

    from robustdd.bench import load_grid, run_grid
    from robustdd.runtime import resolve_device

    spec = load_grid(grid)
    resolve_device(device)  # a bad --device fails here, not in every job
    slurm = {"cluster": cluster, "partition": partition, "timeout_min": timeout_min,
             "gpus_per_node": gpus_per_node}
    summary = run_grid(spec, store, executor=executor, workers=workers, device=device,
                       progress=not json_out, slurm=slurm)
    if json_out:
        print(json.dumps(summary))
    else:
        console.print(f"{spec.name}: {summary['completed']} completed, {summary['skipped']} "
                      f"skipped (already done), {summary['failed']} failed, "
                      f"{summary['pending']} pending — store {store}")
        if summary.get("redone_damaged"):
            err_console.print(f"[yellow]warning[/yellow]: {summary['redone_damaged']} finished "
                              "job(s) had a missing or altered artifact (set aside as "
                              "artifacts/<key>.damaged-*) and were run again")
    if summary["failed"]:
        raise SystemExit(1)


def _existing_store(store: Path) -> ResultStore:
    """Open the result store at ``store``, refusing a folder that holds none."""
    from robustdd.bench import ResultStore

    if not (store / "index.sqlite").is_file():
        raise ValueError(f"{store}: no result store here (run `robustdd bench run` first)")
    return ResultStore(store)


@bench_app.command("status")
def bench_status(store: Path = typer.Option(..., help="Result store directory."),
                 json_out: bool = typer.Option(False, "--json")) -> None:
    """Jobs per status (running jobs whose worker is gone counted as orphaned), and why failed
    jobs failed."""
    import json

    rs = _existing_store(store)
    counts = rs.status_counts()
    orphaned = len(rs.orphaned_keys())
    failed = [{"key": j["key"], "kind": j["kind"], "label": j["spec"].get("label"),
               "ipc": j["spec"].get("ipc"), "error": j["error"]} for j in rs.jobs("failed")]
    if json_out:
        print(json.dumps({**counts, "orphaned": orphaned, "failures": failed}))
        return
    table = Table(title=f"store {store}")
    for col in ("pending", "running", "done", "failed"):
        table.add_column(col)
    running = f"{counts['running']} ({orphaned} orphaned)" if orphaned else str(counts["running"])
    table.add_row(str(counts["pending"]), running, str(counts["done"]), str(counts["failed"]))
    console.print(table)
    if orphaned:
        console.print(f"{orphaned} running job(s) have lost their worker (process gone or no "
                      "heartbeat within the lease); the next `bench run` of their grid "
                      "reclaims them.")
    for f in failed:
        console.print(f"[red]failed[/red] {f['kind']} {f['label']} IPC {f['ipc']}: {f['error']}")


@bench_app.command("report")
def bench_report(store: Path = typer.Option(..., help="Result store directory."),
                 out: Path = typer.Option(..., help="Folder for the report files.")) -> None:
    """Tables (Markdown, CSV, LaTeX, HTML), metrics, figures, sample grids of the distilled
    images and one self-contained HTML page (OUT/index.html) from every finished evaluation."""
    from robustdd.bench import store_report

    page, n = store_report(_existing_store(store), out)
    console.print(f"{n} records → {out} (open {page})")


@bench_app.command("export")
def bench_export(store: Path = typer.Option(..., help="Result store directory."),
                 out: Path = typer.Option(..., help="Folder for the record files."),
                 grid: Path | None = typer.Option(None, help="Only this grid's jobs."),
                 overwrite: bool = typer.Option(False, help="Replace files in OUT that hold "
                                                "other content.")) -> None:
    """Copy finished evaluation records and transfer matrices out of the store under readable
    names (<label>-<dataset>-ipc<N>-<profile>-s<seed>[-<suite>].json), checksums verified."""
    from robustdd.bench import expand, export_records, load_grid

    rs = _existing_store(store)
    keys = None if grid is None else [j.key for j in expand(load_grid(grid))]
    outcome = export_records(rs, out, keys=keys, overwrite=overwrite)
    console.print(f"{len(outcome['written'])} written, {len(outcome['unchanged'])} unchanged "
                  f"→ {out}")


def main() -> None:
    """Entry point: run the app, turning robustdd's own errors into one clear line."""
    try:
        app()
    except (RobustDDError, ValueError, RuntimeError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise SystemExit(2) from None
    except OSError as exc:  # a path that cannot be read or written: permissions, disk full
        err_console.print(f"[red]error:[/red] {exc}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
