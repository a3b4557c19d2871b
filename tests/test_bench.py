"""The benchmark runner: grid validation, resume without rework, a worker killed mid-run,
concurrent workers, crash between publish and commit, corrupt artifacts, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from robustdd.bench import (
    GridError,
    ResultStore,
    expand,
    export_records,
    load_grid,
    run_grid,
    store_records,
    store_report,
)
from robustdd.bench.runner import run_job
from robustdd.cli import app
from robustdd.errors import CorruptDataError

REPO = Path(__file__).resolve().parents[1]

GRID = """
name: tiny
profile: smoke
datasets: [digits]
ipcs: [1]
seeds: [0, 1]
methods:
  - random
  - {name: dm, overrides: {iterations: 3}}
evaluation: {protocol: {num_models: 1, epochs: 2}}
"""


def _grid(tmp_path: Path, text: str = GRID, name: str = "grid.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _run_cli(args: list[str], env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "robustdd.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("text,message", [
    ("name: x\ndatasets: [digits]\nipcs: [1]\nmethods: [nosuch]\n", "methods.0: unknown method"),
    ("name: x\ndatasets: [nowhere]\nipcs: [1]\nmethods: [dm]\n", "datasets.0: unknown dataset"),
    ("name: x\ndatasets: [digits]\nipcs: [0]\nmethods: [dm]\n", "ipcs"),
    ("name: x\ndatasets: [digits]\nipcs: [1]\nmethods: [dm]\nevaluation: {attacks: strong}\n",
     "unknown attack suite 'strong'"),
    ("name: x\ndatasets: [digits]\nipcs: [1]\nmethods: [{name: dm, overrides: {itrations: 3}}]\n",
     "unknown setting(s) itrations"),
    ("name: x\ndatasets: [digits]\nipcs: [1]\nmethods: [dm, dm]\n", "share the label dm"),
    ("name: x\ndatasets: [digits]\nipcs: [1]\nmethods: [dm]\nseeds: [0]\nextra: 1\n", "extra"),
    ("name: x\ndatasets: [digits]\nipcs: [1]\nmethods: [dm]\nprofile: huge\n", "unknown profile"),
    ("name: x\ndatasets: [digits]\nipcs: [1]\nmethods: [dm]\n"
     "evaluation: {protocol: {num_modles: 2}}\n", "evaluation.protocol"),
    ("name: x\ndatasets: [digits]\nipcs: [1]\nmethods: [dm]\narch: resnet99\n",
     "arch: unknown architecture 'resnet99'"),
    ("name: x\ndatasets: [digits]\nipcs: [1]\nmethods: [dm]\n"
     "evaluation: {protocol: {arch: resnet99}}\n", "evaluation.protocol.arch: unknown"),
    ("name: x\ndatasets: [digits]\nipcs: [1]\nmethods: [dm]\n"
     "transfer: {protocol: {num_modles: 2}}\n", "transfer.protocol"),
    ("name: x\ndatasets: [digits]\nipcs: [1]\nmethods: [dm]\ntransfer: {ipcs: [7]}\n",
     "transfer.ipcs: [7] not in the grid's ipcs [1]"),
    ("name: x\ndatasets: [digits]\nipcs: [1]\nmethods: [dm]\nipcs: [2]\n",
     "key 'ipcs' appears twice"),
    ("name: [unclosed\n", "not valid YAML"),
    ("- just\n- a list\n", "a grid is a mapping"),
])
def test_bad_grids_are_refused_with_the_field_and_reason(tmp_path, text, message):
    with pytest.raises(GridError) as info:
        load_grid(_grid(tmp_path, text))
    assert message in str(info.value) and "grid.yaml" in str(info.value)


def test_missing_grid_file_is_named(tmp_path):
    with pytest.raises(GridError, match="no such grid file"):
        load_grid(tmp_path / "absent.yaml")


def test_job_keys_follow_the_resolved_config(tmp_path):
    grid = load_grid(_grid(tmp_path))
    jobs = expand(grid)
    assert [j.kind for j in jobs].count("distill") == 4 and len(jobs) == 8
    again = expand(load_grid(_grid(tmp_path, GRID.replace("iterations: 3", "iterations: 3 "),
                                   "g2.yaml")))
    assert [j.key for j in jobs] == [j.key for j in again]
    changed = expand(load_grid(_grid(tmp_path, GRID.replace("iterations: 3", "iterations: 4"),
                                     "g3.yaml")))
    assert {j.key for j in jobs} != {j.key for j in changed}
    evals = [j for j in jobs if j.kind == "evaluate"]
    assert all(len(j.deps) == 1 and j.deps[0] in {d.key for d in jobs} for j in evals)


@pytest.mark.parametrize("name", ["smoke", "rome-table1", "rome-table2", "rdd-table1", "guard",
                                  "rome-small", "rome-ablation-small", "guard-small",
                                  "rdd-small", "rome-transfer-small", "rome-ablation"])
def test_shipped_presets_are_valid(name):
    grid = load_grid(REPO / "presets" / f"{name}.yaml")
    assert len(expand(grid)) > 0
    want = "smoke" if name == "smoke" else "small" if name.endswith("-small") else "paper"
    assert grid.profile == want


def test_shipped_presets_are_all_tested():
    tested = set(test_shipped_presets_are_valid.pytestmark[0].args[1])
    assert {p.stem for p in (REPO / "presets").glob("*.yaml")} == tested


def test_jobs_run_cell_by_cell_in_grid_order(tmp_path):
    """A run takes the grid cell by cell (IPC, then seed), every method of a cell first, so the
    cheap cells give complete comparisons before the expensive ones start."""
    grid = load_grid(_grid(tmp_path, GRID.replace("ipcs: [1]", "ipcs: [2, 1]")))
    jobs = expand(grid)
    cells = [(j.spec["ipc"], j.spec["seed"], j.spec["label"], j.kind) for j in jobs]
    assert cells[:4] == [(2, 0, "random", "distill"), (2, 0, "random", "evaluate"),
                         (2, 0, "dm", "distill"), (2, 0, "dm", "evaluate")]
    assert [c[:2] for c in cells[::4]] == [(2, 0), (2, 1), (1, 0), (1, 1)]
    store = ResultStore(tmp_path / "store")
    store.register(jobs)
    claimed = []
    while (job := store.claim(keys=[j.key for j in jobs if j.kind == "distill"])) is not None:
        claimed.append(job.key)
    assert claimed == [j.key for j in jobs if j.kind == "distill"]


# --- running and resuming --------------------------------------------------------------------


def test_run_then_rerun_does_no_work(one_thread, tmp_path):
    grid = load_grid(_grid(tmp_path))
    first = run_grid(grid, tmp_path / "store", device="cpu")
    assert (first["completed"], first["skipped"], first["failed"], first["pending"]) == (8, 0, 0, 0)
    store = ResultStore(tmp_path / "store")
    stamps = {p: p.stat().st_mtime_ns for p in store.artifacts.rglob("*") if p.is_file()}
    second = run_grid(grid, tmp_path / "store", device="cpu")
    assert (second["completed"], second["skipped"]) == (0, 8)
    assert stamps == {p: p.stat().st_mtime_ns for p in store.artifacts.rglob("*") if p.is_file()}
    records = store_records(store)
    assert sorted((r["method"], r["seed"]) for r in records) == [
        ("dm", 0), ("dm", 1), ("random", 0), ("random", 1)]
    assert all(j["attempts"] == 1 for j in store.jobs())


def test_corrupt_artifact_is_refused(one_thread, tmp_path):
    grid = load_grid(_grid(tmp_path))
    run_grid(grid, tmp_path / "store", device="cpu")
    store = ResultStore(tmp_path / "store")
    key = next(j["key"] for j in store.jobs("done") if j["kind"] == "evaluate")
    path = store.artifact_path(key) / "record.json"
    path.write_text(path.read_text().replace('"seed"', '"seeD"', 1))
    with pytest.raises(CorruptDataError, match="checksum mismatch"):
        store.verified_artifact(key)
    # the rerun the message advises sets the altered artifact aside and redoes only that job
    with pytest.warns(RuntimeWarning, match="artifact missing or altered"):
        again = run_grid(grid, tmp_path / "store", device="cpu")
    assert (again["completed"], again["skipped"], again["redone_damaged"]) == (1, 7, 1)
    store.verified_artifact(key)
    (aside,) = store.artifacts.glob(f"{key}.damaged-*")
    assert '"seeD"' in (aside / "record.json").read_text()  # kept, not deleted
    # a deleted artifact is redone the same way
    shutil.rmtree(store.artifact_path(key))
    with pytest.warns(RuntimeWarning):
        assert run_grid(grid, tmp_path / "store", device="cpu")["completed"] == 1


def test_a_foreign_sqlite_file_is_refused_and_left_alone(tmp_path):
    import sqlite3

    (tmp_path / "s").mkdir()
    db = sqlite3.connect(tmp_path / "s" / "index.sqlite")
    db.execute("CREATE TABLE jobs (id INTEGER, name TEXT)")
    db.commit()
    db.close()
    before = (tmp_path / "s" / "index.sqlite").read_bytes()
    with pytest.raises(CorruptDataError, match=r"not a robustdd bench store.*jobs"):
        ResultStore(tmp_path / "s")
    assert (tmp_path / "s" / "index.sqlite").read_bytes() == before


def test_status_tells_orphaned_running_jobs_from_live_ones(tmp_path):
    """A job whose worker died still reads "running" in the index; status counts it as
    orphaned (and the next run reclaims it), while a live worker's job is left alone."""
    grid = load_grid(_grid(tmp_path, GRID.replace("seeds: [0, 1]", "seeds: [0]")))
    store_dir = tmp_path / "store"
    store = ResultStore(store_dir)
    store.register(expand(grid))
    live = store.claim("otherhost:1")  # another host: alive while its heartbeat is fresh
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = store.claim(f"{socket.gethostname()}:{gone.pid}")
    assert live is not None and dead is not None and live.key != dead.key
    assert store.orphaned_keys() == [dead.key]
    assert set(ResultStore(store_dir, lease=0.0).orphaned_keys()) == {live.key, dead.key}
    status = CliRunner().invoke(app, ["bench", "status", "--store", str(store_dir), "--json"])
    assert json.loads(status.output)["running"] == 2
    assert json.loads(status.output)["orphaned"] == 1
    assert store.claim("otherhost:2").key == dead.key  # reclaimed, the live one is not


