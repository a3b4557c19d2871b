"""Shared pieces of the report layer: its error type, display names, number formatting."""

from __future__ import annotations

import math
from typing import Any

from robustdd.errors import RobustDDError

MISSING = "–"  # what a table cell shows when there is no value
MODES = ("targeted", "untargeted")
MODE_TITLES = {"targeted": "Targeted", "untargeted": "Untargeted"}
# Query (black-box) attacks of the registry; mirrors robustdd.attacks.ATTACKS[name].query
# without importing the attacks package (tests check the two agree).
QUERY_ATTACKS = frozenset({"square", "spsa"})

DATASET_NAMES = {
    "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN", "mnist": "MNIST",
    "fashion-mnist": "Fashion-MNIST", "tiny-imagenet": "Tiny-ImageNet", "digits": "Digits",
}
METHOD_NAMES = {
    "full": "Full-size", "random": "Random", "herding": "Herding", "dc": "DC", "dsa": "DSA",
    "dm": "DM", "idm": "IDM", "mtt": "MTT", "bacon": "BACON", "sre2l": "SRe2L", "rome": "ROME",
    "guard": "GUARD", "rdd": "RDD",
}
# ROME Table 1 row order (full-size baseline, then the methods by year), then our extra methods.
METHOD_ORDER = ("full", "random", "herding", "dc", "dsa", "mtt", "dm", "idm", "bacon", "sre2l",
                "rome", "guard", "rdd")


class ReportError(RobustDDError, ValueError):
    """Input to a report is missing, malformed or cannot produce the requested output."""


def dataset_name(name: Any) -> str:
    """Display name of a dataset (``cifar10`` → ``CIFAR-10``); unknown names pass through."""
    return DATASET_NAMES.get(str(name), str(name))


def method_name(name: Any) -> str:
    """Display name of a method (``dm`` → ``DM``, ``full`` → ``Full-size``)."""
    return METHOD_NAMES.get(str(name), str(name))


def method_sort_key(name: Any) -> tuple[int, str]:
    """Sort key putting methods in ROME Table 1's order, unknown methods after, by name."""
    name = str(name)
    return (METHOD_ORDER.index(name), "") if name in METHOD_ORDER else (len(METHOD_ORDER), name)


def ipc_sort_key(ipc: Any) -> tuple[int, int]:
    """IPCs ascending, the full-size training set (``None``/``"full"``) last."""
    if ipc is None or ipc == "full":
        return (1, 0)
    return (0, int(ipc))


def ipc_text(ipc: Any) -> str:
    """``10`` → ``10``; ``None`` (full training set) → ``full``."""
    return "full" if ipc is None else str(ipc)


def fmt(value: Any, digits: int = 2) -> str:
    """A number with ``digits`` decimals, or :data:`MISSING` for ``None``/NaN/non-numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return MISSING
    return f"{value:.{digits}f}"


def fmt_stat(stat: Any, digits: int = 2) -> str:
    """``mean ± std`` from a ``{"mean", "std"}`` summary, or :data:`MISSING`."""
    if not isinstance(stat, dict) or fmt(stat.get("mean")) == MISSING:
        return MISSING
    std = stat.get("std")
    if fmt(std) == MISSING:
        return fmt(stat["mean"], digits)
    return f"{stat['mean']:.{digits}f} ± {std:.{digits}f}"
