"""Checkpoints for long distillations: interrupt a run, resume it, get the same result.

A method's loop calls :meth:`Checkpointer.restore` once before its first iteration and
:meth:`Checkpointer.step` after every iteration. A checkpoint holds whatever the method needs to
continue exactly where it stopped: the synthetic tensors, optimizer state dicts, the state of
every ``torch.Generator`` it draws from, the iteration counter and its loss history. Because
per-iteration randomness in robustdd is either derived from (seed, iteration) or drawn from
generators whose state is saved, a resumed run reproduces the uninterrupted one bit for bit on
the same device.

Files are written atomically (``checkpoint.pt`` is replaced, never half-written) with
``torch.save`` and read back with ``weights_only=True``, so a checkpoint cannot execute code.
Each checkpoint carries a fingerprint of (method, dataset, ipc, seed, config); resuming with a
different run's checkpoint is refused.

Each checkpoint also carries the seconds the run had spent when it was written, counted from
the start of the first process. A resumed run adds them to its own time, so a record's
``distill_seconds`` is the cost of the whole distillation, not of its last piece (the work done
after the last checkpoint of an interrupted process is redone and counted once).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from robustdd.errors import CorruptDataError, IncompatibleError
from robustdd.runtime import open_atomic

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "robustdd.distill-checkpoint"


def run_fingerprint(identity: dict[str, Any]) -> str:
    """A stable hash of everything that must match for a checkpoint to be resumable."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class Checkpointer:
    """Saves a method's state every ``every`` iterations into ``directory`` (``None``: off)."""

    directory: Path | None = None
    every: int = 100
    fingerprint: str = ""
    saved: int = field(default=0, init=False)  # checkpoints written by this process
    prior_seconds: float = field(default=0.0, init=False)  # spent before this process resumed
    started: float = field(default_factory=time.perf_counter, init=False)

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    @property
    def path(self) -> Path | None:
        return None if self.directory is None else self.directory / CHECKPOINT_NAME

    def restore(self) -> dict[str, Any] | None:
        """The saved state (with ``"iteration"``: the next one to run), or ``None``."""
        path = self.path
        if path is None or not path.exists():
            return None
        try:
            doc = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated / foreign / pickled-code files all land here
            raise CorruptDataError(f"{path}: not a readable robustdd checkpoint ({exc}); "
                                   "delete it to start the run from scratch") from exc
        if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
            raise CorruptDataError(f"{path}: not a robustdd distillation checkpoint")
        if doc.get("fingerprint") != self.fingerprint:
            raise IncompatibleError(
                f"{path} belongs to a different run (method, dataset, ipc, seed or config "
                "differ); use another checkpoint directory or delete it")
        # Checkpoints written before this field existed count from zero.
        self.prior_seconds = float(doc.get("elapsed_seconds", 0.0))
        return doc["state"]

    def elapsed(self) -> float:
        """Seconds of the whole run so far: earlier processes' (from the checkpoint) plus ours."""
        return self.prior_seconds + time.perf_counter() - self.started

    def step(self, iteration: int, total: int, state: Callable[[], dict[str, Any]]) -> None:
        """After iteration ``iteration`` (0-based): save when due or at the end of the run.

        ``state`` is called only when a checkpoint is written; it must return tensors,
        numbers, strings and nested lists/dicts of them (``weights_only``-loadable). The
        counter saved is ``iteration + 1``, the next iteration to run.
        """
        if self.directory is None:
            return
        done = iteration + 1
        if done % self.every and done != total:
            return
        payload = {"format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint,
                   "elapsed_seconds": self.elapsed(), "state": {**state(), "iteration": done}}
        self.directory.mkdir(parents=True, exist_ok=True)
        with open_atomic(self.path, "wb") as handle:
            torch.save(payload, handle)
        self.saved += 1

    def clear(self) -> None:
        """Remove the checkpoint (after the final result is safely written)."""
        if self.path is not None and self.path.exists():
            self.path.unlink()


def generator_state(generator: torch.Generator) -> torch.Tensor:
    """A generator's state as a tensor (checkpointable)."""
    return generator.get_state()


def load_generator_state(generator: torch.Generator, state: torch.Tensor) -> None:
    """Restore a generator saved with :func:`generator_state`."""
    generator.set_state(state)