def test_a_crash_between_publish_and_commit_is_adopted_not_redone(one_thread, tmp_path):
    grid = load_grid(_grid(tmp_path, GRID.replace("seeds: [0, 1]", "seeds: [0]")))
    store = ResultStore(tmp_path / "store")
    store.register(expand(grid))
    job = store.claim("otherhost:1")
    staging = store.staging_path(job.key)
    (staging / "set").mkdir()
    (staging / "set" / "x").write_text("made before the crash")
    # The artifact reached its place but the worker died before marking the job done.
    (staging / "COMPLETE").write_text("{}")
    os.replace(staging, store.artifact_path(job.key))
    run_job(store, job)
    assert store.status_counts([job.key])["done"] == 1
    assert (store.artifact_path(job.key) / "set" / "x").read_text() == "made before the crash"


def test_failed_job_fails_its_dependants_and_is_reported(one_thread, tmp_path):
    # DC has no reference loop schedule for IPC 2 at the small profile: the distillation fails
    # at once, its evaluation is failed with it, and the reason is kept.
    text = ("name: f\nprofile: small\ndatasets: [digits]\nipcs: [2]\nmethods: [dc]\n")
    summary = run_grid(load_grid(_grid(tmp_path, text)), tmp_path / "store", device="cpu")
    assert (summary["completed"], summary["failed"]) == (0, 2)
    jobs = {j["kind"]: j for j in ResultStore(tmp_path / "store").jobs()}
    assert "outer_loop and inner_loop" in jobs["distill"]["error"]
    assert jobs["evaluate"]["error"] == "a job it depends on failed"
    res = CliRunner().invoke(app, ["bench", "run", str(tmp_path / "grid.yaml"), "--store",
                                   str(tmp_path / "store"), "--json", "--device", "cpu"])
    assert res.exit_code == 1  # still failing: the rerun tried again and says so


