"""DistilledSet: validation, mosaic formation, save/load integrity, importers, grids."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustdd.data.registry import dataset_info
from robustdd.distilled import (
    DistilledSet,
    DistilledSetNotFoundError,
    import_dc,
    import_mtt,
    make_mosaic2x2,
)
from robustdd.errors import CorruptDataError, IncompatibleError
from robustdd.grid import grid_array, save_grid

CIFAR = dataset_info("cifar10")


def make_set(n_per_class: int = 2, *, soft: bool = False, size: int = 8, channels: int = 3,
             num_classes: int = 10, seed: int = 0, **kwargs) -> DistilledSet:
    g = torch.Generator().manual_seed(seed)
    n = n_per_class * num_classes
    images = torch.rand(n, channels, size, size, generator=g)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    if soft:
        labels = torch.softmax(torch.randn(n, num_classes, generator=g), 1)
    kwargs.setdefault("dataset", "cifar10")
    kwargs.setdefault("method", "test")
    return DistilledSet(images=images, labels=labels, num_classes=num_classes,
                        ipc=n_per_class, **kwargs)


def assert_same(a: DistilledSet, b: DistilledSet) -> None:
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.labels, b.labels) and a.labels.dtype == b.labels.dtype
    for name in ("num_classes", "dataset", "method", "ipc", "formation", "lr", "class_names",
                 "mean", "std", "meta"):
        assert getattr(a, name) == getattr(b, name), name


# -- validation -----------------------------------------------------------------------------


def test_properties_and_repr():
    s = make_set(3, soft=True)
    assert (len(s), s.channels, s.image_size, s.soft) == (30, 3, 8, True)
    assert s.hard_labels().shape == (30,)
    assert "soft" in repr(s) and "tensor(" not in repr(s)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_images_refused(bad):
    s = make_set()
    images = s.images.clone()
    images[3, 0, 1, 1] = bad
    with pytest.raises(CorruptDataError, match="NaN or Inf"):
        DistilledSet(images=images, labels=s.labels, num_classes=10, dataset="cifar10",
                     method="x", ipc=2)


@pytest.mark.parametrize("change, message", [
    ({"labels": torch.arange(20) % 11}, "labels must lie in"),
    ({"labels": torch.zeros(20, 9)}, "soft labels must have shape"),
    ({"labels": torch.zeros(19, dtype=torch.long)}, "20 images but 19 labels"),
    ({"labels": torch.zeros(20, dtype=torch.int32)}, "int64"),
    ({"images": torch.rand(20, 3, 8, 8, dtype=torch.float64)}, "float32"),
    ({"images": torch.rand(20, 3, 8, 6)}, "square"),
    ({"formation": "mosaic3x3"}, "unknown formation"),
    ({"images": torch.rand(20, 3, 7, 7), "formation": "mosaic2x2"}, "even"),
    ({"mean": (0.5,)}, "mean has 1 values for 3 channels"),
    ({"class_names": ("a", "b")}, "2 class names"),
    ({"meta": {"x": object()}}, "JSON"),
    ({"lr": float("nan")}, "lr"),
    ({"ipc": 0}, "ipc"),
])
def test_invalid_sets_refused(change, message):
    s = make_set()
    fields = dict(images=s.images, labels=s.labels, num_classes=10, dataset="cifar10",
                  method="x", ipc=2)
    fields.update(change)
    with pytest.raises(ValueError, match=message):
        DistilledSet(**fields)


def test_check_compatible():
    s = make_set(size=32)
    s.check_compatible("cifar10")
    s.check_compatible(CIFAR)
    s.check_compatible(None, num_classes=10, channels=3, image_size=32)
    s.check_compatible("standin", num_classes=10, channels=3, image_size=32)  # unregistered
    with pytest.raises(IncompatibleError, match="standin: classes 10 vs 5"):
        s.check_compatible("standin", num_classes=5, channels=3, image_size=32)
    with pytest.raises(IncompatibleError, match="channels 3 vs 1"):
        s.check_compatible("mnist")
    with pytest.raises(IncompatibleError, match="classes 10 vs 100"):
        s.check_compatible("cifar100")
    with pytest.raises(IncompatibleError, match="image size 32 vs 64"):
        s.check_compatible("cifar10", image_size=64)


def test_clamped_and_to():
    s = make_set()
    s.images[0] = 2.0
    s.images[1] = -1.0
    c = s.clamped()
    assert float(c.images.max()) == 1.0 and float(c.images.min()) == 0.0
    assert float(s.images.max()) == 2.0  # original untouched
    moved = s.to("cpu")
    assert moved.images.device.type == "cpu" and moved is not s


# -- mosaic formation -----------------------------------------------------------------------


def test_decode_mosaic_constant_quadrants():
    images = torch.zeros(2, 1, 4, 4)
    values = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]])
    for i in range(2):
        images[i, 0, :2, :2], images[i, 0, :2, 2:] = values[i, 0], values[i, 1]
        images[i, 0, 2:, :2], images[i, 0, 2:, 2:] = values[i, 2], values[i, 3]
    s = DistilledSet(images=images, labels=torch.tensor([3, 7]), num_classes=10,
                     dataset="mnist", method="idm", ipc=1, formation="mosaic2x2")
    dec_images, dec_labels = s.decoded()
    assert dec_images.shape == (8, 1, 4, 4)
    # quadrant-major: index q * N + i is quadrant q (TL, TR, BL, BR) of image i
    expected = values.t().reshape(-1)
    assert torch.allclose(dec_images, expected.view(8, 1, 1, 1).expand(8, 1, 4, 4), atol=1e-6)
    assert dec_labels.tolist() == [3, 7, 3, 7, 3, 7, 3, 7]


def test_decode_soft_labels_repeated():
    s = make_set(1, soft=True, formation="mosaic2x2")
    images, labels = s.decoded()
    assert images.shape == (40, 3, 8, 8)
    assert torch.equal(labels, s.labels.repeat(4, 1))


def test_decode_matches_idm_reference():
    """Same images as IDM's number_sign_augment, whose quadrant order is TL, BL, TR, BR."""
    torch.manual_seed(0)
    x = torch.rand(3, 3, 8, 8)
    s = DistilledSet(images=x, labels=torch.tensor([0, 1, 2]), num_classes=10, dataset="cifar10",
                     method="idm", ipc=1, formation="mosaic2x2")
    dec, _ = s.decoded()
    up = torch.nn.functional.interpolate
    ref = [up(q, scale_factor=2, mode="bilinear", align_corners=False)
           for q in (x[:, :, :4, :4], x[:, :, :4, 4:], x[:, :, 4:, :4], x[:, :, 4:, 4:])]
    assert torch.allclose(dec, torch.cat(ref), atol=1e-6)


