"""Exceptions raised by robustdd. Every error names what was wrong and how to fix it."""

from __future__ import annotations


class RobustDDError(Exception):
    """Base class of every error robustdd raises on purpose."""


class UnknownNameError(RobustDDError, KeyError):
    """An unknown dataset, model, method, attack or profile name."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]):
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(f"unknown {kind} {name!r}; known {kind}s: {', '.join(self.known)}")

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return self.args[0]


class DatasetNotFoundError(RobustDDError, FileNotFoundError):
    """A dataset is not present in the data root."""


class CorruptDataError(RobustDDError, ValueError):
    """A file exists but is truncated, corrupt, foreign or inconsistent."""


class IncompatibleError(RobustDDError, ValueError):
    """Two valid objects do not fit together (e.g. a distilled set and a dataset)."""
