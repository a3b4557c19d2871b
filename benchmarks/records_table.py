"""Print a Markdown table of clean accuracy (and distillation cost) from evaluation records.

Usage::

    python benchmarks/records_table.py benchmarks/records/cifar10-small/*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    rows = []
    for path in map(Path, sys.argv[1:]):
        r = json.loads(path.read_text())
        meta = r["distilled"]["meta"]
        clean = r["summary"]["clean_accuracy"]
        config = meta.get("config", {})
        iterations = config.get("iterations")
        seconds = meta.get("distill_seconds", 0.0)
        # One-time work inside the distillation: MTT experts, SRe2L teacher, herding network.
        # A teacher taken from the cache cost nothing in this run (its first run paid for it).
        teacher = meta.get("teacher", {})
        once = (meta.get("timings", {}).get("experts_seconds")
                or (None if teacher.get("from_cache") else teacher.get("train", {}).get("seconds"))
                or meta.get("feature_net_train_seconds") or 0.0)
        per_it = meta.get("timings", {}).get("seconds_per_iteration")
        if per_it is None and iterations:
            per_it = (seconds - once) / iterations
        train_s = sum(m["train"]["seconds"] for m in r["models"])
        label = path.name.split("-cifar10-")[0].split("-fashion-mnist-")[0]
        rows.append((label, r["ipc"], f"{clean['mean']:.2f} ± {clean['std']:.2f}", clean["n"],
                     r["protocol"]["name"], f"{seconds:.0f}", f"{once:.0f}" if once else "–",
                     f"{per_it:.1f}" if per_it is not None else "–", f"{train_s:.0f}"))
    rows.sort(key=lambda row: (row[1], row[0]))
    print("| method | IPC | clean % (mean ± std) | K | protocol | distill s | of which one-time s "
          "| s / iteration | eval training s (K models) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")


if __name__ == "__main__":
    main()
