"""`robustdd demo` (the README's first command) end to end, exactly as a user runs it."""

import json
import subprocess
import sys


def test_demo_runs_and_writes_records(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "robustdd.cli", "demo", "--out",
                           str(tmp_path), "--device", "cpu"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "robustdd demo" in proc.stdout and "pgd" in proc.stdout
    for method in ("random", "dm"):
        record = json.loads((tmp_path / f"{method}-digits-ipc10.json").read_text())
        assert record["method"] == method and len(record["models"]) == 3
        summary = record["summary"]
        assert summary["clean_accuracy"]["mean"] > 80.0  # digits are easy even at IPC 10
        assert summary["pgd"]["mean"] <= summary["attack_subset_clean_accuracy"]["mean"]
        assert (tmp_path / f"{method}-digits-ipc10" / "meta.json").exists()
