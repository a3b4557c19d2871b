"""Grid files: methods × datasets × IPCs × seeds × one evaluation, validated, expanded to jobs.

A grid is a YAML file (``docs/bench.md`` has the format)::

    name: smoke
    profile: smoke
    datasets: [digits]
    ipcs: [1, 2]
    seeds: [0]
    methods:
      - random
      - dm
      - {name: rome, variant: faithful, label: rome-faithful, overrides: {alpha: 0.5}}
    evaluation: {attacks: quick, shift: false, curves: false, protocol: {num_models: 1}}

Expansion gives one ``distill`` job per (method, dataset, IPC, seed) and one ``evaluate`` job
depending on it. A job's key is the SHA-256 of everything its result depends on — for a distill
job the method's *resolved* configuration (defaults ← profile preset ← overrides), so changing a
preset or an override makes a new job, and an unchanged one is found done in the store.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from robustdd.errors import RobustDDError, UnknownNameError

__all__ = ["EvaluationSpec", "GridError", "GridSpec", "Job", "MethodSpec", "TransferSpec",
           "expand", "load_grid"]


class GridError(RobustDDError, ValueError):
    """A grid file that cannot be used, with the reason and where."""


class MethodSpec(BaseModel):
    """One method entry: a name, an optional variant and overrides, a label for reports."""

    model_config = ConfigDict(extra="forbid")

    name: str
    variant: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None

    @property
    def display(self) -> str:
        if self.label:
            return self.label
        return self.name if self.variant is None else f"{self.name}-{self.variant}"

    def settings(self) -> dict[str, Any]:
        """Overrides passed to ``distill`` (the variant is one of them)."""
        extra = {"variant": self.variant} if self.variant is not None else {}
        return {**self.overrides, **extra}


class EvaluationSpec(BaseModel):
    """How every distilled set of the grid is evaluated."""

    model_config = ConfigDict(extra="forbid")

    attacks: str | None = None  # a suite name; None/"none": clean accuracy only
    shift: bool = False
    curves: bool = False
    parallel: bool = False  # train the K models stacked (GPU speed-up; same models)
    protocol: dict[str, Any] = Field(default_factory=dict)  # EvalProtocol/KDProtocol overrides

    @field_validator("attacks")
    @classmethod
    def _known_suite(cls, value: str | None) -> str | None:
        if value in (None, "none"):
            return None
        from robustdd.attacks.suites import SUITES

        if value not in SUITES:
            raise ValueError(f"unknown attack suite {value!r} (known: {', '.join(SUITES)}, "
                             "none)")
        return value


class TransferSpec(BaseModel):
    """A transfer matrix (surrogates × victims, ROME Table 2 / Figure 3) per dataset, IPC and
    seed, over every method of the grid, plus an adversarially trained surrogate."""

    model_config = ConfigDict(extra="forbid")

    ipcs: list[int] | None = None  # None: every IPC of the grid
    adversarial_surrogate: bool = True
    attacks: str | None = None  # a suite name; None: the transfer default list
    protocol: dict[str, Any] = Field(default_factory=dict)

    @field_validator("attacks")
    @classmethod
    def _known_suite(cls, value: str | None) -> str | None:
        return EvaluationSpec._known_suite(value)


class GridSpec(BaseModel):
    """A whole grid file."""

    model_config = ConfigDict(extra="forbid")

    name: str
    profile: str = "small"
    datasets: list[str] = Field(min_length=1)
    ipcs: list[int] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    methods: list[MethodSpec] = Field(min_length=1)
    # None (`evaluation: null` or `false`): no evaluate jobs, e.g. a grid that only distils
    # sets and runs their transfer matrix, which trains its own victims.
    evaluation: EvaluationSpec | None = Field(default_factory=EvaluationSpec)
    transfer: TransferSpec | None = None
    arch: str | None = None

    @field_validator("methods", mode="before")
    @classmethod
    def _strings_are_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("evaluation", mode="before")
    @classmethod
    def _false_means_none(cls, value: Any) -> Any:
        return None if value is False else value

    @field_validator("ipcs")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(i < 1 for i in value):
            raise ValueError(f"every IPC must be at least 1, got {value}")
        return value


@dataclass(frozen=True)
class Job:
    """One unit of work: ``kind`` is ``distill`` or ``evaluate``; ``spec`` holds its inputs."""

    key: str
    kind: str
    spec: dict[str, Any]
    deps: tuple[str, ...] = field(default=())


def _key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _check_names(grid: GridSpec) -> None:
    from robustdd.data import dataset_info
    from robustdd.distill import get_method
    from robustdd.profiles import get_profile

    try:
        get_profile(grid.profile)
    except UnknownNameError as exc:
        raise GridError(f"profile: {exc}") from None
    for i, d in enumerate(grid.datasets):
        try:
            dataset_info(d)
        except UnknownNameError as exc:
            raise GridError(f"datasets.{i}: {exc}") from None
    from robustdd.nn.zoo import architecture_names

    archs = architecture_names()
    named = [("arch", grid.arch)]
    if grid.evaluation is not None:
        named.append(("evaluation.protocol.arch", grid.evaluation.protocol.get("arch")))
    if grid.transfer is not None:
        named.append(("transfer.protocol.arch", grid.transfer.protocol.get("arch")))
    for where, arch in named:
        if arch is not None and arch not in archs:
            raise GridError(f"{where}: unknown architecture {arch!r} (known: "
                            f"{', '.join(archs)})")
    labels = [m.display for m in grid.methods]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise GridError(f"methods: two entries share the label {', '.join(dupes)}; give each a "
                        "distinct 'label'")
    if grid.evaluation is not None and grid.evaluation.protocol:
        from robustdd.evaluate.protocol import EvalProtocol, KDProtocol

        errors = []
        for cls in (EvalProtocol, KDProtocol):  # a set may name either protocol
            try:
                cls.from_profile(grid.profile, **grid.evaluation.protocol)
            except ValueError as exc:
                errors.append(str(exc))
        if len(errors) == 2:
            raise GridError(f"evaluation.protocol: {errors[0]}")
    if grid.transfer is not None:
        from robustdd.evaluate.protocol import EvalProtocol

        try:  # the transfer matrix trains each set's model 0 under this protocol
            EvalProtocol.from_profile(grid.profile, **grid.transfer.protocol)
        except ValueError as exc:
            raise GridError(f"transfer.protocol: {exc}") from None
        missing = sorted(set(grid.transfer.ipcs or ()) - set(grid.ipcs))
        if missing:
            raise GridError(f"transfer.ipcs: {missing} not in the grid's ipcs {grid.ipcs} "
                            "(no sets would be distilled for them)")
    for i, m in enumerate(grid.methods):
        try:
            get_method(m.name).resolve_config(grid.profile, m.settings())
        except UnknownNameError as exc:
            raise GridError(f"methods.{i}: {exc}") from None
        except ValueError as exc:
            raise GridError(f"methods.{i} ({m.display}): {exc}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error (PyYAML would
    silently keep the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_grid(path: str | Path) -> GridSpec:
    """Read and validate a grid file; every problem is a :class:`GridError` naming the file
    and the field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GridError(f"{path}: no such grid file") from None
    except OSError as exc:
        raise GridError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        raise GridError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise GridError(f"{path}: a grid is a mapping with name, datasets, ipcs, methods, ...; "
                        f"got {type(data).__name__}")
    try:
        grid = GridSpec(**data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}"
                             for e in exc.errors())
        raise GridError(f"{path}: {problems}") from None
    try:
        _check_names(grid)
    except GridError as exc:
        raise GridError(f"{path}: {exc}") from None
    return grid


