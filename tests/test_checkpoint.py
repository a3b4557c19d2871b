"""Distillation checkpoints: an interrupted run resumes to exactly the uninterrupted result."""

from __future__ import annotations

import pytest
import torch

from robustdd import distill
from robustdd.distill.checkpoint import CHECKPOINT_NAME, Checkpointer
from robustdd.errors import CorruptDataError, IncompatibleError


class Interrupted(Exception):
    """Stands in for a kill after the n-th checkpoint reached the disk."""


def interrupt_after(monkeypatch: pytest.MonkeyPatch, saves: int) -> None:
    original = Checkpointer.step

    def step(self, iteration, total, state):
        original(self, iteration, total, state)
        if self.saved >= saves:
            raise Interrupted

    monkeypatch.setattr(Checkpointer, "step", step)


def resumes_identically(method: str, data, tmp_path, monkeypatch, **overrides) -> None:
    """Shared check for every iterative method: kill after the 2nd checkpoint, rerun, compare."""
    reference = distill(method, data, ipc=2, seed=3, profile="smoke", **overrides)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2)
        with pytest.raises(Interrupted):
            distill(method, data, ipc=2, seed=3, profile="smoke", checkpoint_dir=tmp_path,
                    checkpoint_every=2, **overrides)
    assert (tmp_path / CHECKPOINT_NAME).exists()
    resumed = distill(method, data, ipc=2, seed=3, profile="smoke", checkpoint_dir=tmp_path,
                      checkpoint_every=2, **overrides)
    assert resumed.meta["resumed_from_iteration"] == 4
    assert torch.equal(resumed.images, reference.images)
    assert torch.equal(resumed.labels, reference.labels)


def test_dm_resume_equals_uninterrupted(one_thread, digits_splits, tmp_path, monkeypatch):
    resumes_identically("dm", digits_splits[0], tmp_path, monkeypatch, iterations=7)


def test_a_finished_checkpoint_reruns_instantly_to_the_same_set(one_thread, digits_splits,
                                                                 tmp_path):
    train = digits_splits[0]
    first = distill("dm", train, ipc=1, profile="smoke", checkpoint_dir=tmp_path,
                    checkpoint_every=100)
    again = distill("dm", train, ipc=1, profile="smoke", checkpoint_dir=tmp_path)
    assert again.meta["resumed_from_iteration"] == first.meta["config"]["iterations"]
    assert torch.equal(first.images, again.images)


def test_checkpoint_of_another_run_is_refused(one_thread, digits_splits, tmp_path):
    train = digits_splits[0]
    distill("dm", train, ipc=1, seed=0, profile="smoke", checkpoint_dir=tmp_path)
    with pytest.raises(IncompatibleError, match="different run"):
        distill("dm", train, ipc=1, seed=1, profile="smoke", checkpoint_dir=tmp_path)


def test_corrupt_or_pickled_checkpoint_is_refused(one_thread, digits_splits, tmp_path):
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptDataError, match="not a readable robustdd checkpoint"):
        distill("dm", digits_splits[0], ipc=1, profile="smoke", checkpoint_dir=tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"format": "x", "evil": Evil()}, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(CorruptDataError):
        distill("dm", digits_splits[0], ipc=1, profile="smoke", checkpoint_dir=tmp_path)


def test_a_resumed_run_counts_the_time_of_the_interrupted_one(one_thread, digits_splits,
                                                              tmp_path, monkeypatch):
    """distill_seconds covers the whole run, not only the process that finished it."""
    train = digits_splits[0]
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2)
        with pytest.raises(Interrupted):
            distill("dm", train, ipc=2, seed=3, profile="smoke", checkpoint_dir=tmp_path,
                    checkpoint_every=2, iterations=7)
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["elapsed_seconds"]
    assert saved > 0
    resumed = distill("dm", train, ipc=2, seed=3, profile="smoke", checkpoint_dir=tmp_path,
                      checkpoint_every=2, iterations=7)
    timings = resumed.meta["timings"]
    assert timings["before_resume_seconds"] == pytest.approx(saved)
    assert resumed.meta["distill_seconds"] > saved
    assert timings["total_seconds"] == resumed.meta["distill_seconds"]


def test_a_checkpoint_without_elapsed_time_resumes_from_zero(one_thread, digits_splits,
                                                             tmp_path):
    """Checkpoints written before the field existed still resume (their time is unknown)."""
    train = digits_splits[0]
    distill("dm", train, ipc=1, profile="smoke", checkpoint_dir=tmp_path)
    doc = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    del doc["elapsed_seconds"]
    torch.save(doc, tmp_path / CHECKPOINT_NAME)
    again = distill("dm", train, ipc=1, profile="smoke", checkpoint_dir=tmp_path)
    assert "before_resume_seconds" not in again.meta["timings"]
    assert again.meta["distill_seconds"] >= 0