def test_make_mosaic_then_decode_recovers_smooth_images():
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    base = torch.stack([yy, xx, (yy + xx) / 2])  # 3×32×32, low frequency
    groups = torch.stack([torch.stack([base * (0.25 + 0.2 * q) + 0.05 * i for q in range(4)])
                          for i in range(2)])  # [2, 4, 3, 32, 32]
    mosaic = make_mosaic2x2(groups)
    assert mosaic.shape == (2, 3, 32, 32)
    s = DistilledSet(images=mosaic, labels=torch.tensor([0, 1]), num_classes=10,
                     dataset="cifar10", method="idm", ipc=1, formation="mosaic2x2")
    dec, _ = s.decoded()
    expected = groups.permute(1, 0, 2, 3, 4).reshape(8, 3, 32, 32)
    interior = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # borders extrapolate
    assert (dec - expected)[interior].abs().max() < 1e-4
    assert (dec - expected).abs().max() < 0.05


def test_make_mosaic_shape_contract():
    with pytest.raises(ValueError, match=r"\[N, 4, C, H, W\]"):
        make_mosaic2x2(torch.rand(4, 3, 8, 8))
    with pytest.raises(ValueError, match="even"):
        make_mosaic2x2(torch.rand(1, 4, 3, 7, 7))


# -- save / load ----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {},
    {"soft": True},
    {"lr": 0.0123, "meta": {"config": {"iters": 5, "eps": [1, 2]}, "seed": 3}},
    {"formation": "mosaic2x2", "class_names": CIFAR.class_names, "mean": CIFAR.mean,
     "std": CIFAR.std},
])
@pytest.mark.parametrize("tensor_format", ["safetensors", "pt"])
def test_round_trip(tmp_path, kwargs, tensor_format):
    s = make_set(**kwargs)
    s.images[0, 0, 0, 0] = 1.7  # out-of-range values survive
    out = s.save(tmp_path / "set", tensor_format=tensor_format)
    assert_same(s, DistilledSet.load(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_meta_json_contents(tmp_path):
    make_set(lr=0.5).save(tmp_path / "s")
    doc = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert doc["format"] == "robustdd.distilled" and doc["format_version"] == 1
    assert doc["tensors"]["file"] == "tensors.safetensors" and len(doc["tensors"]["sha256"]) == 64
    assert doc["tensors"]["images"]["shape"] == [20, 3, 8, 8]
    assert (doc["ipc"], doc["lr"], doc["label_kind"]) == (2, 0.5, "hard")


def test_save_replaces_existing_set_without_leftovers(tmp_path):
    make_set(seed=1).save(tmp_path / "s")
    new = make_set(seed=2)
    new.save(tmp_path / "s")
    assert_same(new, DistilledSet.load(tmp_path / "s"))
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_save_refuses_foreign_directory(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a robustdd distilled set"):
        make_set().save(tmp_path / "d")
    assert (tmp_path / "d" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    make_set(seed=1).save(tmp_path / "s")
    before = DistilledSet.load(tmp_path / "s")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("robustdd.distilled.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        make_set(seed=2).save(tmp_path / "s")
    assert [p.name for p in tmp_path.iterdir()] == ["s"]
    assert_same(before, DistilledSet.load(tmp_path / "s"))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_tensors_detected(tmp_path, damage):
    out = make_set().save(tmp_path / "s")
    f = out / "tensors.safetensors"
    data = bytearray(f.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-10] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="checksum"):
        DistilledSet.load(out)


def test_load_refusals(tmp_path):
    with pytest.raises(DistilledSetNotFoundError, match="does not exist"):
        DistilledSet.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorruptDataError, match=r"meta\.json is missing"):
        DistilledSet.load(tmp_path / "empty")

    out = make_set().save(tmp_path / "s")
    meta_path = out / "meta.json"
    good = json.loads(meta_path.read_text())

    def with_meta(doc) -> None:
        meta_path.write_text(json.dumps(doc))

    with_meta({"format": "somebody.else", "format_version": 1})
    with pytest.raises(CorruptDataError, match="foreign"):
        DistilledSet.load(out)
    meta_path.write_text("{not json")
    with pytest.raises(CorruptDataError, match="unreadable JSON"):
        DistilledSet.load(out)
    with_meta({**good, "format_version": 2})
    with pytest.raises(CorruptDataError, match=r"format_version 2.*newer"):
        DistilledSet.load(out)
    bad_shape = json.loads(json.dumps(good))
    bad_shape["tensors"]["images"]["shape"] = [20, 3, 8, 9]
    with_meta(bad_shape)
    with pytest.raises(CorruptDataError, match="shape"):
        DistilledSet.load(out)
    with_meta({k: v for k, v in good.items() if k != "ipc"})
    with pytest.raises(CorruptDataError, match="missing field 'ipc'"):
        DistilledSet.load(out)
    with_meta(good)
    (out / "tensors.safetensors").unlink()
    with pytest.raises(CorruptDataError, match=r"tensors\.safetensors is missing"):
        DistilledSet.load(out)


# -- importers ------------------------------------------------------------------------------


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CIFAR.mean).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR.std).view(1, 3, 1, 1)
    return (pixels - mean) / std


def test_import_dc(tmp_path):
    pixels = [torch.rand(20, 3, 32, 32), torch.rand(20, 3, 32, 32)]
    labels = torch.arange(10).repeat_interleave(2)
    path = tmp_path / "res_DC_CIFAR10_ConvNet_2ipc.pt"
    torch.save({"data": [(normalise(p), labels) for p in pixels],
                "accs_all_exps": {"ConvNet": [0.31, 0.32]}}, path)
    s = import_dc(path, "cifar10", index=1)
    assert torch.allclose(s.images, pixels[1], atol=1e-5)
    assert torch.equal(s.labels, labels)
    assert (s.ipc, s.method, s.dataset, s.class_names) == (2, "dc", "cifar10", CIFAR.class_names)
    assert s.meta["source"]["accs_all_exps"] == {"ConvNet": [0.31, 0.32]}
    assert_same(s, DistilledSet.load(s.save(tmp_path / "imported")))


@pytest.mark.parametrize("payload, error, message", [
    ([1, 2], CorruptDataError, "expected a dict"),
    ({"images": torch.zeros(1)}, CorruptDataError, "'data'"),
    ({"data": []}, CorruptDataError, "non-empty"),
    ({"data": [(torch.zeros(20, 3, 32, 32),)]}, CorruptDataError, "pair"),
    ({"data": [(torch.zeros(20, 1, 28, 28), torch.arange(20) % 10)]}, IncompatibleError,
     "1×28×28 but cifar10"),
    ({"data": [(torch.zeros(20, 3, 32, 32), torch.arange(20) % 12)]}, IncompatibleError,
     "outside the 10 classes"),
    ({"data": [(torch.zeros(20, 3, 32, 32), torch.arange(20) % 7)]}, CorruptDataError,
     "unequal"),
    ({"data": [(torch.zeros(20, 3, 32, 32), torch.arange(10))]}, CorruptDataError,
     "20 images but 10 labels"),
    ({"data": [(torch.full((10, 3, 32, 32), float("nan")), torch.arange(10))]}, CorruptDataError,
     "NaN"),
])
def test_import_dc_refusals(tmp_path, payload, error, message):
    path = tmp_path / "res.pt"
    torch.save(payload, path)
    with pytest.raises(error, match=message):
        import_dc(path, "cifar10")


def test_import_dc_missing_file(tmp_path):
    with pytest.raises(DistilledSetNotFoundError):
        import_dc(tmp_path / "nope.pt", "cifar10")


def test_import_mtt(tmp_path):
    pixels = torch.rand(10, 3, 32, 32)
    torch.save(normalise(pixels), tmp_path / "images_best.pt")
    torch.save(torch.arange(10), tmp_path / "labels_best.pt")
    torch.save(torch.tensor(0.0105), tmp_path / "syn_lr.pt")
    s = import_mtt(tmp_path / "images_best.pt", "cifar10", lr_path=tmp_path / "syn_lr.pt")
    assert torch.allclose(s.images, pixels, atol=1e-5)
    assert s.labels.tolist() == list(range(10))
    assert (s.ipc, s.method) == (1, "mtt")
    assert s.lr == pytest.approx(0.0105)


def test_import_mtt_soft_labels_and_explicit_paths(tmp_path):
    torch.save(normalise(torch.rand(20, 3, 32, 32)), tmp_path / "images_1000.pt")
    soft = torch.randn(20, 10, dtype=torch.float64)
    torch.save(soft, tmp_path / "labels_1000.pt")  # default pairing: images_X → labels_X
    s = import_mtt(tmp_path / "images_1000.pt", "cifar10")
    assert s.soft and s.ipc == 2 and torch.allclose(s.labels, soft.float())
    with pytest.raises(DistilledSetNotFoundError):
        import_mtt(tmp_path / "images_1000.pt", "cifar10", labels_path=tmp_path / "x.pt")


class Payload:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class Foreign:
    pass


def test_malicious_pickle_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "res_evil.pt"
    torch.save({"data": [(Payload(marker), torch.arange(10))]}, evil)
    raw = tmp_path / "images_best.pt"
    with open(raw, "wb") as fh:
        pickle.dump(Payload(marker), fh, protocol=2)
    with pytest.raises(CorruptDataError, match="arbitrary code execution"):
        import_dc(evil, "cifar10")
    with pytest.raises(CorruptDataError, match="refuses to unpickle"):
        import_mtt(raw, "cifar10")
    assert not marker.exists()
    # control: the payload is live when unpickled without restriction
    control = tmp_path / "control"
    with open(tmp_path / "control.pkl", "wb") as fh:
        pickle.dump(Payload(control), fh)
    with open(tmp_path / "control.pkl", "rb") as fh:
        pickle.load(fh).close()
    assert control.exists()


def test_foreign_class_refused(tmp_path):
    path = tmp_path / "res.pt"
    torch.save({"data": [(Foreign(), torch.arange(10))]}, path)
    with pytest.raises(CorruptDataError, match="Foreign"):
        import_dc(path, "cifar10")


def test_truncated_torch_file(tmp_path):
    path = tmp_path / "res.pt"
    torch.save({"data": [(torch.zeros(10, 3, 32, 32), torch.arange(10))]}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptDataError, match="unreadable or truncated"):
        import_dc(path, "cifar10")


# -- grids ----------------------------------------------------------------------------------


def test_save_grid_rgb(tmp_path):
    s = make_set(3, size=8)
    out = save_grid(s, tmp_path / "g" / "grid.png", max_per_class=2, scale=2)
    with Image.open(out) as im:
        assert im.mode == "RGB"
        # 10 rows, 2 columns of 16-pixel cells with 1-pixel padding
        assert im.size == (2 * 17 + 1, 10 * 17 + 1)
    assert [p.name for p in (tmp_path / "g").iterdir()] == ["grid.png"]


def test_grid_layout_and_greyscale(tmp_path):
    # class k images are constant k/10; stored in shuffled order
    labels = torch.tensor([2, 0, 1, 0, 2, 2])
    images = (labels.float() / 10).view(6, 1, 1, 1).expand(6, 1, 4, 4).contiguous()
    s = DistilledSet(images=images, labels=labels, num_classes=3, dataset="mnist",
                     method="x", ipc=2)
    arr = grid_array(s, padding=0)
    assert arr.shape == (12, 12) and arr.dtype == np.uint8
    assert arr[0:4, 0:8].max() == 0 and arr[0:4, 8:12].min() == 255  # class 0: 2 imgs + blank
    assert (arr[4:8, 0:4] == 26).all() and arr[4:8, 4:12].min() == 255
    assert (arr[8:12] == 51).all()
    out = save_grid(s, tmp_path / "grey.png", decoded=False)
    with Image.open(out) as im:
        assert im.mode == "L" and im.size == (3 * 5 + 1, 3 * 5 + 1)


def test_grid_decoded_mosaic_and_soft():
    s = make_set(1, soft=True, formation="mosaic2x2")
    arr = grid_array(s, decoded=True, max_per_class=10, padding=0)
    counts = torch.bincount(s.labels.argmax(1), minlength=10)
    assert arr.shape == (10 * 8, int(counts.max()) * 4 * 8, 3)


def test_recorded_git_revision_is_the_one_read_at_import(monkeypatch):
    """Records of a long run name the checkout its code was imported from: git is not asked
    again when a record is written (the tree may have moved on meanwhile)."""
    import subprocess

    from robustdd import runtime

    real_run = subprocess.run

    def no_git(cmd, *args, **kwargs):
        assert cmd[0] != "git", "git was run again"
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", no_git)
    assert runtime.git_revision() == runtime._REVISION_AT_IMPORT
    assert runtime.environment("cpu")["git_revision"] == runtime._REVISION_AT_IMPORT
