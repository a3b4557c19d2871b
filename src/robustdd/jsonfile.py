"""Reading user-supplied JSON files with errors that name the file and the reason."""

from __future__ import annotations

import json
import os
from typing import Any


def read_json(path: str | os.PathLike[str], error: type[Exception]) -> Any:
    """The parsed content of ``path``; an unreadable file or invalid JSON raises ``error``
    with the path and the reason (never a bare traceback)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