def expand(grid: GridSpec) -> list[Job]:
    """The grid's jobs, in the order a run takes them: cell by cell (dataset, then IPC from the
    grid's first, then seed), and in each cell every method's distill job followed by its
    evaluation (none when the grid's ``evaluation`` is null), then the cell's transfer matrix
    (depending on the cell's distill jobs). So the first cells give complete method comparisons
    early."""
    from robustdd.distill import get_method

    configs = {m.display: get_method(m.name).resolve_config(grid.profile, m.settings())
               .model_dump() for m in grid.methods}
    t = grid.transfer
    jobs: list[Job] = []
    for dataset in grid.datasets:
        for ipc in grid.ipcs:
            for seed in grid.seeds:
                victims: dict[str, str] = {}
                for m in grid.methods:
                    d_spec = {"method": m.name, "label": m.display, "settings": m.settings(),
                              "config": configs[m.display], "dataset": dataset, "ipc": ipc,
                              "seed": seed, "profile": grid.profile, "arch": grid.arch}
                    d_key = _key({"kind": "distill", **d_spec, "label": None})
                    jobs.append(Job(d_key, "distill", d_spec))
                    victims[m.display] = d_key
                    if grid.evaluation is None:
                        continue
                    e_spec = {"distill": d_key, "label": m.display, "method": m.name,
                              "dataset": dataset, "ipc": ipc, "seed": seed,
                              "profile": grid.profile,
                              "evaluation": grid.evaluation.model_dump()}
                    e_key = _key({"kind": "evaluate", **e_spec, "label": None})
                    jobs.append(Job(e_key, "evaluate", e_spec, (d_key,)))
                if t is not None and (t.ipcs is None or ipc in t.ipcs):
                    t_spec = {"dataset": dataset, "ipc": ipc, "seed": seed,
                              "profile": grid.profile, "victims": victims,
                              "transfer": t.model_dump()}
                    t_key = _key({"kind": "transfer", **t_spec})
                    jobs.append(Job(t_key, "transfer", t_spec, tuple(victims.values())))
    return jobs
