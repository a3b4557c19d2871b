"""The method registry and the ``distill`` entry point shared by every method."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from robustdd.data import ImageDataset, dataset_info, load_dataset
from robustdd.distill.checkpoint import Checkpointer, run_fingerprint
from robustdd.distilled import DistilledSet
from robustdd.errors import UnknownNameError
from robustdd.profiles import get_profile
from robustdd.runtime import environment, resolve_device


class MethodConfig(BaseModel):
    """Base of every method's configuration (unknown keys are errors, not silently ignored)."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class DistillContext:
    """What a method's ``run`` gets besides its config."""

    data: ImageDataset
    ipc: int
    seed: int
    device: torch.device
    progress: bool = True
    arch: str = "convnet"
    checkpoint: Checkpointer = field(default_factory=Checkpointer)

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def generator(self, *parts: int | str) -> torch.Generator:
        """A CPU generator derived from the run's seed and ``parts``."""
        from robustdd.runtime import generator_for

        return generator_for(self.seed, *parts)


RunFn = Callable[[DistillContext, Any], DistilledSet]


@dataclass
class Method:
    """A registered distillation method: its config class, per-profile presets and runner."""

    name: str
    config_cls: type[MethodConfig]
    run: RunFn
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""

    def resolve_config(self, profile: str, overrides: dict[str, Any]) -> MethodConfig:
        """Defaults ← profile preset ← user overrides, validated (with a readable error)."""
        values = {**self.presets.get(profile, {}), **overrides}
        unknown = sorted(set(values) - set(self.config_cls.model_fields))
        if unknown:
            known = ", ".join(sorted(self.config_cls.model_fields)) or "none"
            raise ValueError(f"invalid configuration for method {self.name!r}: unknown setting(s) "
                             f"{', '.join(unknown)} (known: {known})")
        try:
            return self.config_cls(**values)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                 for e in exc.errors())
            raise ValueError(f"invalid configuration for method {self.name!r}: "
                             f"{problems}") from exc


METHODS: dict[str, Method] = {}


def register_method(name: str, config_cls: type[MethodConfig],
                    presets: dict[str, dict[str, Any]], description: str = ""
                    ) -> Callable[[RunFn], RunFn]:
    """Decorator registering ``run(ctx, config) -> DistilledSet`` as method ``name``."""

    def wrap(run: RunFn) -> RunFn:
        METHODS[name] = Method(name, config_cls, run, presets, description)
        return run

    return wrap


def get_method(name: str) -> Method:
    """Look a method up; unknown names list the known methods."""
    import robustdd.distill.methods  # noqa: F401  (registers the built-in methods)

    if name not in METHODS:
        raise UnknownNameError("method", name, list(METHODS))
    return METHODS[name]


def distill(method: str, dataset: str | ImageDataset, ipc: int, seed: int = 0,
            profile: str = "small", *, device: str | torch.device = "auto",
            root: str | None = None, arch: str | None = None, progress: bool = False,
            checkpoint_dir: str | Path | None = None, checkpoint_every: int = 100,
            **overrides: Any) -> DistilledSet:
    """Distill ``dataset`` (a name or a loaded train split) into ``ipc`` images per class.

    The method's configuration is its defaults, updated by its ``profile`` preset, updated by
    ``overrides``. The returned set's ``meta`` holds the resolved config, profile, seed, timings
    and provenance.

    With ``checkpoint_dir``, iterative methods save their state there every
    ``checkpoint_every`` iterations and a later call with the same arguments resumes from it
    (same result as an uninterrupted run), and ``meta["distill_seconds"]`` then counts the
    earlier processes' time up to their last checkpoint as well. The last checkpoint is kept (a
    rerun then finishes at once); delete the directory when the result is safely stored.
    """
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be at least 1, got {checkpoint_every}")
    if ipc < 1:
        raise ValueError(f"ipc must be at least 1, got {ipc}")
    spec = get_method(method)
    get_profile(profile)
    config = spec.resolve_config(profile, overrides)
    data = load_dataset(dataset, "train", root) if isinstance(dataset, str) else dataset
    counts = torch.bincount(data.labels, minlength=data.num_classes)
    if int(counts.min()) < ipc:
        raise ValueError(f"{data.name} has a class with {int(counts.min())} training images, "
                         f"fewer than ipc={ipc}")
    dev = resolve_device(device)
    arch = arch or _default_arch(data)
    identity = {"method": method, "dataset": data.name, "n_train": len(data), "ipc": ipc,
                "seed": seed, "arch": arch, "config": config.model_dump(), "device": dev.type}
    checkpointer = Checkpointer(Path(checkpoint_dir) if checkpoint_dir is not None else None,
                                checkpoint_every, run_fingerprint(identity))
    ctx = DistillContext(data=data, ipc=ipc, seed=seed, device=dev, progress=progress, arch=arch,
                         checkpoint=checkpointer)
    result = spec.run(ctx, config)
    seconds = checkpointer.elapsed()  # includes the time of earlier, interrupted processes
    result.meta.update({
        "method": method, "dataset": data.name, "ipc": ipc, "seed": seed, "profile": profile,
        "arch": arch, "config": config.model_dump(), "distill_seconds": seconds,
        "environment": environment(dev),
    })
    timings = result.meta.setdefault("timings", {})
    timings["total_seconds"] = seconds
    if checkpointer.prior_seconds:
        timings["before_resume_seconds"] = checkpointer.prior_seconds
    return result


def _default_arch(data: ImageDataset) -> str:
    try:
        return dataset_info(data.name).default_arch
    except UnknownNameError:
        return "convnet"
