"""The ``robustdd`` command as a user runs it."""

import json
import subprocess
import sys

import pytest
from PIL import Image
from typer.testing import CliRunner

from robustdd.cli import app
from robustdd.distilled import DistilledSet

runner = CliRunner()


@pytest.fixture(autouse=True)
def data_root(monkeypatch, shared_data_root):
    monkeypatch.setenv("ROBUSTDD_DATA", str(shared_data_root))


def _ok(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_distill_evaluate_show_round_trip(tmp_path):
    set_dir = tmp_path / "dm-digits"
    _ok(["distill", "dm", "digits", "--ipc", "2", "--profile", "smoke", "--out", str(set_dir),
         "--set", "iterations=3", "--set", "batch_real=8", "--device", "cpu"])
    syn = DistilledSet.load(set_dir)
    assert syn.method == "dm" and syn.ipc == 2 and syn.meta["config"]["iterations"] == 3

    record_path = tmp_path / "rec.json"
    out = _ok(["evaluate", str(set_dir), "--profile", "smoke", "--models", "1",
               "--out", str(record_path)])
    record = json.loads(record_path.read_text())
    assert record["method"] == "dm" and len(record["models"]) == 1
    assert "pgd" in out and "clean" in out

    png = tmp_path / "grid.png"
    _ok(["show", str(set_dir), "--out", str(png), "--scale", "1"])
    with Image.open(png) as im:
        assert im.size[1] > 10 * 8  # one row of 8-px images per class


def test_data_list_and_prepare_digits():
    out = _ok(["data", "list"])
    for name in ("cifar10", "cifar100", "svhn", "mnist", "fashion-mnist", "tiny-imagenet",
                 "digits"):
        assert name in out
    assert "needs no preparation" in _ok(["data", "prepare", "digits"])


def test_import_dc_file(tmp_path):
    import torch

    images = torch.rand(10, 1, 8, 8)
    mean, std = 0.3053, 0.3759
    torch.save({"data": [((images - mean) / std, torch.arange(10))]}, tmp_path / "res.pt")
    _ok(["import", "dc", str(tmp_path / "res.pt"), "--dataset", "digits", "--out",
         str(tmp_path / "imported")])
    syn = DistilledSet.load(tmp_path / "imported")
    torch.testing.assert_close(syn.images, images, atol=1e-5, rtol=0)


def test_existing_outputs_are_refused_before_any_work(tmp_path):
    """A record or set already at the output path is kept unless --overwrite; the check comes
    first (here the set to evaluate does not even exist, so any work would fail differently)."""
    record = tmp_path / "rec.json"
    record.write_text('{"precious": true}')
    result = runner.invoke(app, ["evaluate", str(tmp_path / "no-such-set"), "--out", str(record)])
    assert result.exit_code == 2 and "already exists; pass --overwrite" in result.output
    for args in (["metrics", str(record), "--output", str(record)],
                 ["transfer", str(tmp_path / "no-such-set"), "--out", str(record)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "already exists" in result.output, args
    assert record.read_text() == '{"precious": true}'
    # a folder that is not a distilled set: refused before distilling, even with --overwrite
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    result = runner.invoke(app, ["distill", "random", "digits", "--ipc", "1", "--profile",
                                 "smoke", "--out", str(other)])
    assert result.exit_code == 2 and "--overwrite" in result.output
    result = runner.invoke(app, ["distill", "random", "digits", "--ipc", "1", "--profile",
                                 "smoke", "--out", str(other), "--overwrite"])
    assert isinstance(result.exception, FileExistsError)
    assert "not a robustdd distilled set" in str(result.exception)
    assert (other / "todo.txt").read_text() == "keep me"


def test_default_record_name_carries_the_suite_and_overwrite_replaces(tmp_path):
    set_dir = tmp_path / "rnd"
    _ok(["distill", "random", "digits", "--ipc", "1", "--profile", "smoke", "--out",
         str(set_dir)])
    args = ["evaluate", str(set_dir), "--profile", "smoke", "--models", "1", "--suite", "none"]
    _ok(args)
    path = tmp_path / "rnd-eval-smoke-s0-none.json"
    first = json.loads(path.read_text())
    assert runner.invoke(app, args).exit_code == 2
    _ok([*args, "--overwrite", "--set", "epochs=2"])
    assert json.loads(path.read_text())["protocol"] != first["protocol"]
    _ok(["distill", "random", "digits", "--ipc", "1", "--profile", "smoke", "--out",
         str(set_dir), "--overwrite", "--seed", "1"])


def test_records_get_the_usual_file_mode(tmp_path):
    import os

    from robustdd.runtime import write_json_atomic

    old = os.umask(0o022)
    os.umask(old)
    path = write_json_atomic(tmp_path / "r.json", {"a": 1})
    assert path.stat().st_mode & 0o777 == 0o666 & ~old


def test_small_input_mistakes_are_clear(tmp_path):
    result = runner.invoke(app, ["distill", "random", "digits", "--out", str(tmp_path / "s"),
                                 "--set", "iterations=[1"])
    assert result.exit_code == 2 and "not valid YAML" in result.output
    from robustdd.errors import UnknownNameError
    from robustdd.evaluate.whitebox import _resolve_attacks

    with pytest.raises(UnknownNameError, match=r"known attack suites: .*none"):
        _resolve_attacks("bogus", None)
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\ndatasets: [digits]\nipcs: [1]\nmethods: [random]\n")
    result = runner.invoke(app, ["bench", "run", str(grid), "--store", str(tmp_path / "st"),
                                 "--device", "tpu9"])
    assert result.exception is not None and not (tmp_path / "st").exists()


def test_errors_are_one_clear_line_and_exit_code_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "robustdd.cli", "distill", "nope", "digits",
                           "--out", str(tmp_path / "x")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "unknown method 'nope'" in proc.stderr and "dm" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("method", ["random", "herding", "kcenter", "dc", "dsa", "idm", "bacon",
                                    "guard-dc", "rdd-idm", "rome", "guard-sre2l", "rdd-dc"])
def test_every_method_distills_through_the_cli(one_thread, tmp_path, private_cache, method):
    """The methods the other CLI tests do not cover (dm, mtt and sre2l have their own), and the
    robust methods' default variants (their own CLI tests run the faithful ones), at smoke on
    digits, evaluated by the CLI's protocol."""
    out = tmp_path / method
    _ok(["distill", method, "digits", "--ipc", "1", "--profile", "smoke", "--out", str(out),
         "--device", "cpu"])
    syn = DistilledSet.load(out)
    assert (syn.method, syn.ipc, syn.meta["profile"]) == (method, 1, "smoke")
    variant_key = {"rome": "rome", "guard-sre2l": "guard", "rdd-dc": "rdd"}.get(method)
    if variant_key:
        assert syn.meta[variant_key]["variant"] == "paper"
    record = tmp_path / "rec.json"
    _ok(["evaluate", str(out), "--profile", "smoke", "--models", "1", "--suite", "none",
         "--out", str(record)])
    evaluated = json.loads(record.read_text())
    assert evaluated["method"] == method and evaluated["attacks"] == []  # clean only
