"""Copy finished records out of a result store into a folder, under names people can read.

A store names its artifacts by content key (``artifacts/<key>/record.json``), which is right
for resuming and wrong for a repository or a paper's supplement. :func:`export_records` writes
each finished evaluation record as ``<label>-<dataset>-ipc<N>-<profile>-s<seed>[-<suite>].json``
and each transfer matrix as ``transfer-<dataset>-ipc<N>-<profile>-s<seed>.json``; checksums are
verified on the way out. An existing file with other content is never overwritten silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from robustdd.bench.store import ResultStore
from robustdd.errors import RobustDDError
from robustdd.runtime import open_atomic

__all__ = ["ExportClashError", "export_name", "export_records"]


class ExportClashError(RobustDDError, FileExistsError):
    """An export would replace files that hold other content."""


_ARTIFACT = {"evaluate": "record.json", "transfer": "transfer.json"}


def export_name(kind: str, spec: dict[str, Any]) -> str:
    """The file name (without ``.json``) a finished job of ``kind`` is exported under."""
    cell = f"{spec['dataset']}-ipc{spec['ipc']}-{spec['profile']}-s{spec['seed']}"
    if kind == "transfer":
        return f"transfer-{cell}"
    suite = (spec.get("evaluation") or {}).get("attacks")
    return f"{spec['label']}-{cell}" + (f"-{suite}" if suite else "")


def export_records(store: ResultStore, out: str | Path, *, keys: Iterable[str] | None = None,
                   overwrite: bool = False) -> dict[str, list[Path]]:
    """Write every finished evaluate and transfer artifact of ``store`` (only those among
    ``keys`` when given, e.g. one grid's jobs) into ``out``.

    Two jobs that would share a name (the same method cell evaluated with different settings)
    get their key's first 8 characters appended. A file already in ``out`` with the same
    content is left alone (``unchanged``); with other content it is refused unless
    ``overwrite``. Returns the paths by outcome: ``written``, ``unchanged``.
    """
    wanted = None if keys is None else set(keys)
    jobs = [j for j in store.jobs("done") if j["kind"] in _ARTIFACT
            and (wanted is None or j["key"] in wanted)]
    names: dict[str, list[dict]] = {}
    for job in jobs:
        names.setdefault(export_name(job["kind"], job["spec"]), []).append(job)
    plan: list[tuple[Path, bytes, bool | None]] = []  # (path, bytes, same as on disk / absent)
    for name, group in sorted(names.items()):
        for job in group:
            stem = name if len(group) == 1 else f"{name}-{job['key'][:8]}"
            data = (store.verified_artifact(job["key"]) / _ARTIFACT[job["kind"]]).read_bytes()
            path = Path(out) / f"{stem}.json"
            plan.append((path, data, path.read_bytes() == data if path.exists() else None))
    clashes = [path for path, _, same in plan if same is False]
    if clashes and not overwrite:
        shown = ", ".join(p.name for p in clashes[:5]) + (" ..." if len(clashes) > 5 else "")
        raise ExportClashError(f"{out}: {len(clashes)} file(s) already exist with other content "
                               f"({shown}); pass overwrite=True (CLI: --overwrite) to replace "
                               "them, or export into an empty folder")
    outcome: dict[str, list[Path]] = {"written": [], "unchanged": []}
    Path(out).mkdir(parents=True, exist_ok=True)
    for path, data, same in plan:
        if same:
            outcome["unchanged"].append(path)
            continue
        with open_atomic(path, "wb") as fh:
            fh.write(data)
        outcome["written"].append(path)
    return outcome