def test_killed_worker_is_resumed_by_the_next_run(tmp_path):
    grid = _grid(tmp_path, GRID.replace("iterations: 3", "iterations: 40"))
    store_dir = tmp_path / "store"
    proc = _run_cli(["bench", "run", str(grid), "--store", str(store_dir), "--device", "cpu",
                     "--json"])
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until some work is done and the dm job is running
        if (store_dir / "index.sqlite").exists():
            counts = ResultStore(store_dir).status_counts()
            if counts["done"] >= 2 and counts["running"] >= 1:
                break
        time.sleep(0.5)
    else:  # pragma: no cover
        proc.kill()
        pytest.fail("the worker never got going")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = ResultStore(store_dir).status_counts()
    assert before["running"] >= 1 and before["pending"] + before["running"] > 0
    rerun = _run_cli(["bench", "run", str(grid), "--store", str(store_dir), "--device", "cpu",
                      "--json"])
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["failed"] == 0 and summary["pending"] == 0
    assert summary["skipped"] == before["done"]
    store = ResultStore(store_dir)
    assert store.status_counts()["done"] == 8
    assert not list(store.artifacts.glob(".tmp-*"))
    assert len(store_records(store)) == 4


def test_concurrent_workers_neither_lose_nor_duplicate(tmp_path):
    grid = _grid(tmp_path)
    store_dir = tmp_path / "store"
    procs = [_run_cli(["bench", "run", str(grid), "--store", str(store_dir), "--device", "cpu",
                       "--json"]) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    summaries = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    assert sum(s["completed"] for s in summaries) == 8
    store = ResultStore(store_dir)
    jobs = store.jobs()
    assert len(jobs) == 8 and all(j["status"] == "done" and j["attempts"] == 1 for j in jobs)
    assert len(store_records(store)) == 4


def test_local_executor_with_two_workers(tmp_path):
    grid = load_grid(_grid(tmp_path, GRID.replace("seeds: [0, 1]", "seeds: [0]")))
    summary = run_grid(grid, tmp_path / "store", executor="local", workers=2, device="cpu")
    assert (summary["completed"], summary["failed"]) == (4, 0)
    with pytest.raises(ValueError, match="unknown executor"):
        run_grid(grid, tmp_path / "store", executor="pbs")


def test_slurm_path_through_submitits_local_executor(tmp_path):
    grid = load_grid(_grid(tmp_path, GRID.replace("seeds: [0, 1]", "seeds: [0]")))
    summary = run_grid(grid, tmp_path / "store", executor="slurm", workers=2, device="cpu",
                       slurm={"cluster": "local", "timeout_min": 30})
    assert (summary["completed"], summary["failed"], summary["pending"]) == (4, 0, 0)
    assert list((tmp_path / "store" / "submitit").iterdir())  # submitit's job folder
    again = run_grid(grid, tmp_path / "store", executor="slurm", device="cpu",
                     slurm={"cluster": "local"})
    assert (again["completed"], again["skipped"]) == (0, 4)


def test_slurm_without_slurm_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    grid = load_grid(_grid(tmp_path, GRID.replace("seeds: [0, 1]", "seeds: [0]")))
    with pytest.raises(RuntimeError, match="sbatch is not on PATH"):
        run_grid(grid, tmp_path / "store", executor="slurm", device="cpu")


def test_cli_status_and_report(one_thread, tmp_path):
    grid = _grid(tmp_path, GRID.replace("seeds: [0, 1]", "seeds: [0]"))
    runner = CliRunner()
    store = tmp_path / "store"
    res = runner.invoke(app, ["bench", "run", str(grid), "--store", str(store), "--json",
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert json.loads(res.output.strip().splitlines()[-1])["completed"] == 4
    status = runner.invoke(app, ["bench", "status", "--store", str(store), "--json"])
    assert json.loads(status.output)["done"] == 4
    report = runner.invoke(app, ["bench", "report", "--store", str(store), "--out",
                                 str(tmp_path / "report")])
    assert report.exit_code == 0, report.output + repr(report.exception)
    assert "Random" in (tmp_path / "report" / "accuracy.md").read_text()
    for command in (["status"], ["report", "--out", str(tmp_path / "r2")]):
        missing = runner.invoke(app, ["bench", *command, "--store", str(tmp_path / "none")])
        assert missing.exit_code != 0 and "no result store" in str(missing.exception)
    assert not (tmp_path / "none").exists()  # a typo'd path is not turned into a store


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("the HTML report is tested in a real headless browser: install Debian's "
                "chromium (`apt-get install chromium`; .ci/run does this)")


def test_html_report_renders_in_headless_chromium(one_thread, tmp_path):
    grid = load_grid(_grid(tmp_path, GRID.replace("seeds: [0, 1]", "seeds: [0]")
                          .replace("evaluation: {protocol: {num_models: 1, epochs: 2}}",
                                   "evaluation: {attacks: quick, curves: true, "
                                   "protocol: {num_models: 1, epochs: 2}}")))
    store = ResultStore(tmp_path / "store")
    run_grid(grid, store.root, device="cpu")
    page, n = store_report(store, tmp_path / "report")
    assert n == 2 and page.name == "index.html"
    html = page.read_text()
    assert "White-box robustness" in html and "Clean and attacked accuracy" in html
    assert html.count("data:image/png;base64,") >= 3  # two sample grids and the curves
    browser = _chromium()
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--allow-file-access-from-files"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-images-ok="true"' in dom.stdout  # every embedded image decoded
    assert "<table" in dom.stdout and "Random" in dom.stdout and "DM" in dom.stdout
    shot = tmp_path / "shot.png"
    res = subprocess.run([*common, "--window-size=1200,1600", f"--screenshot={shot}",
                          page.as_uri()], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"))
    top = pixels[:600]  # title and tables: dark text and the table header shading
    assert (top < 100).mean() > 0.005 and (pixels > 250).mean() > 0.3


def test_transfer_matrix_job_depends_on_the_sets_and_feeds_the_report(one_thread, tmp_path):
    text = GRID.replace("seeds: [0, 1]", "seeds: [0]") + (
        "transfer: {attacks: quick, protocol: {epochs: 2}}\n")
    grid = load_grid(_grid(tmp_path, text))
    jobs = expand(grid)
    (transfer,) = [j for j in jobs if j.kind == "transfer"]
    assert set(transfer.deps) == {j.key for j in jobs if j.kind == "distill"}
    assert set(transfer.spec["victims"]) == {"random", "dm"}
    summary = run_grid(grid, tmp_path / "store", device="cpu")
    assert (summary["completed"], summary["failed"]) == (5, 0)
    store = ResultStore(tmp_path / "store")
    doc = json.loads((store.verified_artifact(transfer.key) / "transfer.json").read_text())
    assert set(doc["victims"]) == {"random", "dm"}
    assert "adversarially-trained" in doc["surrogates"]
    page, _ = store_report(store, tmp_path / "report")
    assert (tmp_path / "report" / "transfer_heatmap.png").is_file()
    assert "Transfer heatmap" in page.read_text()
    bad = text.replace("attacks: quick", "attacks: nosuch")
    with pytest.raises(GridError, match="unknown attack suite"):
        load_grid(_grid(tmp_path, bad, "bad.yaml"))


def test_a_grid_without_evaluation_distils_and_runs_the_transfer_matrix_only(one_thread,
                                                                           tmp_path):
    """`evaluation: null`: no evaluate jobs, and the distill/transfer keys are those of the same
    grid with an evaluation, so the two share a store's sets and matrices."""
    base = GRID.replace("seeds: [0, 1]", "seeds: [0]") + (
        "transfer: {attacks: quick, adversarial_surrogate: false, protocol: {epochs: 2}}\n")
    evaluated = expand(load_grid(_grid(tmp_path, base)))
    for off in ("null", "false"):
        text = base.replace("evaluation: {protocol: {num_models: 1, epochs: 2}}",
                            f"evaluation: {off}")
        jobs = expand(load_grid(_grid(tmp_path, text, f"{off}.yaml")))
        assert [j.kind for j in jobs] == ["distill", "distill", "transfer"]
        assert {j.key for j in jobs} == {j.key for j in evaluated if j.kind != "evaluate"}
    summary = run_grid(load_grid(tmp_path / "null.yaml"), tmp_path / "store", device="cpu")
    assert (summary["jobs"], summary["completed"], summary["failed"]) == (3, 3, 0)
    store = ResultStore(tmp_path / "store")
    assert {j["kind"] for j in store.jobs("done")} == {"distill", "transfer"}
    (transfer,) = [j for j in evaluated if j.kind == "transfer"]  # the same key (asserted above)
    doc = json.loads((store.verified_artifact(transfer.key) / "transfer.json").read_text())
    assert set(doc["victims"]) == {"random", "dm"}
    # The evaluated grid then finds the sets and the matrix done and runs only its evaluations.
    again = run_grid(load_grid(tmp_path / "grid.yaml"), tmp_path / "store", device="cpu")
    assert (again["completed"], again["skipped"]) == (2, 3)


def test_the_shipped_smoke_preset_runs_end_to_end_and_reruns_for_free(tmp_path):
    """`robustdd bench run presets/smoke.yaml`, as the README says, then again."""
    store = tmp_path / "store"
    args = ["bench", "run", str(REPO / "presets" / "smoke.yaml"), "--store", str(store),
            "--device", "cpu", "--json"]
    first = _run_cli(args)
    out, err = first.communicate(timeout=900)
    assert first.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["completed"], summary["failed"], summary["pending"]) == (
        summary["jobs"], 0, 0)
    second = _run_cli(args)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-3000:]
    again = json.loads(out.strip().splitlines()[-1])
    assert (again["completed"], again["skipped"]) == (0, summary["jobs"])


def test_store_transfer_inputs_combine_the_seeds_at_the_largest_ipc(tmp_path):
    """Two seeds' transfer matrices at IPC 10 (and one at IPC 1, ignored): the heatmap holds
    each cell's mean, Table 2's entries mean ± std over the seeds."""
    from robustdd.bench import _transfer_inputs
    from robustdd.evaluate.transfer import ADVERSARIAL_SURROGATE, TRANSFER_FORMAT

    def doc(ipc: int, acc: float) -> dict:
        surrogates = [ADVERSARIAL_SURROGATE, "dm"]
        return {"format": TRANSFER_FORMAT, "bench": {"ipc": ipc},
                "test_set": {"dataset": "cifar10"}, "attacks": [{"label": "pgd"}],
                "victims": {"dm": {"ipc": ipc, "clean_accuracy": 50.0}},
                "accuracy": {s: {"dm": {"pgd": acc}} for s in surrogates},
                "attack_seconds": {s: {"pgd": 1.0} for s in surrogates},
                "surrogates": {s: {"clean_seconds": 0.1} for s in surrogates}}

    docs = {"a": (0, doc(10, 40.0)), "b": (1, doc(10, 30.0)), "c": (0, doc(1, 5.0))}
    for key, (_, d) in docs.items():
        (tmp_path / key).mkdir()
        (tmp_path / key / "transfer.json").write_text(json.dumps(d))

    class FakeStore:
        root = tmp_path

        def __init__(self, extra=()):
            self.extra = list(extra)

        def jobs(self, status):
            return [{"kind": "transfer", "key": k,
                     "spec": {"dataset": "cifar10", "profile": "small", "seed": seed,
                              "ipc": d["bench"]["ipc"]}}
                    for k, (seed, d) in [*docs.items(), *self.extra]]

        def verified_artifact(self, key):
            return tmp_path / key

    matrix, entries = _transfer_inputs(FakeStore())
    # I-RR of one attack: 100 (1 - ASR^2 / ACC^2), ASR = 50 - acc
    irr = [100 * (1 - (50 - a) ** 2 / 50 ** 2) for a in (40.0, 30.0)]
    assert matrix["untargeted"]["dm"]["dm"] == pytest.approx(sum(irr) / 2)
    (dataset, victim, metrics), = entries
    assert (dataset, victim) == ("cifar10", "dm")
    stat = metrics["untargeted"]["pooled"]["I-RR"]
    assert stat["n"] == 2 and stat["mean"] == pytest.approx(sum(irr) / 2)
    assert stat["std"] == pytest.approx(abs(irr[0] - irr[1]) / 2)
    with pytest.raises(ValueError, match="two finished transfer jobs"):
        _transfer_inputs(FakeStore([("a", (1, docs["a"][1]))]))  # a second seed-1 job, IPC 10


def test_export_writes_readable_names_and_never_clobbers(one_thread, tmp_path):
    one_seed = GRID.replace("seeds: [0, 1]", "seeds: [0]")
    grid = _grid(tmp_path, one_seed)
    store = tmp_path / "store"
    run_grid(load_grid(grid), store, device="cpu")
    runner = CliRunner()
    out = tmp_path / "records"
    res = runner.invoke(app, ["bench", "export", "--store", str(store), "--out", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["dm-digits-ipc1-smoke-s0.json", "random-digits-ipc1-smoke-s0.json"]
    rs = ResultStore(store)
    (dm_eval,) = [j for j in rs.jobs("done") if j["kind"] == "evaluate"
                  and j["spec"]["label"] == "dm"]
    assert ((out / names[0]).read_bytes()
            == (rs.artifact_path(dm_eval["key"]) / "record.json").read_bytes())
    again = runner.invoke(app, ["bench", "export", "--store", str(store), "--out", str(out)])
    assert "0 written, 2 unchanged" in again.output
    # A file edited by hand is refused, not replaced, unless --overwrite.
    (out / names[0]).write_text("{}")
    clash = runner.invoke(app, ["bench", "export", "--store", str(store), "--out", str(out)])
    assert clash.exit_code != 0 and "other content" in str(clash.exception)
    assert (out / names[0]).read_text() == "{}"
    forced = runner.invoke(app, ["bench", "export", "--store", str(store), "--out", str(out),
                                 "--overwrite"])
    assert "1 written, 1 unchanged" in forced.output
    # A second evaluation of the same cells (other settings) gets key-suffixed names, and
    # --grid limits the export to one grid's jobs.
    other = _grid(tmp_path, one_seed.replace("epochs: 2", "epochs: 3"), "other.yaml")
    run_grid(load_grid(other), store, device="cpu")
    both = tmp_path / "both"
    export_records(rs, both)
    assert len(list(both.glob("dm-digits-ipc1-smoke-s0-*.json"))) == 2
    only = runner.invoke(app, ["bench", "export", "--store", str(store), "--out",
                               str(tmp_path / "only"), "--grid", str(other)])
    assert only.exit_code == 0, only.output + repr(only.exception)
    assert sorted(p.name for p in (tmp_path / "only").iterdir()) == names
    assert json.loads((tmp_path / "only" / names[0]).read_text())["protocol"]["epochs"] == 3
