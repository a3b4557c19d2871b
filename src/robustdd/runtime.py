"""Run-time plumbing shared by every layer: devices, derived seeds, provenance, atomic writes."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` → CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available; use --device cpu")
    return dev


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed derived deterministically from ``parts`` (e.g. base seed, "model", k).

    Strings are hashed stably (not with Python's salted ``hash``).
    """
    words: list[int] = []
    for part in parts:
        if isinstance(part, str):
            words.extend(part.encode())
        else:
            words.append(int(part) & 0xFFFFFFFF)
            words.append((int(part) >> 32) & 0xFFFFFFFF)
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def generator_for(*parts: int | str) -> torch.Generator:
    """A CPU generator seeded with :func:`derive_seed` of ``parts``."""
    return torch.Generator().manual_seed(derive_seed(*parts))


def cache_dir() -> Path:
    """Where derived artefacts (cluster assignments, expert buffers, robust networks) are cached:
    ``$ROBUSTDD_CACHE`` or ``~/.cache/robustdd/derived`` (the data root may be read-only)."""
    env = os.environ.get("ROBUSTDD_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "robustdd" / "derived"


def _read_git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "")


# Read once, when robustdd is first imported: a long run records the checkout it started from,
# not whatever the working tree holds when a record is finally written (modules imported
# lazily later still come from the tree of that later moment).
_REVISION_AT_IMPORT = _read_git_revision()


def git_revision() -> str | None:
    """The git commit of the robustdd checkout when this process imported robustdd (with
    ``-dirty`` if tracked files differed then), or None outside a checkout."""
    return _REVISION_AT_IMPORT


def environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """Versions, device and git revision: the provenance every result record carries."""
    import robustdd

    info: dict[str, Any] = {
        "robustdd": robustdd.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "git_revision": git_revision(),
    }
    if device is not None:
        dev = torch.device(device)
        info["device"] = str(dev)
        info["device_name"] = (torch.cuda.get_device_name(dev) if dev.type == "cuda"
                               else cpu_name())
    return info


_UMASK = os.umask(0o022)  # read the process umask once (os.umask can only set it) ...
os.umask(_UMASK)  # ... and put it back


def cpu_name() -> str:
    """The CPU model (Linux: /proc/cpuinfo's "model name"; platform.processor() is empty
    there), else the processor or machine name. Times in a record depend on it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usual_mode(path: str | os.PathLike) -> None:
    """Give ``path`` the mode open()/mkdir() would have given it under the umask.

    tempfile creates files 0600 and folders 0700, which would keep other users of a shared
    result store (a Slurm cluster) from reading records written through a temporary file.
    """
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~_UMASK)


@contextmanager
def open_atomic(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on success it is fsynced and renamed
    onto ``path`` (atomic), on any error removed — readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        usual_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON to ``path`` atomically (see :func:`open_atomic`); NaN is refused."""
    with open_atomic(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, allow_nan=False)
        fh.write("\n")
    return Path(path)
